/* hstu_fwd.cu -- HSTU attention forward (pointwise SiLU, no softmax).
 *
 * out_r = sum over valid j of silu(alpha * (q_r . k_j + rab[i, j]))
 *         * inv_scaling * v_j                    (SPEC.md section 1)
 *
 * Specialized by a prelude of #defines (KILN_ARCH, KILN_DTYPE, KILN_HEAD_DIM,
 * KILN_BLOCK_M, KILN_BLOCK_N, KILN_WARPS, KILN_CAUSAL, KILN_LOCAL,
 * KILN_CONTEXT, KILN_TARGET, KILN_DELTA_Q, KILN_RAB, and KILN_FUNC for
 * NVIDIA's arbitrary mask) followed by an #include of this file.  Needs
 * sm_80+ (mma.sync m16n8k16, ldmatrix, cp.async).
 * With KILN_FUNC the m-block visits the key tiles between the smallest and
 * the largest key any of its rows sees (kiln_func.cuh; one reduction at the
 * start) and masks every element from the rows' intervals.
 *
 * One CTA = BLOCK_M query rows of one (batch, head); grid = (num_m_blocks,
 * num_heads, batch); WARPS warps each own BLOCK_M / WARPS query rows (16 or
 * 32: one or two m16 tiles).  Key tiles of BLOCK_N rows stream through a
 * double buffer (K, V and the rab tile, cp.async, XOR-swizzled 16-byte
 * chunks).  S = Q K^T and O += P V run on the tensor cores; P never leaves
 * registers: the fp32 accumulator fragment of two n8 tiles is, once packed to
 * 16 bits, the A fragment of one k16 step.  inv_scaling is applied to O at
 * the end (keeps fp16 P out of the subnormal range).  silu(x) = h (1 +
 * tanh h), h = x / 2, with tanh.approx.f32 (one MUFU op per element).
 * Key tiles outside the m-block's visible range are skipped; per-element
 * masks run only on tiles the mask cuts.  With CAUSAL, blockIdx.x maps to
 * m-blocks in reverse (longest rows first).  A sequence whose offsets fail
 * the guard (SPEC) is skipped whole; CTA (0, 0, b) counts it once in
 * p.debug_counter when that is set.
 *
 * Shared memory (bytes), see kiln__hstu_fwd_smem() in dispatch/hstu_tiles.c:
 *   Q [BM][D] | K [2][BN][D] | V [2][BN][D] | RAB [2][BM][BN]      (x 2 bytes)
 * The Q region is reused by each warp for its own output rows at the end.
 * The rab buffers are reserved even without KILN_RAB, so the size depends on
 * (head_dim, block_m, block_n) only.
 *
 * Requirements on the inputs (checked by the runtime, not here): q, k, v, out
 * 16-byte aligned; their row and head strides multiples of 8 elements; the
 * last dimension contiguous.  rab may be unaligned (a slower path loads it).
 *
 * fp8 (KILN_DTYPE 3, e4m3 q, k, v, out and rab in KILN_OUT_DTYPE): the fp8
 * forward for GPUs without the Hopper kernel (sm_80, sm_86, sm_89) and for
 * $KILN_FWD_IMPL=mma.  Each 16-byte chunk of e4m3 is loaded into registers
 * and widened (exactly) to the out dtype into the same swizzled 16-bit
 * tiles, so everything after the loads is the 16-bit kernel, on 16-bit
 * tensor cores: the gain is the halved reads of q, k and v.  A key tile's
 * loads are issued before the tile before it is computed and widened after,
 * hiding their latency as cp.async does.  descale_q * descale_k scales S
 * (before rab), descale_v the output; strides multiples of 16 elements. */
#include "kiln_common.cuh"
#include "hstu_params.h"
#include "hstu_fp8_params.h"
#include "kiln_hstu_seq.cuh"
#include "kiln_func.cuh"

#if !defined(KILN_DTYPE) || !defined(KILN_HEAD_DIM) || !defined(KILN_BLOCK_M) || \
    !defined(KILN_BLOCK_N) || !defined(KILN_WARPS)
#error "hstu_fwd.cu: the specialization prelude is missing"
#endif
#ifndef KILN_CAUSAL
#define KILN_CAUSAL 0
#endif
#ifndef KILN_LOCAL
#define KILN_LOCAL 0
#endif
#ifndef KILN_CONTEXT
#define KILN_CONTEXT 0
#endif
#ifndef KILN_TARGET
#define KILN_TARGET 0
#endif
#ifndef KILN_DELTA_Q
#define KILN_DELTA_Q 0
#endif
#ifndef KILN_RAB
#define KILN_RAB 0
#endif
#if defined(KILN_ARCH) && KILN_ARCH < 80
#error "hstu_fwd.cu needs sm_80 or newer"
#endif
#if KILN_DTYPE == 3 /* e4m3 in, computed in the out dtype */
#define KILN_E4M3 1
#define KILN_CDTYPE KILN_OUT_DTYPE
#else
#define KILN_E4M3 0
#define KILN_CDTYPE KILN_DTYPE
#endif

namespace kiln_hstu_fwd_impl {

constexpr int DT = KILN_CDTYPE; /* of the tiles, the tensor-core inputs, out and rab */
constexpr bool E4M3 = KILN_E4M3 != 0;
constexpr int D = KILN_HEAD_DIM;
constexpr int BM = KILN_BLOCK_M;
constexpr int BN = KILN_BLOCK_N;
constexpr int NWARPS = KILN_WARPS;
constexpr int NTHREADS = NWARPS * 32;
constexpr int MT = BM / (16 * NWARPS);  /* m16 tiles per warp */
constexpr int WROWS = 16 * MT;           /* query rows per warp */
constexpr int CH = D / 8;                /* 16-byte chunks per q/k/v row */
constexpr int RCH = BN / 8;              /* 16-byte chunks per rab row */
constexpr int SN = BN / 8;               /* n8 tiles of S per m16 tile */
constexpr int ON = D / 8;                /* n8 tiles of O per m16 tile */
constexpr int KSTEPS = D / 16;           /* k16 steps of Q K^T */
constexpr int PSTEPS = BN / 16;          /* k16 steps of P V */
/* Q stays in registers (MT * D / 4 of them) when the fp32 state plus Q fits
 * in about half the register file; otherwise it is re-read from smem. */
constexpr bool Q_IN_REGS = MT * (D / 2 + BN / 2 + D / 4) <= 128;
constexpr bool CAUSAL = KILN_CAUSAL != 0;
constexpr bool LOCAL = KILN_LOCAL != 0;
constexpr bool CONTEXT = KILN_CONTEXT != 0;
constexpr bool TARGET = KILN_TARGET != 0;
constexpr bool DELTA_Q = KILN_DELTA_Q != 0;
constexpr bool RAB = KILN_RAB != 0;
constexpr bool FUNC = KILN_FUNC != 0;

static_assert(DT == KILN_DT_FP16 || DT == KILN_DT_BF16, "dtype");
static_assert(D == 32 || D == 64 || D == 128 || D == 256, "head dim");
static_assert(MT >= 1 && MT <= 2 && BM == WROWS * NWARPS, "BLOCK_M must be 16 or 32 rows per warp");
static_assert(BN % 16 == 0 && BN >= 16 && BN <= 128, "BLOCK_N");
static_assert(!(CONTEXT || TARGET) || CAUSAL, "context/target need causal");
static_assert(!FUNC || !(CAUSAL || LOCAL || CONTEXT || TARGET), "func is a mask of its own");
static_assert(2 * SN <= 32, "func slots per row");
static_assert(!E4M3 || (!FUNC && D >= 64), "e4m3: no func mask; head dim 64 to 256");

constexpr uint32_t Q_BYTES = BM * D * 2;
constexpr uint32_t KV_BYTES = BN * D * 2;
constexpr uint32_t RAB_BYTES = BM * BN * 2;
constexpr uint32_t OFF_Q = 0;
constexpr uint32_t OFF_K = OFF_Q + Q_BYTES;
constexpr uint32_t OFF_V = OFF_K + 2 * KV_BYTES;
constexpr uint32_t OFF_RAB = OFF_V + 2 * KV_BYTES;
constexpr uint32_t SMEM_BYTES = OFF_RAB + 2 * RAB_BYTES;

/* XOR swizzle of 16-byte chunks so that 8 consecutive rows read at one chunk
 * column (ldmatrix, fragment loads) hit 8 distinct bank groups.  With CPR
 * chunks per row, a 128-byte line holds max(1, 8/CPR) rows. */
template <int CPR> KILN_DEV int swz(int row)
{
    if constexpr (CPR >= 8) return row & 7;
    else if constexpr (CPR == 4) return (row >> 1) & 3;
    else if constexpr (CPR == 2) return (row >> 2) & 1;
    else return 0;
}

template <int CPR> KILN_DEV uint32_t chunk_off(int row, int chunk)
{
    return (uint32_t)(row * CPR * 16 + ((chunk ^ swz<CPR>(row)) << 4));
}

/* Address of chunk c, given the address of chunk 0 of the same row with the
 * row's swizzle already applied (bits 4..6 of the base hold the swizzle). */
template <int CPR> KILN_DEV uint32_t chunk_addr_g(uint32_t base0, int c)
{
    constexpr int SWG = CPR >= 8 ? 8 : CPR;
    return (base0 ^ (uint32_t)((c % SWG) << 4)) + (uint32_t)((c / SWG) * SWG * 16);
}

KILN_DEV uint32_t chunk_addr(uint32_t base0, int c) { return chunk_addr_g<CH>(base0, c); }

/* Copy ROWS rows of D elements (row r at gbase + r * stride) into a swizzled
 * tile; rows >= nvalid are zero-filled.  A rolled loop with running
 * addresses: unrolled, the compiler keeps every chunk's 64-bit offset live
 * across the key loop. */
template <int ROWS>
KILN_DEV void load_tile(uint32_t sdst, const uint16_t *gbase, int64_t stride,
                        int nvalid, int tid)
{
    constexpr int TOTAL = ROWS * CH;
    static_assert(NTHREADS % CH == 0, "threads per row");
    constexpr int RSTEP = NTHREADS / CH;  /* rows per pass */
    const int ch = tid % CH;
    int row = tid / CH;
    const char *src = (const char *)(gbase + (int64_t)row * stride + ch * 8);
    const int64_t step = (int64_t)RSTEP * stride * 2;
#pragma unroll 1
    for (int c = tid; c < TOTAL; c += NTHREADS) {
        const bool ok = row < nvalid;
        kiln_cp_async16(sdst + chunk_off<CH>(row, ch), ok ? (const void *)src : (const void *)gbase,
                        ok ? 16 : 0);
        row += RSTEP;
        src += step;
    }
}

/* Four e4m3 bytes -> four DT values, two packed pairs.  Each byte goes to
 * the top of its 16-bit half (prmt), its magnitude bits shift into DT's
 * exponent and mantissa fields, and one packed multiply by 2^(bias(DT) -
 * bias(e4m3)) restores the scale: exact for every finite e4m3 value,
 * subnormals included.  The NaN codes (0x7f, 0xff) read as +-480. */
KILN_DEV void e4m3x4_widen(uint32_t x, uint32_t &lo, uint32_t &hi)
{
    uint32_t a, b;
    asm("prmt.b32 %0, %1, 0, 0x1404;\n" : "=r"(a) : "r"(x)); /* bytes 0, 1 */
    asm("prmt.b32 %0, %1, 0, 0x3424;\n" : "=r"(b) : "r"(x)); /* bytes 2, 3 */
    if constexpr (DT == KILN_DT_FP16) {
        a = (a & 0x80008000u) | ((a >> 1) & 0x3f803f80u);
        b = (b & 0x80008000u) | ((b >> 1) & 0x3f803f80u);
        asm("mul.rn.f16x2 %0, %0, %1;\n" : "+r"(a) : "r"(0x5c005c00u)); /* 2^8 */
        asm("mul.rn.f16x2 %0, %0, %1;\n" : "+r"(b) : "r"(0x5c005c00u));
    } else {
        a = (a & 0x80008000u) | ((a >> 4) & 0x07f007f0u);
        b = (b & 0x80008000u) | ((b >> 4) & 0x07f007f0u);
        /* x 2^120 + (-0): fma is the packed bf16 product sm_80 has */
        asm("fma.rn.bf16x2 %0, %0, %1, %2;\n" : "+r"(a) : "r"(0x7b807b80u), "r"(0x80008000u));
        asm("fma.rn.bf16x2 %0, %0, %1, %2;\n" : "+r"(b) : "r"(0x7b807b80u), "r"(0x80008000u));
    }
    lo = a;
    hi = b;
}

/* An e4m3 tile of ROWS rows in registers: each thread's 16-byte chunks
 * (16 elements: 16-bit chunks 2c and 2c + 1 of its row).  fp8_issue loads
 * them (rows >= nvalid read 0), fp8_store widens them into the swizzled
 * 16-bit tile at sdst. */
constexpr int CH8 = D / 16; /* 16-byte e4m3 chunks per row */
template <int ROWS> struct Fp8Regs {
    static constexpr int N = (ROWS * CH8 + NTHREADS - 1) / NTHREADS;
    uint32_t v[N][4];
};

template <int ROWS>
KILN_DEV void fp8_issue(Fp8Regs<ROWS> &r, const uint8_t *gbase, int64_t stride, int nvalid,
                        int tid)
{
#pragma unroll
    for (int i = 0; i < Fp8Regs<ROWS>::N; ++i) {
        const int c = tid + i * NTHREADS;
        const int row = c / CH8, ch = c % CH8;
        r.v[i][0] = r.v[i][1] = r.v[i][2] = r.v[i][3] = 0u;
        if (c < ROWS * CH8 && row < nvalid)
            asm volatile("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                         : "=r"(r.v[i][0]), "=r"(r.v[i][1]), "=r"(r.v[i][2]), "=r"(r.v[i][3])
                         : "l"(gbase + (int64_t)row * stride + ch * 16));
    }
}

template <int ROWS>
KILN_DEV void fp8_store(uint32_t sdst, const Fp8Regs<ROWS> &r, int tid)
{
#pragma unroll
    for (int i = 0; i < Fp8Regs<ROWS>::N; ++i) {
        const int c = tid + i * NTHREADS;
        const int row = c / CH8, ch = c % CH8;
        if (c < ROWS * CH8) {
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                uint32_t w[4];
                e4m3x4_widen(r.v[i][2 * half], w[0], w[1]);
                e4m3x4_widen(r.v[i][2 * half + 1], w[2], w[3]);
                asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};\n"
                             ::"r"(sdst + chunk_off<CH>(row, 2 * ch + half)), "r"(w[0]), "r"(w[1]),
                             "r"(w[2]), "r"(w[3])
                             : "memory");
            }
        }
    }
}

/* rab tile: BM rows (query rows m0.., positions i = m0 + r + off) by BN keys
 * starting at n0.  Rows >= nrows and keys >= L are zero-filled. */
KILN_DEV void load_rab(uint32_t sdst, const uint16_t *rbase, int64_t rstride,
                       int nrows, int n0, int L, bool aligned, int tid)
{
    if (aligned) {
        constexpr int TOTAL = BM * RCH;
        static_assert(NTHREADS % RCH == 0, "threads per rab row");
        constexpr int RSTEP = NTHREADS / RCH;
        const int ch = tid % RCH;
        int row = tid / RCH;
        const int j = n0 + ch * 8;
        int bytes = 2 * (L - j);
        bytes = bytes > 16 ? 16 : (bytes < 0 ? 0 : bytes);
        const char *src = (const char *)(rbase + (int64_t)row * rstride + j);
        const int64_t step = (int64_t)RSTEP * rstride * 2;
#pragma unroll 1
        for (int c = tid; c < TOTAL; c += NTHREADS) {
            const bool ok = row < nrows && bytes > 0;
            kiln_cp_async16(sdst + chunk_off<RCH>(row, ch), ok ? (const void *)src : (const void *)rbase,
                            ok ? bytes : 0);
            row += RSTEP;
            src += step;
        }
    } else {
        /* Unaligned rab: element by element, synchronous (slow path). */
#pragma unroll 1
        for (int e = tid; e < BM * BN; e += NTHREADS) {
            const int row = e / BN, col = e % BN;
            const int j = n0 + col;
            uint16_t v = 0;
            if (row < nrows && j < L)
                v = kiln_ld_global_nc_u16(rbase + (int64_t)row * rstride + j);
            kiln_st_shared_u16(sdst + chunk_off<RCH>(row, col >> 3) + (col & 7) * 2, v);
        }
    }
}

} /* namespace kiln_hstu_fwd_impl */

/* The second launch bound (at least 1 CTA per SM) only lifts ptxas's own
 * occupancy target: with the first alone it caps registers low (80 or 128)
 * and spills. */
#ifndef KILN_HSTU_MIN_CTAS
#define KILN_HSTU_MIN_CTAS 1
#endif
extern "C" __global__ void __launch_bounds__(KILN_WARPS * 32, KILN_HSTU_MIN_CTAS)
#if KILN_E4M3
kiln_hstu_fwd(const __grid_constant__ kiln_hstu_fp8_kparams fp)
{
    const kiln_hstu_kparams &p = fp.base;
#else
kiln_hstu_fwd(const __grid_constant__ kiln_hstu_kparams p)
{
#endif
    using namespace kiln_hstu_fwd_impl;
    extern __shared__ __align__(128) unsigned char kiln_smem[];

    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int b = blockIdx.z;
    const int h = blockIdx.y;
    const int m_block = CAUSAL ? (int)(p.num_m_blocks - 1 - blockIdx.x) : (int)blockIdx.x;

    /* ---- sequence bounds and the offsets guard (kiln_hstu_seq.cuh) */
    kiln_seq sq;
    if (!kiln_seq_load<DELTA_Q, CONTEXT, TARGET, LOCAL>(p, b, sq)) {
        kiln_seq_count_bad(p);
        return;
    }
    const int64_t q_beg = sq.q_beg, k_beg = sq.k_beg;
    const int len_q = sq.len_q, L = sq.L;
    const int m0 = m_block * BM;
    if (m0 >= len_q) return;
    const int off = sq.off; /* position of query row r: r + off */
    const int c_ctx = sq.c_ctx, hist_end = sq.hist_end;
    const int group = TARGET ? kiln_max(p.target_group_size, 1) : 1;
    const int wl = LOCAL ? p.window_left : -1;
    const int wr = LOCAL ? p.window_right : -1;

    /* ---- visible key range of this m-block */
    const int rows_here = kiln_min(BM, len_q - m0);
    const int i_min = m0 + off;
    const int i_max = m0 + rows_here - 1 + off;
    int kv_lo, kv_hi;
    kiln_fwd_key_span<CAUSAL, LOCAL, CONTEXT>(i_min, i_max, L, c_ctx, hist_end, wl, wr, kv_lo, kv_hi);
    if constexpr (FUNC) {
        /* keys between the smallest and the largest any row sees; K buffer 1
         * is free until the first prefetch, after the prologue's barrier */
        int lo = L, hi = 0;
        if (tid < rows_here) kiln_func_span(p, q_beg + m0 + tid, L, lo, hi);
        kiln_func_block_span<NWARPS>(lo, hi, kiln_smem_u32(kiln_smem) + OFF_K + KV_BYTES, tid);
        kv_lo = lo;
        kv_hi = hi;
    }
    int n_begin, n_end;
    kiln_key_tiles<BN>(kv_lo, kv_hi, n_begin, n_end);

    /* ---- global bases (64-bit) */
    const uint16_t *qg = (const uint16_t *)p.q + (q_beg + m0) * p.q_row_stride + (int64_t)h * p.q_head_stride;
    const uint16_t *kg = (const uint16_t *)p.k + k_beg * p.k_row_stride + (int64_t)h * p.k_head_stride;
    const uint16_t *vg = (const uint16_t *)p.v + k_beg * p.v_row_stride + (int64_t)h * p.v_head_stride;
    uint16_t *og = (uint16_t *)p.out + (q_beg + m0) * p.out_row_stride + (int64_t)h * p.out_head_stride;
    /* e4m3: the same rows, one byte per element */
    const uint8_t *qg8 = (const uint8_t *)p.q + (q_beg + m0) * p.q_row_stride + (int64_t)h * p.q_head_stride;
    const uint8_t *kg8 = (const uint8_t *)p.k + k_beg * p.k_row_stride + (int64_t)h * p.k_head_stride;
    const uint8_t *vg8 = (const uint8_t *)p.v + k_beg * p.v_row_stride + (int64_t)h * p.v_head_stride;
    float dqk = 1.f, dsv = 1.f; /* e4m3: descale_q * descale_k, descale_v */
#if KILN_E4M3
    {
        const uint64_t di = kiln_fp8_descale_index(fp, b, h);
        if (fp.descale_q) dqk = ((const float *)fp.descale_q)[di];
        if (fp.descale_k) dqk *= ((const float *)fp.descale_k)[di];
        if (fp.descale_v) dsv = ((const float *)fp.descale_v)[di];
    }
#endif
    const uint16_t *rg = nullptr;
    bool rab_aligned = true;
    if (RAB) {
        const int rh = p.rab_heads > 0 ? h % p.rab_heads : 0;
        rg = (const uint16_t *)p.rab + (int64_t)b * p.rab_batch_stride + (int64_t)rh * p.rab_head_stride +
             (int64_t)i_min * p.rab_row_stride;
        rab_aligned = ((((uint64_t)rg) & 15) == 0) && ((p.rab_row_stride & 7) == 0);
    }

    const uint32_t sbase = kiln_smem_u32(kiln_smem);
    const uint32_t sQ = sbase + OFF_Q;

    /* ---- prologue: Q and the first key tile */
    if constexpr (E4M3) {
        {
            Fp8Regs<BM> rq;
            fp8_issue<BM>(rq, qg8, p.q_row_stride, rows_here, tid);
            fp8_store<BM>(sQ, rq, tid);
        }
        if (n_begin < n_end) {
            const int n0 = n_begin * BN;
            Fp8Regs<BN> rk, rv;
            fp8_issue<BN>(rk, kg8 + (int64_t)n0 * p.k_row_stride, p.k_row_stride, L - n0, tid);
            fp8_issue<BN>(rv, vg8 + (int64_t)n0 * p.v_row_stride, p.v_row_stride, L - n0, tid);
            fp8_store<BN>(sbase + OFF_K, rk, tid);
            fp8_store<BN>(sbase + OFF_V, rv, tid);
        }
    } else {
        load_tile<BM>(sQ, qg, p.q_row_stride, rows_here, tid);
        if (n_begin < n_end) {
            const int n0 = n_begin * BN;
            load_tile<BN>(sbase + OFF_K, kg + (int64_t)n0 * p.k_row_stride, p.k_row_stride, L - n0, tid);
            load_tile<BN>(sbase + OFF_V, vg + (int64_t)n0 * p.v_row_stride, p.v_row_stride, L - n0, tid);
        }
    }
    if (RAB && n_begin < n_end)
        load_rab(sbase + OFF_RAB, rg, p.rab_row_stride, rows_here, n_begin * BN, L, rab_aligned, tid);
    kiln_cp_async_commit();
    kiln_cp_async_wait<0>();
    __syncthreads();

    const int g = lane >> 2;  /* fragment row group */
    const int tq = lane & 3;  /* fragment column pair */
    const int wrow0 = warp * WROWS;

    /* Per-lane ldmatrix addresses.  The swizzle term is lane-constant (see
     * swz) and lives in address bits 4..6, so the address of chunk c is
     * base ^ ((c % SWG) << 4) + (c / SWG) * SWG * 16: one LOP per ldmatrix,
     * no per-chunk registers.  Tile bases and row pitches are multiples of
     * 128 bytes (64 with D = 32, where SWG = 4 keeps to bits 4..5). */
    const uint32_t q_lane = sQ + (uint32_t)((wrow0 + (lane & 15)) * CH * 16) +
                            (uint32_t)(((lane >> 4) ^ swz<CH>(lane & 15)) << 4);
    const int k_row = (lane & 7) + ((lane >> 4) << 3);
    const uint32_t k_lane = (uint32_t)(k_row * CH * 16) +
                            (uint32_t)((((lane >> 3) & 1) ^ swz<CH>(k_row)) << 4);
    const uint32_t v_lane = (uint32_t)((lane & 15) * CH * 16) +
                            (uint32_t)(((lane >> 4) ^ swz<CH>(lane & 15)) << 4);

    /* rab fragment reads: row wrow0 + g (+ 8 hf + 16 mt), bytes 4 tq of chunk nt */
    const uint32_t r_lane = (uint32_t)((wrow0 + g) * RCH * 16) + (uint32_t)(swz<RCH>(g) << 4) +
                            (uint32_t)(4 * tq);

    uint32_t qreg[Q_IN_REGS ? MT : 1][Q_IN_REGS ? KSTEPS : 1][4];
    if constexpr (Q_IN_REGS) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int ks = 0; ks < KSTEPS; ++ks)
                kiln_ldmatrix_x4(qreg[mt][ks], chunk_addr(q_lane, 2 * ks) + (uint32_t)(mt * 16 * CH * 16));
    }

    float acc[MT][ON][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int dn = 0; dn < ON; ++dn)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[mt][dn][e] = 0.f;

    /* e4m3 without rab: descale_q * descale_k folds into alpha */
    const float half_alpha = 0.5f * p.alpha * (RAB ? 1.f : dqk);

    for (int n = n_begin; n < n_end; ++n) {
        const int buf = (n - n_begin) & 1;
        const int n0 = n * BN;
        const uint32_t nb = (uint32_t)(buf ^ 1);

        /* prefetch the next key tile into the other buffer (e4m3: into
         * registers, widened into it after this tile) */
        Fp8Regs<BN> fk, fv;
        if (n + 1 < n_end) {
            const int n1 = n0 + BN;
            if constexpr (E4M3) {
                fp8_issue<BN>(fk, kg8 + (int64_t)n1 * p.k_row_stride, p.k_row_stride, L - n1, tid);
                fp8_issue<BN>(fv, vg8 + (int64_t)n1 * p.v_row_stride, p.v_row_stride, L - n1, tid);
            } else {
                load_tile<BN>(sbase + OFF_K + nb * KV_BYTES, kg + (int64_t)n1 * p.k_row_stride,
                              p.k_row_stride, L - n1, tid);
                load_tile<BN>(sbase + OFF_V + nb * KV_BYTES, vg + (int64_t)n1 * p.v_row_stride,
                              p.v_row_stride, L - n1, tid);
            }
            if (RAB)
                load_rab(sbase + OFF_RAB + nb * RAB_BYTES, rg, p.rab_row_stride, rows_here, n1, L,
                         rab_aligned, tid);
        }
        kiln_cp_async_commit();

        const uint32_t sK = sbase + OFF_K + (uint32_t)buf * KV_BYTES + k_lane;
        const uint32_t sV = sbase + OFF_V + (uint32_t)buf * KV_BYTES + v_lane;

        /* ---- S = Q K^T */
        float s[MT][SN][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int nt = 0; nt < SN; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) s[mt][nt][e] = 0.f;

#pragma unroll
        for (int ks = 0; ks < KSTEPS; ++ks) {
            uint32_t qa[MT][4];
            if constexpr (Q_IN_REGS) {
#pragma unroll
                for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                    for (int e = 0; e < 4; ++e) qa[mt][e] = qreg[mt][ks][e];
            } else {
#pragma unroll
                for (int mt = 0; mt < MT; ++mt)
                    kiln_ldmatrix_x4(qa[mt], chunk_addr(q_lane, 2 * ks) + (uint32_t)(mt * 16 * CH * 16));
            }
#pragma unroll
            for (int np = 0; np < SN / 2; ++np) {
                uint32_t kb[4];
                kiln_ldmatrix_x4(kb, chunk_addr(sK, 2 * ks) + (uint32_t)(np * 16 * CH * 16));
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    kiln_mma16816<DT>(s[mt][2 * np], qa[mt], kb[0], kb[1]);
                    kiln_mma16816<DT>(s[mt][2 * np + 1], qa[mt], kb[2], kb[3]);
                }
            }
        }

        /* e4m3: the next K tile's registers are free before P V needs its
         * accumulators' (head dim 256 on sm_80 spilled otherwise) */
        if constexpr (E4M3) {
            if (n + 1 < n_end) fp8_store<BN>(sbase + OFF_K + nb * KV_BYTES, fk, tid);
        }

        /* ---- rab, alpha, SiLU (inv_scaling is applied at the end) */
        if constexpr (RAB) {
            if constexpr (E4M3) {
#pragma unroll
                for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                    for (int nt = 0; nt < SN; ++nt)
#pragma unroll
                        for (int e = 0; e < 4; ++e) s[mt][nt][e] *= dqk;
            }
            const uint32_t sR = sbase + OFF_RAB + (uint32_t)buf * RAB_BYTES + r_lane;
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int hf = 0; hf < 2; ++hf) {
                    const uint32_t rrow = sR + (uint32_t)((mt * 16 + 8 * hf) * RCH * 16);
#pragma unroll
                    for (int nt = 0; nt < SN; ++nt) {
                        const uint32_t v = kiln_ld_shared_u32(chunk_addr_g<RCH>(rrow, nt));
                        float r0, r1;
                        kiln_unpack2<DT>(v, r0, r1);
                        s[mt][nt][2 * hf] += r0;
                        s[mt][nt][2 * hf + 1] += r1;
                    }
                }
        }
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int nt = 0; nt < SN; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) s[mt][nt][e] = kiln_silu_half(half_alpha * s[mt][nt][e]);

        /* ---- per-element mask, only on tiles the mask cuts */
        bool full = n0 + BN <= L;
        if (CAUSAL) full = full && n0 + BN - 1 <= i_min;
        if (LOCAL) {
            if (wl >= 0) full = full && n0 >= i_max - wl;
            if (wr >= 0) full = full && n0 + BN - 1 <= i_min + wr;
        }
        if (TARGET) full = full && n0 + BN <= hist_end;
        if (FUNC) full = false;
        if (!full) {
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int hf = 0; hf < 2; ++hf) {
                    const int i = m0 + wrow0 + mt * 16 + g + 8 * hf + off;
                    /* valid j: [lo1, hi1) or [lo2, hi2) */
                    int lo1 = 0, hi1 = L, lo2 = 0, hi2 = 0;
                    if (CAUSAL) hi1 = kiln_min(hi1, i + 1);
                    if (LOCAL) {
                        if (wl >= 0) lo1 = kiln_max(lo1, i - wl);
                        if (wr >= 0) hi1 = kiln_min(hi1, i + wr + 1);
                    }
                    if (CONTEXT && i < c_ctx) hi1 = kiln_max(hi1, hist_end);
                    if (TARGET && i >= hist_end) {
                        hi1 = kiln_min(hi1, hist_end);
                        lo2 = hist_end + ((i - hist_end) / group) * group;
                        hi2 = i + 1;
                    }
                    lo1 -= n0 + 2 * tq; hi1 -= n0 + 2 * tq;
                    lo2 -= n0 + 2 * tq; hi2 -= n0 + 2 * tq;
                    uint32_t fbits = 0; /* FUNC: bit 2 nt + e for key n0 + 2 tq + 8 nt + e */
                    if constexpr (FUNC) {
                        const int r = i - off; /* local query row: func's index */
                        if (r < len_q) fbits = kiln_func_bits<2 * SN>(p, q_beg + r, L, n0 + 2 * tq);
                    }
#pragma unroll
                    for (int nt = 0; nt < SN; ++nt)
#pragma unroll
                        for (int e = 0; e < 2; ++e) {
                            const int jj = nt * 8 + e;
                            bool ok = jj >= lo1 && jj < hi1;
                            if (TARGET) ok = ok || (jj >= lo2 && jj < hi2);
                            if (FUNC) ok = (fbits >> (2 * nt + e)) & 1u;
                            if (!ok) s[mt][nt][2 * hf + e] = 0.f;
                        }
                }
        }

        /* ---- O += P V, P straight from the S registers */
#pragma unroll
        for (int kk = 0; kk < PSTEPS; ++kk) {
            uint32_t pa[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                pa[mt][0] = kiln_pack2<DT>(s[mt][2 * kk][0], s[mt][2 * kk][1]);
                pa[mt][1] = kiln_pack2<DT>(s[mt][2 * kk][2], s[mt][2 * kk][3]);
                pa[mt][2] = kiln_pack2<DT>(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
                pa[mt][3] = kiln_pack2<DT>(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
            }
#pragma unroll
            for (int dp = 0; dp < ON / 2; ++dp) {
                uint32_t vb[4];
                kiln_ldmatrix_x4_trans(vb, chunk_addr(sV, 2 * dp) + (uint32_t)(kk * 16 * CH * 16));
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    kiln_mma16816<DT>(acc[mt][2 * dp], pa[mt], vb[0], vb[1]);
                    kiln_mma16816<DT>(acc[mt][2 * dp + 1], pa[mt], vb[2], vb[3]);
                }
            }
        }

        if constexpr (E4M3) {
            if (n + 1 < n_end) fp8_store<BN>(sbase + OFF_V + nb * KV_BYTES, fv, tid);
        }
        kiln_cp_async_wait<0>();
        __syncthreads();
    }

    /* ---- epilogue: scale, pack, stage this warp's rows in its Q rows, store */
    const float inv_scaling = p.inv_scaling * dsv;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
            const int row = wrow0 + mt * 16 + g + 8 * hf;
#pragma unroll
            for (int dn = 0; dn < ON; ++dn) {
                const uint32_t v = kiln_pack2<DT>(acc[mt][dn][2 * hf] * inv_scaling,
                                                  acc[mt][dn][2 * hf + 1] * inv_scaling);
                kiln_st_shared_u32(sQ + chunk_off<CH>(row, dn) + 4 * tq, v);
            }
        }
    __syncwarp();
    constexpr int WCHUNKS = WROWS * CH;
#pragma unroll
    for (int it = 0; it < (WCHUNKS + 31) / 32; ++it) {
        const int c = lane + it * 32;
        if (WCHUNKS % 32 == 0 || c < WCHUNKS) {
            const int row = wrow0 + c / CH, ch = c % CH;
            if (row < rows_here) {
                uint32_t v[4];
                kiln_ld_shared_v4(sQ + chunk_off<CH>(row, ch), v);
                kiln_st_global_v4(og + (int64_t)row * p.out_row_stride + ch * 8, v);
            }
        }
    }
}
