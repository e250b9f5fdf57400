/* hstu_fwd_sm90_tiles.c -- PROVISIONAL until the Hopper kernel lands. */
#include "dispatch/hstu_fwd_sm90_tiles.h"

void kiln__hstu_fwd_sm90_default_tiles(int dtype, int head_dim, kiln_hstu_tiles *t)
{
    (void)dtype;
    t->block_m = 128;
    t->block_n = head_dim > 128 ? 64 : 128;
    t->warps = 12;
}

const char *kiln__hstu_fwd_sm90_tiles_check(int head_dim, int block_m, int block_n,
                                            int warps)
{
    (void)head_dim;
    if (block_m != 128) return "block_m must be 128";
    if (block_n != 64 && block_n != 128) return "block_n must be 64 or 128";
    if (warps != 12) return "warps must be 12";
    return NULL;
}

size_t kiln__hstu_fwd_sm90_smem(int dtype, int head_dim, int block_m, int block_n,
                                int warps)
{
    (void)dtype;
    (void)warps;
    return 2 * ((size_t)block_m * (size_t)head_dim + 4 * (size_t)block_n * (size_t)head_dim) +
           1024;
}
