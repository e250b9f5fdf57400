/* hstu_fwd_sm90.cu -- HSTU attention forward for Hopper (sm_90a): wgmma,
 * warp specialization, mbarrier pipeline, persistent CTAs.
 *
 * out_r = sum over valid j of silu(alpha * (q_r . k_j + rab[i, j]))
 *         * inv_scaling * v_j                    (SPEC.md section 1)
 *
 * Same prelude, params, masks, tile skipping, offsets guard and debug
 * counter as hstu_fwd.cu (the portable kernel); the grid and the machinery
 * differ.
 *
 * Work item = BLOCK_M = 128 query rows (an m-block) of one (batch, head).
 * Two grids, each with a kernel of its own; a module holds one of them
 * (KILN_PERSIST, the key's persist, which planning sets by sequence length:
 * kiln__hstu_fwd_sm90_persistent; a module of both took 1.5 to 3 times as
 * long to compile).  A persistent one, (G, 1, 1) with G up to the SM count,
 * each CTA taking its items from a static schedule (see "the static
 * schedule" below: m-blocks paired into units of equal cost, heaviest
 * first, handed out in a snake over the CTAs); or, for long sequences,
 * "blocks mode", a CTA per m-block, grid (m-blocks, heads, batch) with
 * causal m-blocks reversed so heavy ones go first, which runs the kernel
 * before the persistent one (namespace blk below; its layout fits in this
 * one's).  The persistent kernel, 12 warps:
 *   warpgroup 0 (producer, setmaxnreg 40): warps 0 and 1 walk the
 *     schedule; one thread hands each item to the consumers through a
 *     two-slot queue in shared memory (an Item and its full / empty
 *     mbarriers) and issues
 *     TMA copies (descriptors built by the host per call, hstu_tma_params.h)
 *     straight into the wgmma-canonical swizzled layout: Q per item into
 *     QSTAGES buffers, and K and V tiles of BLOCK_N keys into two rings
 *     (KSTAGES and VSTAGES deep: V is held one step longer than K) that run
 *     on across items, so the next item's copies overlap this one's end.
 *     The copies complete on the stage's "full" mbarrier (one arrival plus
 *     the transaction bytes).  The last tile of a sequence, which runs past
 *     its end, comes by TMA too; warp 1 zeroes its V rows past the end
 *     before it hands the tile over.
 *   warpgroups 1, 2 (consumers, setmaxnreg 232): 64 query rows each.
 *     S = Q K^T: wgmma m64nBNk16, A = Q and B = K from shared memory
 *     (K-major).  P = silu(alpha (S + rab)) (masked -> 0) packed to 16 bits
 *     in registers; O += P V: wgmma with A from registers and B = V from
 *     shared memory (MN-major, transposed).  The S wgmma of tile t+1 is
 *     issued before P V of tile t, and the SiLU of tile t+1 runs while
 *     P V of tile t is on the tensor cores; across items too: the first S
 *     of an item goes out with the last P V of the item before, whose O is
 *     then stored.  After S (P V) of a tile completes, each consumer thread
 *     arrives on the K (V) stage's "empty" mbarrier (256), and after the
 *     item's last S on its Q buffer's.
 * A consumer does not fence the proxies after it waits on a "full"
 * barrier: the TMA writes and the wgmma reads are both in the async proxy,
 * and the producer fences its own (generic) zeroing of a partial V tile
 * before it arrives.  (The fence, MEMBAR.ALL.CTA + FENCE.VIEW.ASYNC
 * per step, cost 1 to 2% on an H100.)
 * inv_scaling is applied to O at the end.  Epilogue: straight from the
 * registers, 8-byte stores after a pairwise exchange within each quad
 * (store_o), guarded by row < len_q.  rab (blocks mode only) comes by
 * TMA too, a [128 x BLOCK_N] tile beside each K tile in its stage, and
 * ldmatrix reads it straight into the S fragment's layout; the K stage is
 * freed after that read rather than at the S wait.
 * Key tiles the mask leaves whole run a mask-free copy of the loop body; the
 * loop is split in three so that no branch sits between a wgmma and its
 * wait, and O is written by wgmmas only (ptxas serializes every wgmma of
 * the kernel otherwise).
 *
 * Shared memory layout (bytes; see kiln__hstu_fwd_sm90_smem()): up to 1024
 * bytes of alignment slack, then
 *   QSTAGES x Q [128 x D] | KSTAGES x K [BN x D] | VSTAGES x V [BN x D] |
 *   mbarriers (256) | item queue (2 x 64) | producer warp slots (4 x 64)
 * Each tile is stored as D/64 column blocks of [rows][64] elements with the
 * 128-byte swizzle (16-byte chunk c of row r at chunk c ^ (r & 7)); with
 * D = 32, as [rows][32] with the 64-byte swizzle (c ^ ((r >> 1) & 3)).
 *
 * Requirements on the inputs (checked by the runtime): q, k, v, out 16-byte
 * aligned, their row and head strides multiples of 8 elements. */
#include "kiln_common.cuh"
#include "kiln_sm90.cuh"
#include "kiln_sm90_rab.cuh"
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
/* 1: the persistent kernel; 0 (the key's default): a CTA per m-block */
#ifndef KILN_PERSIST
#define KILN_PERSIST 0
#endif

namespace kiln_hstu_fwd_sm90_impl {

constexpr int DT = KILN_DTYPE;
constexpr int D = KILN_HEAD_DIM;
constexpr int BM = KILN_BLOCK_M;
constexpr int BN = KILN_BLOCK_N;
constexpr int NTHREADS = KILN_WARPS * 32;
/* Ring depths: must match kiln__hstu_fwd_sm90_smem().  A K tile is free
 * once S is computed, a V tile only after P V, one step later.  Q is
 * double-buffered where it fits (head dims up to 128; at 128 the K ring
 * gives a stage for it: 372 against 350 TFLOP/s for one Q and three K
 * stages at (256, 1024, 4, 128) causal on an H100), so that the next
 * item's Q is in place when its first S is issued beside the last P V of
 * the item before.  (Four K and four V stages at head dim 64: no gain.) */
#ifdef KILN_SM90_KSTAGES
constexpr int QSTAGES = KILN_SM90_QSTAGES;
constexpr int KSTAGES = KILN_SM90_KSTAGES;
constexpr int VSTAGES = KILN_SM90_VSTAGES;
#else
constexpr int QSTAGES = D <= 128 ? 2 : 1;
constexpr int KSTAGES = D <= 64 ? 3 : 2;
constexpr int VSTAGES = 3;
#endif
constexpr int PTHREADS = 128;            /* producer warpgroup */
/* Registers per thread (setmaxnreg; 128 x 40 + 256 x 232 <= 64K), as
 * before the persistent kernel.  The producer fits in 40 because it keeps
 * its walk in shared memory and recomputes what it needs once per item (a
 * few values are made opaque so that ptxas does not hoist them out of its
 * loop and spill them). */
constexpr int PREGS = 40;
constexpr int CREGS = 232;
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
constexpr bool PERSIST = KILN_PERSIST != 0;

static_assert(DT == KILN_DT_FP16 || DT == KILN_DT_BF16, "dtype");
static_assert(D == 32 || D == 64 || D == 128 || D == 256, "head dim");
static_assert(BM == 128 && NTHREADS == 384, "128 rows, 3 warpgroups");
static_assert(BN == 64 || BN == 128, "BLOCK_N");
static_assert(!(CONTEXT || TARGET) || CAUSAL, "context/target need causal");
/* the persistent consumers with rab's row pointers would spill */
static_assert(!(PERSIST && RAB), "rab runs a CTA per m-block only");

constexpr uint32_t Q_BYTES = BM * D * 2;
constexpr uint32_t KV_BYTES = BN * D * 2;
constexpr uint32_t OFF_Q = 0;                              /* [QSTAGES] */
constexpr uint32_t OFF_KV = QSTAGES * Q_BYTES;
constexpr uint32_t OFF_V = OFF_KV + KSTAGES * KV_BYTES;
constexpr uint32_t OFF_BAR = OFF_V + VSTAGES * KV_BYTES;
constexpr uint32_t BAR_FULL_K = OFF_BAR;                   /* [KSTAGES] */
constexpr uint32_t BAR_EMPTY_K = BAR_FULL_K + 8 * KSTAGES; /* [KSTAGES] */
constexpr uint32_t BAR_FULL_V = BAR_EMPTY_K + 8 * KSTAGES; /* [VSTAGES] */
constexpr uint32_t BAR_EMPTY_V = BAR_FULL_V + 8 * VSTAGES; /* [VSTAGES] */
constexpr uint32_t BAR_Q = BAR_EMPTY_V + 8 * VSTAGES;      /* [2] Q landed */
constexpr uint32_t BAR_Q_EMPTY = BAR_Q + 16;               /* [2] consumers are done with Q */
constexpr uint32_t BAR_ITEM_FULL = BAR_Q_EMPTY + 16;       /* [2] */
constexpr uint32_t BAR_ITEM_EMPTY = BAR_ITEM_FULL + 16;    /* [2] */
constexpr uint32_t BAR_LAND_V = BAR_ITEM_EMPTY + 16;       /* [VSTAGES] a partial V tile landed */
constexpr uint32_t OFF_ITEM = OFF_BAR + 256;               /* [2] x Item, 64 bytes apart */
constexpr uint32_t OFF_WARP = OFF_ITEM + 128;              /* [4] x WarpSlot, 64 bytes apart */
static_assert(BAR_LAND_V + 8 * VSTAGES <= OFF_ITEM, "barrier area");
/* bytes past the rings: must match kiln__hstu_fwd_sm90_smem() */
static_assert(OFF_WARP + 256 - OFF_BAR == 640, "tail of the shared memory");

/* One work item as the producer hands it to the consumers: the sequence
 * (kiln_seq's fields that the consumers use), the head and the m-block;
 * m_block < 0: no more work. */
struct Item {
    int64_t q_beg;
    int len_q, L, off, c_ctx, hist_end;
    int m_block, h, b;
};
static_assert(sizeof(Item) <= 64, "item slot");

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
    ptid = (int)kiln_opaque_u32((uint32_t)ptid); /* not hoisted: the producer has 40 registers */
    const int ch = ptid % CPR;
    int row = ptid / CPR;
    const char *src = (const char *)(gbase + (int64_t)row * stride + ch * 8);
    const int64_t step = (int64_t)RSTEP * stride * 2;
#pragma unroll 1
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
    kiln_rab_lane rab;        /* RAB: this lane's place in a rab tile */
    float half_alpha;
    int L, i0;                /* i0: position of this thread's row (hf = 0) */
    int tq;
    int c_ctx, hist_end, wl, wr;
    int tgt_lo[2];            /* TARGET: first key of the row's target group */
    int n_last;               /* the item's last key tile */
    int cw;                   /* consumer warpgroup (64-row half): 0 or 1 */
    uint32_t q_empty;         /* the "empty" barrier of the item's Q buffer */
};

/* Where a finished item's O goes: its first row (this head) and how many
 * rows of the m-block exist. */
struct Out {
    uint16_t *og;
    int rows;
    int one_tile;  /* its last P V is its first (O = P V) */
};

/* S of tile n -> P (16-bit A fragments); MASK: apply the element mask.
 * RAB: r_addr is the tile's rab (kiln_sm90_rab.cuh). */
template <bool MASK>
KILN_DEV void process(const Ctx &c, float (&s)[BN / 2], int n, uint32_t (&pa)[PSTEPS][4], uint32_t r_addr)
{
    const int n0 = n * BN;
    const int L = c.L;
    if constexpr (RAB) {
#pragma unroll
        for (int jj = 0; jj < SN / 2; ++jj) {
            float f[8];
            kiln_rab_pair<DT, BM>(r_addr, c.rab, jj, f);
#pragma unroll
            for (int i = 0; i < 8; ++i) s[8 * jj + i] += f[i];
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
 * registers); each k step's is the base's plus an add (kiln_desc_add):
 * rebuilt from its address, every wgmma waited on about 16 integer
 * instructions, and the forward ran 1 to 3% slower on an H100. */
KILN_DEV void issue_s(float (&s)[BN / 2], uint32_t q_addr, uint32_t k_addr)
{
    const uint64_t dq = desc_kmajor(kiln_opaque_u32(q_addr));
    const uint64_t dk = desc_kmajor(kiln_opaque_u32(k_addr));
#pragma unroll
    for (int ks = 0; ks < KSTEPS; ++ks)
        kiln_wgmma_ss<BN, DT>(s, kiln_desc_add(dq, kstep_addr<BM>(0, 0, ks)),
                              kiln_desc_add(dk, kstep_addr<BN>(0, 0, ks)), ks > 0);
    kiln_wgmma_commit();
}

/* O += P V with the V tile at v_addr; O = P V for the first tile of an
 * item (acc false: the wgmma's scale-d, so that no instruction but a wgmma
 * writes O, which ptxas would answer by serializing the wgmmas). */
KILN_DEV void issue_pv(float (&o)[D / 2], const uint32_t (&pa)[PSTEPS][4], uint32_t v_addr, bool acc)
{
    const uint64_t dv = desc_v(kiln_opaque_u32(v_addr));
#pragma unroll
    for (int kk = 0; kk < PSTEPS; ++kk)
        kiln_wgmma_rs<D, DT>(o, pa[kk], kiln_desc_add(dv, (uint32_t)(kk * 16 * ROWB)), kk > 0 || acc);
    kiln_wgmma_commit();
}

/* Ping-pong of the two consumer warpgroups: each issues the wgmmas of a
 * step only once the other has issued its own (named barriers 4 and 5 of
 * 256 threads: one warpgroup waits, the other arrives), so that the tensor
 * cores run one warpgroup's products while the other computes its SiLU.
 * Both warpgroups take the same steps.  On an H100 (causal bf16, TFLOP/s):
 * (64, 2048, 8, 64) 327 -> 350 and (256, 1024, 4, 128) 361 -> 372 in the
 * persistent kernel; (32, 4096, 4, 128) 557 -> 577 and NVIDIA's d256 shape
 * 575 -> 581 in blocks mode. */
KILN_DEV void pp_wait(int cw)
{
    kiln_named_bar_sync(4 + cw, 256);
}

KILN_DEV void pp_pass(int cw)
{
    kiln_named_bar_arrive(5 - cw, 256);
}

#if KILN_PERSIST
/* ==== the persistent kernel's own helpers (a module holds one kernel) */

KILN_DEV uint32_t k_addr(uint32_t sbase, int stage)
{
    return sbase + OFF_KV + (uint32_t)stage * KV_BYTES;
}

KILN_DEV uint32_t v_addr(uint32_t sbase, int stage)
{
    return sbase + OFF_V + (uint32_t)stage * KV_BYTES;
}

/* O of a finished item, scaled, packed to 16 bits and stored straight from
 * the registers (shared memory has no room left for it; the stores do not
 * wait).  The four threads of a quad hold column pairs 2 tq of each
 * 8-column chunk.  One xor-1 exchange per pair of chunks and 8-byte
 * stores (kiln_st_chunk_pair) take half the shuffles of a 4 x 4 transpose
 * to 16-byte stores and still fill whole sectors (H100, causal,
 * TFLOP/s, 2 runs: (256, 1024, 4, 128) 376/374 -> 383/378 on one machine,
 * 363/375 -> 373/374 on another; (64, 2048, 8, 64) even).  With twice
 * as many store instructions ptxas spills in some variants (head dim 256;
 * context with targets): those keep the transpose (STORE_PAIRS false).
 * 4-byte stores of the pairs took (256, 1024, 4, 128) from 377 down to
 * 324. */
constexpr bool STORE_PAIRS = D <= 128 && !(CONTEXT && TARGET);
template <bool ZERO = false>
KILN_DEV void store_o(const float (&o)[D / 2], const Out &out, int64_t ostride, int row0, int tq,
                      float scale)
{
    if constexpr (!STORE_PAIRS) {
        const bool odd = (tq & 1) != 0;
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
            const int row = row0 + 8 * hf;
            uint16_t *orow = out.og + (int64_t)row * ostride;
#pragma unroll
            for (int q4 = 0; q4 < D / 32; ++q4) {
                uint32_t w[4];
#pragma unroll
                for (int k = 0; k < 4; ++k) {
                    const int dn = 4 * q4 + k;
                    w[k] = ZERO ? 0u : kiln_pack2<DT>(o[4 * dn + 2 * hf] * scale, o[4 * dn + 2 * hf + 1] * scale);
                }
                const bool hi = (tq & 2) != 0;
#pragma unroll
                for (int k2 = 0; k2 < 2; ++k2) {
                    const uint32_t r = __shfl_xor_sync(0xffffffffu, hi ? w[k2] : w[2 + k2], 2);
                    if (hi) w[k2] = r;
                    else w[2 + k2] = r;
                }
#pragma unroll
                for (int k1 = 0; k1 < 4; k1 += 2) {
                    const uint32_t r = __shfl_xor_sync(0xffffffffu, odd ? w[k1] : w[k1 + 1], 1);
                    if (odd) w[k1] = r;
                    else w[k1 + 1] = r;
                }
                if (row < out.rows) kiln_st_global_v4(orow + 8 * (4 * q4 + tq), w);
            }
        }
        return;
    }
    /* one base address per row and constant offsets: an address per store
     * (the first form of this) made the mask-heavy variants spill */
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
        const int row = row0 + 8 * hf;
        uint16_t *ob = out.og + (int64_t)row * ostride + kiln_chunk_pair_lane(tq);
#pragma unroll
        for (int c = 0; c < D / 16; ++c) {
            const int d0 = 2 * c, d1 = 2 * c + 1;
            const uint32_t w0 =
                ZERO ? 0u : kiln_pack2<DT>(o[4 * d0 + 2 * hf] * scale, o[4 * d0 + 2 * hf + 1] * scale);
            const uint32_t w1 =
                ZERO ? 0u : kiln_pack2<DT>(o[4 * d1 + 2 * hf] * scale, o[4 * d1 + 2 * hf + 1] * scale);
            kiln_st_chunk_pair(ob + 16 * c, w0, w1, tq, row < out.rows);
        }
    }
}

/* Key tile n at ring position kt (K/V tiles this warpgroup consumed before
 * it) while the P of ring tile kt - 1 waits in pa: S(n) and P V(kt - 1) on
 * the tensor cores (acc: P V adds to O), then SiLU of tile n while P V
 * runs; frees the K stage of kt, the V stage of kt - 1, and Q after the
 * item's last S.  FIRST: tile n is the first of its item and kt - 1 the
 * last of the item before, whose O (complete once P V is) is stored to
 * prev: the items' tiles run through the tensor cores as one stream,
 * without the gap of a lone S at the start of an item and a lone P V and
 * the stores at its end. */
template <bool MASK, bool FIRST>
KILN_DEV void step(const Ctx &c, float (&s)[BN / 2], float (&o)[D / 2], uint32_t (&pa)[PSTEPS][4],
                   int n, uint32_t kt, uint32_t sbase, uint32_t q_addr, bool acc, const Out &prev,
                   int64_t ostride, int row0, float scale)
{
    const uint32_t ks = kt % KSTAGES, vs = (kt - 1) % VSTAGES;
    /* FIRST without an item before (prev.rows = 0): a P V of whatever is
     * in pa and a V stage, discarded (the next P V sets O; nothing is
     * stored); the same code either way, since ptxas serializes every
     * wgmma of the kernel when paths that merge hold O in different
     * registers */
    const bool pv = !FIRST || prev.rows > 0;
    kiln_mbar_wait(sbase + BAR_FULL_K + 8 * ks, (kt / KSTAGES) & 1);
    if (pv) kiln_mbar_wait(sbase + BAR_FULL_V + 8 * vs, ((kt - 1) / VSTAGES) & 1);
    pp_wait(c.cw);
    kiln_reg_fence(pa);
    kiln_wgmma_fence();
    issue_s(s, q_addr, k_addr(sbase, ks));
    issue_pv(o, pa, v_addr(sbase, vs), acc);
    pp_pass(c.cw);
    uint32_t pn[PSTEPS][4];
    kiln_wgmma_wait<1>();
    kiln_reg_fence(s);
    kiln_mbar_arrive(sbase + BAR_EMPTY_K + 8 * ks);
    kiln_mbar_arrive_if(c.q_empty, n == c.n_last);
    process<MASK>(c, s, n, pn, 0u);
    kiln_wgmma_wait<0>();
    kiln_reg_fence(o);
    kiln_reg_fence(pa);
    kiln_mbar_arrive_if(sbase + BAR_EMPTY_V + 8 * vs, pv);
    if constexpr (FIRST) store_o(o, prev, ostride, row0, c.tq, scale);
#pragma unroll
    for (int kk = 0; kk < PSTEPS; ++kk)
#pragma unroll
        for (int e = 0; e < 4; ++e) pa[kk][e] = pn[kk][e];
}

/* P V of ring tile kt alone, the last of the item prev that no tile
 * follows, and its O stored; without one (prev.rows = 0), discarded as in
 * step. */
KILN_DEV void last_pv(float (&o)[D / 2], uint32_t (&pa)[PSTEPS][4], uint32_t kt, uint32_t sbase, bool acc,
                      const Out &prev, int64_t ostride, int row0, int tq, float scale, int cw)
{
    const uint32_t vs = kt % VSTAGES;
    const bool pv = prev.rows > 0;
    if (pv) kiln_mbar_wait(sbase + BAR_FULL_V + 8 * vs, (kt / VSTAGES) & 1);
    pp_wait(cw);
    kiln_reg_fence(pa);
    kiln_wgmma_fence();
    issue_pv(o, pa, v_addr(sbase, vs), acc);
    pp_pass(cw);
    kiln_wgmma_wait<0>();
    kiln_reg_fence(o);
    kiln_reg_fence(pa);
    kiln_mbar_arrive_if(sbase + BAR_EMPTY_V + 8 * vs, pv);
    store_o(o, prev, ostride, row0, tq, scale);
}

/* Key tiles [n_begin, n_end) that rows [m0, m0 + rows_here) of a sequence
 * see (producer and consumers compute them alike). */
KILN_DEV void kv_tiles(const Item &it, int wl, int wr, int &n_begin, int &n_end)
{
    const int m0 = it.m_block * BM;
    const int rows_here = kiln_min(BM, it.len_q - m0);
    kiln_fwd_key_tiles<CAUSAL, LOCAL, CONTEXT, BN>(m0 + it.off, m0 + rows_here - 1 + it.off, it.L, it.c_ctx,
                                                   it.hist_end, wl, wr, n_begin, n_end);
}

/* ---- the static schedule
 * A sequence of s m-blocks is cut into units of about equal cost
 * (kiln_unit_mblock in kiln_hstu_seq.cuh).  The units of every (sequence,
 * head) are numbered densely in the order: s descending (heaviest first),
 * sequence, head, unit; in round r, CTA c of
 * G takes unit r G + c (r even) or r G + G - 1 - c (r odd).  A snake over
 * a list sorted by cost leaves the CTAs within about one unit of each
 * other, and the units of one (sequence, head), adjacent in the list, run
 * at the same time on different SMs and share its K and V tiles in L2 (a
 * list sorted by m-block would read them again for each).  Each producer
 * warp walks the sequences 32 at a time, once for each s, to find its
 * CTA's next unit; every CTA walks the whole list, so CTA b % G also
 * counts bad sequence b for the debug counter. */
struct Walk {
    int64_t cbase;  /* number of the first unit of the chunk */
    int s, b0;      /* chunk: sequences b0 .. b0 + 31 that have s m-blocks */
    uint32_t mask;  /* which of them */
};

/* What a producer warp keeps in shared memory rather than in registers
 * (it has 40): its walk, the unit it found, the item's sequence length for
 * a partial tile and warp 1's landing parities.  Written by lane 0 between
 * __syncwarp()s. */
struct WarpSlot {
    Walk w;
    int round;      /* the CTA's next unit is its round-th */
    int second;     /* the unit's second m-block comes next */
    int b, h, u;    /* the unit: sequence, head, number (w.s m-blocks) */
    int L;          /* the item's sequence length, for a partial tile */
    uint32_t land;  /* warp 1: bit v, the phase parity of BAR_LAND_V[v] */
};
static_assert(sizeof(WarpSlot) <= 64, "warp slot");

KILN_DEV uint32_t walk_mask(const kiln_hstu_kparams &p, int s, int b0, bool count_bad)
{
    const int b = b0 + (int)(threadIdx.x & 31);
    bool has = false;
    if (b < p.batch) {
        kiln_seq sq;
        if (kiln_seq_load<DELTA_Q, false, false, false>(p, b, sq))
            has = (sq.len_q + BM - 1) / BM == s;
        else if (count_bad && p.debug_counter != 0 && b % (int)gridDim.x == (int)blockIdx.x)
            kiln_red_add_u64(p.debug_counter, 1ull);
    }
    return __ballot_sync(0xffffffffu, has);
}

/* Advance the walk of this warp to the CTA's next unit and store it in ws;
 * false: there is none. */
KILN_DEV bool walk_find(const kiln_hstu_kparams &p, WarpSlot *ws)
{
    Walk w = ws->w;
    const int r = ws->round;
    /* opaque: hoisted out of the producer's loop, these would pin registers */
    const int64_t G = kiln_opaque_u32(gridDim.x), c = kiln_opaque_u32(blockIdx.x);
    const int64_t want = r * G + ((r & 1) ? G - 1 - c : c);
    const int H = p.num_heads;
    const uint32_t lane = kiln_opaque_u32(threadIdx.x) & 31; /* its masks not hoisted */
    bool found = false;
    int b = 0, h = 0, u = 0;
    for (;;) {
        if (w.s <= 0) break;
        const int per_seq = H * kiln_units_of(w.s);
        const int64_t n = (int64_t)__popc(w.mask) * per_seq;
        if (want < w.cbase + n) {
            const int k = (int)(want - w.cbase);
            const int sk = k / per_seq;
            const int rem = k - sk * per_seq;
            h = rem / kiln_units_of(w.s);
            u = rem - h * kiln_units_of(w.s);
            /* the sk-th set bit of the mask */
            const bool mine = ((w.mask >> lane) & 1u) && __popc(w.mask & ((1u << lane) - 1u)) == sk;
            b = w.b0 + __ffs(__ballot_sync(0xffffffffu, mine)) - 1;
            found = true;
            break;
        }
        w.cbase += n;
        w.b0 += 32;
        if (w.b0 >= p.batch) {
            w.b0 = 0;
            --w.s;
        }
        /* warp 0 counts bad sequences, on the first pass (opaque: a
         * condition hoisted out of the producer's loop pins a register) */
        if (w.s > 0)
            w.mask = walk_mask(p, w.s, w.b0, kiln_opaque_u32(threadIdx.x) < 32 && w.s == p.num_m_blocks);
    }
    __syncwarp();
    if (lane == 0) {
        ws->w = w;
        ws->round = r + 1;
        ws->b = b;
        ws->h = h;
        ws->u = u;
    }
    __syncwarp();
    return found;
}

#else /* !KILN_PERSIST */

/* ---- blocks mode: one CTA per m-block
 * Grid (m-blocks, heads, batch), causal m-blocks reversed so that heavy
 * ones go first; the kernel of keys of persist 0 (long sequences, rab).
 * This is the kernel before the persistent one, unchanged but for names:
 * with few items per CTA the hardware's block scheduler balances the SMs
 * better than the static schedule, and one item has no use for the
 * persistent machinery (on an H100, causal bf16: 564 TFLOP/s at (32, 4096,
 * 4, 128) against 552 persistent and 506 with the persistent code run one
 * item per CTA; 589 / 553 / 530 at (32, 4099, 4, 256) with 3 context
 * tokens).  Its shared memory (Q | K ring | V ring | mbarriers) fits in the
 * persistent layout's. */
namespace blk {

/* With rab, each K stage has a rab tile [BM x BN] beside it (same "full"
 * and "empty" barriers); the rings are shallower where that would not fit
 * (kiln__hstu_fwd_sm90_smem()). */
constexpr int KSTAGES = RAB ? (D <= 64 ? 3 : 2) : (D <= 128 ? 3 : 2);
constexpr int VSTAGES = RAB && D > 64 ? 2 : 3;
constexpr uint32_t R_BYTES = RAB ? BM * BN * 2 : 0;
constexpr uint32_t OFF_Q = 0;
constexpr uint32_t OFF_KV = Q_BYTES;
constexpr uint32_t OFF_V = OFF_KV + KSTAGES * KV_BYTES;
constexpr uint32_t OFF_R = OFF_V + VSTAGES * KV_BYTES;
constexpr uint32_t OFF_BAR = OFF_R + KSTAGES * R_BYTES;
constexpr uint32_t BAR_FULL_K = OFF_BAR;                   /* [KSTAGES] */
constexpr uint32_t BAR_EMPTY_K = BAR_FULL_K + 8 * KSTAGES; /* [KSTAGES] */
constexpr uint32_t BAR_FULL_V = BAR_EMPTY_K + 8 * KSTAGES; /* [VSTAGES] */
constexpr uint32_t BAR_EMPTY_V = BAR_FULL_V + 8 * VSTAGES; /* [VSTAGES] */
constexpr uint32_t BAR_Q = BAR_EMPTY_V + 8 * VSTAGES;
/* kiln__hstu_fwd_sm90_smem(): the persistent layout's size, or with rab
 * Q | K ring | V ring | rab ring | 640 */
static_assert(RAB ? BAR_Q + 8 <= OFF_BAR + 640 : BAR_Q + 8 <= kiln_hstu_fwd_sm90_impl::OFF_WARP + 256,
              "blocks mode fits");
static_assert(OFF_BAR + 640 + 1024 <= 232448, "the shared memory of an H100 CTA");

KILN_DEV uint32_t r_addr(uint32_t sbase, int stage)
{
    return RAB ? sbase + OFF_R + (uint32_t)stage * R_BYTES : 0u;
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
    pp_wait(c.cw);
    kiln_reg_fence(pa);
    kiln_wgmma_fence();
    issue_s(s, q_addr, k_addr(sbase, ks));
    issue_pv(o, pa, v_addr(sbase, vs), true);
    pp_pass(c.cw);
    uint32_t pn[PSTEPS][4];
    kiln_wgmma_wait<1>();
    kiln_reg_fence(s);
    /* with rab the stage is free only once process has read its rab tile */
    if constexpr (!RAB) kiln_mbar_arrive(sbase + BAR_EMPTY_K + 8 * ks);
    process<MASK>(c, s, n, pn, r_addr(sbase, ks));
    if constexpr (RAB) kiln_mbar_arrive(sbase + BAR_EMPTY_K + 8 * ks);
    kiln_wgmma_wait<0>();
    kiln_reg_fence(o);
    kiln_reg_fence(pa);
    kiln_mbar_arrive(sbase + BAR_EMPTY_V + 8 * vs);
#pragma unroll
    for (int kk = 0; kk < PSTEPS; ++kk)
#pragma unroll
        for (int e = 0; e < 4; ++e) pa[kk][e] = pn[kk][e];
}

KILN_DEV void run(const kiln_hstu_tma_kparams &a)
{
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
    int n_begin, n_end;
    kiln_fwd_key_tiles<CAUSAL, LOCAL, CONTEXT, BN>(i_min, i_max, L, c_ctx, hist_end, wl, wr, n_begin, n_end);
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
        kiln_setmaxnreg_dec<PREGS>();
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
        int r_head = 0, r_batch = 0;
        if constexpr (RAB) kiln_rab_coords(p, h, b, r_head, r_batch);
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
                    kiln_mbar_arrive_expect_tx(full_k, KV_BYTES + R_BYTES);
#pragma unroll
                    for (int cb = 0; cb < NCB; ++cb)
                        kiln_tma_load_3d(sK + (uint32_t)(cb * BN * ROWB), tm_k, cb * CBE, h, row, full_k);
                }
            } else if (RAB && leader) {
                /* the rab tile by TMA here too (its columns past the
                 * sequence are masked); the arrival comes after K's copy */
                kiln_mbar_expect_tx(full_k, R_BYTES);
            }
            if (RAB && leader) /* the m-block's rows, the tile's columns */
                kiln_rab_tma<BM, BN>(r_addr(sbase, ks), &a.tmap[KILN_TMA_RAB][0], n0, i_min, r_head,
                                     r_batch, full_k);
            if (!whole) {
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
        kiln_setmaxnreg_inc<CREGS>();
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

        /* Tiles the mask leaves whole for every row of this warpgroup; element
         * masks run only outside them.  The loop is split so that no branch sits
         * between a wgmma and its wait (ptxas would serialize the wgmmas). */
        int f_lo, f_hi;
        kiln_fwd_whole_tiles<CAUSAL, LOCAL, TARGET, BN>(wi_min, wi_max, L, hist_end, wl, wr, n_begin, n_end,
                                                        f_lo, f_hi);

        Ctx c;
        c.half_alpha = 0.5f * p.alpha;
        c.L = L;
        c.i0 = m0 + row0 + off;
        c.tq = tq;
        c.c_ctx = c_ctx;
        c.hist_end = hist_end;
        c.cw = cw;
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
            /* divisions stay out of the key loop (their slow path is a branch) */
            const int i = c.i0 + 8 * hf;
            c.tgt_lo[hf] = TARGET && i >= hist_end ? hist_end + ((i - hist_end) / group) * group : 0;
        }
        c.wl = wl;
        c.wr = wr;
        c.rab = kiln_rab_lane_of(cw * 64 + (t128 >> 5) * 16, lane);
        const uint32_t q_addr = kstep_addr<BM>(sQ, cw * 64, 0);

        float o[D / 2];
#pragma unroll
        for (int e = 0; e < D / 2; ++e) o[e] = 0.f;

        kiln_mbar_wait(sbase + BAR_Q, 0);

        if (ntiles > 0) {
            float s[BN / 2];
            uint32_t pa[PSTEPS][4];
            kiln_mbar_wait(sbase + BAR_FULL_K, 0);
            if (cw == 1) pp_pass(cw); /* the first turn is the first warpgroup's */
            pp_wait(cw);
            kiln_wgmma_fence();
            issue_s(s, q_addr, k_addr(sbase, 0));
            pp_pass(cw);
            kiln_wgmma_wait<0>();
            kiln_reg_fence(s);
            if constexpr (!RAB) kiln_mbar_arrive(sbase + BAR_EMPTY_K);
            if (n_begin >= f_lo && n_begin < f_hi) process<false>(c, s, n_begin, pa, r_addr(sbase, 0));
            else process<true>(c, s, n_begin, pa, r_addr(sbase, 0));
            if constexpr (RAB) kiln_mbar_arrive(sbase + BAR_EMPTY_K);

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
            pp_wait(cw);
            kiln_reg_fence(pa);
            kiln_wgmma_fence();
            issue_pv(o, pa, v_addr(sbase, sl), true);
            pp_pass(cw);
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

} /* namespace blk */

#endif /* KILN_PERSIST */

} /* namespace kiln_hstu_fwd_sm90_impl */

extern "C" __global__ void __launch_bounds__(KILN_WARPS * 32, 1)
kiln_hstu_fwd(const __grid_constant__ kiln_hstu_tma_kparams a)
{
    using namespace kiln_hstu_fwd_sm90_impl;
#if !KILN_PERSIST
    /* blocks mode: grid (m-blocks, heads, batch), one item per CTA; keys
     * with rab run it only */
    blk::run(a);
#else
    /* a persistent grid (G, 1, 1) walking the schedule */
    const kiln_hstu_kparams &p = a.p;
    extern __shared__ __align__(1024) unsigned char kiln_smem[];

    const int tid = threadIdx.x;
    const int wl = LOCAL ? p.window_left : -1;
    const int wr = LOCAL ? p.window_right : -1;

    const uint32_t sbase = (kiln_smem_u32(kiln_smem) + 1023u) & ~1023u;
    /* generic pointer to byte `off` of the aligned shared memory (computed
     * where used: a value held across the producer's loop costs one of its
     * 40 registers) */
    auto sptr = [&](uint32_t off) -> unsigned char * {
        return kiln_smem + (kiln_opaque_u32(sbase + off) - kiln_smem_u32(kiln_smem));
    };

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
#pragma unroll
        for (int s = 0; s < 2; ++s) {
            kiln_mbar_init(sbase + BAR_Q + 8 * s, 1);
            kiln_mbar_init(sbase + BAR_Q_EMPTY + 8 * s, NTHREADS - PTHREADS);
        }
#pragma unroll
        for (int s = 0; s < 2; ++s) {
            kiln_mbar_init(sbase + BAR_ITEM_FULL + 8 * s, 1);
            kiln_mbar_init(sbase + BAR_ITEM_EMPTY + 8 * s, NTHREADS - PTHREADS);
        }
#pragma unroll
        for (int s = 0; s < VSTAGES; ++s) kiln_mbar_init(sbase + BAR_LAND_V + 8 * s, 1);
        /* make the initialized barriers visible to the TMA unit */
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();

    const int wg = tid >> 7;
    if (wg == 0) {
        /* ================= producer =================
         * Warps 0 and 1 walk the schedule (the same items in the same
         * order); thread 0 hands each item to the consumers through a
         * two-slot queue in shared memory and issues TMA copies: for each
         * item its Q (into the buffer its item before last freed; with one
         * Q buffer, after the first K and V tiles, once the consumers' last
         * S of the item before has freed it), then its K and V tiles.  The
         * rings run on across items, so the copies of the next item overlap
         * the end of this one.  A tile that runs past the end of its
         * sequence comes by TMA too, with the rows of whatever follows (the
         * next sequence, padding): in K they only make S columns that the
         * mask replaces, but 0 * (an Inf or NaN in a V row) is not 0, so
         * such a V tile lands on BAR_LAND_V instead, and warp 1 zeroes its
         * rows >= L before it arrives on the stage's "full" barrier.  The
         * leader goes on issuing meanwhile.  (All 128 threads used to copy
         * such a tile with cp.async while the leader waited: on an H100,
         * (64, 2048, 8, 64) 364 -> 373 TFLOP/s, (256, 1024, 4, 128) even
         * at 393, means of 4 runs.  TMA without the zeroing, wrong only
         * for non-finite neighbours, ran the latter at 402: the zeroing's
         * latency, it seems; three warps zeroing were no faster.)  Warp 1
         * is at most one phase behind on each BAR_LAND_V[v]: the leader
         * reuses V stage v only once the consumers are done with it, which
         * takes warp 1's arrival. */
        kiln_setmaxnreg_dec<PREGS>();
        if ((tid >> 5) >= 2) return; /* warps 2 and 3: nothing to do */
        const bool leader = tid == 0;
        const void *tm_q = &a.tmap[KILN_TMA_Q][0];
        const void *tm_k = &a.tmap[KILN_TMA_K][0];
        const void *tm_v = &a.tmap[KILN_TMA_V][0];
        WarpSlot *ws = (WarpSlot *)sptr(OFF_WARP + 64 * (tid >> 5)); /* this warp's */
        {
            Walk w;
            w.cbase = 0;
            w.s = p.num_m_blocks;
            w.b0 = 0;
            w.mask = walk_mask(p, w.s, 0, tid < 32);
            if ((tid & 31) == 0) {
                ws->w = w;
                ws->round = 0;
                ws->land = 0;
            }
        }
        if ((tid & 31) == 0) ws->second = 0;
        __syncwarp();
        uint32_t kt = 0; /* K/V tiles issued so far (ring position) */
#pragma unroll 1
        for (uint32_t j = 0;; ++j) { /* item j */
            /* the first m-block of the next unit, or the second of this one
             * (ws->second) */
            ws = (WarpSlot *)sptr(OFF_WARP + 64 * (tid >> 5));
            const bool second = ws->second;
            if (!second && !walk_find(p, ws)) {
                const uint32_t slot = j & 1;
                if (leader) {
                    if (j >= 2) kiln_mbar_wait(sbase + BAR_ITEM_EMPTY + 8 * slot, ((j >> 1) - 1) & 1);
                    ((Item *)sptr(OFF_ITEM + 64 * slot))->m_block = -1;
                    kiln_mbar_arrive(sbase + BAR_ITEM_FULL + 8 * slot);
                }
                break;
            }
            /* the unit from the warp slot and the sequence from global
             * memory, again for each item rather than held in registers;
             * the walk found it valid (zero-initialized all the same:
             * fields a failed load leaves would be carried in registers
             * from the previous item) */
            const int b = ws->b, h = ws->h;
            kiln_seq sq = {};
            kiln_seq_load<DELTA_Q, CONTEXT, TARGET, LOCAL>(p, b, sq);
            const int nf = CONTEXT ? kiln_min(ws->w.s, (sq.c_ctx + BM - 1) / BM) : 0;
            const int mb = kiln_unit_mblock(ws->w.s, ws->u, nf, second ? 1 : 0);
            __syncwarp();
            if ((tid & 31) == 0) {
                ws->second = !second && kiln_unit_mblock(ws->w.s, ws->u, nf, 1) >= 0;
                ws->L = sq.L;
            }
            __syncwarp();
            {
                const uint32_t slot = j & 1;
                Item it;
                it.q_beg = sq.q_beg;
                it.len_q = sq.len_q;
                it.L = sq.L;
                it.off = sq.off;
                it.c_ctx = sq.c_ctx;
                it.hist_end = sq.hist_end;
                it.m_block = mb;
                it.h = h;
                it.b = b;
                if (leader) {
                    if (j >= 2) kiln_mbar_wait(sbase + BAR_ITEM_EMPTY + 8 * slot, ((j >> 1) - 1) & 1);
                    *(Item *)sptr(OFF_ITEM + 64 * slot) = it;
                    kiln_mbar_arrive(sbase + BAR_ITEM_FULL + 8 * slot);
                }
                int n_begin, n_end;
                kv_tiles(it, wl, wr, n_begin, n_end);
                const int ntiles = n_end - n_begin;
                /* TMA row coordinates (the runtime keeps rows within int32) */
                const int q_row = (int)(sq.q_beg + (int64_t)mb * BM);
                /* the loop runs over ring positions kq (tile kq - kt of
                 * the item) with kt folded into the bounds: one register
                 * fewer */
                const uint32_t kq_end = kt + (uint32_t)ntiles;
                const uint32_t kq_q = kt + (QSTAGES > 1 || ntiles == 0 ? 0u : 1u);
                const uint32_t kq_whole = kt + (uint32_t)kiln_max(sq.L / BN - n_begin, 0); /* tiles ending inside the sequence */
                const int k_row = (int)(sq.k_beg + (int64_t)n_begin * BN) - (int)(kt * BN);
                const int n_off = n_begin - (int)kt;
#pragma unroll 1
                for (uint32_t kq = kt;; ++kq) {
                    /* Q: first where it is double-buffered (the buffer
                     * was freed an item ago), else after the first K and
                     * V tiles (their stages are free before Q is) */
                    if (kq == kq_q && leader) {
                        const uint32_t jq = kiln_opaque_u32(j); /* not hoisted */
                        const uint32_t qb = jq % QSTAGES;
                        if (jq >= QSTAGES)
                            kiln_mbar_wait(sbase + BAR_Q_EMPTY + 8 * qb, ((jq / QSTAGES) - 1) & 1);
                        kiln_mbar_arrive_expect_tx(sbase + BAR_Q + 8 * qb, Q_BYTES);
#pragma unroll
                        for (int cb = 0; cb < NCB; ++cb)
                            kiln_tma_load_3d(sbase + OFF_Q + qb * Q_BYTES + (uint32_t)(cb * BM * ROWB), tm_q,
                                             cb * CBE, h, q_row, sbase + BAR_Q + 8 * qb);
                    }
                    if (kq >= kq_end) break;
                    const uint32_t ks = kq % KSTAGES, vs = kq % VSTAGES;
                    const uint32_t sK = k_addr(sbase, ks), sV = v_addr(sbase, vs);
                    const uint32_t full_k = sbase + BAR_FULL_K + 8 * ks;
                    const uint32_t full_v = sbase + BAR_FULL_V + 8 * vs;
                    const int row = k_row + (int)kq * BN;
                    const bool whole = kq < kq_whole;
                    /* Only the leader waits on the "empty" barriers, and it
                     * waits on every phase: a parity wait cannot tell a
                     * phase from the one two before or after it, and the
                     * other producer threads, which walk the schedule on
                     * their own, could fall two phases behind (and wait
                     * forever) or run two ahead (and pass at once).  Warp
                     * 1 waits only on BAR_LAND_V (see above). */
                    if (leader) {
                        if (kq >= KSTAGES)
                            kiln_mbar_wait(sbase + BAR_EMPTY_K + 8 * ks, ((kq / KSTAGES) - 1) & 1);
                        kiln_mbar_arrive_expect_tx(full_k, KV_BYTES);
#pragma unroll
                        for (int cb = 0; cb < NCB; ++cb)
                            kiln_tma_load_3d(sK + (uint32_t)(cb * BN * ROWB), tm_k, cb * CBE, h, row, full_k);
                        if (kq >= VSTAGES)
                            kiln_mbar_wait(sbase + BAR_EMPTY_V + 8 * vs, ((kq / VSTAGES) - 1) & 1);
                        const uint32_t bar_v = whole ? full_v : sbase + BAR_LAND_V + 8 * vs;
                        kiln_mbar_arrive_expect_tx(bar_v, KV_BYTES);
#pragma unroll
                        for (int cb = 0; cb < NCB; ++cb)
                            kiln_tma_load_3d(sV + (uint32_t)(cb * BN * ROWB), tm_v, cb * CBE, h, row, bar_v);
                    } else if (!whole && tid >= 32) {
                        /* warp 1: zero V's rows >= L once the tile has landed */
                        const uint32_t par = (ws->land >> vs) & 1u;
                        __syncwarp();
                        if (tid == 32) ws->land ^= 1u << vs;
                        const int nvalid = ws->L - (n_off + (int)kq) * BN;
                        kiln_mbar_wait(sbase + BAR_LAND_V + 8 * vs, par);
#pragma unroll 1
                        for (int i = nvalid * CPR + tid - 32; i < BN * CPR; i += 32)
                            kiln_st_shared_zero16(sV + tile_off<BN>(i / CPR, i % CPR));
                        kiln_fence_proxy_async();
                        __syncwarp();
                        if (tid == 32) kiln_mbar_arrive(full_v);
                    }
                }
                kt = kq_end;
            }
        }
    } else {
        /* ================= consumers ================= */
        kiln_setmaxnreg_inc<CREGS>();
        const int cw = wg - 1;              /* 64-row half of the m-block */
        const int t128 = tid & 127;
        const int lane = tid & 31;
        const int g = lane >> 2;            /* fragment row group */
        const int tq = lane & 3;            /* fragment column pair */
        const int row0 = cw * 64 + (t128 >> 5) * 16 + g;  /* local row (+8 for hf = 1) */
        const int group = TARGET ? kiln_max(p.target_group_size, 1) : 1;
        const float inv_scaling = p.inv_scaling;
        const int64_t ostride = p.out_row_stride;

        /* O is written by wgmmas only: the first P V of each item sets it */
        float o[D / 2];
        float s[BN / 2];
        uint32_t pa[PSTEPS][4];
        kiln_zero(o);
        kiln_zero(s);
        kiln_zero(pa);
        uint32_t kt = 0;        /* K/V tiles consumed so far (ring position) */
        Out prev;               /* the item before, if its last P V (of ring
                                 * tile kt - 1, P in pa) is to come; else rows 0 */
        prev.og = (uint16_t *)p.out;
        prev.rows = 0;
        prev.one_tile = 0;
        /* the first turn is the first warpgroup's (the second's last pass
         * is left unanswered at exit) */
        if (cw == 1) pp_pass(cw);

#pragma unroll 1
        for (uint32_t j = 0;; ++j) {
            const uint32_t slot = j & 1;
            kiln_mbar_wait(sbase + BAR_ITEM_FULL + 8 * slot, (j >> 1) & 1);
            const Item it = *(const Item *)sptr(OFF_ITEM + 64 * slot);
            kiln_mbar_arrive(sbase + BAR_ITEM_EMPTY + 8 * slot);
            if (it.m_block < 0) break;

            const int h = it.h;
            const int L = it.L;
            const int off = it.off;
            const int m0 = it.m_block * BM;
            const int rows_here = kiln_min(BM, it.len_q - m0);
            int n_begin, n_end;
            kv_tiles(it, wl, wr, n_begin, n_end);
            const int ntiles = n_end - n_begin;

            /* rows of this warpgroup, for the per-tile "full" test */
            const int wg_r1 = kiln_min(cw * 64 + 63, rows_here - 1);
            const int wi_min = m0 + cw * 64 + off;
            const int wi_max = m0 + wg_r1 + off;

            /* Tiles the mask leaves whole for every row of this warpgroup; element
             * masks run only outside them.  The loop is split so that no branch sits
             * between a wgmma and its wait (ptxas would serialize the wgmmas). */
            int f_lo, f_hi;
            kiln_fwd_whole_tiles<CAUSAL, LOCAL, TARGET, BN>(wi_min, wi_max, L, it.hist_end, wl, wr, n_begin, n_end,
                                                            f_lo, f_hi);

            const uint32_t qb = j % QSTAGES;
            Ctx c;
            c.half_alpha = 0.5f * p.alpha;
            c.L = L;
            c.i0 = m0 + row0 + off;
            c.tq = tq;
            c.c_ctx = it.c_ctx;
            c.hist_end = it.hist_end;
            c.n_last = n_end - 1;
            c.cw = cw;
            c.q_empty = sbase + BAR_Q_EMPTY + 8 * qb;
#pragma unroll
            for (int hf = 0; hf < 2; ++hf) {
                /* divisions stay out of the key loop (their slow path is a branch) */
                const int i = c.i0 + 8 * hf;
                c.tgt_lo[hf] = TARGET && i >= it.hist_end
                                   ? it.hist_end + ((i - it.hist_end) / group) * group : 0;
            }
            c.wl = wl;
            c.wr = wr;
            Out cur;
            cur.og = (uint16_t *)p.out + (it.q_beg + m0) * ostride + (int64_t)h * p.out_head_stride;
            cur.rows = rows_here;
            /* opaque: hoisted out of the item loop, it was spilled */
            const uint32_t q_addr = kstep_addr<BM>(kiln_opaque_u32(sbase + OFF_Q + qb * Q_BYTES), cw * 64, 0);

            kiln_mbar_wait(sbase + BAR_Q + 8 * qb, (j / QSTAGES) & 1);

            if (ntiles == 0) {
                /* no key tile: O = 0 (the item before first) */
                last_pv(o, pa, kt - 1, sbase, !prev.one_tile, prev, ostride, row0, tq, inv_scaling, cw);
                prev.rows = 0;
                kiln_mbar_arrive(c.q_empty);
                store_o<true>(o, cur, ostride, row0, tq, inv_scaling);
                continue;
            }
            if (n_begin >= f_lo && n_begin < f_hi)
                step<false, true>(c, s, o, pa, n_begin, kt, sbase, q_addr, !prev.one_tile, prev, ostride,
                                  row0, inv_scaling);
            else
                step<true, true>(c, s, o, pa, n_begin, kt, sbase, q_addr, !prev.one_tile, prev, ostride,
                                 row0, inv_scaling);
            const uint32_t kt0 = kt - (uint32_t)n_begin; /* ring position of tile n: kt0 + n */
            int n = n_begin + 1;
            /* the P V in the step of tile n is that of tile n - 1: the
             * item's first when n = n_begin + 1 */
#pragma unroll 1
            for (; n < f_lo; ++n)
                step<true, false>(c, s, o, pa, n, kt0 + n, sbase, q_addr, n > n_begin + 1, prev, ostride,
                                  row0, inv_scaling);
#pragma unroll 1
            for (; n < f_hi; ++n)
                step<false, false>(c, s, o, pa, n, kt0 + n, sbase, q_addr, n > n_begin + 1, prev, ostride,
                                   row0, inv_scaling);
#pragma unroll 1
            for (; n < n_end; ++n)
                step<true, false>(c, s, o, pa, n, kt0 + n, sbase, q_addr, n > n_begin + 1, prev, ostride,
                                  row0, inv_scaling);
            kt += (uint32_t)ntiles;
            prev = cur;
            prev.one_tile = ntiles == 1;
        }
        last_pv(o, pa, kt - 1, sbase, !prev.one_tile, prev, ostride, row0, tq, inv_scaling, cw);
    }
#endif /* KILN_PERSIST */
}
