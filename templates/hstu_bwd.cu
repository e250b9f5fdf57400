/* hstu_bwd.cu -- HSTU attention backward (pointwise SiLU, no softmax).
 *
 * With x = q_i . k_j + rab(i, j), s = alpha * x, on valid pairs
 * (SPEC.md section 1, kiln.h):
 *   p   = silu(s) * inv_scaling              dv_j += p_ij do_i
 *   dp  = do_i . v_j                          ds_ij = dp silu'(s) alpha inv_scaling
 *   dk_j += ds_ij q_i    dq_i += ds_ij k_j    drab(b, h % rab_heads, pos i, j) += ds_ij
 *
 * Specialized by a prelude of #defines (KILN_ARCH, KILN_DTYPE, KILN_HEAD_DIM,
 * KILN_BLOCK_M, KILN_BLOCK_N, KILN_WARPS, KILN_CAUSAL, KILN_LOCAL,
 * KILN_CONTEXT, KILN_TARGET, KILN_DELTA_Q, KILN_RAB, KILN_DRAB,
 * KILN_DETERMINISTIC, and KILN_FUNC for NVIDIA's arbitrary mask) followed by
 * an #include of this file.  sm_80+.
 *
 * Entries (one kiln_hstu_bwd_kparams by value each):
 *  kiln_hstu_bwd_main     grid (num_n_blocks, G, batch), KILN_WARPS*32 threads,
 *                         dynamic smem kiln__hstu_bwd_smem(0, ...).  G is
 *                         num_heads, or rab_heads when KILN_DRAB and
 *                         rab_heads < num_heads (the CTA then loops over the
 *                         heads h == blockIdx.y mod rab_heads).
 *  kiln_hstu_bwd_dq       grid (num_m_blocks, num_heads, batch), same block,
 *                         smem kiln__hstu_bwd_smem(1, ...); KILN_DETERMINISTIC
 *                         only (an empty kernel otherwise).
 *  kiln_hstu_bwd_convert  256 threads, any grid, no smem: dq_accum -> dq and
 *                         drab_accum -> drab for the valid sequences.
 *
 * Main kernel, FA2 style: a CTA owns BLOCK_N keys (K, V resident in smem) and
 * streams the query blocks that can see them (Q, dO and the rab tile, cp.async
 * double buffer).  Each warp owns 16 key rows.  With DS = 1 (head dims up to
 * 128) a warp computes S^T = K Q^T and dP^T = V dO^T for its 16 keys and
 * BLOCK_M queries, in chunks of CW queries; P^T and dS^T go from the
 * accumulator registers straight into the A operand of dV += P^T dO and
 * dK += dS^T Q.  With DS = 2 (head dim 256) two warps share 16 keys: each
 * computes S^T, dP^T for half of the queries, the halves meet in smem (P^T,
 * dS^T as 16-bit) and each warp then accumulates dV, dK for half of the head
 * dim.  dS^T also goes to smem (double buffered) for dQ = dS K and drab: both
 * run for query block i at the start of iteration i + 1, so that one barrier
 * per block suffices; dQ tiles are added to the fp32 dq_accum with red.global
 * (v4 on sm_90).  Scale factors stay out of the 16-bit operands: P' = silu(s),
 * dS' = dP * 2 silu'(s); inv_scaling and alpha * inv_scaling / 2 are applied
 * to fp32 results.  Shared-memory tiles are row-major with 16 bytes of padding
 * per row (conflict-free ldmatrix, immediate offsets).
 *
 * dq kernel (deterministic mode): a CTA owns BLOCK_M queries, streams K, V
 * (and rab) tiles of BNQ keys, recomputes S, dP, dS and accumulates dQ = dS K
 * in registers; warps are split WQ (16 query rows each) by WK (key slices),
 * and the WK partial sums are added in a fixed order through smem.
 *
 * Requirements (checked by the runtime): q, k, v, dout, dq, dk, dv 16-byte
 * aligned with row and head strides multiples of 8 elements and the last
 * dimension contiguous; dq_accum, drab_accum 16-byte aligned; rab and drab
 * only 2-byte aligned (16-byte alignment and row strides multiple of 8 take a
 * faster path). */
#include "kiln_bwd_common.cuh"
#include "hstu_bwd_params.h"
#include "kiln_func.cuh"

#if !defined(KILN_DTYPE) || !defined(KILN_HEAD_DIM) || !defined(KILN_BLOCK_M) || \
    !defined(KILN_BLOCK_N) || !defined(KILN_WARPS)
#error "hstu_bwd.cu: the specialization prelude is missing"
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
#ifndef KILN_DRAB
#define KILN_DRAB 0
#endif
#ifndef KILN_DETERMINISTIC
#define KILN_DETERMINISTIC 0
#endif
#ifndef KILN_ARCH
#define KILN_ARCH 800
#endif
#if KILN_ARCH < 800
#error "hstu_bwd.cu needs sm_80 or newer"
#endif
#if KILN_DRAB && !KILN_RAB
#error "KILN_DRAB needs KILN_RAB"
#endif

namespace kiln_hstu_bwd_impl {
using namespace kiln_bwd;

constexpr int DT = KILN_DTYPE;
constexpr int D = KILN_HEAD_DIM;
constexpr int BM = KILN_BLOCK_M;
constexpr int BN = KILN_BLOCK_N;
constexpr int NW = KILN_WARPS;
constexpr int NT = NW * 32;
constexpr bool CAUSAL = KILN_CAUSAL != 0;
constexpr bool LOCAL = KILN_LOCAL != 0;
constexpr bool CONTEXT = KILN_CONTEXT != 0;
constexpr bool TARGET = KILN_TARGET != 0;
constexpr bool DELTA_Q = KILN_DELTA_Q != 0;
constexpr bool RAB = KILN_RAB != 0;
constexpr bool DRAB = KILN_DRAB != 0;
constexpr bool DETERM = KILN_DETERMINISTIC != 0;
constexpr bool FUNC = KILN_FUNC != 0;

constexpr int KST = D / 16;              /* k16 steps over the head dim */
constexpr uint32_t PD = pitch<D>();      /* q, k, v, do tile rows (bytes) */
/* main kernel */
constexpr int DS = D == 256 ? 2 : 1;     /* warps sharing 16 key rows */
constexpr int BMW = BM / DS;             /* S^T query columns per warp */
constexpr int DW = D / DS;               /* dV, dK columns per warp */
constexpr int DNT = DW / 8;              /* n8 tiles of dV, dK per warp */
#ifdef KILN_BWD_KU /* tuning overrides, standalone tests only */
constexpr int KU = KILN_BWD_KU;
#else
constexpr int KU = 4; /* unroll of the k loop of S^T, dP^T */
#endif
#ifdef KILN_BWD_CW
constexpr int CW0 = KILN_BWD_CW;
#else
/* query columns per chunk: 64, or 32 next to 128 dV + dK accumulator
 * registers when rab or a context / target / local mask adds live state */
constexpr int CW0 = (DW >= 128 && (KILN_RAB || KILN_CONTEXT || KILN_TARGET || KILN_LOCAL || KILN_FUNC)) ? 32
                                                                                                      : 64;
#endif
constexpr int CW = CW0 < BMW ? CW0 : BMW;
constexpr int CNT = CW / 8;              /* n8 tiles of S^T per chunk */
constexpr int NCHUNK = BMW / CW;
constexpr uint32_t PS = pitch<BM>();     /* dS^T, P^T tile rows */
constexpr uint32_t PR = pitch<BN>();     /* rab tile rows */
constexpr bool DS_SMEM = !DETERM || DS == 2 || DRAB; /* dS'^T goes to smem */
constexpr bool DEFER = !DETERM || DRAB;                /* dQ / drab of a block run one iteration later */
/* dQ phase: warp tiles of DQ_MT m16 tiles (queries) x DQ_COLS columns */
constexpr int DQ_MT = (BM >= 32 && D * (BM / 32) >= 16 * NW) ? 2 : 1;
constexpr int DQ_WM = BM / (16 * DQ_MT); /* warps along queries */
constexpr int DQ_WN = NW / DQ_WM;        /* warps along the head dim */
constexpr int DQ_COLS = D / DQ_WN;
constexpr int DQ_NT = DQ_COLS / 8;
constexpr int DQ_CNT0 = 8 / DQ_MT;       /* 32 accumulator registers per pass */
constexpr int DQ_CNT = DQ_NT < DQ_CNT0 ? DQ_NT : DQ_CNT0; /* n8 tiles per pass */
constexpr int DQ_PASSES = DQ_NT / DQ_CNT;
/* dq kernel */
constexpr int WQ = BM / 16;              /* warps along queries (16 rows each) */
constexpr int WK = NW / WQ;              /* warps along keys */
constexpr int BNQ0 = BN < 64 ? BN : 64;
constexpr int BNQ = 16 * WK > BNQ0 ? 16 * WK : BNQ0; /* key tile */
constexpr int KPW = BNQ / WK;            /* keys per warp */
constexpr int KNT = KPW / 8;
constexpr int ONT = D / 8;
constexpr uint32_t PRQ = pitch<BNQ>();
constexpr bool QF_REGS = D <= 128; /* dq kernel keeps Q, dO fragments in registers */

static_assert(DT == KILN_DT_FP16 || DT == KILN_DT_BF16, "dtype");
static_assert(D == 32 || D == 64 || D == 128 || D == 256, "head dim");
static_assert(NW == 2 || NW == 4 || NW == 8, "warps");
static_assert(BN == 16 * NW / DS, "BLOCK_N must be 16 * WARPS (8 * WARPS for head dim 256)");
static_assert(BM % (16 * DS) == 0 && BM >= 16 && BM <= 16 * NW && BM <= 128, "BLOCK_M");
static_assert(DNT % 2 == 0 && CNT % 2 == 0 && CNT <= 8 && NCHUNK * CW == BMW, "tiles");
static_assert(DQ_WM * DQ_WN == NW && DQ_WM * 16 * DQ_MT == BM && DQ_COLS >= 16 && DQ_NT % DQ_CNT == 0 &&
                  DQ_CNT % 2 == 0, "dQ tiles");
static_assert(WQ * WK == NW && KPW % 16 == 0 && KPW * WK == BNQ && KNT <= 8, "dq kernel tiles");
static_assert(!(CONTEXT || TARGET) || CAUSAL, "context/target need causal");
static_assert(!FUNC || !(CAUSAL || LOCAL || CONTEXT || TARGET), "func is a mask of its own");
static_assert(!FUNC || BN <= 128, "func: a key tile's row mask is the 16-byte pad of a rab row");
static_assert(2 * KNT <= 32, "func slots per row (dq kernel)");

/* main kernel smem: K | V | Q[2] | dO[2] | dS^T | P^T (DS = 2) | rab[2] */
constexpr uint32_t KV_BYTES = BN * PD;
constexpr uint32_t QT_BYTES = BM * PD;
constexpr uint32_t DS_BYTES = BN * PS;
constexpr uint32_t R_BYTES = BM * PR;
constexpr uint32_t OFF_K = 0;
constexpr uint32_t OFF_V = OFF_K + KV_BYTES;
constexpr uint32_t QD_BYTES = 2 * QT_BYTES; /* one stage: Q then dO */
constexpr uint32_t OFF_Q = OFF_V + KV_BYTES; /* stage b: Q at OFF_Q + b * QD_BYTES */
constexpr uint32_t OFF_DO = OFF_Q + QT_BYTES; /*          dO at OFF_DO + b * QD_BYTES */
constexpr uint32_t OFF_DS = OFF_Q + 2 * QD_BYTES; /* dS^T of block it at OFF_DS + (it & 1) * DS_BYTES */
constexpr uint32_t OFF_P = OFF_DS + 2 * DS_BYTES;
constexpr uint32_t OFF_R = OFF_P + (DS == 2 ? DS_BYTES : 0);
constexpr uint32_t SMEM_MAIN = OFF_R + 2 * R_BYTES;
/* dq kernel smem: Q | dO | K[2] | V[2] | rab[2]; the fp32 partial sums of dQ
 * reuse K and V at the end */
constexpr uint32_t KVQ_BYTES = BNQ * PD;
constexpr uint32_t RQ_BYTES = BM * PRQ;
constexpr uint32_t QOFF_Q = 0;
constexpr uint32_t QOFF_DO = QT_BYTES;
constexpr uint32_t QOFF_K = 2 * QT_BYTES;
constexpr uint32_t QOFF_V = QOFF_K + 2 * KVQ_BYTES;
constexpr uint32_t QOFF_R = QOFF_V + 2 * KVQ_BYTES;
constexpr uint32_t SMEM_DQ = QOFF_R + 2 * RQ_BYTES;
static_assert((WK - 1) * WQ * 16 * D * 4 <= 4 * KVQ_BYTES, "dq reduction space");

/* The mask's intervals and tile ranges (kiln_bwd_common.cuh). */
using M = Mask<CAUSAL, LOCAL, CONTEXT, TARGET, BM>;

template <int NTL> KILN_DEV void zero_acc(float (&acc)[NTL][4])
{
#pragma unroll
    for (int i = 0; i < NTL; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[i][e] = 0.f;
}

/* acc[NTL][4] += A B^T over the head dim: A = 16 rows at a_addr, B = NTL * 8
 * rows at b_addr (both row-major q/k/v/do tiles, lane offsets included). */
template <int NTL>
KILN_DEV void gemm_rows(float (&acc)[NTL][4], uint32_t a_addr, uint32_t b_addr)
{
    /* unrolled by 4 only: fully unrolled, ptxas hoists the fragment loads of
     * every k step and runs out of registers next to the dV, dK accumulators */
#pragma unroll KU
    for (int ks = 0; ks < KST; ++ks) {
        uint32_t a[4];
        kiln_ldmatrix_x4(a, a_addr + (uint32_t)(ks * 32));
#pragma unroll
        for (int np = 0; np < NTL / 2; ++np) {
            uint32_t bb[4];
            kiln_ldmatrix_x4(bb, b_addr + (uint32_t)(np * 16 * PD + ks * 32));
            kiln_mma16816<DT>(acc[2 * np], a, bb[0], bb[1]);
            kiln_mma16816<DT>(acc[2 * np + 1], a, bb[2], bb[3]);
        }
    }
}

/* As gemm_rows, with the A fragments of all k steps in registers. */
template <int NTL>
KILN_DEV void gemm_regs(float (&acc)[NTL][4], const uint32_t (&af)[KST][4], uint32_t b_addr)
{
#pragma unroll
    for (int ks = 0; ks < KST; ++ks) {
#pragma unroll
        for (int np = 0; np < NTL / 2; ++np) {
            uint32_t bb[4];
            kiln_ldmatrix_x4(bb, b_addr + (uint32_t)(np * 16 * PD + ks * 32));
            kiln_mma16816<DT>(acc[2 * np], af[ks], bb[0], bb[1]);
            kiln_mma16816<DT>(acc[2 * np + 1], af[ks], bb[2], bb[3]);
        }
    }
}

/* acc[NTL][4] += A (one 16 x 16 fragment) * B, B = 16 rows x NTL * 8 columns
 * of a row-major q/k/v/do tile at b_addr (ldmatrix.trans). */
template <int NTL>
KILN_DEV void mma_rows_trans(float (&acc)[NTL][4], const uint32_t a[4], uint32_t b_addr)
{
#pragma unroll
    for (int dp = 0; dp < NTL / 2; ++dp) {
        uint32_t bb[4];
        kiln_ldmatrix_x4_trans(bb, b_addr + (uint32_t)(dp * 32));
        kiln_mma16816<DT>(acc[2 * dp], a, bb[0], bb[1]);
        kiln_mma16816<DT>(acc[2 * dp + 1], a, bb[2], bb[3]);
    }
}

/* Per-lane roles and shared-memory offsets of the main kernel.  Built inside
 * the query-block loop from an opaque copy of the thread index, so that the
 * compiler recomputes these cheap values where they are used instead of
 * keeping a dozen of them live next to the dV, dK accumulators. */
struct LaneMap {
    int g, tq;         /* fragment row group, column pair */
    int kr0, dc0, qc0; /* key rows, dV/dK columns, S^T query columns of the warp */
    int brow;          /* ldmatrix row of the lane for B operands */
    int half;          /* ldmatrix 8-column half of the lane for B operands */
    uint32_t a_lane;   /* K/V rows kr0.. as A operand (plus OFF_K / OFF_V) */
    uint32_t b_lane;   /* Q/dO rows as B operand (plus the tile base) */
    uint32_t t_lane;   /* Q/dO rows as trans B operand, columns dc0.. */
    uint32_t st_lane;  /* dS^T / P^T fragment stores (plus OFF_DS / OFF_P) */
};

KILN_DEV uint32_t opaque(uint32_t x)
{
    uint32_t y;
    asm volatile("mov.b32 %0, %1;\n" : "=r"(y) : "r"(x));
    return y;
}

KILN_DEV LaneMap lane_map(int tid, uint32_t sbase)
{
    LaneMap m;
    const int lane = tid & 31, warp = tid >> 5;
    m.g = lane >> 2;
    m.tq = lane & 3;
    m.kr0 = (warp / DS) * 16;
    m.qc0 = (warp % DS) * BMW;
    m.dc0 = (warp % DS) * DW;
    m.brow = (lane & 7) + ((lane >> 4) << 3);
    m.half = (lane >> 3) & 1;
    m.a_lane = sbase + (uint32_t)(m.kr0 + (lane & 15)) * PD + (uint32_t)((lane >> 4) * 16);
    m.b_lane = (uint32_t)m.brow * PD + (uint32_t)(((lane >> 3) & 1) * 16);
    m.t_lane = (uint32_t)(lane & 15) * PD + (uint32_t)((lane >> 4) * 16) + (uint32_t)(m.dc0 * 2);
    m.st_lane = sbase + (uint32_t)(m.kr0 + m.g) * PS + (uint32_t)(4 * m.tq);
    return m;
}

} /* namespace kiln_hstu_bwd_impl */

/* Dynamic shared memory of kiln_hstu_bwd_main and kiln_hstu_bwd_dq, for
 * checks against kiln__hstu_bwd_smem (cuModuleGetGlobal). */
extern "C" __device__ const uint32_t kiln_hstu_bwd_smem_bytes[2] = {kiln_hstu_bwd_impl::SMEM_MAIN,
                                                                    kiln_hstu_bwd_impl::SMEM_DQ};

/* ===================================================================== main */
extern "C" __global__ void __launch_bounds__(KILN_WARPS * 32, 1)
kiln_hstu_bwd_main(const __grid_constant__ kiln_hstu_bwd_kparams p)
{
    using namespace kiln_hstu_bwd_impl;
    extern __shared__ __align__(128) unsigned char kiln_smem[];
    const kiln_hstu_kparams &f = p.f;
    const int tid = threadIdx.x;
    const int b = blockIdx.z;

    kiln_seq s;
    if (!kiln_seq_load<DELTA_Q, CONTEXT, TARGET, LOCAL>(f, b, s)) {
        if (f.debug_counter != 0 && blockIdx.x == 0 && blockIdx.y == 0 && tid == 0)
            kiln_red_add_u64(f.debug_counter, 1ull);
        return;
    }
    const int L = s.L, len_q = s.len_q, off = s.off;
    const int n0 = blockIdx.x * BN;
    if (n0 >= L) return;
    const int keys_here = kiln_min(BN, L - n0);
    const MRange mr = M::visit_range(s, n0, keys_here);

    const uint32_t sbase = kiln_smem_u32(kiln_smem);
    const float ha = 0.5f * f.alpha;
    const float sds = ha * f.inv_scaling; /* dS = dS' * sds, dS' = dP * 2 silu' */

    int h_step = f.num_heads;
    bool drab_acc = false;
    if constexpr (DRAB) {
        if (f.rab_heads > 0 && f.rab_heads < f.num_heads) {
            h_step = f.rab_heads;
            drab_acc = true;
        }
    }

#pragma unroll 1
    for (int h = blockIdx.y; h < f.num_heads; h += h_step) {
        const int rh = f.rab_heads > 0 ? h % f.rab_heads : 0;

        auto load_m = [&](int bf, int mm) {
            const int mrow = mm * BM;
            const int rows = kiln_min(BM, len_q - mrow);
            load_rows<BM, D, NT>(sbase + OFF_Q + (uint32_t)bf * QD_BYTES,
                                 (const uint16_t *)f.q + (s.q_beg + mrow) * f.q_row_stride +
                                     (int64_t)h * f.q_head_stride,
                                 f.q_row_stride, rows, tid);
            load_rows<BM, D, NT>(sbase + OFF_DO + (uint32_t)bf * QD_BYTES,
                                 (const uint16_t *)p.dout + (s.q_beg + mrow) * p.dout_row_stride +
                                     (int64_t)h * p.dout_head_stride,
                                 p.dout_row_stride, rows, tid);
            if constexpr (RAB) {
                const uint16_t *rg = (const uint16_t *)f.rab + (int64_t)b * f.rab_batch_stride +
                                     (int64_t)rh * f.rab_head_stride + (int64_t)(off + mrow) * f.rab_row_stride;
                const bool al = ((((uint64_t)rg) & 15) == 0) && ((f.rab_row_stride & 7) == 0);
                load_rab<BM, BN, NT>(sbase + OFF_R + (uint32_t)bf * R_BYTES, rg, f.rab_row_stride, rows, n0, L, al,
                                     tid);
            }
        };

        load_rows<BN, D, NT>(sbase + OFF_K,
                             (const uint16_t *)f.k + (s.k_beg + n0) * f.k_row_stride + (int64_t)h * f.k_head_stride,
                             f.k_row_stride, keys_here, tid);
        load_rows<BN, D, NT>(sbase + OFF_V,
                             (const uint16_t *)f.v + (s.k_beg + n0) * f.v_row_stride + (int64_t)h * f.v_head_stride,
                             f.v_row_stride, keys_here, tid);
        /* FUNC: every query block is a candidate; func_scan writes the
         * block's row masks of this key tile into the 16-byte pads of rab
         * stage bf's rows (bit c of row q: key n0 + c) and tells whether any
         * row sees a key of the tile.  It holds a barrier, so every thread
         * calls it, at points where stage bf is not in use. */
        const int nmb = FUNC ? (len_q + BM - 1) / BM : 0;
        auto func_scan = [&](int bf, int mm) -> bool {
            uint32_t w[4] = {0u, 0u, 0u, 0u};
            if (tid < BM) {
                const int r = mm * BM + tid;
                if (r < len_q) kiln_func_tile_words(f, s.q_beg + r, n0, n0 + keys_here, w);
                const uint32_t pad = sbase + OFF_R + (uint32_t)bf * R_BYTES + (uint32_t)tid * PR + 2 * BN;
#pragma unroll
                for (int i = 0; i < 4; ++i) kiln_st_shared_u32(pad + 4 * i, w[i]);
            }
            return kiln_func_sync_or((w[0] | w[1] | w[2] | w[3]) != 0u);
        };
        /* the first block from mm on that sees the tile (FUNC), else nmb */
        auto func_next = [&](int bf, int mm) -> int {
#pragma unroll 1
            while (mm < nmb && !func_scan(bf, mm)) ++mm;
            return mm;
        };
        auto visit = [&](int mm) -> bool { return FUNC ? mm < nmb : mr.valid(mm); };
        int m = FUNC ? func_next(0, 0) : mr.first();
        if (visit(m)) load_m(0, m);
        kiln_cp_async_commit();
        kiln_cp_async_wait<0>();
        __syncthreads();

        float dv[DNT][4], dk[DNT][4];
        zero_acc(dv);
        zero_acc(dk);

        /* dQ and drab of a finished query block (m0p, rows rp), from its dS'^T
         * tile (buffer bp); run one iteration later, so that no barrier
         * separates them from the next block's S, dP, dV, dK. */
        auto finish_block = [&](int m0p, int rp, int bp) {
            const int otid = (int)opaque((uint32_t)tid);
            const uint32_t osb = opaque(sbase);
            const int lane = otid & 31;
            const int g = lane >> 2, tq = lane & 3;
            const uint32_t sDSp = osb + OFF_DS + (uint32_t)bp * DS_BYTES;
            if constexpr (!DETERM) {
                /* ---- dQ = dS' K * sds, added to dq_accum.  Warp tile: 16 DQ_MT
                 * query rows x DQ_COLS columns, in passes of DQ_CNT n8 tiles. */
                const int wm = (otid >> 5) % DQ_WM, wn = (otid >> 5) / DQ_WM;
                const int qr0 = wm * 16 * DQ_MT; /* first query row of the warp tile */
                const int brow = (lane & 7) + ((lane >> 4) << 3);
                const uint32_t dsa = sDSp + (uint32_t)brow * PS + (uint32_t)(((lane >> 3) & 1) * 16 + qr0 * 2);
                const uint32_t kta = osb + OFF_K + (uint32_t)(lane & 15) * PD + (uint32_t)((lane >> 4) * 16);
                float *dqa = (float *)p.dq_accum;
                const int64_t hd = (int64_t)f.num_heads * D;
#pragma unroll 1
                for (int pass = 0; pass < DQ_PASSES; ++pass) {
                    const int col0 = wn * DQ_COLS + pass * DQ_CNT * 8;
                    float qa[DQ_MT][DQ_CNT][4];
#pragma unroll
                    for (int mt = 0; mt < DQ_MT; ++mt) zero_acc(qa[mt]);
#pragma unroll 2
                    for (int ks = 0; ks < BN / 16; ++ks) {
                        uint32_t a[DQ_MT][4];
#pragma unroll
                        for (int mt = 0; mt < DQ_MT; ++mt)
                            kiln_ldmatrix_x4_trans(a[mt], dsa + (uint32_t)(ks * 16) * PS + (uint32_t)(mt * 32));
#pragma unroll
                        for (int dp = 0; dp < DQ_CNT / 2; ++dp) {
                            uint32_t bb[4];
                            kiln_ldmatrix_x4_trans(bb, kta + (uint32_t)(ks * 16) * PD + (uint32_t)(col0 * 2 + dp * 32));
#pragma unroll
                            for (int mt = 0; mt < DQ_MT; ++mt) {
                                kiln_mma16816<DT>(qa[mt][2 * dp], a[mt], bb[0], bb[1]);
                                kiln_mma16816<DT>(qa[mt][2 * dp + 1], a[mt], bb[2], bb[3]);
                            }
                        }
                    }
#pragma unroll
                    for (int mt = 0; mt < DQ_MT; ++mt) {
#if KILN_ARCH >= 900
                        /* lanes tq, tq^1 swap halves: even tq -> row g, columns
                         * 2tq..2tq+3; odd tq -> row g + 8, columns 2tq-2..2tq+1 */
                        const bool odd = tq & 1;
                        const int row = m0p + qr0 + mt * 16 + g + (odd ? 8 : 0);
                        float *dst = dqa + (s.q_beg + row) * hd + (int64_t)h * D + col0 + 2 * tq - (odd ? 2 : 0);
#pragma unroll
                        for (int nt = 0; nt < DQ_CNT; ++nt) {
                            const float x0 = odd ? qa[mt][nt][0] : qa[mt][nt][2];
                            const float x1 = odd ? qa[mt][nt][1] : qa[mt][nt][3];
                            const float y0 = shfl_xor_f32(x0, 1);
                            const float y1 = shfl_xor_f32(x1, 1);
                            if (row < rp + m0p) {
                                if (odd)
                                    red_add_v4_f32(dst + nt * 8, y0 * sds, y1 * sds, qa[mt][nt][2] * sds,
                                                   qa[mt][nt][3] * sds);
                                else
                                    red_add_v4_f32(dst + nt * 8, qa[mt][nt][0] * sds, qa[mt][nt][1] * sds, y0 * sds,
                                                   y1 * sds);
                            }
                        }
#else
#pragma unroll
                        for (int hf = 0; hf < 2; ++hf) {
                            const int row = m0p + qr0 + mt * 16 + g + 8 * hf;
                            if (row >= rp + m0p) continue;
                            float *dst = dqa + (s.q_beg + row) * hd + (int64_t)h * D + col0 + 2 * tq;
#pragma unroll
                            for (int nt = 0; nt < DQ_CNT; ++nt) {
                                red_add_f32(dst + nt * 8, qa[mt][nt][2 * hf] * sds);
                                red_add_f32(dst + nt * 8 + 1, qa[mt][nt][2 * hf + 1] * sds);
                            }
                        }
#endif
                    }
                }
            }
            if constexpr (DRAB) {
                /* ---- drab tile from the dS'^T tile (16-bit), one element per
                 * item, lanes along keys (coalesced stores) */
                const int64_t acc_row0 = ((int64_t)b * f.rab_heads + rh) * f.max_seqlen_k + m0p + off;
                const int64_t drab_row0 = (int64_t)b * p.drab_batch_stride + (int64_t)h * p.drab_head_stride +
                                          (int64_t)(m0p + off) * p.drab_row_stride;
#pragma unroll 1
                for (int e = otid; e < BM * BN; e += NT) {
                    const int j = e % BN, r = e / BN;
                    if (r >= rp || j >= keys_here) continue;
                    const float v = kiln_to_float<DT>(ld_shared_u16(sDSp + (uint32_t)j * PS + (uint32_t)(r * 2))) * sds;
                    if (drab_acc) {
                        float *a = (float *)p.drab_accum + (acc_row0 + r) * f.max_seqlen_k + n0 + j;
                        *a += v;
                    } else {
                        st_global_u16((uint16_t *)p.drab + drab_row0 + (int64_t)r * p.drab_row_stride + n0 + j,
                                      to_half<DT>(v));
                    }
                }
            }
        };
        int m0_prev = -1, rows_prev = 0; /* the block whose dQ / drab is pending */

        int it = 0;
#pragma unroll 1
        for (; visit(m); ++it) {
            const int buf = it & 1;
            const int mn = FUNC ? func_next(buf ^ 1, m + 1) : mr.next(m);
            if (visit(mn)) load_m(buf ^ 1, mn);
            kiln_cp_async_commit();
            if constexpr (DEFER) {
                if (m0_prev >= 0) finish_block(m0_prev, rows_prev, buf ^ 1);
            }

            const int m0 = m * BM;
            const int rows_here = kiln_min(BM, len_q - m0);
            const int otid = (int)opaque((uint32_t)tid);
            const uint32_t osb = opaque(sbase);
            const LaneMap lm = lane_map(otid, osb);
            const int g = lm.g, tq = lm.tq, kr0 = lm.kr0, qc0 = lm.qc0, brow = lm.brow;
            const uint32_t a_lane = lm.a_lane, b_lane = lm.b_lane, t_lane = lm.t_lane, st_lane = lm.st_lane;
            const uint32_t sQb = osb + OFF_Q + (uint32_t)buf * QD_BYTES;
            const uint32_t sDOb = osb + OFF_DO + (uint32_t)buf * QD_BYTES;
            const bool full =
                !FUNC && M::tile_full(s, m0 + off, m0 + rows_here - 1 + off, n0, n0 + keys_here - 1);

            /* The warp's BMW query columns in chunks of CW: S^T and dP^T of one
             * chunk live in registers at a time. */
#pragma unroll 1
            for (int c = 0; c < NCHUNK; ++c) {
                const int qc = qc0 + c * CW; /* first query column of the chunk */

                /* ---- S^T = K Q^T (16 keys x CW queries) */
                float sa[CNT][4];
                zero_acc(sa);
                gemm_rows<CNT>(sa, a_lane + OFF_K, sQb + b_lane + (uint32_t)qc * PD);

                if constexpr (RAB) {
                    /* rab tile [query][key]; ldmatrix.trans gives S^T fragments */
                    const uint32_t sR = osb + OFF_R + (uint32_t)buf * R_BYTES + (uint32_t)(qc + brow) * PR +
                                        (uint32_t)(kr0 * 2 + lm.half * 16);
#pragma unroll
                    for (int np = 0; np < CNT / 2; ++np) {
                        uint32_t rr[4];
                        kiln_ldmatrix_x4_trans(rr, sR + (uint32_t)(np * 16) * PR);
#pragma unroll
                        for (int q = 0; q < 4; ++q) {
                            float r0, r1;
                            kiln_unpack2<DT>(rr[q], r0, r1);
                            sa[2 * np + (q >> 1)][2 * (q & 1)] += r0;
                            sa[2 * np + (q >> 1)][2 * (q & 1) + 1] += r1;
                        }
                    }
                }

                /* ---- mask bits (bit nt*4 + e of the accumulator layout) */
                uint32_t mbits = 0xffffffffu;
                if (FUNC) {
                    /* the rows' masks from the pads of rab stage buf: keys
                     * kc and kc + 8 of the tile share one 32-bit word */
                    mbits = 0;
                    const int kc = kr0 + g;
                    const uint32_t pad =
                        osb + OFF_R + (uint32_t)buf * R_BYTES + 2 * BN + (uint32_t)(kc >> 5) * 4;
#pragma unroll
                    for (int nt = 0; nt < CNT; ++nt)
#pragma unroll
                        for (int e = 0; e < 2; ++e) {
                            const int q = qc + nt * 8 + 2 * tq + e; /* query row in the block */
                            const uint32_t w = kiln_ld_shared_u32(pad + (uint32_t)q * PR) >> (kc & 31);
                            mbits |= ((w & 1u) << (nt * 4 + e)) | (((w >> 8) & 1u) << (nt * 4 + 2 + e));
                        }
                } else if (!full) {
                    mbits = 0;
                    const int j0 = n0 + kr0 + g;
#pragma unroll
                    for (int nt = 0; nt < CNT; ++nt)
#pragma unroll
                        for (int e = 0; e < 2; ++e) {
                            const int i = m0 + qc + nt * 8 + 2 * tq + e + off;
                            int lo1, hi1, lo2, hi2;
                            M::row_iv(s, i, lo1, hi1, lo2, hi2);
#pragma unroll
                            for (int hf = 0; hf < 2; ++hf)
                                if (M::iv_has(j0 + 8 * hf, lo1, hi1, lo2, hi2)) mbits |= 1u << (nt * 4 + 2 * hf + e);
                        }
                }

                /* ---- P' = silu(s) (packed); sa <- 2 silu'(s); both 0 where masked */
                uint32_t pk[CNT][2];
#pragma unroll
                for (int nt = 0; nt < CNT; ++nt)
#pragma unroll
                    for (int hf = 0; hf < 2; ++hf) {
                        float pv[2];
#pragma unroll
                        for (int e = 0; e < 2; ++e) {
                            const bool ok = (mbits >> (nt * 4 + 2 * hf + e)) & 1u;
                            float fp;
                            const float pp = pointwise(sa[nt][2 * hf + e], ha, fp);
                            pv[e] = ok ? pp : 0.f;
                            sa[nt][2 * hf + e] = ok ? fp : 0.f;
                        }
                        pk[nt][hf] = kiln_pack2<DT>(pv[0], pv[1]);
                    }

                if constexpr (DS == 1) {
                    /* ---- dV += P'^T dO */
#pragma unroll
                    for (int kk = 0; kk < CNT / 2; ++kk) {
                        const uint32_t a[4] = {pk[2 * kk][0], pk[2 * kk][1], pk[2 * kk + 1][0], pk[2 * kk + 1][1]};
                        mma_rows_trans<DNT>(dv, a, sDOb + t_lane + (uint32_t)(qc + kk * 16) * PD);
                    }
                } else {
#pragma unroll
                    for (int nt = 0; nt < CNT; ++nt)
#pragma unroll
                        for (int hf = 0; hf < 2; ++hf)
                            kiln_st_shared_u32(st_lane + OFF_P + (uint32_t)(hf * 8) * PS + (uint32_t)((qc + nt * 8) * 2),
                                               pk[nt][hf]);
                }

                /* ---- dP^T = V dO^T; dS' = dP * 2 silu'(s) */
                float dpa[CNT][4];
                zero_acc(dpa);
                gemm_rows<CNT>(dpa, a_lane + OFF_V, sDOb + b_lane + (uint32_t)qc * PD);
#pragma unroll
                for (int nt = 0; nt < CNT; ++nt)
#pragma unroll
                    for (int e = 0; e < 4; ++e) dpa[nt][e] *= sa[nt][e];

                uint32_t dsk[CNT][2];
#pragma unroll
                for (int nt = 0; nt < CNT; ++nt)
#pragma unroll
                    for (int hf = 0; hf < 2; ++hf) dsk[nt][hf] = kiln_pack2<DT>(dpa[nt][2 * hf], dpa[nt][2 * hf + 1]);

                if constexpr (DS_SMEM) {
#pragma unroll
                    for (int nt = 0; nt < CNT; ++nt)
#pragma unroll
                        for (int hf = 0; hf < 2; ++hf)
                            kiln_st_shared_u32(st_lane + OFF_DS + (uint32_t)buf * DS_BYTES + (uint32_t)(hf * 8) * PS +
                                                   (uint32_t)((qc + nt * 8) * 2),
                                               dsk[nt][hf]);
                }

                if constexpr (DS == 1) {
                    /* ---- dK += dS'^T Q */
#pragma unroll
                    for (int kk = 0; kk < CNT / 2; ++kk) {
                        const uint32_t a[4] = {dsk[2 * kk][0], dsk[2 * kk][1], dsk[2 * kk + 1][0], dsk[2 * kk + 1][1]};
                        mma_rows_trans<DNT>(dk, a, sQb + t_lane + (uint32_t)(qc + kk * 16) * PD);
                    }
                }
            }

            if constexpr (DS == 2) __syncthreads(); /* P^T, dS^T halves meet */
            if constexpr (DS == 2) {
                /* ---- dV += P'^T dO, dK += dS'^T Q over all BM queries, for
                 * this warp's half of the head dim */
                const int lane = otid & 31;
                const uint32_t pa = osb + (uint32_t)(kr0 + (lane & 15)) * PS + (uint32_t)((lane >> 4) * 16);
#pragma unroll 1
                for (int kk = 0; kk < BM / 16; ++kk) {
                    uint32_t a[4];
                    kiln_ldmatrix_x4(a, pa + OFF_P + (uint32_t)(kk * 32));
                    mma_rows_trans<DNT>(dv, a, sDOb + t_lane + (uint32_t)(kk * 16) * PD);
                    kiln_ldmatrix_x4(a, pa + OFF_DS + (uint32_t)buf * DS_BYTES + (uint32_t)(kk * 32));
                    mma_rows_trans<DNT>(dk, a, sQb + t_lane + (uint32_t)(kk * 16) * PD);
                }
            }

            m0_prev = m0;
            rows_prev = rows_here;
            kiln_cp_async_wait<0>();
            __syncthreads();
            m = mn;
        }

        if constexpr (DEFER) {
            if (m0_prev >= 0) {
                finish_block(m0_prev, rows_prev, (it - 1) & 1);
            }
        }

        /* ---- dK = dK' * sds, dV = dV' * inv_scaling; rows < L */
        const float inv = f.inv_scaling;
        const LaneMap lm = lane_map(tid, sbase);
        const int g = lm.g, tq = lm.tq, kr0 = lm.kr0, dc0 = lm.dc0;
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
            const int j = n0 + kr0 + g + 8 * hf;
            if (j >= L) continue;
            uint16_t *dkr = (uint16_t *)p.dk + (s.k_beg + j) * p.dk_row_stride + (int64_t)h * p.dk_head_stride +
                            dc0 + 2 * tq;
            uint16_t *dvr = (uint16_t *)p.dv + (s.k_beg + j) * p.dv_row_stride + (int64_t)h * p.dv_head_stride +
                            dc0 + 2 * tq;
#pragma unroll
            for (int nt = 0; nt < DNT; ++nt) {
                st_global_u32(dkr + nt * 8, kiln_pack2<DT>(dk[nt][2 * hf] * sds, dk[nt][2 * hf + 1] * sds));
                st_global_u32(dvr + nt * 8, kiln_pack2<DT>(dv[nt][2 * hf] * inv, dv[nt][2 * hf + 1] * inv));
            }
        }
        __syncthreads(); /* K, V and the last dS^T are read until here */
    }


    if constexpr (DRAB) {
        /* drab written directly: zeros on the rows that no visited query
         * block covers (and on positions before the first query) */
        if (!drab_acc) {
            uint16_t *dr = (uint16_t *)p.drab + (int64_t)b * p.drab_batch_stride +
                           (int64_t)blockIdx.y * p.drab_head_stride + n0;
            const bool al = ((((uint64_t)dr) & 15) == 0) && ((p.drab_row_stride & 7) == 0);
            const int nch = (keys_here + 7) / 8;
            const uint32_t zero4[4] = {0u, 0u, 0u, 0u};
#pragma unroll 1
            for (int e = tid; e < L * nch; e += NT) {
                const int i = e / nch, c = e - (e / nch) * nch;
                const int r = i - off;
                if constexpr (FUNC) {
                    /* visited: the block of every row that sees a key of the tile */
                    if (r >= 0 && r < len_q) {
                        uint32_t w[4];
                        kiln_func_tile_words(f, s.q_beg + r, n0, n0 + keys_here, w);
                        if ((w[0] | w[1] | w[2] | w[3]) != 0u) continue;
                    }
                } else {
                    if (r >= 0 && mr.valid(r / BM)) continue;
                }
                uint16_t *ptr = dr + (int64_t)i * p.drab_row_stride + c * 8;
                if (al && c * 8 + 8 <= keys_here) {
                    kiln_st_global_v4(ptr, zero4);
                } else {
                    for (int k = 0; k < 8 && c * 8 + k < keys_here; ++k) st_global_u16(ptr + k, 0);
                }
            }
        }
    }
}

/* ===================================================================== dq */
extern "C" __global__ void __launch_bounds__(KILN_WARPS * 32, 1)
kiln_hstu_bwd_dq(const __grid_constant__ kiln_hstu_bwd_kparams p)
{
#if KILN_DETERMINISTIC
    using namespace kiln_hstu_bwd_impl;
    extern __shared__ __align__(128) unsigned char kiln_smem[];
    const kiln_hstu_kparams &f = p.f;
    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int b = blockIdx.z;
    const int h = blockIdx.y;

    kiln_seq s;
    if (!kiln_seq_load<DELTA_Q, CONTEXT, TARGET, LOCAL>(f, b, s)) return;
    const int L = s.L, len_q = s.len_q, off = s.off;
    const int m_block = CAUSAL ? (int)(f.num_m_blocks - 1 - blockIdx.x) : (int)blockIdx.x;
    const int m0 = m_block * BM;
    if (m0 >= len_q) return;
    const int rows_here = kiln_min(BM, len_q - m0);
    const int i_min = m0 + off, i_max = m0 + rows_here - 1 + off;

    /* keys this query block may see (a superset; the element mask is exact) */
    int kv_lo = 0, kv_hi = L;
    if (CAUSAL) kv_hi = kiln_min(kv_hi, i_max + 1);
    if (LOCAL) {
        if (s.wr >= 0) kv_hi = kiln_min(kv_hi, i_max + s.wr + 1);
        if (s.wl >= 0) kv_lo = kiln_max(kv_lo, i_min - s.wl);
    }
    if (CONTEXT && i_min < s.c_ctx) kv_hi = kiln_max(kv_hi, s.hist_end);
    if (TARGET && i_max >= s.hist_end) {
        const int i0 = kiln_max(i_min, s.hist_end);
        kv_lo = kiln_min(kv_lo, s.hist_end + ((i0 - s.hist_end) / s.group) * s.group);
    }
    const uint32_t sbase = kiln_smem_u32(kiln_smem);
    if constexpr (FUNC) {
        /* keys between the smallest and the largest any row sees; K buffer 1
         * is free until the first prefetch, after the prologue's barrier */
        int lo = L, hi = 0;
        if (tid < rows_here) kiln_func_span(f, s.q_beg + m0 + tid, L, lo, hi);
        kiln_func_block_span<NW>(lo, hi, sbase + QOFF_K + KVQ_BYTES, tid);
        kv_lo = lo;
        kv_hi = hi;
    }
    const int n_begin = kv_lo / BNQ;
    const int n_end = kv_hi > kv_lo ? (kv_hi + BNQ - 1) / BNQ : n_begin;

    auto load_n = [&](int bf, int nn) {
        const int k0 = nn * BNQ;
        load_rows<BNQ, D, NT>(sbase + QOFF_K + (uint32_t)bf * KVQ_BYTES,
                              (const uint16_t *)f.k + (s.k_beg + k0) * f.k_row_stride + (int64_t)h * f.k_head_stride,
                              f.k_row_stride, L - k0, tid);
        load_rows<BNQ, D, NT>(sbase + QOFF_V + (uint32_t)bf * KVQ_BYTES,
                              (const uint16_t *)f.v + (s.k_beg + k0) * f.v_row_stride + (int64_t)h * f.v_head_stride,
                              f.v_row_stride, L - k0, tid);
        if constexpr (RAB) {
            const int rh = f.rab_heads > 0 ? h % f.rab_heads : 0;
            const uint16_t *rg = (const uint16_t *)f.rab + (int64_t)b * f.rab_batch_stride +
                                 (int64_t)rh * f.rab_head_stride + (int64_t)i_min * f.rab_row_stride;
            const bool al = ((((uint64_t)rg) & 15) == 0) && ((f.rab_row_stride & 7) == 0);
            load_rab<BM, BNQ, NT>(sbase + QOFF_R + (uint32_t)bf * RQ_BYTES, rg, f.rab_row_stride, rows_here, k0, L,
                                  al, tid);
        }
    };

    load_rows<BM, D, NT>(sbase + QOFF_Q,
                         (const uint16_t *)f.q + (s.q_beg + m0) * f.q_row_stride + (int64_t)h * f.q_head_stride,
                         f.q_row_stride, rows_here, tid);
    load_rows<BM, D, NT>(sbase + QOFF_DO,
                         (const uint16_t *)p.dout + (s.q_beg + m0) * p.dout_row_stride +
                             (int64_t)h * p.dout_head_stride,
                         p.dout_row_stride, rows_here, tid);
    if (n_begin < n_end) load_n(0, n_begin);
    kiln_cp_async_commit();
    kiln_cp_async_wait<0>();
    __syncthreads();

    const int g = lane >> 2;
    const int tq = lane & 3;
    const int wq = warp / WK, wk = warp % WK;
    const int qr0 = wq * 16;  /* this warp's query rows */
    const int kc0 = wk * KPW; /* its keys inside the tile */
    const int brow = (lane & 7) + ((lane >> 4) << 3);
    const uint32_t a_lane = sbase + (uint32_t)(qr0 + (lane & 15)) * PD + (uint32_t)((lane >> 4) * 16);
    const uint32_t b_lane = (uint32_t)(kc0 + brow) * PD + (uint32_t)(((lane >> 3) & 1) * 16);
    const uint32_t t_lane = (uint32_t)(kc0 + (lane & 15)) * PD + (uint32_t)((lane >> 4) * 16);
    const uint32_t r_lane = (uint32_t)(qr0 + g) * PRQ + (uint32_t)(kc0 * 2 + 4 * tq);

    const float ha = 0.5f * f.alpha;
    const float sds = ha * f.inv_scaling;

    float acc[ONT][4];
    zero_acc(acc);
    uint32_t qf[KST][4], of[KST][4]; /* used only with QF_REGS */
    if constexpr (QF_REGS) {
#pragma unroll
        for (int ks = 0; ks < KST; ++ks) {
            kiln_ldmatrix_x4(qf[ks], a_lane + QOFF_Q + (uint32_t)(ks * 32));
            kiln_ldmatrix_x4(of[ks], a_lane + QOFF_DO + (uint32_t)(ks * 32));
        }
    }

#pragma unroll 1
    for (int n = n_begin; n < n_end; ++n) {
        const int buf = (n - n_begin) & 1;
        const int k0 = n * BNQ;
        if (n + 1 < n_end) load_n(buf ^ 1, n + 1);
        kiln_cp_async_commit();
        const uint32_t sK = sbase + QOFF_K + (uint32_t)buf * KVQ_BYTES;
        const uint32_t sV = sbase + QOFF_V + (uint32_t)buf * KVQ_BYTES;

        /* ---- S = Q K^T (16 queries x KPW keys per warp) */
        float sa[KNT][4];
        zero_acc(sa);
        if constexpr (QF_REGS) gemm_regs<KNT>(sa, qf, sK + b_lane);
        else gemm_rows<KNT>(sa, a_lane + QOFF_Q, sK + b_lane);
        if constexpr (RAB) {
            const uint32_t sR = sbase + QOFF_R + (uint32_t)buf * RQ_BYTES + r_lane;
#pragma unroll
            for (int hf = 0; hf < 2; ++hf)
#pragma unroll
                for (int nt = 0; nt < KNT; ++nt) {
                    const uint32_t v = kiln_ld_shared_u32(sR + (uint32_t)(hf * 8) * PRQ + (uint32_t)(nt * 16));
                    float r0, r1;
                    kiln_unpack2<DT>(v, r0, r1);
                    sa[nt][2 * hf] += r0;
                    sa[nt][2 * hf + 1] += r1;
                }
        }

        uint32_t mbits = 0xffffffffu;
        if (FUNC) {
            mbits = 0;
#pragma unroll
            for (int hf = 0; hf < 2; ++hf) {
                const int r = m0 + qr0 + g + 8 * hf; /* local query row: func's index */
                if (r >= len_q) continue;
                /* slot 2 nt + e: key k0 + kc0 + 2 tq + 8 nt + e */
                const uint32_t fb = kiln_func_bits<2 * KNT>(f, s.q_beg + r, L, k0 + kc0 + 2 * tq);
#pragma unroll
                for (int nt = 0; nt < KNT; ++nt) mbits |= ((fb >> (2 * nt)) & 3u) << (nt * 4 + 2 * hf);
            }
        } else if (!M::tile_full(s, i_min, i_max, k0, kiln_min(k0 + BNQ, L) - 1)) {
            mbits = 0;
#pragma unroll
            for (int hf = 0; hf < 2; ++hf) {
                const int i = m0 + qr0 + g + 8 * hf + off;
                int lo1, hi1, lo2, hi2;
                M::row_iv(s, i, lo1, hi1, lo2, hi2);
                const int jb = k0 + kc0 + 2 * tq;
#pragma unroll
                for (int nt = 0; nt < KNT; ++nt)
#pragma unroll
                    for (int e = 0; e < 2; ++e)
                        if (M::iv_has(jb + nt * 8 + e, lo1, hi1, lo2, hi2)) mbits |= 1u << (nt * 4 + 2 * hf + e);
            }
        }
#pragma unroll
        for (int nt = 0; nt < KNT; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const bool ok = (mbits >> (nt * 4 + e)) & 1u;
                float fp;
                (void)pointwise(sa[nt][e], ha, fp);
                sa[nt][e] = ok ? fp : 0.f;
            }

        /* ---- dP = dO V^T; dS' = dP * 2 silu'(s) */
        float dpa[KNT][4];
        zero_acc(dpa);
        if constexpr (QF_REGS) gemm_regs<KNT>(dpa, of, sV + b_lane);
        else gemm_rows<KNT>(dpa, a_lane + QOFF_DO, sV + b_lane);

        /* ---- dQ += dS' K */
#pragma unroll
        for (int kk = 0; kk < KNT / 2; ++kk) {
            const uint32_t a[4] = {
                kiln_pack2<DT>(dpa[2 * kk][0] * sa[2 * kk][0], dpa[2 * kk][1] * sa[2 * kk][1]),
                kiln_pack2<DT>(dpa[2 * kk][2] * sa[2 * kk][2], dpa[2 * kk][3] * sa[2 * kk][3]),
                kiln_pack2<DT>(dpa[2 * kk + 1][0] * sa[2 * kk + 1][0], dpa[2 * kk + 1][1] * sa[2 * kk + 1][1]),
                kiln_pack2<DT>(dpa[2 * kk + 1][2] * sa[2 * kk + 1][2], dpa[2 * kk + 1][3] * sa[2 * kk + 1][3])};
            mma_rows_trans<ONT>(acc, a, sK + t_lane + (uint32_t)(kk * 16) * PD);
        }

        kiln_cp_async_wait<0>();
        __syncthreads();
    }

    /* ---- add the WK partial sums in a fixed order (smem reuses K, V) */
    if constexpr (WK > 1) {
        float *red = (float *)(kiln_smem + QOFF_K);
        if (wk > 0) {
            float *dst = red + (size_t)((wq * (WK - 1) + wk - 1) * ONT * 4) * 32 + lane;
#pragma unroll
            for (int nt = 0; nt < ONT; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) dst[(nt * 4 + e) * 32] = acc[nt][e];
        }
        __syncthreads();
        if (wk > 0) return;
#pragma unroll 1
        for (int k = 1; k < WK; ++k) {
            const float *src = red + (size_t)((wq * (WK - 1) + k - 1) * ONT * 4) * 32 + lane;
#pragma unroll
            for (int nt = 0; nt < ONT; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) acc[nt][e] += src[(nt * 4 + e) * 32];
        }
    }
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
        const int r = m0 + qr0 + g + 8 * hf;
        if (r >= len_q) continue;
        uint16_t *dst = (uint16_t *)p.dq + (s.q_beg + r) * p.dq_row_stride + (int64_t)h * p.dq_head_stride + 2 * tq;
#pragma unroll
        for (int nt = 0; nt < ONT; ++nt)
            st_global_u32(dst + nt * 8, kiln_pack2<DT>(acc[nt][2 * hf] * sds, acc[nt][2 * hf + 1] * sds));
    }
#endif
}

/* ===================================================================== convert */
/* Sequence b in the blocks of blockIdx.y = b (mod gridDim.y); its rows over
 * blockIdx.x and the items of a row over the threads, so that no 64-bit
 * division is needed (it would be a call with a stack frame).  A row of n
 * items: a block handles rpi = 256 / n rows at once when n < 256. */
extern "C" __global__ void __launch_bounds__(256, 1)
kiln_hstu_bwd_convert(const __grid_constant__ kiln_hstu_bwd_kparams p)
{
    using namespace kiln_hstu_bwd_impl;
    const kiln_hstu_kparams &f = p.f;
    const int t = threadIdx.x;
    const int H = f.num_heads;
#pragma unroll 1
    for (int b = (int)blockIdx.y; b < f.batch; b += (int)gridDim.y) {
        kiln_seq s;
        if (!kiln_seq_load<DELTA_Q, CONTEXT, TARGET, LOCAL>(f, b, s)) continue;
        if (p.dq_accum != 0)
            convert_dq_rows<DT, D>((const float *)p.dq_accum + s.q_beg * H * (int64_t)D,
                                   (uint16_t *)p.dq + s.q_beg * p.dq_row_stride, p.dq_row_stride,
                                   p.dq_head_stride, s.len_q, H, t);
        if (p.drab_accum != 0) {
            /* row (hr, i): (L + 7) / 8 items of 8 keys */
            const int L = s.L;
            const int n = (L + 7) / 8;
            if (n == 0) continue;
            const int rpi = n >= 256 ? 1 : 256 / n;
            const int sub = n >= 256 ? 0 : t / n;
            const int c0 = n >= 256 ? t : t - sub * n;
            const int cstep = n >= 256 ? 256 : n;
            if (sub >= rpi) continue;
            const int64_t msk = f.max_seqlen_k;
#pragma unroll 1
            for (int hr = 0; hr < f.rab_heads; ++hr) {
#pragma unroll 1
                for (int i = blockIdx.x * rpi + sub; i < L; i += gridDim.x * rpi) {
                    const float *src = (const float *)p.drab_accum + (((int64_t)b * f.rab_heads + hr) * msk + i) * msk;
                    uint16_t *dst = (uint16_t *)p.drab + (int64_t)b * p.drab_batch_stride +
                                    (int64_t)hr * p.drab_head_stride + (int64_t)i * p.drab_row_stride;
#pragma unroll 1
                    for (int c = c0; c < n; c += cstep) {
                        const int j0 = c * 8;
#pragma unroll
                        for (int k = 0; k < 8; ++k)
                            if (j0 + k < L) st_global_u16(dst + j0 + k, to_half<DT>(src[j0 + k]));
                    }
                }
            }
        }
    }
}
