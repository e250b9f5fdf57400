/* hstu_tiles.c -- tile choices and resource needs of the HSTU forward kernel
 * (templates/hstu_fwd.cu).  The numbers here must agree with the kernel's
 * shared-memory layout:
 *   Q [BM][D] | K [2][BN][D] | V [2][BN][D] | RAB [2][BM][BN], 2 bytes each. */
#include "kiln.h"
#include "dispatch/hstu_tiles.h"

size_t kiln__arch_max_smem(int arch)
{
    switch (arch) {
    case 80: /* A100 */
    case 87: /* Orin */
        return 166912;     /* 163 KB */
    case 90:
    case 100:
    case 101:
    case 103:
    case 110:
        return 232448;     /* 227 KB */
    default:
        if (arch >= 80)
            return 101376; /* 86, 89, 120, 121: 99 KB */
        return 49152;      /* older: no opt-in assumed */
    }
}

size_t kiln__hstu_fwd_smem(int dtype, int head_dim, int block_m, int block_n,
                           int warps)
{
    size_t elt = 2; /* fp16 and bf16 */
    size_t d = (size_t)head_dim, bm = (size_t)block_m, bn = (size_t)block_n;
    (void)dtype;
    (void)warps;
    return elt * (bm * d + 4 * bn * d + 2 * bm * bn);
}

const char *kiln__hstu_fwd_tiles_check(int head_dim, int block_m, int block_n,
                                       int warps)
{
    int rows_per_warp;
    if (head_dim != 32 && head_dim != 64 && head_dim != 128 && head_dim != 256)
        return "head_dim must be 32, 64, 128 or 256";
    if (warps != 2 && warps != 4 && warps != 8)
        return "warps must be 2, 4 or 8";
    if (block_m != 16 * warps && block_m != 32 * warps)
        return "block_m must be 16 or 32 times warps";
    if (block_n != 16 && block_n != 32 && block_n != 64 && block_n != 128)
        return "block_n must be 16, 32, 64 or 128";
    rows_per_warp = block_m / warps;
    /* Registers: fp32 accumulators are rows_per_warp/16 * (head_dim/2 +
     * block_n/2) per thread; keep them well under the 255 limit. */
    if (rows_per_warp == 32 && head_dim == 256)
        return "block_m must be 16 times warps for head_dim 256";
    if (rows_per_warp == 32 && block_n > 64)
        return "block_n must be at most 64 when block_m is 32 times warps";
    if (rows_per_warp == 32 && head_dim == 128 && block_n > 32)
        return "block_n must be at most 32 for head_dim 128 when block_m is 32 times warps";
    if (head_dim == 256 && block_n > 64)
        return "block_n must be at most 64 for head_dim 256";
    return NULL;
}

/* Candidates per head dim, best first; the first that fits the arch's
 * shared memory wins.  Measured on an H100 (causal bf16, B=32, H=4, lengths
 * 2048..4096): 32 rows per warp and two CTAs per SM win for d64 and d128
 * (d128: 128x32x4 307 TFLOP/s vs 128x64x8 242); see
 * tests/standalone/RESOURCES.txt. */
typedef struct tile_choice {
    int head_dim;
    kiln_hstu_tiles t;
} tile_choice;

static const tile_choice kChoices[] = {
    {32, {128, 64, 4}},   /*  56 KB */
    {64, {128, 64, 4}},   /*  80 KB */
    {64, {64, 64, 4}},    /*  56 KB */
    {128, {128, 32, 4}},  /*  80 KB */
    {128, {64, 32, 4}},   /*  56 KB */
    {256, {64, 32, 4}},   /* 104 KB */
    {256, {64, 16, 4}},   /*  68 KB */
};

void kiln__hstu_fwd_default_tiles(int arch, int dtype, int head_dim,
                                  kiln_hstu_tiles *t)
{
    size_t limit = kiln__arch_max_smem(arch);
    const tile_choice *last = NULL;
    size_t i;
    for (i = 0; i < sizeof kChoices / sizeof kChoices[0]; i++) {
        const tile_choice *c = &kChoices[i];
        if (c->head_dim != head_dim)
            continue;
        last = c;
        if (kiln__hstu_fwd_smem(dtype, head_dim, c->t.block_m, c->t.block_n,
                                c->t.warps) <= limit)
            break;
    }
    if (last != NULL) {
        *t = last->t;
        /* e4m3 holds the next K and V tile in registers while it computes
         * (templates/hstu_fwd.cu): at head dim 256, 32 keys of them spilled
         * 8 bytes on sm_80; 16 keys fit. */
        if (dtype == KILN_DTYPE_E4M3 && head_dim == 256 && t->block_n > 16) t->block_n = 16;
    } else { /* unsupported head_dim: something valid-looking */
        t->block_m = 64;
        t->block_n = 32;
        t->warps = 4;
    }
}
