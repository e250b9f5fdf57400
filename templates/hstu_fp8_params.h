/* hstu_fp8_params.h -- the parameter struct of the fp8 (e4m3) HSTU forward:
 * the common one plus the per-tensor descale factors.  Seen by the C runtime
 * and NVRTC like hstu_params.h; the C side pins its layout. */
#ifndef KILN_HSTU_FP8_PARAMS_H
#define KILN_HSTU_FP8_PARAMS_H

#include "hstu_params.h"
#include "hstu_tma_params.h" /* KILN_ALIGN64 */

typedef struct kiln_hstu_fp8_kparams {
    kiln_hstu_kparams base;
    /* device floats, or 0 for 1.0: real q = descale_q[i] * q8, etc., with
     * i = batch * ds_batch_stride + head * ds_head_stride (0, 0: one per
     * tensor) */
    uint64_t descale_q, descale_k, descale_v;
    int32_t ds_batch_stride, ds_head_stride;
} kiln_hstu_fp8_kparams;

#define KILN_TMA8_Q 0
#define KILN_TMA8_K 1
#define KILN_TMA8_V 2
#define KILN_TMA8_RAB 3

/* The Hopper fp8 kernel's: the above plus TMA descriptors of q, k and v,
 * each 3-D over (head_dim bytes, heads, rows) with boxes of (up to 128
 * bytes, 1 head, 128 rows for q / BLOCK_N for k and v) and the swizzle of
 * the kernel's tiles, and with rab, rab's as the 16-bit kernel's
 * (runtime/hstu_tma.c). */
typedef struct kiln_hstu_fp8_tma_kparams {
    kiln_hstu_fp8_kparams f;
    KILN_ALIGN64 uint64_t tmap[4][16];
} kiln_hstu_fp8_tma_kparams;

#ifdef KILN_NVRTC
/* The element of descale_q/k/v that sequence b, head h reads (both fp8
 * kernels). */
static __device__ __forceinline__ uint64_t kiln_fp8_descale_index(const kiln_hstu_fp8_kparams &fp,
                                                                  int b, int h)
{
    return (uint64_t)b * (uint32_t)fp.ds_batch_stride + (uint64_t)h * (uint32_t)fp.ds_head_stride;
}
#endif

#endif
