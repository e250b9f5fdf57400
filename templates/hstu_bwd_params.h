/* hstu_bwd_params.h -- the one parameter struct of the HSTU backward kernels.
 * Seen by C (with <stdint.h>) and NVRTC (typedefs from kiln_common.cuh); the C
 * side pins its layout with _Static_assert. */
#ifndef KILN_HSTU_BWD_PARAMS_H
#define KILN_HSTU_BWD_PARAMS_H

#include "hstu_params.h"

typedef struct kiln_hstu_bwd_kparams {
    kiln_hstu_kparams f;       /* forward inputs (f.out unused) */
    uint64_t dout, dq, dk, dv, drab;
    uint64_t dq_accum;         /* fp32 (total_q, H, D) scratch, or 0 */
    uint64_t drab_accum;       /* fp32 scratch shaped like drab (batch, rab_heads,
                                  max_seqlen_k, max_seqlen_k) contiguous, or 0 */
    int64_t dout_row_stride, dout_head_stride;
    int64_t dq_row_stride, dq_head_stride;
    int64_t dk_row_stride, dk_head_stride;
    int64_t dv_row_stride, dv_head_stride;
    int64_t drab_batch_stride, drab_head_stride, drab_row_stride;
    int32_t num_n_blocks;      /* ceil(max_seqlen_k / BLOCK_N) */
    int32_t pad_;
} kiln_hstu_bwd_kparams;

#endif
