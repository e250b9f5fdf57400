/* hstu_bwd_tiles.c -- tile choices and shared memory of the HSTU backward
 * kernels (templates/hstu_bwd.cu).  The numbers here must agree with the
 * kernels' shared-memory layouts (16-bit tiles, rows padded by 16 bytes):
 *
 *   main: K [BN][D] | V [BN][D] | 2 x (Q [BM][D] | dO [BM][D])
 *         | dS^T [2][BN][BM] | P^T [BN][BM] (head dim 256 only) | rab [2][BM][BN]
 *   dq:   Q [BM][D] | dO [BM][D] | K [2][BNQ][D] | V [2][BNQ][D] | rab [2][BM][BNQ]
 *
 * where a tile of C columns has rows of 2 C + 16 bytes, and the dq kernel's
 * key tile is BNQ = max(16 WK, min(BN, 64)) with WK = warps / (BM / 16).  The
 * rab buffers are always counted (the kernels place them last). */
#include "dispatch/hstu_bwd_tiles.h"

#include "kiln.h"

static size_t pitch(size_t cols) { return 2 * cols + 16; }

/* Warps sharing 16 key rows in the main kernel. */
static int split(int head_dim) { return head_dim == 256 ? 2 : 1; }

static size_t dq_key_tile(int block_m, int block_n, int warps)
{
    size_t wk = (size_t)(warps / (block_m / 16));
    size_t bn = block_n < 64 ? (size_t)block_n : 64;
    return 16 * wk > bn ? 16 * wk : bn;
}

size_t kiln__hstu_bwd_smem(int which, int dtype, int head_dim, int block_m, int block_n,
                           int warps)
{
    size_t d = (size_t)head_dim, bm = (size_t)block_m, bn = (size_t)block_n;
    (void)dtype; /* fp16 and bf16: 2 bytes */
    if (block_m < 16 || warps < 1)
        return 0;
    if (which == 1) {
        size_t bnq = dq_key_tile(block_m, block_n, warps);
        return 2 * bm * pitch(d) + 4 * bnq * pitch(d) + 2 * bm * pitch(bnq);
    }
    return 2 * bn * pitch(d) + 4 * bm * pitch(d) + (size_t)(2 + split(head_dim) - 1) * bn * pitch(bm) +
           2 * bm * pitch(bn);
}

const char *kiln__hstu_bwd_tiles_check(int head_dim, int block_m, int block_n, int warps)
{
    int ds = split(head_dim);
    if (head_dim != 32 && head_dim != 64 && head_dim != 128 && head_dim != 256)
        return "head_dim must be 32, 64, 128 or 256";
    if (warps != 2 && warps != 4 && warps != 8)
        return "warps must be 2, 4 or 8";
    if (block_n != 16 * warps / ds)
        return ds == 1 ? "block_n must be 16 times warps"
                       : "block_n must be 8 times warps for head_dim 256";
    if (block_m != 16 && block_m != 32 && block_m != 64 && block_m != 128)
        return "block_m must be 16, 32, 64 or 128";
    if (block_m % (16 * ds) != 0)
        return "block_m must be a multiple of 32 for head_dim 256";
    if (block_m > 16 * warps)
        return "block_m must be at most 16 times warps";
    /* dQ of the main kernel: warps / (block_m / 16) warps share the head dim
     * and each needs at least 16 columns. */
    if (head_dim * (block_m / 16) < 16 * warps)
        return "block_m is too small for warps at this head_dim (each warp needs 16 dq columns)";
    return NULL;
}

/* Candidates per head dim, best first; the first whose two kernels fit the
 * arch's shared memory wins. */
typedef struct bwd_tile_choice {
    int head_dim;
    kiln_hstu_tiles t;
} bwd_tile_choice;

static const bwd_tile_choice kBwdChoices[] = {
    /* head_dim, {block_m, block_n, warps}   smem main / dq */
    {32, {64, 128, 8}},  /* 110 KB /  48 KB */
    {32, {64, 64, 4}},   /*  66 KB /  48 KB */
    {64, {64, 128, 8}},  /* 142 KB /  72 KB */
    {64, {64, 64, 4}},   /*  90 KB /  72 KB */
    {128, {64, 128, 8}}, /* 206 KB / 120 KB */
    {128, {32, 128, 8}}, /* 139 KB /  94 KB */
    {128, {32, 64, 4}},  /*  87 KB /  94 KB */
    {256, {32, 64, 8}},  /* 156 KB / 174 KB */
    {256, {32, 32, 4}},  /* 112 KB / 104 KB */
    {256, {32, 16, 2}},  /*  90 KB /  69 KB */
};

void kiln__hstu_bwd_default_tiles(int arch, int dtype, int head_dim, kiln_hstu_tiles *t)
{
    size_t limit = kiln__arch_max_smem(arch);
    const bwd_tile_choice *last = NULL;
    size_t i;
    for (i = 0; i < sizeof kBwdChoices / sizeof kBwdChoices[0]; i++) {
        const bwd_tile_choice *c = &kBwdChoices[i];
        size_t m0, m1;
        if (c->head_dim != head_dim)
            continue;
        last = c;
        m0 = kiln__hstu_bwd_smem(0, dtype, head_dim, c->t.block_m, c->t.block_n, c->t.warps);
        m1 = kiln__hstu_bwd_smem(1, dtype, head_dim, c->t.block_m, c->t.block_n, c->t.warps);
        if (m0 <= limit && m1 <= limit)
            break;
    }
    if (last != NULL) {
        *t = last->t;
    } else { /* unsupported head_dim: something valid-looking */
        t->block_m = 64;
        t->block_n = 64;
        t->warps = 4;
    }
}
