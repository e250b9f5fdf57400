/* hstu_fwd_sm90.cu -- HSTU attention forward for Hopper (sm_90a): wgmma,
 * warp specialization, mbarrier pipeline.
 *
 * out_r = sum over valid j of silu(alpha * (q_r . k_j + rab[i, j]))
 *         * inv_scaling * v_j                    (SPEC.md section 1)
 *
 * Same prelude, grid, params, masks, tile skipping, offsets guard and debug
 * counter as hstu_fwd.cu (the portable kernel); only the machinery differs.
 *
 * One CTA = BLOCK_M = 128 query rows of one (batch, head); 12 warps:
 *   warpgroup 0 (producer, setmaxnreg 40): one thread loads Q once and
 *     streams K and V tiles of BLOCK_N keys through two rings (KSTAGES and
 *     VSTAGES deep: V is held one step longer than K) with TMA
 *     (descriptors built by the host per call, hstu_tma_params.h), straight
 *     into the wgmma-canonical swizzled layout; the copies complete on the
 *     stage's "full" mbarrier (one arrival plus the transaction bytes).  The
 *     last tile of a sequence, which runs past its end, is copied by all
 *     128 threads with cp.async, zero-filled past the end.
 *   warpgroups 1, 2 (consumers, setmaxnreg 232): 64 query rows each.
 *     S = Q K^T: wgmma m64nBNk16, A = Q and B = K from shared memory
 *     (K-major).  P = silu(alpha (S + rab)) (masked -> 0) packed to 16 bits
 *     in registers; O += P V: wgmma with A from registers and B = V from
 *     shared memory (MN-major, transposed).  The S wgmma of tile t+1 is
 *     issued before P V of tile t, and the SiLU of tile t+1 runs while
 *     P V of tile t is on the tensor cores.  After P V of a tile completes,
 *     each consumer thread arrives on the stage's "empty" mbarrier (256).
 * inv_scaling is applied to O at the end.  Epilogue: registers -> the
 * warpgroup's own Q rows in shared memory -> 16-byte global stores guarded by
 * row < len_q.  rab is read from global memory straight into the S
 * registers (16-bit loads, column clamped in bounds) after the S wait.
 * Key tiles the mask leaves whole run a mask-free copy of the loop body; the
 * loop is split in three so that no branch sits between a wgmma and its wait.
 *
 * Shared memory layout (bytes; see kiln__hstu_fwd_sm90_smem()): up to 1024
 * bytes of alignment slack, then
 *   Q [128 x D] | KSTAGES x K [BN x D] | VSTAGES x V [BN x D] | mbarriers (128)
 * Each tile is stored as D/64 column blocks of [rows][64] elements with the
 * 128-byte swizzle (16-byte chunk c of row r at chunk c ^ (r & 7)); with
 * D = 32, as [rows][32] with the 64-byte swizzle (c ^ ((r >> 1) & 3)).
 *
 * Requirements on the inputs (checked by the runtime): q, k, v, out 16-byte
 * aligned, their row and head strides multiples of 8 elements. */
#include "kiln_common.cuh"
#include "kiln_sm90.cuh"
#include "hstu_tma_params.h"
#include "kiln_hstu_seq.cuh"

#if !defined(KILN_DTYPE) || !defined(KILN_HEAD_DIM) || !defined(KILN_BLOCK_M) || \
    !defined(KILN_BLOCK_N) || !defined(KILN_WARPS)
#error "hstu_fwd_sm90.cu: the specialization prelude is missing"
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

namespace kiln_hstu_fwd_sm90_impl {

constexpr int DT = KILN_DTYPE;
constexpr int D = KILN_HEAD_DIM;
constexpr int BM = KILN_BLOCK_M;
constexpr int BN = KILN_BLOCK_N;
constexpr int NTHREADS = KILN_WARPS * 32;
/* K/V ring depth: must match kiln__hstu_fwd_sm90_smem(). */
/* Ring depths: must match kiln__hstu_fwd_sm90_smem().  A K tile is free
 * once S is computed, a V tile only after P V, one step later; with room for
 * five tiles (head dim 256) V gets the third. */
#ifdef KILN_SM90_KSTAGES
constexpr int KSTAGES = KILN_SM90_KSTAGES;
constexpr int VSTAGES = KILN_SM90_VSTAGES;
#else
constexpr int KSTAGES = D <= 128 ? 3 : 2;
constexpr int VSTAGES = 3;
#endif
constexpr int PTHREADS = 128;            /* producer warpgroup */
constexpr int CPR = D / 8;               /* 16-byte chunks per row */
constexpr int SN = BN / 8;               /* n8 blocks of S */
constexpr int KSTEPS = D / 16;           /* k16 steps of Q K^T */
constexpr int PSTEPS = BN / 16;          /* k16 steps of P V */
constexpr bool SW128 = D >= 64;
constexpr int ROWB = SW128 ? 128 : 64;   /* bytes per row of a column block */
constexpr int CBE = ROWB / 2;            /* elements per row of a column block */
constexpr int NCB = D / CBE;             /* column blocks per tile */
constexpr bool CAUSAL = KILN_CAUSAL != 0;
constexpr bool LOCAL = KILN_LOCAL != 0;
constexpr bool CONTEXT = KILN_CONTEXT != 0;
constexpr bool TARGET = KILN_TARGET != 0;
constexpr bool DELTA_Q = KILN_DELTA_Q != 0;
constexpr bool RAB = KILN_RAB != 0;

static_assert(DT == KILN_DT_FP16 || DT == KILN_DT_BF16, "dtype");
static_assert(D == 32 || D == 64 || D == 128 || D == 256, "head dim");
static_assert(BM == 128 && NTHREADS == 384, "128 rows, 3 warpgroups");
static_assert(BN == 64 || BN == 128, "BLOCK_N");
static_assert(!(CONTEXT || TARGET) || CAUSAL, "context/target need causal");

constexpr uint32_t Q_BYTES = BM * D * 2;
constexpr uint32_t KV_BYTES = BN * D * 2;
constexpr uint32_t OFF_Q = 0;
constexpr uint32_t OFF_KV = Q_BYTES;
constexpr uint32_t OFF_V = OFF_KV + KSTAGES * KV_BYTES;
constexpr uint32_t OFF_BAR = OFF_V + VSTAGES * KV_BYTES;
constexpr uint32_t BAR_FULL_K = OFF_BAR;                   /* [KSTAGES] */
constexpr uint32_t BAR_EMPTY_K = BAR_FULL_K + 8 * KSTAGES; /* [KSTAGES] */
constexpr uint32_t BAR_FULL_V = BAR_EMPTY_K + 8 * KSTAGES; /* [VSTAGES] */
constexpr uint32_t BAR_EMPTY_V = BAR_FULL_V + 8 * VSTAGES; /* [VSTAGES] */
constexpr uint32_t BAR_Q = BAR_EMPTY_V + 8 * VSTAGES;
static_assert(16 * (KSTAGES + VSTAGES) + 8 <= 128, "barrier area");

/* Byte offset of 16-byte chunk c of row `row` in a tile of ROWS rows. */
template <int ROWS> KILN_DEV uint32_t tile_off(int row, int c)
{
    if constexpr (SW128)
        return (uint32_t)((c >> 3) * (ROWS * 128) + row * 128 + (((c & 7) ^ (row & 7)) << 4));
    else
        return (uint32_t)(row * 64 + ((c ^ ((row >> 1) & 3)) << 4));
}

/* Producer: copy ROWS rows of D elements (row r at gbase + r * stride) into
 * a tile; rows >= nvalid are zero-filled. */
template <int ROWS>
KILN_DEV void load_tile(uint32_t sdst, const uint16_t *gbase, int64_t stride, int nvalid, int ptid)
{
    constexpr int RSTEP = PTHREADS / CPR;
    static_assert(ROWS % RSTEP == 0, "rows per pass");
    const int ch = ptid % CPR;
    int row = ptid / CPR;
    const char *src = (const char *)(gbase + (int64_t)row * stride + ch * 8);
    const int64_t step = (int64_t)RSTEP * stride * 2;
#pragma unroll 4
    for (int it = 0; it < ROWS / RSTEP; ++it) {
        const bool ok = row < nvalid;
        kiln_cp_async16(sdst + tile_off<ROWS>(row, ch), ok ? (const void *)src : (const void *)gbase,
                        ok ? 16 : 0);
        row += RSTEP;
        src += step;
    }
}

/* wgmma descriptors. */
KILN_DEV uint64_t desc_kmajor(uint32_t addr)
{
    return kiln_gmma_desc(addr, 16, SW128 ? 1024 : 512, SW128 ? 1 : 2);
}

KILN_DEV uint64_t desc_v(uint32_t addr)
{
    return kiln_gmma_desc(addr, BN * 128, SW128 ? 1024 : 512, SW128 ? 1 : 2);
}

/* Address of the k16 step ks of a K-major tile of ROWS rows, from row r0. */
template <int ROWS> KILN_DEV uint32_t kstep_addr(uint32_t base, int r0, int ks)
{
    if constexpr (SW128)
        return base + (uint32_t)((ks >> 2) * (ROWS * 128) + r0 * 128 + (ks & 3) * 32);
    else
        return base + (uint32_t)(r0 * 64 + ks * 32);
}

template <bool B> struct kiln_bool {
    static constexpr bool value = B;
};

/* What a consumer thread needs to turn S into P. */
struct Ctx {
    const uint16_t *rrow[2];  /* rab rows of this thread (RAB) */
    float half_alpha;
    int L, i0;                /* i0: position of this thread's row (hf = 0) */
    int tq;
    int c_ctx, hist_end, wl, wr;
    int tgt_lo[2];            /* TARGET: first key of the row's target group */
};

/* S of tile n -> P (16-bit A fragments); MASK: apply the element mask. */
template <bool MASK>
KILN_DEV void process(const Ctx &c, float (&s)[BN / 2], int n, uint32_t (&pa)[PSTEPS][4])
{
    const int n0 = n * BN;
    const int L = c.L;
    if constexpr (RAB) {
        /* plain (reorderable) 16-bit loads, column clamped to L - 1: in
         * bounds whatever the alignment; columns >= L are masked */
#pragma unroll
        for (int nt = 0; nt < SN; ++nt)
#pragma unroll
            for (int hf = 0; hf < 2; ++hf)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int j = kiln_min(n0 + nt * 8 + 2 * c.tq + e, L - 1);
                    s[4 * nt + 2 * hf + e] += kiln_to_float<DT>(c.rrow[hf][j]);
                }
    }
#pragma unroll
    for (int e = 0; e < BN / 2; ++e) s[e] = kiln_silu_half(c.half_alpha * s[e]);

    if constexpr (MASK) {
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
            const int i = c.i0 + 8 * hf;
            const int hist_end = c.hist_end;
            int lo1 = 0, hi1 = L, lo2 = 0, hi2 = 0;
            if (CAUSAL) hi1 = kiln_min(hi1, i + 1);
            if (LOCAL) {
                if (c.wl >= 0) lo1 = kiln_max(lo1, i - c.wl);
                if (c.wr >= 0) hi1 = kiln_min(hi1, i + c.wr + 1);
            }
            if (CONTEXT && i < c.c_ctx) hi1 = kiln_max(hi1, hist_end);
            if (TARGET && i >= hist_end) {
                hi1 = kiln_min(hi1, hist_end);
                lo2 = c.tgt_lo[hf];
                hi2 = i + 1;
            }
            lo1 -= n0 + 2 * c.tq; hi1 -= n0 + 2 * c.tq;
            lo2 -= n0 + 2 * c.tq; hi2 -= n0 + 2 * c.tq;
#pragma unroll
            for (int nt = 0; nt < SN; ++nt)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int jj = nt * 8 + e;
                    bool ok = jj >= lo1 && jj < hi1;
                    if (TARGET) ok = ok || (jj >= lo2 && jj < hi2);
                    s[4 * nt + 2 * hf + e] = ok ? s[4 * nt + 2 * hf + e] : 0.f;
                }
        }
    }
#pragma unroll
    for (int kk = 0; kk < PSTEPS; ++kk) {
        pa[kk][0] = kiln_pack2<DT>(s[8 * kk + 0], s[8 * kk + 1]);
        pa[kk][1] = kiln_pack2<DT>(s[8 * kk + 2], s[8 * kk + 3]);
        pa[kk][2] = kiln_pack2<DT>(s[8 * kk + 4], s[8 * kk + 5]);
        pa[kk][3] = kiln_pack2<DT>(s[8 * kk + 6], s[8 * kk + 7]);
    }
}

/* S = Q K^T for this warpgroup's 64 rows (q_addr: its first Q row) and the
 * K tile at k_addr.  Descriptors come from bases the compiler cannot hoist
 * out of the key loop (hoisted, D/16 pairs of 64-bit descriptors would pin
 * registers). */
KILN_DEV void issue_s(float (&s)[BN / 2], uint32_t q_addr, uint32_t k_addr)
{
    const uint32_t qa = kiln_opaque_u32(q_addr);
    const uint32_t ka = kiln_opaque_u32(k_addr);
#pragma unroll
    for (int ks = 0; ks < KSTEPS; ++ks)
        kiln_wgmma_ss<BN, DT>(s, desc_kmajor(qa + kstep_addr<BM>(0, 0, ks)),
                              desc_kmajor(ka + kstep_addr<BN>(0, 0, ks)), ks > 0);
    kiln_wgmma_commit();
}

/* O += P V with the V tile at v_addr. */
KILN_DEV void issue_pv(float (&o)[D / 2], const uint32_t (&pa)[PSTEPS][4], uint32_t v_addr)
{
    const uint32_t va = kiln_opaque_u32(v_addr);
#pragma unroll
    for (int kk = 0; kk < PSTEPS; ++kk)
        kiln_wgmma_rs<D, DT>(o, pa[kk], desc_v(va + (uint32_t)(kk * 16 * ROWB)), 1);
    kiln_wgmma_commit();
}

KILN_DEV uint32_t k_addr(uint32_t sbase, int stage)
{
    return sbase + OFF_KV + (uint32_t)stage * KV_BYTES;
}

KILN_DEV uint32_t v_addr(uint32_t sbase, int stage)
{
    return sbase + OFF_V + (uint32_t)stage * KV_BYTES;
}

/* Tile n (t = n - n_begin >= 1): S(n) and P V(n - 1) on the tensor cores,
 * then SiLU of tile n while P V(n - 1) runs; frees the stage of n - 1. */
template <bool MASK>
KILN_DEV void step(const Ctx &c, float (&s)[BN / 2], float (&o)[D / 2], uint32_t (&pa)[PSTEPS][4],
                   int n, int t, uint32_t sbase, uint32_t q_addr)
{
    const int ks = t % KSTAGES, vs = (t - 1) % VSTAGES;
    kiln_mbar_wait(sbase + BAR_FULL_K + 8 * ks, (uint32_t)((t / KSTAGES) & 1));
    kiln_mbar_wait(sbase + BAR_FULL_V + 8 * vs, (uint32_t)(((t - 1) / VSTAGES) & 1));
    kiln_fence_proxy_async();
    kiln_reg_fence(pa);
    kiln_wgmma_fence();
    issue_s(s, q_addr, k_addr(sbase, ks));
    issue_pv(o, pa, v_addr(sbase, vs));
    uint32_t pn[PSTEPS][4];
    kiln_wgmma_wait<1>();
    kiln_reg_fence(s);
    kiln_mbar_arrive(sbase + BAR_EMPTY_K + 8 * ks);
    process<MASK>(c, s, n, pn);
    kiln_wgmma_wait<0>();
    kiln_reg_fence(o);
    kiln_reg_fence(pa);
    kiln_mbar_arrive(sbase + BAR_EMPTY_V + 8 * vs);
#pragma unroll
    for (int kk = 0; kk < PSTEPS; ++kk)
#pragma unroll
        for (int e = 0; e < 4; ++e) pa[kk][e] = pn[kk][e];
}

} /* namespace kiln_hstu_fwd_sm90_impl */

extern "C" __global__ void __launch_bounds__(KILN_WARPS * 32, 1)
kiln_hstu_fwd(const __grid_constant__ kiln_hstu_tma_kparams a)
{
    using namespace kiln_hstu_fwd_sm90_impl;
    const kiln_hstu_kparams &p = a.p;
    extern __shared__ __align__(1024) unsigned char kiln_smem[];

    const int tid = threadIdx.x;
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
    const int wl = LOCAL ? p.window_left : -1;
    const int wr = LOCAL ? p.window_right : -1;

    /* ---- visible key range of this m-block */
    const int rows_here = kiln_min(BM, len_q - m0);
    const int i_min = m0 + off;
    const int i_max = m0 + rows_here - 1 + off;
    int kv_lo = 0, kv_hi = L;
    if (CAUSAL) kv_hi = kiln_min(kv_hi, i_max + 1);
    if (LOCAL) {
        if (wr >= 0) kv_hi = kiln_min(kv_hi, i_max + wr + 1);
        if (wl >= 0) kv_lo = kiln_max(kv_lo, i_min - wl);
    }
    if (CONTEXT && i_min < c_ctx) kv_hi = kiln_max(kv_hi, hist_end);
    const int n_begin = kv_lo / BN;
    const int n_end = kv_hi > kv_lo ? (kv_hi + BN - 1) / BN : n_begin;
    const int ntiles = n_end - n_begin;

    const uint32_t sbase = (kiln_smem_u32(kiln_smem) + 1023u) & ~1023u;
    const uint32_t sQ = sbase + OFF_Q;

    if (tid == 0) {
#pragma unroll
        for (int s = 0; s < KSTAGES; ++s) {
            kiln_mbar_init(sbase + BAR_FULL_K + 8 * s, 1);
            kiln_mbar_init(sbase + BAR_EMPTY_K + 8 * s, NTHREADS - PTHREADS);
        }
#pragma unroll
        for (int s = 0; s < VSTAGES; ++s) {
            kiln_mbar_init(sbase + BAR_FULL_V + 8 * s, 1);
            kiln_mbar_init(sbase + BAR_EMPTY_V + 8 * s, NTHREADS - PTHREADS);
        }
        kiln_mbar_init(sbase + BAR_Q, 1);
        /* make the initialized barriers visible to the TMA unit */
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();

    const int wg = tid >> 7;
    if (wg == 0) {
        /* ================= producer =================
         * One thread issues TMA copies: Q once, then K and V per tile.  The
         * tile that runs past the end of the sequence is copied instead by
         * all 128 threads with cp.async, zero-filling the rows >= L: TMA
         * would bring the next sequence's rows there, and although P is 0
         * in those columns, 0 * (an Inf or NaN in a V row) is not 0. */
        kiln_setmaxnreg_dec<40>();
        const bool leader = tid == 0;
        const void *tm_q = &a.tmap[KILN_TMA_Q][0];
        const void *tm_k = &a.tmap[KILN_TMA_K][0];
        const void *tm_v = &a.tmap[KILN_TMA_V][0];
        if (leader) {
            kiln_mbar_arrive_expect_tx(sbase + BAR_Q, Q_BYTES);
#pragma unroll
            for (int cb = 0; cb < NCB; ++cb)
                kiln_tma_load_3d(sQ + (uint32_t)(cb * BM * ROWB), tm_q, cb * CBE, h,
                                 (int)(q_beg + m0), sbase + BAR_Q);
        }
        const uint16_t *kg = (const uint16_t *)p.k + k_beg * p.k_row_stride + (int64_t)h * p.k_head_stride;
        const uint16_t *vg = (const uint16_t *)p.v + k_beg * p.v_row_stride + (int64_t)h * p.v_head_stride;
#pragma unroll 1
        for (int t = 0; t < ntiles; ++t) {
            const int ks = t % KSTAGES, vs = t % VSTAGES;
            const int n0 = (n_begin + t) * BN;
            const uint32_t sK = k_addr(sbase, ks), sV = v_addr(sbase, vs);
            const uint32_t full_k = sbase + BAR_FULL_K + 8 * ks;
            const uint32_t full_v = sbase + BAR_FULL_V + 8 * vs;
            const int row = (int)(k_beg + n0);
            const bool whole = n0 + BN <= L;
            /* every producer thread follows every phase: a parity wait
             * cannot tell a phase from the one two before it */
            if (t >= KSTAGES)
                kiln_mbar_wait(sbase + BAR_EMPTY_K + 8 * ks, (uint32_t)((t / KSTAGES - 1) & 1));
            if (whole) {
                if (leader) {
                    kiln_mbar_arrive_expect_tx(full_k, KV_BYTES);
#pragma unroll
                    for (int cb = 0; cb < NCB; ++cb)
                        kiln_tma_load_3d(sK + (uint32_t)(cb * BN * ROWB), tm_k, cb * CBE, h, row, full_k);
                }
            } else {
                load_tile<BN>(sK, kg + (int64_t)n0 * p.k_row_stride, p.k_row_stride, L - n0, tid);
            }
            if (t >= VSTAGES)
                kiln_mbar_wait(sbase + BAR_EMPTY_V + 8 * vs, (uint32_t)((t / VSTAGES - 1) & 1));
            if (whole) {
                if (leader) {
                    kiln_mbar_arrive_expect_tx(full_v, KV_BYTES);
#pragma unroll
                    for (int cb = 0; cb < NCB; ++cb)
                        kiln_tma_load_3d(sV + (uint32_t)(cb * BN * ROWB), tm_v, cb * CBE, h, row, full_v);
                }
            } else {
                load_tile<BN>(sV, vg + (int64_t)n0 * p.v_row_stride, p.v_row_stride, L - n0, tid);
                kiln_cp_async_wait_all();
                kiln_fence_proxy_async();
                kiln_named_bar_sync(3, PTHREADS);
                if (leader) {
                    kiln_mbar_arrive(full_k);
                    kiln_mbar_arrive(full_v);
                }
            }
        }
    } else {
        /* ================= consumers ================= */
        kiln_setmaxnreg_inc<232>();
        const int cw = wg - 1;              /* 64-row half of the m-block */
        const int t128 = tid & 127;
        const int lane = tid & 31;
        const int g = lane >> 2;            /* fragment row group */
        const int tq = lane & 3;            /* fragment column pair */
        const int row0 = cw * 64 + (t128 >> 5) * 16 + g;  /* local row (+8 for hf = 1) */

        /* rows of this warpgroup, for the per-tile "full" test */
        const int wg_r1 = kiln_min(cw * 64 + 63, rows_here - 1);
        const int wi_min = m0 + cw * 64 + off;
        const int wi_max = m0 + wg_r1 + off;

        const int group = TARGET ? kiln_max(p.target_group_size, 1) : 1;

        /* Tiles the mask leaves whole for every row of this warpgroup: the same
         * "full" test as hstu_fwd.cu, solved for n (each condition bounds n from
         * one side, so they form one interval [f_lo, f_hi)).  Element masks run
         * only outside it; the loop is split so that no branch sits between a
         * wgmma and its wait (ptxas would serialize the wgmmas). */
        int f_lo = n_begin, f_hi = L / BN;
        if (CAUSAL) f_hi = kiln_min(f_hi, (wi_min + 1) / BN);
        if (LOCAL) {
            if (wl >= 0 && wi_max - wl > 0) f_lo = kiln_max(f_lo, (wi_max - wl + BN - 1) / BN);
            if (wr >= 0) f_hi = kiln_min(f_hi, (wi_min + wr + 1) / BN);
        }
        if (TARGET) f_hi = kiln_min(f_hi, hist_end / BN);
        f_hi = kiln_min(f_hi, n_end);
        f_lo = kiln_min(f_lo, n_end);
        if (f_hi < f_lo) f_hi = f_lo;

        Ctx c;
        c.half_alpha = 0.5f * p.alpha;
        c.L = L;
        c.i0 = m0 + row0 + off;
        c.tq = tq;
        c.c_ctx = c_ctx;
        c.hist_end = hist_end;
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
            /* divisions stay out of the key loop (their slow path is a branch) */
            const int i = c.i0 + 8 * hf;
            c.tgt_lo[hf] = TARGET && i >= hist_end ? hist_end + ((i - hist_end) / group) * group : 0;
        }
        c.wl = wl;
        c.wr = wr;
        /* rab rows of this thread (positions i = m0 + row + off); rows past
         * rows_here read row 0 (in bounds; never stored). */
        c.rrow[0] = c.rrow[1] = nullptr;
        if constexpr (RAB) {
            const int rh = p.rab_heads > 0 ? h % p.rab_heads : 0;
            const uint16_t *rg = (const uint16_t *)p.rab + (int64_t)b * p.rab_batch_stride +
                                 (int64_t)rh * p.rab_head_stride + (int64_t)i_min * p.rab_row_stride;
#pragma unroll
            for (int hf = 0; hf < 2; ++hf)
                c.rrow[hf] = rg + (row0 + 8 * hf < rows_here ? (int64_t)(row0 + 8 * hf) * p.rab_row_stride : 0);
        }
        const uint32_t q_addr = kstep_addr<BM>(sQ, cw * 64, 0);

        float o[D / 2];
#pragma unroll
        for (int e = 0; e < D / 2; ++e) o[e] = 0.f;

        kiln_mbar_wait(sbase + BAR_Q, 0);
        kiln_fence_proxy_async();

        if (ntiles > 0) {
            float s[BN / 2];
            uint32_t pa[PSTEPS][4];
            kiln_mbar_wait(sbase + BAR_FULL_K, 0);
            kiln_fence_proxy_async();
            kiln_wgmma_fence();
            issue_s(s, q_addr, k_addr(sbase, 0));
            kiln_wgmma_wait<0>();
            kiln_reg_fence(s);
            kiln_mbar_arrive(sbase + BAR_EMPTY_K);
            if (n_begin >= f_lo && n_begin < f_hi) process<false>(c, s, n_begin, pa);
            else process<true>(c, s, n_begin, pa);

            int n = n_begin + 1;
#pragma unroll 1
            for (; n < f_lo; ++n) step<true>(c, s, o, pa, n, n - n_begin, sbase, q_addr);
#pragma unroll 1
            for (; n < f_hi; ++n) step<false>(c, s, o, pa, n, n - n_begin, sbase, q_addr);
#pragma unroll 1
            for (; n < n_end; ++n) step<true>(c, s, o, pa, n, n - n_begin, sbase, q_addr);

            /* last tile: P V only */
            const int sl = (ntiles - 1) % VSTAGES;
            kiln_mbar_wait(sbase + BAR_FULL_V + 8 * sl, (uint32_t)(((ntiles - 1) / VSTAGES) & 1));
            kiln_fence_proxy_async();
            kiln_reg_fence(pa);
            kiln_wgmma_fence();
            issue_pv(o, pa, v_addr(sbase, sl));
            kiln_wgmma_wait<0>();
            kiln_reg_fence(o);
            kiln_reg_fence(pa);
            kiln_mbar_arrive(sbase + BAR_EMPTY_V + 8 * sl);
        }

        /* ---- epilogue: scale, pack, stage in this warpgroup's Q rows, store */
        const float inv_scaling = p.inv_scaling;
        kiln_fence_proxy_async();
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
            const int row = row0 + 8 * hf;
#pragma unroll
            for (int dn = 0; dn < D / 8; ++dn) {
                const uint32_t v = kiln_pack2<DT>(o[4 * dn + 2 * hf] * inv_scaling,
                                                  o[4 * dn + 2 * hf + 1] * inv_scaling);
                kiln_st_shared_u32(sQ + tile_off<BM>(row, dn) + 4 * tq, v);
            }
        }
        kiln_named_bar_sync(1 + cw, 128);
        uint16_t *og = (uint16_t *)p.out + (q_beg + m0) * p.out_row_stride + (int64_t)h * p.out_head_stride;
        constexpr int WCHUNKS = 64 * CPR;
#pragma unroll 4
        for (int c = t128; c < WCHUNKS; c += 128) {
            const int row = cw * 64 + c / CPR, ch = c % CPR;
            if (row < rows_here) {
                uint32_t v[4];
                kiln_ld_shared_v4(sQ + tile_off<BM>(row, ch), v);
                kiln_st_global_v4(og + (int64_t)row * p.out_row_stride + ch * 8, v);
            }
        }
    }
}
