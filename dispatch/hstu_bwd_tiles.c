/* hstu_bwd_tiles.c -- PROVISIONAL: replaced by the backward kernel's owner. */
#include "dispatch/hstu_bwd_tiles.h"

#include "kiln.h"

void kiln__hstu_bwd_default_tiles(int arch, int dtype, int head_dim, kiln_hstu_tiles *t)
{
    (void)arch;
    (void)dtype;
    t->block_m = 64;
    t->block_n = head_dim > 128 ? 64 : 128;
    t->warps = 8;
}

const char *kiln__hstu_bwd_tiles_check(int head_dim, int block_m, int block_n, int warps)
{
    (void)head_dim;
    if (block_m != 64) return "block_m must be 64";
    if (block_n != 64 && block_n != 128) return "block_n must be 64 or 128";
    if (warps != 4 && warps != 8) return "warps must be 4 or 8";
    return NULL;
}

size_t kiln__hstu_bwd_smem(int which, int dtype, int head_dim, int block_m, int block_n,
                           int warps)
{
    (void)dtype;
    (void)warps;
    if (which == 1) return (size_t)(block_m + 2 * block_n) * (size_t)head_dim * 2;
    return (size_t)(2 * block_n + 4 * block_m) * (size_t)head_dim * 2;
}
