/* hstu_fwd.c -- validation and planning of an HSTU forward call. */
#include "dispatch/hstu_fwd.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "dispatch/hstu_fwd_sm90_tiles.h"
#include "dispatch/hstu_tiles.h"
#include "runtime/error.h"

/* The kernel sees kiln_hstu_kparams through NVRTC; pin its layout. */
_Static_assert(sizeof(kiln_hstu_kparams) == 248, "kparams layout changed");
_Static_assert(offsetof(kiln_hstu_kparams, q_row_stride) == 80, "kparams layout");
_Static_assert(offsetof(kiln_hstu_kparams, batch) == 184, "kparams layout");
_Static_assert(offsetof(kiln_hstu_kparams, alpha) == 224, "kparams layout");
_Static_assert(offsetof(kiln_hstu_kparams, func) == 232, "kparams layout");
_Static_assert(offsetof(kiln_hstu_kparams, n_func) == 244, "kparams layout");
/* The Hopper forward's TMA descriptors start at byte 256 (hstu_tma_params.h). */
_Static_assert(sizeof(kiln_hstu_kparams) <= 256, "kparams must fit before the TMA maps");
_Static_assert(sizeof(kiln_hstu_fp8_kparams) == 280, "fp8 kparams layout changed");
_Static_assert(offsetof(kiln_hstu_fp8_kparams, descale_q) == 248, "fp8 kparams layout");
_Static_assert(offsetof(kiln_hstu_fp8_tma_kparams, tmap) == 320 &&
                   sizeof(kiln_hstu_fp8_tma_kparams) == 832,
               "fp8 tma kparams layout changed");

#define GRID_YZ_MAX 65535
#define KILN_MAX_SEQLEN (1 << 30)

/* Highest element index a (rows, heads, dim) view touches, or -1 on
 * overflow of int64. */
static int64_t view_extent(int64_t rows, int64_t row_stride, int64_t heads,
                           int64_t head_stride, int64_t dim)
{
    /* Byte offsets must fit too: checked for 2-byte elements, which covers
     * e4m3's one byte. */
    int64_t a, b, s;
    if (rows == 0) return 0;
    if (__builtin_mul_overflow(rows - 1, row_stride, &a)) return -1;
    if (__builtin_mul_overflow(heads - 1, head_stride, &b)) return -1;
    if (__builtin_add_overflow(a, b, &s)) return -1;
    if (__builtin_add_overflow(s, dim, &s)) return -1;
    /* Byte offsets must fit too (2-byte elements). */
    if (s > INT64_MAX / 2) return -1;
    return s;
}

kiln_status kiln__check_view(const char *name, uint64_t ptr, int64_t rows,
                              int64_t row_stride, int64_t heads,
                              int64_t head_stride, int dim, int is_output)
{
    return kiln__check_view_es(name, ptr, rows, row_stride, heads, head_stride, dim,
                               is_output, 2);
}

kiln_status kiln__check_view_es(const char *name, uint64_t ptr, int64_t rows,
                                int64_t row_stride, int64_t heads, int64_t head_stride,
                                int dim, int is_output, int elem_bytes)
{
    /* Kernels copy 16-byte chunks of rows: strides must keep them aligned. */
    const int mult = 16 / elem_bytes;
    KILN_FAIL_IF(ptr == 0, KILN_EBADARG, "%s is NULL", name);
    KILN_FAIL_IF(ptr % 16, KILN_EBADARG,
                 "%s 0x%llx is not 16-byte aligned", name, (unsigned long long)ptr);
    KILN_FAIL_IF(row_stride < 1 || row_stride % mult, KILN_EBADARG,
                 "%s_row_stride %lld must be a positive multiple of %d elements",
                 name, (long long)row_stride, mult);
    KILN_FAIL_IF(head_stride < 1 || head_stride % mult, KILN_EBADARG,
                 "%s_head_stride %lld must be a positive multiple of %d elements",
                 name, (long long)head_stride, mult);
    KILN_FAIL_IF(view_extent(rows, row_stride, heads, head_stride, dim) < 0,
                 KILN_EBADARG,
                 "%s: %lld rows x row_stride %lld + %lld heads x head_stride %lld "
                 "overflows 64-bit offsets",
                 name, (long long)rows, (long long)row_stride, (long long)heads,
                 (long long)head_stride);
    {
        /* The last byte must not wrap the 64-bit address space. */
        uint64_t bytes = (uint64_t)view_extent(rows, row_stride, heads, head_stride, dim) *
                         (uint64_t)elem_bytes;
        KILN_FAIL_IF(ptr > UINT64_MAX - bytes, KILN_EBADARG,
                     "%s 0x%llx + %llu bytes wraps the address space", name,
                     (unsigned long long)ptr, (unsigned long long)bytes);
    }
    if (is_output && rows > 1 && heads > 1) {
        /* Writes must not alias: the smaller stride spans a head_dim, the
         * larger spans the smaller dimension's whole extent. */
        int64_t s_small = row_stride < head_stride ? row_stride : head_stride;
        int64_t n_small = row_stride < head_stride ? rows : heads;
        int64_t s_big = row_stride < head_stride ? head_stride : row_stride;
        KILN_FAIL_IF(s_small < dim || s_big / n_small < s_small, KILN_EBADARG,
                     "%s strides (row %lld, head %lld) make rows or heads overlap",
                     name, (long long)row_stride, (long long)head_stride);
    } else if (is_output && heads > 1) {
        KILN_FAIL_IF(head_stride < dim, KILN_EBADARG,
                     "%s_head_stride %lld is smaller than head_dim %d", name,
                     (long long)head_stride, dim);
    } else if (is_output && rows > 1) {
        KILN_FAIL_IF(row_stride < dim, KILN_EBADARG,
                     "%s_row_stride %lld is smaller than head_dim %d", name,
                     (long long)row_stride, dim);
    }
    return KILN_OK;
}

kiln_status kiln__check_bias(const char *name, uint64_t ptr, int batch, int heads,
                             int len, int64_t batch_stride, int64_t head_stride,
                             int64_t row_stride)
{
    KILN_FAIL_IF(ptr % 2, KILN_EBADARG, "%s 0x%llx is not 2-byte aligned", name,
                 (unsigned long long)ptr);
    KILN_FAIL_IF(batch_stride < 0 || head_stride < 0 || row_stride < 1, KILN_EBADARG,
                 "%s strides (batch %lld, head %lld, row %lld) must be >= 0, >= 0, >= 1",
                 name, (long long)batch_stride, (long long)head_stride,
                 (long long)row_stride);
    int64_t a, b, c, s;
    int ov = __builtin_mul_overflow((int64_t)batch - 1, batch_stride, &a) |
             __builtin_mul_overflow((int64_t)heads - 1, head_stride, &b) |
             __builtin_mul_overflow((int64_t)len, row_stride, &c) |
             __builtin_add_overflow(a, b, &s) | __builtin_add_overflow(s, c, &s);
    KILN_FAIL_IF(ov || s > INT64_MAX / 2, KILN_EBADARG, "%s strides overflow 64-bit offsets",
                 name);
    KILN_FAIL_IF(ptr > UINT64_MAX - (uint64_t)s * 2, KILN_EBADARG,
                 "%s 0x%llx + %lld elements wraps the address space", name,
                 (unsigned long long)ptr, (long long)s);
    return KILN_OK;
}

kiln_status kiln__hstu_plan_inputs(const kiln_hstu_fwd_params *p, int arch, int arch_a,
                                   int check_out, kiln_key *key, kiln_hstu_kparams *kp,
                                   int *empty)
{
    KILN_FAIL_IF(!p, KILN_EBADARG, "params is NULL");
    KILN_FAIL_IF(p->struct_size != sizeof *p, KILN_EBADARG,
                 "params.struct_size %u is not sizeof(kiln_hstu_fwd_params) %zu "
                 "(call kiln_hstu_fwd_params_init)",
                 p->struct_size, sizeof *p);
    KILN_FAIL_IF(p->dtype != KILN_DTYPE_FP16 && p->dtype != KILN_DTYPE_BF16 &&
                     p->dtype != KILN_DTYPE_E4M3,
                 KILN_EBADARG,
                 "dtype %d is not KILN_DTYPE_FP16 (1), KILN_DTYPE_BF16 (2) or "
                 "KILN_DTYPE_E4M3 (3)",
                 p->dtype);
    const int fp8 = p->dtype == KILN_DTYPE_E4M3;
    if (fp8)
        KILN_FAIL_IF(p->out_dtype != KILN_DTYPE_FP16 && p->out_dtype != KILN_DTYPE_BF16,
                     KILN_EBADARG,
                     "out_dtype %d: with dtype KILN_DTYPE_E4M3 it must be "
                     "KILN_DTYPE_FP16 (1) or KILN_DTYPE_BF16 (2)",
                     p->out_dtype);
    else
        KILN_FAIL_IF(p->out_dtype != 0 && p->out_dtype != p->dtype, KILN_EBADARG,
                     "out_dtype %d: with dtype %d it must be 0 or the dtype itself",
                     p->out_dtype, p->dtype);
    {
        static const char *const dn[3] = {"descale_q", "descale_k", "descale_v"};
        const uint64_t dv[3] = {p->descale_q, p->descale_k, p->descale_v};
        for (int i = 0; i < 3; i++) {
            KILN_FAIL_IF(dv[i] && !fp8, KILN_EBADARG,
                         "%s 0x%llx is set but dtype %d is not KILN_DTYPE_E4M3", dn[i],
                         (unsigned long long)dv[i], p->dtype);
            KILN_FAIL_IF(dv[i] % 4, KILN_EBADARG,
                         "%s 0x%llx is not 4-byte aligned (a device float)", dn[i],
                         (unsigned long long)dv[i]);
        }
        static const char *const sn[2] = {"descale_batch_stride", "descale_head_stride"};
        const int64_t sv[2] = {p->descale_batch_stride, p->descale_head_stride};
        for (int i = 0; i < 2; i++) {
            KILN_FAIL_IF(sv[i] < 0 || sv[i] > INT32_MAX, KILN_EBADARG,
                         "%s %lld is not in [0, 2^31 - 1]", sn[i], (long long)sv[i]);
            KILN_FAIL_IF(sv[i] && !fp8, KILN_EBADARG,
                         "%s %lld is set but dtype %d is not KILN_DTYPE_E4M3", sn[i],
                         (long long)sv[i], p->dtype);
        }
    }
    KILN_FAIL_IF(p->head_dim != 32 && p->head_dim != 64 && p->head_dim != 128 &&
                     p->head_dim != 256,
                 KILN_EBADARG, "head_dim %d is not one of 32, 64, 128, 256",
                 p->head_dim);
    KILN_FAIL_IF(p->num_heads < 1 || p->num_heads > GRID_YZ_MAX, KILN_EBADARG,
                 "num_heads %d is not in [1, %d]", p->num_heads, GRID_YZ_MAX);
    KILN_FAIL_IF(p->batch < 0 || p->batch > GRID_YZ_MAX, KILN_EBADARG,
                 "batch %d is not in [0, %d]", p->batch, GRID_YZ_MAX);
    KILN_FAIL_IF(p->total_q < 0, KILN_EBADARG, "total_q %lld is negative",
                 (long long)p->total_q);
    KILN_FAIL_IF(p->total_k < 0, KILN_EBADARG, "total_k %lld is negative",
                 (long long)p->total_k);
    /* Kernels index positions in 32-bit: keep block starts far from INT_MAX. */
    KILN_FAIL_IF(p->max_seqlen_q < 0 || p->max_seqlen_q > KILN_MAX_SEQLEN, KILN_EBADARG,
                 "max_seqlen_q %d is not in [0, %d]", p->max_seqlen_q, KILN_MAX_SEQLEN);
    KILN_FAIL_IF(p->max_seqlen_k < 0 || p->max_seqlen_k > KILN_MAX_SEQLEN, KILN_EBADARG,
                 "max_seqlen_k %d is not in [0, %d]", p->max_seqlen_k, KILN_MAX_SEQLEN);
    KILN_FAIL_IF(p->offsets_type != KILN_INDEX_INT32 &&
                     p->offsets_type != KILN_INDEX_INT64,
                 KILN_EBADARG, "offsets_type %d is not KILN_INDEX_INT32 or _INT64",
                 p->offsets_type);
    KILN_FAIL_IF(p->window_left < -1, KILN_EBADARG, "window_left %d is below -1",
                 p->window_left);
    KILN_FAIL_IF(p->window_right < -1, KILN_EBADARG, "window_right %d is below -1",
                 p->window_right);
    KILN_FAIL_IF(!isfinite(p->alpha), KILN_EBADARG, "alpha %g is not finite",
                 (double)p->alpha);
    KILN_FAIL_IF(!isfinite(p->scaling_seqlen) || p->scaling_seqlen < 0,
                 KILN_EBADARG, "scaling_seqlen %g is not a finite value >= 0",
                 (double)p->scaling_seqlen);

    unsigned mask = 0;
    if (p->window_left == -1 && p->window_right == 0) mask = KILN_MASK_CAUSAL;
    else if (p->window_left >= 0 && p->window_right == 0)
        mask = KILN_MASK_CAUSAL | KILN_MASK_LOCAL;
    else if (p->window_left >= 0 || p->window_right >= 0) mask = KILN_MASK_LOCAL;
    if (p->func) {
        /* NVIDIA's arbitrary mask: a family of its own (kiln.h) */
        KILN_FAIL_IF(p->window_left != -1 || p->window_right != -1, KILN_EBADARG,
                     "func does not combine with a window: window_left, window_right must "
                     "be -1, -1 (no mask), got (%d, %d)",
                     p->window_left, p->window_right);
        KILN_FAIL_IF(p->num_contexts, KILN_EBADARG,
                     "func does not combine with num_contexts (pass 0)");
        KILN_FAIL_IF(p->num_targets, KILN_EBADARG,
                     "func does not combine with num_targets (pass 0)");
    }
    if (p->num_contexts) {
        KILN_FAIL_IF(mask != KILN_MASK_CAUSAL, KILN_EBADARG,
                     "num_contexts needs the causal window (-1, 0); window is "
                     "(%d, %d)",
                     p->window_left, p->window_right);
        mask |= KILN_MASK_CONTEXT;
    }
    if (p->num_targets) {
        KILN_FAIL_IF(!(mask & KILN_MASK_CAUSAL) || (mask & KILN_MASK_LOCAL),
                     KILN_EBADARG,
                     "num_targets needs the causal window (-1, 0); window is "
                     "(%d, %d)",
                     p->window_left, p->window_right);
        KILN_FAIL_IF(p->target_group_size < 1, KILN_EBADARG,
                     "target_group_size %d must be >= 1 with num_targets",
                     p->target_group_size);
        mask |= KILN_MASK_TARGET;
    }
    if (p->is_delta_q) {
        KILN_FAIL_IF(p->num_contexts || p->num_targets, KILN_EBADARG,
                     "is_delta_q does not combine with num_contexts or num_targets");
        mask |= KILN_MASK_DELTA_Q;
    }
    KILN_FAIL_IF(p->num_contexts % 4 || p->num_targets % 4, KILN_EBADARG,
                 "num_contexts/num_targets pointer is not 4-byte aligned");
    if (p->func) {
        KILN_FAIL_IF(fp8, KILN_EUNSUPPORTED,
                     "func: the fp8 (e4m3) forward has no arbitrary func mask");
        KILN_FAIL_IF(p->n_func < 1 || p->n_func > KILN_HSTU_FUNC_MAX || p->n_func % 2 == 0,
                     KILN_EBADARG, "n_func %d must be odd, from 1 to %d", p->n_func,
                     KILN_HSTU_FUNC_MAX);
        KILN_FAIL_IF(p->func % 4, KILN_EBADARG, "func 0x%llx is not 4-byte aligned (int32)",
                     (unsigned long long)p->func);
        KILN_FAIL_IF(p->func_stride < p->total_q || p->func_stride > INT32_MAX ||
                         p->func_stride < 1,
                     KILN_EBADARG,
                     "func_stride %lld must be at least total_q %lld (and at least 1) and "
                     "at most 2^31 - 1 elements",
                     (long long)p->func_stride, (long long)p->total_q);
        /* the last element read: (n_func - 1) rows apart, then total_q - 1 */
        uint64_t last = ((uint64_t)(p->n_func - 1) * (uint64_t)p->func_stride +
                         (uint64_t)p->total_q) * 4;
        KILN_FAIL_IF(p->func > UINT64_MAX - last, KILN_EBADARG,
                     "func 0x%llx + %llu bytes wraps the address space",
                     (unsigned long long)p->func, (unsigned long long)last);
        mask |= KILN_MASK_FUNC;
    } else {
        KILN_FAIL_IF(p->n_func || p->func_stride, KILN_EBADARG,
                     "n_func %d / func_stride %lld are set but func is NULL (0)", p->n_func,
                     (long long)p->func_stride);
    }

    /* The caller set family, drab and det; the rest comes from p. */
    key->arch = arch;
    key->arch_a = arch_a;
    key->dtype = p->dtype;
    key->out_dtype = fp8 ? p->out_dtype : 0;
    key->head_dim = p->head_dim;
    key->mask = mask;
    key->rab = p->rab != 0;
    if (key->impl < 0) key->impl = kiln__key_default_impl(key);
    kiln__key_default_tiles(key);
    KILN_TRY(kiln__key_validate(key));

    int d = p->head_dim, h = p->num_heads;
    *empty = p->batch == 0 || p->max_seqlen_q == 0;
    if (p->batch == 0) return KILN_OK;

    const int ies = fp8 ? 1 : 2; /* input element bytes */
    KILN_TRY(kiln__check_view_es("q", p->q, p->total_q, p->q_row_stride, h,
                                 p->q_head_stride, d, 0, ies));
    KILN_TRY(kiln__check_view_es("k", p->k, p->total_k, p->k_row_stride, h,
                                 p->k_head_stride, d, 0, ies));
    KILN_TRY(kiln__check_view_es("v", p->v, p->total_k, p->v_row_stride, h,
                                 p->v_head_stride, d, 0, ies));
    if (check_out)
        KILN_TRY(kiln__check_view("out", p->out, p->total_q, p->out_row_stride, h,
                            p->out_head_stride, d, 1));
    unsigned oal = p->offsets_type == KILN_INDEX_INT64 ? 8 : 4;
    KILN_FAIL_IF(!p->seq_offsets_q, KILN_EBADARG, "seq_offsets_q is NULL");
    KILN_FAIL_IF(p->seq_offsets_q % oal || p->seq_offsets_k % oal, KILN_EBADARG,
                 "seq_offsets pointer is not %u-byte aligned", oal);
    KILN_FAIL_IF(p->total_q > INT32_MAX && p->offsets_type == KILN_INDEX_INT32,
                 KILN_EBADARG, "total_q %lld needs int64 offsets",
                 (long long)p->total_q);
    if (p->rab) {
        KILN_FAIL_IF(p->rab_heads < 1 || h % p->rab_heads, KILN_EBADARG,
                     "rab_heads %d does not divide num_heads %d", p->rab_heads, h);
        KILN_TRY(kiln__check_bias("rab", p->rab, p->batch, p->rab_heads, p->max_seqlen_k,
                                  p->rab_batch_stride, p->rab_head_stride,
                                  p->rab_row_stride));
    }

    memset(kp, 0, sizeof *kp);
    kp->q = p->q;
    kp->k = p->k;
    kp->v = p->v;
    kp->out = p->out;
    kp->seq_offsets_q = p->seq_offsets_q;
    kp->seq_offsets_k = p->seq_offsets_k ? p->seq_offsets_k : p->seq_offsets_q;
    kp->num_contexts = p->num_contexts;
    kp->num_targets = p->num_targets;
    kp->rab = p->rab;
    kp->q_row_stride = p->q_row_stride;
    kp->q_head_stride = p->q_head_stride;
    kp->k_row_stride = p->k_row_stride;
    kp->k_head_stride = p->k_head_stride;
    kp->v_row_stride = p->v_row_stride;
    kp->v_head_stride = p->v_head_stride;
    kp->out_row_stride = p->out_row_stride;
    kp->out_head_stride = p->out_head_stride;
    kp->rab_batch_stride = p->rab_batch_stride;
    kp->rab_head_stride = p->rab_head_stride;
    kp->rab_row_stride = p->rab_row_stride;
    kp->total_q = p->total_q;
    kp->total_k = p->total_k;
    kp->batch = p->batch;
    kp->num_heads = h;
    kp->rab_heads = p->rab ? p->rab_heads : 1;
    kp->max_seqlen_q = p->max_seqlen_q;
    kp->max_seqlen_k = p->max_seqlen_k;
    kp->window_left = p->window_left;
    kp->window_right = p->window_right;
    kp->target_group_size = p->num_targets ? p->target_group_size : 1;
    kp->offsets_i64 = p->offsets_type == KILN_INDEX_INT64;
    /* 64-bit: max_seqlen_q may be near INT_MAX (found by the fuzzer). */
    kp->num_m_blocks = (int32_t)(((int64_t)p->max_seqlen_q + key->block_m - 1) / key->block_m);
    kp->alpha = p->alpha;
    float scale = p->scaling_seqlen > 0 ? p->scaling_seqlen : (float)p->max_seqlen_q;
    kp->inv_scaling = scale > 0 ? 1.0f / scale : 1.0f;
    if (p->func) {
        kp->func = p->func;
        kp->func_stride = (int32_t)p->func_stride;
        kp->n_func = p->n_func;
    }

    return KILN_OK;
}

kiln_status kiln__hstu_fwd_plan(const kiln_hstu_fwd_params *p, int arch,
                                int arch_a, kiln_key *key, kiln_hstu_kparams *kp,
                                kiln_launch *launch, int *empty)
{
    return kiln__hstu_fwd_plan_impl(p, arch, arch_a, -1, key, kp, launch, empty);
}

kiln_status kiln__hstu_fwd_plan_impl(const kiln_hstu_fwd_params *p, int arch, int arch_a,
                                     int impl, kiln_key *key, kiln_hstu_kparams *kp,
                                     kiln_launch *launch, int *empty)
{
    memset(key, 0, sizeof *key);
    key->family = KILN_FAM_HSTU_FWD;
    /* The Hopper kernels do not serve func masks: a request for them
     * ($KILN_FWD_IMPL=wgmma) falls back to the portable kernel. */
    if (impl == 1 && p && p->struct_size == sizeof *p && p->func) impl = -1;
    key->impl = impl;
    KILN_TRY(kiln__hstu_plan_inputs(p, arch, arch_a, 1, key, kp, empty));
    if (key->impl == 1 && key->dtype != KILN_DTYPE_E4M3) {
        /* The module holds the kernel of one grid: the key names it.  From
         * max_seqlen_q (kp is not filled for batch 0), so that
         * kiln_hstu_fwd_key reports a shape's key even for an empty call. */
        int64_t mb = ((int64_t)p->max_seqlen_q + key->block_m - 1) / key->block_m;
        key->persist = kiln__hstu_fwd_sm90_persistent((int)mb, key->rab);
    }
    if (*empty) return KILN_OK;
    /* the Hopper fp8 kernel takes a unit of two m-blocks per CTA
     * (templates/hstu_fwd_sm90_fp8.cu) */
    launch->grid[0] = key->impl == 1 && key->dtype == KILN_DTYPE_E4M3
                          ? (unsigned)kiln__hstu_units(kp->num_m_blocks)
                          : (unsigned)kp->num_m_blocks;
    launch->grid[1] = (unsigned)p->num_heads;
    launch->grid[2] = (unsigned)p->batch;
    launch->block[0] = (unsigned)key->warps * 32;
    launch->block[1] = launch->block[2] = 1;
    launch->smem = (unsigned)kiln__key_smem(key, 0);
    return KILN_OK;
}
