/* hstu_bwd_sm90_tiles.c -- keys, tiles and shared memory of the Hopper HSTU
 * backward (templates/hstu_bwd_sm90.cu).  These numbers must agree with the
 * kernel: 128 keys (64 at head dim 256) and 64-query tiles, 12 warps (one
 * producer and two consumer warpgroups), a Q/dO ring of
 * kiln__sm90_bwd_stages() stages. */
#include "dispatch/hstu_bwd_sm90_tiles.h"

/* Q/dO ring depth; the kernel's STAGES. */
static int kiln__sm90_bwd_stages(int head_dim)
{
    return head_dim <= 64 ? 3 : 2;
}

const char *kiln__hstu_bwd_sm90_serves(int arch, int arch_a, int head_dim, int rab, int drab,
                                       int det)
{
    if (arch != 90 || !arch_a) return "the Hopper backward needs sm_90a";
    if (head_dim != 64 && head_dim != 128 && head_dim != 256)
        return "the Hopper backward serves head_dim 64, 128 and 256";
    if (rab || drab) return "the Hopper backward has no rab or drab";
    if (det) return "the Hopper backward has no deterministic mode";
    return NULL;
}

void kiln__hstu_bwd_sm90_default_tiles(int dtype, int head_dim, kiln_hstu_tiles *t)
{
    (void)dtype;
    t->block_m = 64;
    t->block_n = head_dim == 256 ? 64 : 128;
    t->warps = 12;
}

const char *kiln__hstu_bwd_sm90_tiles_check(int head_dim, int block_m, int block_n, int warps)
{
    if (head_dim != 64 && head_dim != 128 && head_dim != 256)
        return "head_dim must be 64, 128 or 256";
    if (block_m != 64) return "block_m must be 64";
    if (block_n != (head_dim == 256 ? 64 : 128))
        return head_dim == 256 ? "block_n must be 64 at head_dim 256" : "block_n must be 128";
    if (warps != 12) return "warps must be 12";
    return NULL;
}

size_t kiln__hstu_bwd_sm90_smem(int which, int dtype, int head_dim, int block_m, int block_n,
                                int warps)
{
    (void)dtype;
    (void)warps;
    if (which != 0) return 0;
    size_t d = (size_t)head_dim, bm = (size_t)block_m, bn = (size_t)block_n;
    /* alignment slack | K | V | stages x (Q | dO) | 2 x (dS^T [| P^T]) |
     * [2 x a dq tile in fp32] | mbarriers; P^T is exchanged too when the
     * warpgroups split the head dim (256); at 128 the converter warps turn
     * finished dq tiles into dq from there */
    size_t xch = (head_dim == 256 ? 2 : 1) * 2 * bn * bm;
    size_t conv = head_dim == 128 ? 2 * d * bm * 4 : 0;
    return 1024 + 2 * 2 * bn * d + (size_t)kiln__sm90_bwd_stages(head_dim) * 2 * 2 * bm * d +
           2 * xch + conv + 656;
}
