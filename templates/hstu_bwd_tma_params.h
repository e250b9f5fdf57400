/* hstu_bwd_tma_params.h -- the parameter struct of the Hopper HSTU backward's
 * main entry (hstu_bwd_sm90.cu): kiln_hstu_bwd_kparams first, as its other
 * entries take it, then TMA descriptors of q, k, v and dout, built by the
 * host for every call (runtime/hstu_tma.c).  tma = 0 when the host could not
 * describe the tensors: the kernel then copies every tile with cp.async.
 * Seen by the C runtime and NVRTC; the C side pins the layout. */
#ifndef KILN_HSTU_BWD_TMA_PARAMS_H
#define KILN_HSTU_BWD_TMA_PARAMS_H

#include "hstu_bwd_params.h"

#ifdef __cplusplus
#define KILN_ALIGN64 alignas(64)
#else
#define KILN_ALIGN64 _Alignas(64)
#endif

/* Which descriptor is which. */
#define KILN_BTMA_Q 0
#define KILN_BTMA_K 1
#define KILN_BTMA_V 2
#define KILN_BTMA_DO 3
#define KILN_BTMA_DQ 4 /* dq_accum, fp32 */

typedef struct kiln_hstu_bwd_tma_kparams {
    kiln_hstu_bwd_kparams b;
    int32_t tma;    /* 1: the maps below describe q, k, v, dout */
    int32_t tma_dq; /* 1: and dq_accum */
    /* Head dim 128 (needs tma and tma_dq) runs the fused dq pass:
     * dq_accum is not zeroed before the kernel and no convert pass follows.
     * A dq tile's first contributor stores its part, the others add theirs
     * once it has, and the last converts the tile into dq, coordinated
     * through dq_sync.  There, persist 1: the grid is (CTAs, 1, 1), each CTA
     * taking work items (key blocks of a sequence and head) from the counter
     * at dq_sync; 0: the grid is (key blocks, heads, batch), an item per
     * block (as at the other head dims) */
    int32_t persist;
    int32_t pad_;
    /* head dim 128: zeroed before the kernel: 16 bytes (the persistent grid's item
     * counter, then padding), then 2 words (claims; ready bit and count of
     * landed contributions) per 64-row dq tile and head; the tile m of
     * sequence b is tile b + q_beg / 64 + m */
    uint64_t dq_sync;
    /* 3-D over (head_dim, heads, rows), innermost first; boxes of (64
     * columns, 1 head, BLOCK_M rows for q and dout / BLOCK_N for k and v),
     * 128-byte swizzle; dq_accum (fp32) in boxes of (32 columns, 1 head,
     * BLOCK_M rows), 128-byte swizzle, for bulk reductions into it */
    KILN_ALIGN64 uint64_t tmap[5][16];
} kiln_hstu_bwd_tma_kparams;

#endif
