/* kiln_bwd_common.cuh -- device helpers of the HSTU backward kernels
 * (templates/hstu_bwd.cu).  Seen only by NVRTC (and nvcc in standalone
 * tests); no toolkit or system header.  Builds on kiln_common.cuh. */
#ifndef KILN_BWD_COMMON_CUH
#define KILN_BWD_COMMON_CUH

#include "kiln_common.cuh"
#include "hstu_params.h"
#include "kiln_hstu_seq.cuh"

namespace kiln_bwd {

/* ------------------------------------------------------------ convert */
/* dq_accum -> dq for the len rows of one sequence (acc: its row 0, H * D
 * floats a row; dq: its row 0).  A row is n = H * D / 4 items of 4 floats;
 * with n < 256 a block takes 256 / n rows at once.  Each thread loads CU
 * rows' items before it stores any: with one load in flight per thread the
 * convert ran at 1.9 TB/s on an H100 (the sequences one after another in
 * every block made it worse: now one per gridDim.y). */
template <int DT, int D>
KILN_DEV void convert_dq_rows(const float *acc, uint16_t *dq, int64_t dq_row_stride, int64_t dq_head_stride,
                              int len, int H, int t)
{
    constexpr int CU = 4;
    const int n = H * (D / 4);
    const int rpi = n >= 256 ? 1 : 256 / n;
    const int sub = n >= 256 ? 0 : t / n;
    const int c0 = n >= 256 ? t : t - sub * n;
    const int cstep = n >= 256 ? 256 : n;
    if (sub >= rpi) return;
    const int64_t rs = (int64_t)gridDim.x * rpi;
#pragma unroll 1
    for (int64_t r0 = (int64_t)blockIdx.x * rpi + sub; r0 < len; r0 += CU * rs) {
#pragma unroll 1
        for (int c = c0; c < n; c += cstep) {
            const int hh = c / (D / 4), d = (c % (D / 4)) * 4;
            float x[CU][4];
#pragma unroll
            for (int u = 0; u < CU; ++u)
                if (r0 + u * rs < len)
                    asm volatile("ld.global.nc.v4.f32 {%0, %1, %2, %3}, [%4];\n"
                                 : "=f"(x[u][0]), "=f"(x[u][1]), "=f"(x[u][2]), "=f"(x[u][3])
                                 : "l"(acc + (r0 + u * rs) * H * D + hh * D + d));
#pragma unroll
            for (int u = 0; u < CU; ++u)
                if (r0 + u * rs < len)
                    asm volatile("st.global.v2.u32 [%0], {%1, %2};\n"
                                 :: "l"(dq + (r0 + u * rs) * dq_row_stride + (int64_t)hh * dq_head_stride + d),
                                    "r"(kiln_pack2<DT>(x[u][0], x[u][1])), "r"(kiln_pack2<DT>(x[u][2], x[u][3]))
                                 : "memory");
        }
    }
}

/* ------------------------------------------------------------- tiles */
/* Tiles of 16-bit elements in shared memory are row-major with one 16-byte
 * chunk of padding per row: pitch = 2 * cols + 16 bytes.  8 consecutive rows
 * read at one column (ldmatrix, fragment stores) then fall in 8 distinct
 * 16-byte bank groups, and every address is a lane-constant register plus an
 * immediate offset. */
template <int COLS> __host__ __device__ constexpr uint32_t pitch() { return (uint32_t)(COLS * 2 + 16); }

/* ROWS rows of COLS elements (row r at g + r * stride) into a tile with cp.async;
 * rows >= nvalid are zero-filled.  A rolled loop with running addresses keeps
 * the register footprint small. */
template <int ROWS, int COLS, int NTHREADS>
KILN_DEV void load_rows(uint32_t sdst, const uint16_t *g, int64_t stride, int nvalid, int tid)
{
    constexpr int CPR = COLS / 8;
    static_assert(NTHREADS % CPR == 0, "threads per row");
    constexpr int TOTAL = ROWS * CPR;
    constexpr int RSTEP = NTHREADS / CPR;
    const int ch = tid % CPR;
    int row = tid / CPR;
    const char *src = (const char *)(g + (int64_t)row * stride + ch * 8);
    uint32_t dst = sdst + (uint32_t)row * pitch<COLS>() + (uint32_t)ch * 16;
    const int64_t step = (int64_t)RSTEP * stride * 2;
#pragma unroll 1
    for (int c = tid; c < TOTAL; c += NTHREADS) {
        const bool ok = row < nvalid;
        kiln_cp_async16(dst, ok ? (const void *)src : (const void *)g, ok ? 16 : 0);
        row += RSTEP;
        src += step;
        dst += RSTEP * pitch<COLS>();
    }
}

/* A rab tile of ROWS rows (row r at rbase + r * rstride) by COLS keys from
 * key n0 on; rows >= nrows and keys >= L are zero-filled.  aligned: rbase is
 * 16-byte aligned and rstride a multiple of 8 (n0 is a multiple of 16). */
template <int ROWS, int COLS, int NTHREADS>
KILN_DEV void load_rab(uint32_t sdst, const uint16_t *rbase, int64_t rstride, int nrows, int n0,
                       int L, bool aligned, int tid)
{
    constexpr int RCH = COLS / 8;
    if (aligned) {
        static_assert(NTHREADS % RCH == 0, "threads per rab row");
        constexpr int TOTAL = ROWS * RCH;
        constexpr int RSTEP = NTHREADS / RCH;
        const int ch = tid % RCH;
        int row = tid / RCH;
        const int j = n0 + ch * 8;
        int bytes = 2 * (L - j);
        bytes = bytes > 16 ? 16 : (bytes < 0 ? 0 : bytes);
        const char *src = (const char *)(rbase + (int64_t)row * rstride + j);
        uint32_t dst = sdst + (uint32_t)row * pitch<COLS>() + (uint32_t)ch * 16;
        const int64_t step = (int64_t)RSTEP * rstride * 2;
#pragma unroll 1
        for (int c = tid; c < TOTAL; c += NTHREADS) {
            const bool ok = row < nrows && bytes > 0;
            kiln_cp_async16(dst, ok ? (const void *)src : (const void *)rbase, ok ? bytes : 0);
            row += RSTEP;
            src += step;
            dst += RSTEP * pitch<COLS>();
        }
    } else {
        /* unaligned rab: element by element, synchronous (slow path) */
#pragma unroll 1
        for (int e = tid; e < ROWS * COLS; e += NTHREADS) {
            const int row = e / COLS, col = e % COLS;
            const int j = n0 + col;
            uint16_t v = 0;
            if (row < nrows && j < L) v = kiln_ld_global_nc_u16(rbase + (int64_t)row * rstride + j);
            kiln_st_shared_u16(sdst + (uint32_t)row * pitch<COLS>() + (uint32_t)col * 2, v);
        }
    }
}

/* ------------------------------------------------------------- global */
KILN_DEV void red_add_f32(float *addr, float v)
{
    asm volatile("red.global.add.f32 [%0], %1;\n" :: "l"(addr), "f"(v));
}

#if defined(KILN_ARCH) && KILN_ARCH >= 900
/* Four consecutive floats, 16-byte aligned (sm_90). */
KILN_DEV void red_add_v4_f32(float *addr, float a, float b, float c, float d)
{
    asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};\n"
                 :: "l"(addr), "f"(a), "f"(b), "f"(c), "f"(d));
}
#endif

KILN_DEV float shfl_xor_f32(float v, int mask)
{
    float r;
    asm volatile("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;\n" : "=f"(r) : "f"(v), "r"(mask));
    return r;
}

KILN_DEV uint16_t ld_shared_u16(uint32_t addr)
{
    uint16_t v;
    asm volatile("ld.shared.u16 %0, [%1];\n" : "=h"(v) : "r"(addr) : "memory");
    return v;
}

KILN_DEV void st_global_u32(void *ptr, uint32_t v)
{
    asm volatile("st.global.u32 [%0], %1;\n" :: "l"(ptr), "r"(v) : "memory");
}

KILN_DEV void st_global_u16(void *ptr, uint16_t v)
{
    asm volatile("st.global.u16 [%0], %1;\n" :: "l"(ptr), "h"(v) : "memory");
}

KILN_DEV float kiln_fma(float a, float b, float c)
{
    float d;
    asm("fma.rn.f32 %0, %1, %2, %3;\n" : "=f"(d) : "f"(a), "f"(b), "f"(c));
    return d;
}

/* float -> 16-bit (round to nearest). */
template <int DT> KILN_DEV uint16_t to_half(float x)
{
    return (uint16_t)(kiln_pack2<DT>(x, 0.f) & 0xffffu);
}

/* x = q.k + rab, h = alpha x / 2 (s = 2h), t = tanh(h): returns
 * silu(s) = h (1 + t) and sets fprime = 2 silu'(s) = (1 + t)(1 + h - h t). */
KILN_DEV float pointwise(float x, float ha, float &fprime)
{
    const float h = ha * x;
    const float t = kiln_tanh_approx(h);
    const float a = 1.f + t;
    fprime = a * kiln_fma(-h, t, 1.f + h);
    return h * a;
}

/* ------------------------------------------------------------- masks */
/* The query tiles that can see a key tile: [0, a_hi) (context rows) U
 * [b_lo, b_hi), visited in increasing order. */
struct MRange {
    int a_hi, b_lo, b_hi;
    __device__ __forceinline__ bool valid(int m) const { return m < a_hi || (m >= b_lo && m < b_hi); }
    __device__ __forceinline__ int first() const { return a_hi > 0 ? 0 : b_lo; }
    __device__ __forceinline__ int next(int m) const
    {
        ++m;
        return (m >= a_hi && m < b_lo) ? b_lo : m;
    }
};

/* The mask of one backward specialization (query tiles of BM rows), shared
 * by hstu_bwd.cu and hstu_bwd_sm90.cu (SPEC.md section 1). */
template <bool CAUSAL, bool LOCAL, bool CONTEXT, bool TARGET, int BM> struct Mask {
    /* The key interval(s) position i sees: [lo1, hi1) U [lo2, hi2), exactly
     * as the forward kernels mask. */
    KILN_DEV void row_iv(const kiln_seq &s, int i, int &lo1, int &hi1, int &lo2, int &hi2)
    {
        lo1 = 0;
        hi1 = s.L;
        lo2 = 0;
        hi2 = 0;
        if (CAUSAL) hi1 = kiln_min(hi1, i + 1);
        if (LOCAL) {
            if (s.wl >= 0) lo1 = kiln_max(lo1, i - s.wl);
            if (s.wr >= 0) hi1 = kiln_min(hi1, i + s.wr + 1);
        }
        if (CONTEXT && i < s.c_ctx) hi1 = kiln_max(hi1, s.hist_end);
        if (TARGET && i >= s.hist_end) {
            hi1 = kiln_min(hi1, s.hist_end);
            lo2 = s.hist_end + ((i - s.hist_end) / s.group) * s.group;
            hi2 = i + 1;
        }
    }

    KILN_DEV bool iv_has(int j, int lo1, int hi1, int lo2, int hi2)
    {
        bool ok = j >= lo1 && j < hi1;
        if (TARGET) ok = ok || (j >= lo2 && j < hi2);
        return ok;
    }

    /* Every pair of positions [i_min, i_max] x keys [j0, j1] valid: no
     * element mask needed.  Context rows only add pairs; rows past len_q and
     * keys past L are zero-filled and contribute nothing either way. */
    KILN_DEV bool tile_full(const kiln_seq &s, int i_min, int i_max, int j0, int j1)
    {
        bool full = true;
        if (CAUSAL) full = full && j1 <= i_min;
        if (LOCAL) {
            if (s.wl >= 0) full = full && j0 >= i_max - s.wl;
            if (s.wr >= 0) full = full && j1 <= i_min + s.wr;
        }
        if (TARGET) full = full && j1 < s.hist_end;
        return full;
    }

    /* The query tiles that can see keys [n0, n0 + nkeys).  A superset: the
     * element mask is exact.  Every walker of a key tile uses the same. */
    KILN_DEV MRange visit_range(const kiln_seq &s, int n0, int nkeys)
    {
        const int jmax = n0 + nkeys - 1;
        int i_lo = 0, i_hi = s.L;
        if (CAUSAL) i_lo = n0;
        if (LOCAL) {
            if (s.wr >= 0) i_lo = kiln_max(i_lo, n0 - s.wr);
            if (s.wl >= 0) i_hi = kiln_min(i_hi, jmax + s.wl + 1);
        }
        if (TARGET && jmax >= s.hist_end) {
            /* target keys are seen only by rows of their own group, at or after them */
            const int tg_hi =
                kiln_min(s.L, s.hist_end + ((jmax - s.hist_end) / s.group + 1) * s.group);
            if (n0 >= s.hist_end) {
                i_hi = tg_hi;
                i_lo = kiln_max(i_lo, n0);
            } else {
                i_hi = kiln_max(i_hi, tg_hi);
            }
        }
        MRange r;
        const int r_lo = kiln_max(i_lo - s.off, 0);
        const int r_hi = kiln_min(i_hi - s.off, s.len_q);
        r.b_lo = r_lo / BM;
        r.b_hi = r_hi > r_lo ? (r_hi + BM - 1) / BM : r.b_lo;
        r.a_hi = 0;
        if (CONTEXT && n0 < s.hist_end) {
            const int rc = kiln_min(s.c_ctx - s.off, s.len_q);
            if (rc > 0) r.a_hi = (rc + BM - 1) / BM;
        }
        return r;
    }
};

} /* namespace kiln_bwd */

#endif /* KILN_BWD_COMMON_CUH */
