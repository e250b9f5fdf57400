/* hstu_params.h -- the one parameter struct HSTU kernels take by value.
 * Seen by both the C runtime (with <stdint.h>) and NVRTC (with the typedefs
 * of kiln_common.cuh); the C side checks its size and offsets with
 * _Static_assert, so keep every field naturally aligned and explicit. */
#ifndef KILN_HSTU_PARAMS_H
#define KILN_HSTU_PARAMS_H

typedef struct kiln_hstu_kparams {
    /* device pointers */
    uint64_t q, k, v, out;
    uint64_t seq_offsets_q, seq_offsets_k; /* int32 or int64, B+1 each */
    uint64_t num_contexts, num_targets;    /* int32[B] or 0 */
    uint64_t rab;                          /* or 0 */
    uint64_t debug_counter;                /* unsigned long long*, or 0 */
    /* strides in elements */
    int64_t q_row_stride, q_head_stride;
    int64_t k_row_stride, k_head_stride;
    int64_t v_row_stride, v_head_stride;
    int64_t out_row_stride, out_head_stride;
    int64_t rab_batch_stride, rab_head_stride, rab_row_stride;
    int64_t total_q, total_k;
    /* sizes */
    int32_t batch, num_heads, rab_heads;
    int32_t max_seqlen_q, max_seqlen_k;
    int32_t window_left, window_right; /* -1: unbounded */
    int32_t target_group_size;
    int32_t offsets_i64;               /* 1: offsets are int64 */
    int32_t num_m_blocks;              /* ceil(max_seqlen_q / BLOCK_M) */
    float alpha;
    float inv_scaling;                 /* 1 / scaling_seqlen */
    /* arbitrary mask (kiln.h's func): int32 func[f * func_stride + global
     * query row], f < n_func; 0 and 0 without it */
    uint64_t func;
    int32_t func_stride;               /* elements, <= INT32_MAX */
    int32_t n_func;                    /* odd, or 0 */
} kiln_hstu_kparams;

#endif
