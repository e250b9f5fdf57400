/* kiln_bwd_common.cuh -- device helpers of the HSTU backward kernels
 * (templates/hstu_bwd.cu).  Seen only by NVRTC (and nvcc in standalone
 * tests); no toolkit or system header.  Builds on kiln_common.cuh. */
#ifndef KILN_BWD_COMMON_CUH
#define KILN_BWD_COMMON_CUH

#include "kiln_common.cuh"
#include "hstu_params.h"

namespace kiln_bwd {

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

/* ------------------------------------------------------------- sequences */
/* One sequence of the jagged batch; valid is false when its offsets are
 * bad (negative, decreasing, past the totals, longer than the maxima, or
 * len_q != len_k without delta_q): then nothing of it is read or written. */
struct Seq {
    int64_t q_beg, k_beg;
    int len_q, L, off;       /* off: position of query row 0 */
    int c_ctx, hist_end, group, wl, wr;
};

template <bool DELTA_Q, bool CONTEXT, bool TARGET, bool LOCAL>
KILN_DEV bool load_seq(const kiln_hstu_kparams &f, int b, Seq &s)
{
    const uint64_t offk_ptr = f.seq_offsets_k ? f.seq_offsets_k : f.seq_offsets_q;
    const int64_t q_beg = kiln_ld_offset(f.seq_offsets_q, f.offsets_i64, b);
    const int64_t q_end = kiln_ld_offset(f.seq_offsets_q, f.offsets_i64, b + 1);
    const int64_t k_beg = kiln_ld_offset(offk_ptr, f.offsets_i64, b);
    const int64_t k_end = kiln_ld_offset(offk_ptr, f.offsets_i64, b + 1);
    bool bad = q_beg < 0 || k_beg < 0 || q_end < q_beg || k_end < k_beg || q_end > f.total_q ||
               k_end > f.total_k || q_end - q_beg > (int64_t)f.max_seqlen_q ||
               k_end - k_beg > (int64_t)f.max_seqlen_k;
    if (!bad) {
        if (DELTA_Q) bad = q_end - q_beg > k_end - k_beg;
        else bad = q_end - q_beg != k_end - k_beg;
    }
    if (bad) return false;
    s.q_beg = q_beg;
    s.k_beg = k_beg;
    s.len_q = (int)(q_end - q_beg);
    s.L = (int)(k_end - k_beg);
    s.off = DELTA_Q ? s.L - s.len_q : 0;
    s.c_ctx = 0;
    s.hist_end = s.L;
    if (CONTEXT && f.num_contexts != 0) {
        int c = ((const int32_t *)f.num_contexts)[b];
        s.c_ctx = kiln_min(kiln_max(c, 0), s.L);
    }
    if (TARGET && f.num_targets != 0) {
        int t = ((const int32_t *)f.num_targets)[b];
        t = kiln_min(kiln_max(t, 0), s.L - s.c_ctx);
        s.hist_end = s.L - t;
    }
    s.group = TARGET ? kiln_max(f.target_group_size, 1) : 1;
    s.wl = LOCAL ? f.window_left : -1;
    s.wr = LOCAL ? f.window_right : -1;
    return true;
}

} /* namespace kiln_bwd */

#endif /* KILN_BWD_COMMON_CUH */
