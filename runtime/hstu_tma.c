/* hstu_tma.c -- TMA descriptors of q, k and v for the Hopper HSTU forward
 * and the fp8 one (q, k, v and dout for the backward).
 *
 * Each tensor is described as 3-D (head_dim, heads, rows), innermost first,
 * with the box the kernel copies: one column block (64 elements, or 32 at
 * head dim 32) of one head over 128 query rows or BLOCK_N key rows, using
 * the swizzle of the kernel's shared-memory tiles (128 B, or 64 B at head
 * dim 32).  Rows past the tensor's end arrive as zeros.  The box coordinates
 * are signed 32-bit, hence the row limit. */
#include "runtime/hstu_tma.h"

#include <stddef.h>
#include <stdint.h>

_Static_assert(offsetof(kiln_hstu_tma_kparams, tmap) == 256, "tma kparams layout");
_Static_assert(sizeof(kiln_hstu_tma_kparams) == 768, "tma kparams layout changed");
_Static_assert(offsetof(kiln_hstu_bwd_tma_kparams, tma) == sizeof(kiln_hstu_bwd_kparams),
               "bwd tma kparams layout");
_Static_assert(offsetof(kiln_hstu_bwd_tma_kparams, tmap) % 64 == 0 &&
                   sizeof(kiln_hstu_bwd_tma_kparams) <= 4096, /* the launch parameter limit */
               "bwd tma kparams layout");

enum {
    TM_UINT8 = 0,
    TM_FLOAT16 = 6, TM_FLOAT32 = 7, TM_BFLOAT16 = 9, /* CUtensorMapDataType */
    TM_SWIZZLE_64B = 2, TM_SWIZZLE_128B = 3, /* CUtensorMapSwizzle */
    TM_L2_128B = 2                           /* CUtensorMapL2promotion */
};

static int encode_as(const kiln_cu_api *cu, void *map, int tm_type, int esize, uint64_t ptr,
                     int64_t rows, int64_t row_stride, int heads, int64_t head_stride, int dim,
                     unsigned box_cols, unsigned box_rows, int swizzle)
{
    if (rows <= 0 || rows > INT32_MAX) return -1;
    /* heads side by side within a row, as the map's nesting requires */
    if (heads > 1 && (head_stride < dim || row_stride < head_stride * heads)) return -1;
    if (heads == 1) head_stride = dim;
    const unsigned long long dims[3] = {(unsigned long long)dim, (unsigned long long)heads,
                                        (unsigned long long)rows};
    const unsigned long long strides[2] = {(unsigned long long)head_stride * esize,
                                           (unsigned long long)row_stride * esize};
    const unsigned box[3] = {box_cols, 1u, box_rows};
    const unsigned one[3] = {1u, 1u, 1u};
    CUresult r = cu->TensorMapEncodeTiled(map, tm_type, 3, (void *)(uintptr_t)ptr, dims, strides,
                                          box, one, 0, swizzle, TM_L2_128B, 0);
    return r == 0 ? 0 : -1;
}

/* A 16-bit tensor: column blocks of 64 elements (128 bytes), or one of 32
 * at head dim 32 with the 64-byte swizzle. */
static int encode(const kiln_cu_api *cu, void *map, int dtype, uint64_t ptr, int64_t rows,
                  int64_t row_stride, int heads, int64_t head_stride, int dim,
                  unsigned box_rows)
{
    return encode_as(cu, map, dtype == KILN_DTYPE_BF16 ? TM_BFLOAT16 : TM_FLOAT16, 2, ptr, rows,
                     row_stride, heads, head_stride, dim, dim >= 64 ? 64u : (unsigned)dim, box_rows,
                     dim >= 64 ? TM_SWIZZLE_128B : TM_SWIZZLE_64B);
}

/* rab, (batch, rab heads, max_seqlen_k rows, max_seqlen_k columns) with
 * any strides, as 4-D (columns, rows, heads, batch): boxes of 64 columns
 * (128 bytes, the 128-byte swizzle) by box_rows rows.  A dimension of
 * stride 0 (broadcast) is given extent 1; the kernel then asks for
 * coordinate 0 in it.  TMA needs the address and the strides in multiples
 * of 16 bytes: rab rows of a length not a multiple of 8 fail here, and the
 * call goes to the portable kernel. */
static int encode_rab(const kiln_cu_api *cu, void *map, int dtype, const kiln_hstu_fwd_params *p,
                      unsigned box_rows)
{
    const int64_t n = p->max_seqlen_k;
    if (n <= 0 || n > INT32_MAX) return -1;
    unsigned long long dims[4] = {(unsigned long long)n, (unsigned long long)n,
                                  (unsigned long long)p->rab_heads, (unsigned long long)p->batch};
    unsigned long long strides[3] = {(unsigned long long)p->rab_row_stride * 2,
                                     (unsigned long long)p->rab_head_stride * 2,
                                     (unsigned long long)p->rab_batch_stride * 2};
    /* a broadcast dimension: extent 1, any valid stride */
    if (p->rab_head_stride == 0 || dims[2] == 1) {
        dims[2] = 1;
        strides[1] = strides[0] * dims[1];
    }
    if (p->rab_batch_stride == 0 || dims[3] == 1) {
        dims[3] = 1;
        strides[2] = strides[1] * dims[2];
    }
    /* the driver would refuse these too; said here, not left to its error
     * (and only for the dimensions the map keeps) */
    if (p->rab % 16 || strides[0] % 16 || strides[1] % 16 || strides[2] % 16) return -1;
    const unsigned box[4] = {64u, box_rows, 1u, 1u};
    const unsigned one[4] = {1u, 1u, 1u, 1u};
    CUresult r = cu->TensorMapEncodeTiled(map, dtype == KILN_DTYPE_BF16 ? TM_BFLOAT16 : TM_FLOAT16, 4,
                                          (void *)(uintptr_t)p->rab, dims, strides, box, one, 0,
                                          TM_SWIZZLE_128B, TM_L2_128B, 0);
    return r == 0 ? 0 : -1;
}

int kiln__hstu_tma_fill(const kiln_cu_api *cu, const kiln_hstu_fwd_params *p,
                        const kiln_key *key, kiln_hstu_tma_kparams *a)
{
    if (!cu->TensorMapEncodeTiled) return -1;
    const int d = key->head_dim, h = p->num_heads, dt = key->dtype;
    if (encode(cu, a->tmap[KILN_TMA_Q], dt, p->q, p->total_q, p->q_row_stride, h,
               p->q_head_stride, d, (unsigned)key->block_m) != 0)
        return -1;
    if (encode(cu, a->tmap[KILN_TMA_K], dt, p->k, p->total_k, p->k_row_stride, h,
               p->k_head_stride, d, (unsigned)key->block_n) != 0)
        return -1;
    if (key->rab && encode_rab(cu, a->tmap[KILN_TMA_RAB], dt, p, (unsigned)key->block_m) != 0)
        return -1;
    return encode(cu, a->tmap[KILN_TMA_V], dt, p->v, p->total_k, p->v_row_stride, h,
                  p->v_head_stride, d, (unsigned)key->block_n);
}

int kiln__hstu_fp8_tma_fill(const kiln_cu_api *cu, const kiln_hstu_fwd_params *p,
                            const kiln_key *key, kiln_hstu_fp8_tma_kparams *a)
{
    if (!cu->TensorMapEncodeTiled) return -1;
    /* rows of d bytes: one box of them up to 128, else 128-byte column
     * blocks; the 128-byte swizzle, or the 64-byte one for 64-byte rows */
    const int d = key->head_dim, h = p->num_heads;
    const unsigned cols = d >= 128 ? 128u : (unsigned)d;
    const int sw = d >= 128 ? TM_SWIZZLE_128B : TM_SWIZZLE_64B;
    if (encode_as(cu, a->tmap[KILN_TMA8_Q], TM_UINT8, 1, p->q, p->total_q, p->q_row_stride, h,
                  p->q_head_stride, d, cols, (unsigned)key->block_m, sw) != 0)
        return -1;
    if (encode_as(cu, a->tmap[KILN_TMA8_K], TM_UINT8, 1, p->k, p->total_k, p->k_row_stride, h,
                  p->k_head_stride, d, cols, (unsigned)key->block_n, sw) != 0)
        return -1;
    if (key->rab && encode_rab(cu, a->tmap[KILN_TMA8_RAB], key->out_dtype, p,
                               (unsigned)key->block_m) != 0)
        return -1;
    /* v as k: the kernel transposes it from a staging tile laid out as K's */
    return encode_as(cu, a->tmap[KILN_TMA8_V], TM_UINT8, 1, p->v, p->total_k, p->v_row_stride, h,
                     p->v_head_stride, d, cols, (unsigned)key->block_n, sw);
}

int kiln__hstu_bwd_tma_fill(const kiln_cu_api *cu, const kiln_hstu_bwd_params *p,
                            const kiln_key *key, uint64_t dq_accum,
                            kiln_hstu_bwd_tma_kparams *a)
{
    const kiln_hstu_fwd_params *f = &p->fwd;
    const int d = key->head_dim, h = f->num_heads, dt = key->dtype;
    const unsigned bm = (unsigned)key->block_m, bn = (unsigned)key->block_n;
    a->tma = 0;
    a->tma_dq = 0;
    if (!cu->TensorMapEncodeTiled || d < 64) return -1;
    if (encode(cu, a->tmap[KILN_BTMA_Q], dt, f->q, f->total_q, f->q_row_stride, h,
               f->q_head_stride, d, bm) != 0 ||
        encode(cu, a->tmap[KILN_BTMA_K], dt, f->k, f->total_k, f->k_row_stride, h,
               f->k_head_stride, d, bn) != 0 ||
        encode(cu, a->tmap[KILN_BTMA_V], dt, f->v, f->total_k, f->v_row_stride, h,
               f->v_head_stride, d, bn) != 0 ||
        encode(cu, a->tmap[KILN_BTMA_DO], dt, p->dout, f->total_q, p->dout_row_stride, h,
               p->dout_head_stride, d, bm) != 0)
        return -1;
    a->tma = 1;
    /* dq_accum: (total_q, H, D) fp32, contiguous; 32-column boxes fill the
     * 128-byte swizzle span */
    if (dq_accum && f->total_q > 0 &&
        encode_as(cu, a->tmap[KILN_BTMA_DQ], TM_FLOAT32, 4, dq_accum, f->total_q, (int64_t)h * d, h, d,
                  d, 32u, bm, TM_SWIZZLE_128B) == 0)
        a->tma_dq = 1;
    return 0;
}
