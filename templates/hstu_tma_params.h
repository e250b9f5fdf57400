/* hstu_tma_params.h -- the parameter struct of the Hopper HSTU forward
 * (hstu_fwd_sm90.cu): the common kiln_hstu_kparams first, so that whatever
 * reads the first bytes of a launch's parameters as kiln_hstu_kparams still
 * can, then TMA descriptors of q, k and v.  The descriptors hold the tensors'
 * addresses, so the host builds them for every call (cuTensorMapEncodeTiled);
 * they are opaque 128-byte objects that must be 64-byte aligned.  Seen by
 * the C runtime and NVRTC like hstu_params.h; the C side pins the layout. */
#ifndef KILN_HSTU_TMA_PARAMS_H
#define KILN_HSTU_TMA_PARAMS_H

#include "hstu_params.h"

#ifdef __cplusplus
#define KILN_ALIGN64 alignas(64)
#else
#define KILN_ALIGN64 _Alignas(64)
#endif

/* Which descriptor is which. */
#define KILN_TMA_Q 0
#define KILN_TMA_K 1
#define KILN_TMA_V 2
#define KILN_TMA_RAB 3

typedef struct kiln_hstu_tma_kparams {
    kiln_hstu_kparams p;
    /* The maps of q, k and v are 3-D over (head_dim, heads, rows),
     * innermost first; boxes of (64 or 32 columns, 1 head, 128 rows for q /
     * BLOCK_N for k and v) with the swizzle of the kernel's shared-memory
     * tiles.  rab's (keys with rab) is 4-D over (columns, rows, rab heads,
     * batch), boxes of 64 columns by 128 rows, the 128-byte swizzle. */
    KILN_ALIGN64 uint64_t tmap[4][16];
} kiln_hstu_tma_kparams;

#endif
