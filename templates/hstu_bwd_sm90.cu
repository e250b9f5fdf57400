/* hstu_bwd_sm90.cu -- HSTU attention backward for Hopper (sm_90a): wgmma,
 * warp specialization, mbarrier pipeline; at head dim 128 a persistent grid
 * with the dq pass fused in.
 *
 * Same formulas as hstu_bwd.cu (SPEC.md section 1, no softmax statistics):
 * with x = q_i . k_j, s = alpha x, on valid pairs
 *   dv_j += silu(s) inv_scaling do_i       dp = do_i . v_j
 *   ds    = dp silu'(s) alpha inv_scaling  dk_j += ds q_i    dq_i += ds k_j
 * and the same prelude, grid, entries (main, dq, convert), workspace contract
 * (dq_accum fp32, zeroed before main, turned into dq by convert; at head
 * dim 128 with TMA, neither: the fused dq pass below), masks, offsets guard
 * and debug counter.  No rab, drab or deterministic mode: those
 * keys stay on hstu_bwd.cu (the dispatcher refuses them here).
 *
 * Work item = BLOCK_N = 128 keys of one (batch, head) (64 keys at head dim
 * 256, where the consumers split the head dim instead: consume_cols()).
 * Head dims 64 and 256: a CTA per item, grid (key blocks, heads, batch).
 * Head dim 128 runs only with the fused dq pass (fuse_dq, below; the
 * runtime sends calls it cannot serve to hstu_bwd.cu) and, unless the
 * runtime asks for the one-item grid (KILN_BWD_GRID=blocks), persistent:
 * a CTA per SM taking items from a counter ("work items" below), so that
 * one item's K/V loads, dK/dV stores and dq tail overlap the next one's
 * work (H100, (256, 1024, 4, 128) causal backward 1.68 -> 1.56 ms).
 * 12 warps:
 *   warpgroup 0 (producer, setmaxnreg 24; 40 at head dim 128, where its
 *     warp 0 alone loads, warp 1 writes dq and warps 2 and 3 convert it:
 *     "fused dq pass" below): copies K and V once per item,
 *     then streams the query tiles that can see the keys (Q and dO, BLOCK_M = 64 rows)
 *     through a STAGES-deep ring into the 128B-swizzled layout: one thread
 *     with TMA (descriptors built by the host per call,
 *     hstu_bwd_tma_params.h), completing on the stage's "full" mbarrier by
 *     transaction bytes; a tile that runs past the sequence with cp.async by
 *     all 128 threads (by TMA and then zeroed, with the fused pass: see
 *     land_partial()), rows past the end zero-filled so that they
 *     contribute exact zeros.
 *   warpgroups 1, 2 (consumers, setmaxnreg 240; 232 at head dim 128): 64
 *     keys each.  Per tile:
 *     S^T = K Q^T and dP^T = V dO^T (wgmma, both operands from shared
 *     memory, K-major); P'^T = silu(s) and 2 silu'(s), masked, packed to 16
 *     bits in registers;
 *     dV += P'^T dO with P'^T as the register A operand and dO read MN-major;
 *     dS'^T = dP^T 2 silu'(s) goes to registers (dK += dS'^T Q, same form)
 *     and to shared memory.  After a named barrier of both consumers the
 *     whole dS'^T tile (64 queries x 128 keys) is there and each warpgroup
 *     computes dQ = dS' K for half of the head dim (A = dS'^T read M-major,
 *     B = K read N-major) and releases the stage ("empty" mbarrier, 256
 *     arrivals).  With a TMA descriptor of dq_accum from the runtime, each
 *     warpgroup stages its dQ in the tile's Q/dO stage and one thread adds
 *     it by bulk reductions, freeing the stage once they have read it
 *     (bulk_dq_add(), release_staged()); without one, the dQ is added by
 *     red.global.add.v4 at the start of the next tile, after its proxy
 *     fence: a proxy fence waits for the thread's outstanding reductions.
 * Scale factors stay out of the 16-bit operands (silu(s), dS' = dP 2 silu');
 * inv_scaling and alpha inv_scaling / 2 are applied to the fp32 results.
 * Element masks run only on tiles the mask does not leave whole, and are
 * computed before the tile's first wgmma so that no branch sits between a
 * wgmma and its wait (ptxas would serialize the wgmmas).  dS'^T is double
 * buffered: a warpgroup rewrites a buffer two tiles later, after the barrier
 * of the tile in between, which the other warpgroup reaches only after its
 * dQ wgmma that read the buffer has completed.
 *
 * Shared memory (bytes; kiln__hstu_bwd_sm90_smem()): up to 1024 bytes of
 * alignment slack, then
 *   K [BN x D] | V [BN x D] | STAGES x (Q [64 x D] | dO [64 x D])
 *   | 2 x (dS'^T [BN keys x 64 queries] | at head dim 256, P'^T alike)
 *   | at head dim 128, 2 x a dq tile in fp32 (the converters')
 *   | mbarriers, item slots and the other small cells (656, OFF_BAR on)
 * each tile as D/64 column blocks of [rows][64] with the 128-byte swizzle.
 *
 * Requirements (checked by the runtime): q, k, v, dout, dq, dk, dv 16-byte
 * aligned with row and head strides multiples of 8 elements; dq_accum 16-byte
 * aligned. */
#include "kiln_bwd_common.cuh"
#include "kiln_sm90_bwd.cuh"
#include "hstu_bwd_tma_params.h"

#if !defined(KILN_DTYPE) || !defined(KILN_HEAD_DIM) || !defined(KILN_BLOCK_M) || \
    !defined(KILN_BLOCK_N) || !defined(KILN_WARPS)
#error "hstu_bwd_sm90.cu: the specialization prelude is missing"
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
#if (defined(KILN_RAB) && KILN_RAB) || (defined(KILN_DRAB) && KILN_DRAB) || \
    (defined(KILN_DETERMINISTIC) && KILN_DETERMINISTIC)
#error "hstu_bwd_sm90.cu: rab, drab and deterministic keys use hstu_bwd.cu"
#endif

namespace kiln_hstu_bwd_sm90_impl {
using namespace kiln_bwd;
using namespace kiln_sm90_bwd;

constexpr int DT = KILN_DTYPE;
constexpr int D = KILN_HEAD_DIM;
constexpr int BM = KILN_BLOCK_M;
constexpr int BN = KILN_BLOCK_N;
constexpr int NTHREADS = KILN_WARPS * 32;
/* Head dim 256: the warpgroups split the head dim instead of the keys. */
constexpr bool COLSPLIT = D == 256;
/* Q/dO ring depth: must match kiln__hstu_bwd_sm90_smem(). */
constexpr int STAGES = D <= 64 ? 3 : 2;
constexpr int PTHREADS = 128;   /* producer warpgroup */
constexpr int CTHREADS = 256;   /* both consumer warpgroups */
constexpr int KSTEPS = D / 16;  /* k16 steps of S^T, dP^T (over the head dim) */
constexpr int MSTEPS = BM / 16; /* k16 steps of dV, dK (over the queries) */
constexpr int NSTEPS = BN / 16; /* k16 steps of dQ (over the keys) */
constexpr int DQN = D / 2;      /* dQ columns per consumer warpgroup */
constexpr bool CAUSAL = KILN_CAUSAL != 0;
constexpr bool LOCAL = KILN_LOCAL != 0;
constexpr bool CONTEXT = KILN_CONTEXT != 0;
constexpr bool TARGET = KILN_TARGET != 0;
constexpr bool DELTA_Q = KILN_DELTA_Q != 0;

static_assert(DT == KILN_DT_FP16 || DT == KILN_DT_BF16, "dtype");
static_assert(D == 64 || D == 128 || D == 256, "head dim 64, 128 or 256");
static_assert(BM == 64 && BN == (COLSPLIT ? 64 : 128) && NTHREADS == 384,
              "64 x 128 tiles (64 x 64 at head dim 256), 3 warpgroups");
static_assert(!(CONTEXT || TARGET) || CAUSAL, "context/target need causal");

constexpr uint32_t KV_BYTES = BN * D * 2;
constexpr uint32_t QT_BYTES = BM * D * 2;
constexpr uint32_t DS_BYTES = BN * BM * 2;
/* per exchange buffer: dS'^T, then P'^T when the warpgroups split columns */
constexpr uint32_t XCH_BYTES = COLSPLIT ? 2 * DS_BYTES : DS_BYTES;
constexpr uint32_t OFF_K = 0;
constexpr uint32_t OFF_V = KV_BYTES;
constexpr uint32_t OFF_Q = 2 * KV_BYTES; /* stage st: Q at OFF_Q + 2 st QT_BYTES, dO after it */
constexpr uint32_t OFF_DS = OFF_Q + STAGES * 2 * QT_BYTES;
/* for the fused dq pass (fuse_dq, head dim 128): two buffers of a
 * whole dq_accum tile (D fp32 columns as D / 32 boxes of [BM][32], 128-byte
 * swizzle) that the converter warps turn into dq */
constexpr uint32_t CONV_BYTES = D == 128 ? D * BM * 4 : 0;
constexpr uint32_t OFF_CONV = OFF_DS + 2 * XCH_BYTES;
constexpr uint32_t OFF_BAR = OFF_CONV + 2 * CONV_BYTES;
static_assert(STAGES <= 3, "barrier area");
constexpr uint32_t BAR_FULL = OFF_BAR;         /* [STAGES] */
constexpr uint32_t BAR_EMPTY = OFF_BAR + 24;   /* [STAGES] */
constexpr uint32_t BAR_KV = OFF_BAR + 48;
constexpr uint32_t BAR_CFULL = OFF_BAR + 56;   /* [2]: a tile to convert has landed */
constexpr uint32_t BAR_CEMPTY = OFF_BAR + 72;  /* [2]: the converters are done with it */
constexpr uint32_t BAR_DQF = OFF_BAR + 88;     /* [STAGES]: a tile's dQ is staged */
constexpr uint32_t C_INFO = OFF_BAR + 128;     /* [2] x (first row of dq_accum + 1, 0 to stop; rows; head) */
/* work items (the persistent grid with fuse_dq): */
constexpr uint32_t BAR_KVE = OFF_BAR + 160;    /* the consumers are done with K and V */
constexpr uint32_t BAR_IFULL = OFF_BAR + 168;  /* [2]: an item is in its slot */
constexpr uint32_t BAR_IEMPTY = OFF_BAR + 184; /* [2]: its readers have taken it */
constexpr uint32_t I_COUNT = OFF_BAR + 200;    /* [12]: items a reading warp has taken */
constexpr uint32_t I_SLOT = OFF_BAR + 256;     /* [2] x (key block, -1 to stop; head; sequence) */
/* [STAGES] x the dq writer's view of the stage's tile (TileDesc) */
constexpr uint32_t T_DESC = OFF_BAR + 288;
constexpr uint32_t BAR_LAND = OFF_BAR + 384;   /* a partial tile of the fused loader landed */
/* [8] x 32: a consumer warp's item, as its dK, dV stores need it (first key
 * row, keys, head, the warpgroup's first key) */
constexpr uint32_t W_EPI = OFF_BAR + 400;
/* kiln__hstu_bwd_sm90_smem() reserves 656 bytes here */
static_assert(KV_BYTES % 1024 == 0 && QT_BYTES % 1024 == 0 && DS_BYTES % 1024 == 0, "swizzle alignment");

/* The mask's intervals and tile ranges (kiln_bwd_common.cuh). */
using M = Mask<CAUSAL, LOCAL, CONTEXT, TARGET, BM>;

/* S^T and dP^T of this warpgroup's 64 keys (rows r0.. of K and V) against
 * the query tile at sq / so: two commit groups, S^T first.  Bases opaque so
 * that the compiler does not keep KSTEPS pairs of 64-bit descriptors live. */
KILN_DEV void issue_s_dp(float (&sa)[BM / 2], float (&dp)[BM / 2], uint32_t k_rows, uint32_t v_rows,
                         uint32_t sq, uint32_t so)
{
    const uint32_t ka = kiln_opaque_u32(k_rows), qa = kiln_opaque_u32(sq);
#pragma unroll
    for (int ks = 0; ks < KSTEPS; ++ks)
        kiln_wgmma_ss<BM, DT>(sa, desc_k(ka, kstep<BN>(ks)), desc_k(qa, kstep<BM>(ks)), ks > 0);
    kiln_wgmma_commit();
    const uint32_t va = kiln_opaque_u32(v_rows), oa = kiln_opaque_u32(so);
#pragma unroll
    for (int ks = 0; ks < KSTEPS; ++ks)
        kiln_wgmma_ss<BM, DT>(dp, desc_k(va, kstep<BN>(ks)), desc_k(oa, kstep<BM>(ks)), ks > 0);
    kiln_wgmma_commit();
}

/* acc (64 keys x D) += A (registers, 64 keys x BM queries) * the [BM][D]
 * tile at t (MN-major: the queries run down its rows). */
KILN_DEV void issue_kv_grad(float (&acc)[D / 2], const uint32_t (&a)[MSTEPS][4], uint32_t t)
{
    const uint32_t ta = kiln_opaque_u32(t);
#pragma unroll
    for (int kk = 0; kk < MSTEPS; ++kk) kiln_wgmma_rs<D, DT>(acc, a[kk], desc_mn<BM>(ta, (uint32_t)(kk * 16 * 128)), 1);
    kiln_wgmma_commit();
}

/* dq (64 queries x DQN) = dS'^T tile at ds (read M-major) times the key
 * rows of K from column kcol (read N-major), over all BN keys. */
KILN_DEV void issue_dq(float (&dq)[DQN / 2], uint32_t ds, uint32_t kcol)
{
    const uint32_t da = kiln_opaque_u32(ds), ka = kiln_opaque_u32(kcol);
#pragma unroll
    for (int ks = 0; ks < NSTEPS; ++ks)
        kiln_wgmma_sstt<DQN, DT>(dq, desc_mn<BN>(da, (uint32_t)(ks * 16 * 128)),
                                 desc_mn<BN>(ka, (uint32_t)(ks * 16 * 128)), ks > 0);
    kiln_wgmma_commit();
}

/* dq_accum rows m0.. (rows of them valid) += dq * sds, from this thread's
 * fragments of a warpgroup's dQ (64 queries x 2 NF columns).  Lanes
 * tq, tq ^ 1 swap halves so that each adds 4 consecutive floats: even tq row
 * g, columns 2 tq..2 tq+3; odd tq row g + 8, columns 2 tq-2..2 tq+1. */
template <int NF>
KILN_DEV void add_dq(float *dqa, int m0, int hd, const float (&dq)[NF], int rows, float sds, int w4, int g,
                     int tq)
{
    const bool odd = tq & 1;
    const int row = w4 * 16 + g + (odd ? 8 : 0);
    float *dst = dqa + (int64_t)(m0 + row) * hd + 2 * tq - (odd ? 2 : 0);
#pragma unroll
    for (int nt = 0; nt < NF / 4; ++nt) {
        const float x0 = odd ? dq[4 * nt + 0] : dq[4 * nt + 2];
        const float x1 = odd ? dq[4 * nt + 1] : dq[4 * nt + 3];
        const float y0 = shfl_xor_f32(x0, 1);
        const float y1 = shfl_xor_f32(x1, 1);
        const float a0 = odd ? y0 : dq[4 * nt + 0], a1 = odd ? y1 : dq[4 * nt + 1];
        const float a2 = odd ? dq[4 * nt + 2] : y0, a3 = odd ? dq[4 * nt + 3] : y1;
        if (row < rows) red_add_v4_f32(dst + nt * 8, a0 * sds, a1 * sds, a2 * sds, a3 * sds);
    }
}

/* Where warpgroup cw stages box j (dQ columns 32 j.. of its DQN) in the
 * Q/dO stage at sq.  With the head dim split (COLSPLIT) its boxes go to the
 * column blocks that only its own dV / dK products read (Q's and dO's
 * columns 128 cw..: blocks 2 cw, 2 cw + 1 of each), so that it need not
 * wait for the other warpgroup's products before it stages; with the keys
 * split, both read the whole stage, and box j is the j-th from
 * sq + cw (DQN / 32) boxes. */
KILN_DEV uint32_t dq_box(uint32_t sq, int cw, int j)
{
    if constexpr (COLSPLIT)
        return sq + (uint32_t)((j >> 1) * QT_BYTES + (2 * cw + (j & 1)) * BM * 128);
    else
        return sq + (uint32_t)((cw * (DQN / 32) + j) * BM * 128);
}

/* A warpgroup's dQ (64 queries x 2 NF columns), scaled by sds, into NF / 16
 * boxes [64 rows][32 fp32] (dq_box()) with the 128-byte swizzle (chunk c of
 * row r at c ^ (r & 7)): the source of the bulk reductions into dq_accum. */
template <int NF>
KILN_DEV void stage_dq(uint32_t sq, int cw, const float (&dq)[NF], float sds, int w4, int g, int tq)
{
#pragma unroll
    for (int nt = 0; nt < NF / 4; ++nt)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
            const int r = w4 * 16 + g + 8 * hf;
            const int ch = ((nt & 3) * 2 + (tq >> 1)) ^ g;
            kiln_st_shared_v2_f32(dq_box(sq, cw, nt >> 2) + (uint32_t)(r * 128 + (ch << 4) + (tq & 1) * 8),
                                  dq[4 * nt + 2 * hf] * sds, dq[4 * nt + 2 * hf + 1] * sds);
        }
}

/* Add (STORE: store) warpgroup cw's NB boxes to dq_accum rows row..,
 * columns col.. of head h; one thread, one bulk group. */
template <int NB, bool STORE = false>
KILN_DEV void reduce_dq(const kiln_hstu_bwd_tma_kparams &a, uint32_t sq, int cw, int col, int h, int row)
{
#pragma unroll
    for (int j = 0; j < NB; ++j) {
        if constexpr (STORE) kiln_tma_store_3d(&a.tmap[KILN_BTMA_DQ][0], dq_box(sq, cw, j), col + 32 * j, h, row);
        else kiln_tma_reduce_add_3d(&a.tmap[KILN_BTMA_DQ][0], dq_box(sq, cw, j), col + 32 * j, h, row);
    }
    kiln_bulk_commit();
}

/* The issuer of the last bulk reductions frees their stage once they have
 * read it (its arrival on "empty" held back until then).  The reductions
 * stream to the L2 at its pace, so the wait is placed late in the next
 * tile, under its last products (between the dQ wgmma's commit and its
 * wait).  Right after the next tile's S / dP issue, the issuer's warp sat
 * in this wait and held its whole warpgroup at the next barrier.  On an
 * H100 (ragged causal, backward TFLOP/s, 2 runs each): (32, 4099, 4, 256)
 * + 3 context 316 -> 342 / 343, (32, 4096, 4, 128) 346 / 349 -> 368 / 368,
 * (64, 2048, 8, 64) 226 / 226 -> 235 / 235.  (At 64 and 128, right after
 * the pointwise step gave 376 and 233, but ptxas spills there in the
 * local + delta_q keys.)  The stage still comes back in time for the
 * producer to fill it for the next tile (2 stages). */
KILN_DEV void release_staged(uint32_t sbase, int &pending)
{
    if (pending < 0) return;
    kiln_bulk_wait_read();
    kiln_mbar_arrive(sbase + BAR_EMPTY + 8 * pending);
    pending = -1;
}

/* After a tile's products: this warpgroup's dQ (64 queries x DQN columns
 * from cw DQN) staged in the tile's stage st and added to dq_accum rows
 * row.. by the issuer's bulk reductions.  The staging waits for the other
 * warpgroup's products only where they read the same bytes (keys split);
 * with the head dim split, its boxes are in column blocks only this
 * warpgroup's products read, done once its own wgmmas are (on an H100,
 * (32, 4099, 4, 256) causal + 3 context: backward 315 / 316 -> 319 / 319
 * TFLOP/s).
 * Every other thread frees stage st now; the issuer, in release_staged(),
 * once the reductions have read it. */
template <int NF>
KILN_DEV void bulk_dq_add(const kiln_hstu_bwd_tma_kparams &a, const float (&dq)[NF], uint32_t sbase, uint32_t sq,
                          int st, float sds, int cw, int w4, int g, int tq, int h, int row, bool issuer,
                          int &pending)
{
    if constexpr (!COLSPLIT) kiln_named_bar_sync(1, CTHREADS);
    stage_dq(sq, cw, dq, sds, w4, g, tq);
    kiln_fence_proxy_async();
    kiln_named_bar_sync(3 + cw, 128);
    if (issuer) {
        reduce_dq<DQN / 32>(a, sq, cw, cw * DQN, h, row);
        pending = st;
    } else {
        kiln_mbar_arrive(sbase + BAR_EMPTY + 8 * st);
    }
}

/* ------------------------------------------------------- fused dq pass */
/* With fuse_dq (head dim 128), dq_accum is neither zeroed before the
 * kernel nor converted after it.  The consumers stage each tile's dQ in its
 * Q/dO stage as before and arrive on the stage's "dq full" barrier; the
 * producer warpgroup's warp 1 (the dq writer, dq_writer()) takes it from
 * there, off the consumers' path, and its warps 2 and 3 (dq_converter())
 * write finished tiles to dq.  Per dq tile, two words (dq_sync): claims,
 * and the state (READY once the tile holds its first contribution, plus the
 * count of contributions that have landed).
 *   - The writer claims each tile once its Q/dO stage is full (it reads
 *     the loader's TileDesc of the tile then), before it waits for its dQ.  The first
 *     claimant stores (a TMA store, or stores of the rows that belong to
 *     the sequence when the tile runs past its end), waits for the store
 *     and sets READY; the others wait for READY, then add (bulk reductions)
 *     and are counted one tile later, once their adds have landed.
 *   - The contribution that completes the count (E = the key blocks whose
 *     visit range holds the tile, counted by the loader) has the tile
 *     loaded into one of two buffers and converted by warps 2 and 3.
 * No deadlock: a writer waits for READY only of a tile that another CTA has
 * claimed.  That CTA's writer claimed it with the tile's data and its
 * item's K and V in place (or on their way, by TMA), so its consumers
 * deliver the dQ without waiting on any other CTA, and its writer sets
 * READY as soon as its store has landed, before it takes another tile
 * (the persistent grid changes none of this: each CTA still finishes a
 * tile's claim before it makes the next).
 * On an H100, (256, 1024, 4, 128) causal: forward + backward 2.26 -> 2.06 ms
 * (main 1.52 + memset 0.13 + convert 0.22 -> main 1.65).  Tried first: the
 * same protocol run by the consumers' issuers, 2.03 ms for main alone (an
 * atomic's round trip and the conversions on their path every tile); one
 * writer warp converting by itself, 2.04 (it fell behind the consumers);
 * waits for READY cost 0.06 ms of the 1.65. */
constexpr uint32_t READY = 1u << 16;
/* Head dim 128 only: at 64 the writer's round trips per tile (half the
 * work of one at 128) made the backward of (64, 2048, 8, 64) slower, 1.81
 * against 1.73 ms with the memset and convert pass; 256 has no room. */
constexpr bool FUSE_OK = D == 128;
/* Registers per thread of the producer and consumer warpgroups: 128
 * KILN_PREGS + 256 KILN_CREGS <= 384 * 168.  With the fused dq pass (head
 * dim 128) 40 / 232 for every key: the producer warps fit 40 once the
 * loader copies partial tiles by TMA (land_partial()), the dq writer reads
 * its tiles' TileDesc instead of holding a sequence, and the loop counts
 * that spilled live in shared memory; the consumers need 232 for some
 * masks.  (Before the persistent grid: 56 / 224, or 64 / 216 where 224
 * spilled, which cost the bf16 causal keys 4 to 7% on an H100.) */
#ifndef KILN_PREGS
#define KILN_PREGS (FUSE_OK ? 40 : 24)
#define KILN_CREGS (FUSE_OK ? 232 : 240)
#endif
static_assert(128 * KILN_PREGS + 256 * KILN_CREGS <= 384 * 168, "register budget");

/* The key blocks whose visit range holds query tile m (every lane gets it). */
KILN_DEV int contributors(const kiln_seq &s, int m, int lane)
{
    const int nb = (s.L + BN - 1) / BN;
    int e = 0;
#pragma unroll 1
    for (int n = lane; n - lane < nb; n += 32) {
        bool v = false;
        if (n < nb) v = M::visit_range(s, n * BN, kiln_min(BN, s.L - n * BN)).valid(m);
        e += __popc(__ballot_sync(0xffffffffu, v));
    }
    return e;
}

/* The number of the sync words of query tile m of sequence b, head h
 * (below 2^31: the runtime checks). */
KILN_DEV uint32_t sync_index(const kiln_hstu_bwd_tma_kparams &a, const kiln_seq &s, int b, int h, int m)
{
    return (uint32_t)(b + (int)(s.q_beg / BM) + m) * (uint32_t)a.b.f.num_heads + (uint32_t)h;
}

/* Those words (after the 16 bytes of the persistent grid's item counter). */
KILN_DEV uint32_t *sync_cell(const kiln_hstu_bwd_tma_kparams &a, uint32_t i)
{
    return (uint32_t *)a.dq_sync + 4 + 2 * (uint64_t)i;
}

/* What the dq writer needs of a stage's tile, written by the loader before
 * it fills the stage (the writer reads it once the stage is full): the
 * tile's first row of dq_accum, its rows (-1: no tile, stop), its
 * contributors, its sync words and its head.  With it the writer needs no
 * sequence of its own, and fits its registers. */
struct TileDesc {
    int row, rows, e;
    uint32_t cell;
    int h;
};

KILN_DEV void put_desc(uint32_t sbase, int st, const TileDesc &d)
{
    const uint32_t at = sbase + T_DESC + 32 * st;
    kiln_st_shared_u32(at, (uint32_t)d.row);
    kiln_st_shared_u32(at + 4, (uint32_t)d.rows);
    kiln_st_shared_u32(at + 8, (uint32_t)d.e);
    kiln_st_shared_u32(at + 12, d.cell);
    kiln_st_shared_u32(at + 16, (uint32_t)d.h);
}

KILN_DEV TileDesc get_desc(uint32_t sbase, int st)
{
    const uint32_t at = sbase + T_DESC + 32 * st;
    TileDesc d;
    d.row = (int)kiln_ld_shared_u32(at);
    d.rows = (int)kiln_ld_shared_u32(at + 4);
    d.e = (int)kiln_ld_shared_u32(at + 8);
    d.cell = kiln_ld_shared_u32(at + 12);
    d.h = (int)kiln_ld_shared_u32(at + 16);
    return d;
}

/* One warp stores the rows < rows of a dq tile held as D / 32 swizzled
 * boxes of [BM][32] fp32 at box0 (stage_dq()'s layout) into dq_accum (acc:
 * the tile's row 0, rows of hd floats).  Lane l takes chunk l & 7 of rows
 * l >> 3, +4, ...: 8 lanes read one 128-byte row. */
KILN_DEV void store_rows(uint32_t box0, int rows, float *acc, int hd, int lane)
{
    const int c = lane & 7;
#pragma unroll 1
    for (int r = lane >> 3; r < rows; r += 4) {
        const uint32_t src = box0 + (uint32_t)(r * 128 + ((c ^ (r & 7)) << 4));
#pragma unroll 2
        for (int j = 0; j < D / 32; ++j) {
            float x[4];
            kiln_ld_shared_v4_f32(src + (uint32_t)(j * BM * 128), x);
            asm volatile("st.global.v4.f32 [%0], {%1, %2, %3, %4};\n"
                         :: "l"(acc + (int64_t)r * hd + 32 * j + 4 * c), "f"(x[0]), "f"(x[1]), "f"(x[2]), "f"(x[3])
                         : "memory");
        }
    }
}

/* The converter warps (2 and 3 of the producer warpgroup): each tile the
 * dq writer hands over (C_INFO, BAR_CFULL) into dq, until a stop.  Thread t
 * takes 8 consecutive floats (16 bytes of dq) of rows t >> 2, +16, ...
 * C_INFO names the tile (row of dq_accum, rows, head): in the persistent
 * grid it may belong to an item that the rest of the CTA has left. */
KILN_DEV void dq_converter(const kiln_hstu_bwd_kparams &p, uint32_t sbase, int t)
{
    const int cp = t & 3;
#pragma unroll 1
    for (int n = 0;; ++n) {
        const int buf = n & 1;
        kiln_mbar_wait(sbase + BAR_CFULL + 8 * buf, (uint32_t)((n >> 1) & 1));
        const uint32_t m0p1 = kiln_ld_shared_u32(sbase + C_INFO + 16 * buf);
        if (m0p1 == 0) return;
        const int rows = (int)kiln_ld_shared_u32(sbase + C_INFO + 16 * buf + 4);
        const int h = (int)kiln_ld_shared_u32(sbase + C_INFO + 16 * buf + 8);
        const uint32_t box0 = sbase + OFF_CONV + (uint32_t)buf * CONV_BYTES;
        uint16_t *dq = (uint16_t *)p.dq + ((int64_t)m0p1 - 1) * p.dq_row_stride + (int64_t)h * p.dq_head_stride;
#pragma unroll 1
        for (int r = t >> 2; r < rows; r += 16) {
#pragma unroll 2
            for (int j = 0; j < D / 32; ++j) {
                float x[4], y[4];
                const uint32_t row = box0 + (uint32_t)(j * BM * 128 + r * 128);
                kiln_ld_shared_v4_f32(row + (uint32_t)(((2 * cp) ^ (r & 7)) << 4), x);
                kiln_ld_shared_v4_f32(row + (uint32_t)(((2 * cp + 1) ^ (r & 7)) << 4), y);
                asm volatile("st.global.v4.u32 [%0], {%1, %2, %3, %4};\n"
                             :: "l"(dq + (int64_t)r * p.dq_row_stride + 32 * j + 8 * cp),
                                "r"(kiln_pack2<DT>(x[0], x[1])), "r"(kiln_pack2<DT>(x[2], x[3])),
                                "r"(kiln_pack2<DT>(y[0], y[1])), "r"(kiln_pack2<DT>(y[2], y[3])) : "memory");
            }
        }
        kiln_mbar_arrive(sbase + BAR_CEMPTY + 8 * buf);
    }
}

/* The writer's lane 0 hands the tile at row m0p1 - 1 of dq_accum (0: stop)
 * to the converters: the n-th handover uses buffer n & 1 once they are
 * done with its previous tile. */
KILN_DEV void hand_over(const kiln_hstu_bwd_tma_kparams &a, uint32_t sbase, int h, uint32_t m0p1, int rows,
                        uint32_t &n)
{
    const int buf = (int)(n & 1);
    if (n >= 2) kiln_mbar_wait(sbase + BAR_CEMPTY + 8 * buf, ((n >> 1) - 1) & 1);
    kiln_st_shared_u32(sbase + C_INFO + 16 * buf, m0p1);
    kiln_st_shared_u32(sbase + C_INFO + 16 * buf + 4, (uint32_t)rows);
    kiln_st_shared_u32(sbase + C_INFO + 16 * buf + 8, (uint32_t)h);
    const uint32_t bar = sbase + BAR_CFULL + 8 * buf;
    if (m0p1 == 0) {
        kiln_mbar_arrive(bar);
    } else {
        kiln_fence_proxy_async_global();
        kiln_mbar_arrive_expect_tx(bar, CONV_BYTES);
#pragma unroll
        for (int j = 0; j < D / 32; ++j)
            kiln_tma_load_3d(sbase + OFF_CONV + (uint32_t)(buf * CONV_BYTES + j * BM * 128), &a.tmap[KILN_BTMA_DQ][0],
                             32 * j, h, (int)m0p1 - 1, bar);
    }
    ++n;
}

/* Count a landed contribution to tile d with inc; the one that completes
 * it hands the tile to the converters. */
KILN_DEV void count_and_convert(const kiln_hstu_bwd_tma_kparams &a, uint32_t sbase, const TileDesc &d, uint32_t inc,
                                uint32_t &nconv, int lane)
{
    if (lane != 0) return;
    const uint32_t old = kiln_atom_add_acq_rel_gpu(sync_cell(a, d.cell) + 1, inc);
    if (old + inc != READY + (uint32_t)d.e) return;
    hand_over(a, sbase, d.h, (uint32_t)d.row + 1u, d.rows, nconv);
}

/* The dq writer: warp 1 of the producer warpgroup, over the tiles the
 * consumers visit, in their order (the header of this section), as the
 * loader describes them (TileDesc), until a stop; then it stops the
 * converters too. */
KILN_DEV void dq_writer(const kiln_hstu_bwd_tma_kparams &a, uint32_t sbase, int lane)
{
    const kiln_hstu_bwd_kparams &p = a.b;
    const int hd = p.f.num_heads * D;
    uint32_t nconv = 0; /* lane 0: handovers to the converters */
    TileDesc pd;        /* a reduction issued, not yet counted (pd.rows > 0) */
    pd.rows = 0;
#pragma unroll 1
    for (int it = 0;; ++it) {
        const int st = it % STAGES;
        const uint32_t ph = (uint32_t)((it / STAGES) & 1);
        kiln_mbar_wait(sbase + BAR_FULL + 8 * st, ph);
        const TileDesc d = get_desc(sbase, st);
        if (d.rows < 0) break;
        uint32_t claim = 0;
        if (lane == 0) claim = kiln_atom_add_relaxed_gpu(sync_cell(a, d.cell), 1u);
        kiln_mbar_wait(sbase + BAR_DQF + 8 * st, ph);
        kiln_fence_proxy_async();
        const uint32_t sq = sbase + OFF_Q + (uint32_t)st * 2 * QT_BYTES;
        const bool first = __shfl_sync(0xffffffffu, claim, 0) == 0;
        if (first) {
            if (d.rows < BM) {
                /* rows past the sequence belong to the next one: ours only */
                store_rows(sq, d.rows, (float *)p.dq_accum + (int64_t)d.row * hd + (int64_t)d.h * D, hd, lane);
                __syncwarp();
                if (lane == 0) {
                    kiln_bulk_wait(); /* and the previous tile's reduction */
                    kiln_fence_acq_rel_gpu();
                }
            } else if (lane == 0) {
                /* the whole tile: warpgroup 0's boxes are the first D / 32 */
                reduce_dq<D / 32, true>(a, sq, 0, 0, d.h, d.row);
                kiln_bulk_wait();
                kiln_fence_proxy_async_global();
            }
            if (lane == 0) kiln_mbar_arrive(sbase + BAR_EMPTY + 8 * st);
            if (pd.rows > 0) count_and_convert(a, sbase, pd, 1u, nconv, lane);
            pd.rows = 0;
            count_and_convert(a, sbase, d, READY + 1, nconv, lane);
        } else {
            if (lane == 0) {
                /* the first contribution is usually long in place (the CTA
                 * of the diagonal key block gets there first); a bound turns
                 * a broken invariant into a fault, not a hang */
                uint32_t spins = 0;
                while (!(kiln_ld_acquire_gpu(sync_cell(a, d.cell) + 1) & READY)) {
                    kiln_nanosleep(64);
                    if (++spins == (1u << 28)) __trap();
                }
                kiln_fence_proxy_async_global();
                reduce_dq<D / 32>(a, sq, 0, 0, d.h, d.row);
                kiln_bulk_wait_read();
                kiln_mbar_arrive(sbase + BAR_EMPTY + 8 * st);
                if (pd.rows > 0) {
                    kiln_bulk_wait_n<1>(); /* the previous one has landed */
                    kiln_fence_proxy_async_global();
                }
            }
            if (pd.rows > 0) count_and_convert(a, sbase, pd, 1u, nconv, lane);
            pd = d;
        }
    }
    if (pd.rows > 0) {
        if (lane == 0) {
            kiln_bulk_wait();
            kiln_fence_proxy_async_global();
        }
        count_and_convert(a, sbase, pd, 1u, nconv, lane);
    }
    if (lane == 0) hand_over(a, sbase, 0, 0u, 0, nconv);
}

/* The dK and dV of one accumulator row (row half hf of this thread's
 * fragments, NC pairs of n8 chunks) from the row's column pointers dkr, dvr,
 * scaled by sds and inv: 8-byte stores, two chunks per pairwise exchange
 * (kiln_st_chunk_pair), where 4-byte ones took twice the instructions.
 * With the persistent grid these stores sit between two items; on an H100
 * they took the backward of (256, 1024, 4, 128) from 1.56 to 1.44 ms and
 * that of (64, 2048, 8, 64) from 1.70 to 1.58.  ok guards the stores only
 * (every lane takes part in the exchange). */
template <int NC, int N>
KILN_DEV void store_kv_row(uint16_t *dkr, uint16_t *dvr, const float (&dk)[N], const float (&dv)[N], float sds,
                           float inv, int hf, int tq, bool ok)
{
#pragma unroll
    for (int c = 0; c < NC; ++c) {
        const int x0 = 8 * c + 2 * hf, x1 = x0 + 4;
        kiln_st_chunk_pair(dkr + 16 * c, kiln_pack2<DT>(dk[x0] * sds, dk[x0 + 1] * sds),
                           kiln_pack2<DT>(dk[x1] * sds, dk[x1 + 1] * sds), tq, ok);
        kiln_st_chunk_pair(dvr + 16 * c, kiln_pack2<DT>(dv[x0] * inv, dv[x0 + 1] * inv),
                           kiln_pack2<DT>(dv[x1] * inv, dv[x1 + 1] * inv), tq, ok);
    }
}

/* ------------------------------------------------ head dim 256 consumers */
/* dK and dV of 128 keys x 256 columns do not fit the registers of two
 * warpgroups, so at head dim 256 a CTA takes BN = 64 keys and the warpgroups
 * split the work by columns.  Per query tile, warpgroup cw:
 *   S^T and dP^T of all 64 keys against its 32 queries (32 cw..), m64n32;
 *   P'^T = silu(s) and dS'^T = dP^T 2 silu'(s) into its half of the
 *   exchange buffer (shared memory, [64 keys][64 queries], 128-byte swizzle);
 *   after a named barrier of both warpgroups, dV += P'^T dO, dK += dS'^T Q
 *   and dQ = dS' K for its 128 columns (128 cw..), all operands from shared
 *   memory.
 * No product is computed twice, and each warpgroup issues the same work. */
/* Element mask of an S^T accumulator of NT n8 tiles: bit 4 nt + 2 hf + e
 * is set when key j0 + 8 hf sees query i0 + 8 nt + 2 tq + e (positions). */
template <int NT>
KILN_DEV uint32_t st_mask_bits(const kiln_seq &s, int i0, int j0, int tq)
{
    uint32_t mbits = 0;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            int lo1, hi1, lo2, hi2;
            M::row_iv(s, i0 + nt * 8 + 2 * tq + e, lo1, hi1, lo2, hi2);
#pragma unroll
            for (int hf = 0; hf < 2; ++hf)
                if (M::iv_has(j0 + 8 * hf, lo1, hi1, lo2, hi2)) mbits |= 1u << (nt * 4 + 2 * hf + e);
        }
    return mbits;
}

KILN_DEV void issue_s_dp_cols(float (&sa)[16], float (&dp)[16], uint32_t k_rows, uint32_t v_rows,
                              uint32_t sq, uint32_t so)
{
    const uint32_t ka = kiln_opaque_u32(k_rows), qa = kiln_opaque_u32(sq);
#pragma unroll
    for (int ks = 0; ks < KSTEPS; ++ks)
        kiln_wgmma_ss_n32<DT>(sa, desc_k(ka, kstep<BN>(ks)), desc_k(qa, kstep<BM>(ks)), ks > 0);
    kiln_wgmma_commit();
    const uint32_t va = kiln_opaque_u32(v_rows), oa = kiln_opaque_u32(so);
#pragma unroll
    for (int ks = 0; ks < KSTEPS; ++ks)
        kiln_wgmma_ss_n32<DT>(dp, desc_k(va, kstep<BN>(ks)), desc_k(oa, kstep<BM>(ks)), ks > 0);
    kiln_wgmma_commit();
}

/* acc (64 keys x 128 columns) += the [64 keys][64 queries] tile at a
 * (K-major) times the [BM][D] tile's columns from b (MN-major). */
KILN_DEV void issue_kv_cols(float (&acc)[64], uint32_t a, uint32_t b)
{
    const uint32_t aa = kiln_opaque_u32(a), ba = kiln_opaque_u32(b);
#pragma unroll
    for (int kk = 0; kk < MSTEPS; ++kk)
        kiln_wgmma_sskt_n128<DT>(acc, desc_k(aa, (uint32_t)(kk * 32)), desc_mn<BM>(ba, (uint32_t)(kk * 16 * 128)), 1);
}

KILN_DEV void consume_cols(const kiln_hstu_bwd_tma_kparams &a, const kiln_seq &s, const MRange &mr, uint32_t sbase,
                           int n0, int h, int tid)
{
    const kiln_hstu_bwd_kparams &p = a.b;
    const kiln_hstu_kparams &f = p.f;
    const int L = s.L, len_q = s.len_q, off = s.off;
    const int cw = (tid >> 7) - 1; /* which 32 queries of a tile, which 128 columns */
    const int t128 = tid & 127;
    const int lane = tid & 31;
    const int w4 = t128 >> 5;
    const int g = lane >> 2;
    const int tq = lane & 3;
    const float ha = 0.5f * f.alpha;
    const float sds = ha * f.inv_scaling;
    const int jl = kiln_min(n0 + BN - 1, L - 1);
    const uint32_t k_cols = sbase + OFF_K + (uint32_t)(2 * cw * BN * 128);

    float dv[64], dk[64];
#pragma unroll
    for (int e = 0; e < 64; ++e) {
        dv[e] = 0.f;
        dk[e] = 0.f;
    }
    kiln_mbar_wait(sbase + BAR_KV, 0);
    kiln_fence_proxy_async();

    const int hd = f.num_heads * D;
    float *dqa = (float *)p.dq_accum + s.q_beg * hd + (int64_t)h * D + cw * DQN;
    /* With a descriptor of dq_accum, a tile's dQ goes there by bulk
     * reductions (TMA) of a copy staged in the tile's Q/dO stage, once both
     * warpgroups are done with it: the L2 takes these whole lines much
     * faster than per-thread red.add (257 against 462 TFLOP/s with the adds
     * left out, (32, 4096, 4, 256) causal on an H100).  The thread that
     * issues them frees the stage one tile later, after they have read it. */
    const bool bulk_dq = a.tma_dq != 0;
    const bool issuer = t128 == 0;
    int pending = -1; /* the stage the issuer's reductions still read */
    int it = 0;
#pragma unroll 1
    for (int m = mr.first(); mr.valid(m); m = mr.next(m), ++it) {
        const int st = it % STAGES;
        const uint32_t sq = sbase + OFF_Q + (uint32_t)st * 2 * QT_BYTES;
        const uint32_t so = sq + QT_BYTES;
        const uint32_t xds = sbase + OFF_DS + (uint32_t)(it & 1) * XCH_BYTES; /* dS'^T */
        const uint32_t xpt = xds + DS_BYTES;                                     /* P'^T */
        const int m0 = m * BM;
        const int rows_here = kiln_min(BM, len_q - m0);

        /* ---- mask bits of S^T (bit 4 nt + 2 hf + e: key row 16 w4 + g + 8 hf,
         * query column 32 cw + 8 nt + 2 tq + e); queries past the sequence
         * have zero rows, so they need no bits */
        uint32_t mbits = 0xffffffffu;
        const int i0 = m0 + 32 * cw, i1 = kiln_min(i0 + 31, m0 + rows_here - 1);
        if (i1 >= i0 && !M::tile_full(s, i0 + off, i1 + off, n0, jl))
            mbits = st_mask_bits<4>(s, i0 + off, n0 + w4 * 16 + g, tq);

        kiln_mbar_wait(sbase + BAR_FULL + 8 * st, (uint32_t)((it / STAGES) & 1));
        kiln_fence_proxy_async();

        float sa[16], dp[16];
        kiln_wgmma_fence();
        issue_s_dp_cols(sa, dp, sbase + OFF_K, sbase + OFF_V, sq + (uint32_t)(cw * 32 * 128),
                        so + (uint32_t)(cw * 32 * 128));
        kiln_wgmma_wait<1>();
        kiln_reg_fence(sa);

        /* ---- P'^T to the exchange buffer; 2 silu'(s) kept for dS' */
        float fk[16];
#pragma unroll
        for (int nt = 0; nt < 4; ++nt)
#pragma unroll
            for (int hf = 0; hf < 2; ++hf) {
                float pv[2];
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int x = 4 * nt + 2 * hf + e;
                    const bool ok = (mbits >> x) & 1u;
                    float fp;
                    const float pp = pointwise(sa[x], ha, fp);
                    pv[e] = ok ? pp : 0.f;
                    fk[x] = ok ? fp : 0.f;
                }
                const int row = w4 * 16 + g + 8 * hf;
                kiln_st_shared_u32(xpt + (uint32_t)(row * 128 + (((4 * cw + nt) ^ g) << 4) + 4 * tq),
                                   kiln_pack2<DT>(pv[0], pv[1]));
            }
        kiln_wgmma_wait<0>();
        kiln_reg_fence(dp);
#pragma unroll
        for (int nt = 0; nt < 4; ++nt)
#pragma unroll
            for (int hf = 0; hf < 2; ++hf) {
                const int x = 4 * nt + 2 * hf;
                const int row = w4 * 16 + g + 8 * hf;
                kiln_st_shared_u32(xds + (uint32_t)(row * 128 + (((4 * cw + nt) ^ g) << 4) + 4 * tq),
                                   kiln_pack2<DT>(dp[x] * fk[x], dp[x + 1] * fk[x + 1]));
            }

        /* ---- both halves in place: dV, dK, dQ for columns 128 cw.. */
        kiln_fence_proxy_async();
        kiln_named_bar_sync(1, CTHREADS);
        float dq[64];
        kiln_wgmma_fence();
        issue_kv_cols(dv, xpt, so + (uint32_t)(2 * cw * BM * 128));
        issue_kv_cols(dk, xds, sq + (uint32_t)(2 * cw * BM * 128));
        kiln_wgmma_commit();
        {
            const uint32_t da = kiln_opaque_u32(xds), ka = kiln_opaque_u32(k_cols);
#pragma unroll
            for (int ks = 0; ks < NSTEPS; ++ks)
                kiln_wgmma_sstt_n128<DT>(dq, desc_mn<BN>(da, (uint32_t)(ks * 16 * 128)),
                                         desc_mn<BN>(ka, (uint32_t)(ks * 16 * 128)), ks > 0);
            kiln_wgmma_commit();
        }
        /* the previous tile's stage, freed once its reductions have read
         * it: here, under this tile's products, the wait costs nothing
         * (see release_staged()) */
        if (issuer) release_staged(sbase, pending);
        kiln_wgmma_wait<0>();
        kiln_reg_fence(dq);
        kiln_reg_fence(dv);
        kiln_reg_fence(dk);
        if (bulk_dq) {
            bulk_dq_add(a, dq, sbase, sq, st, sds, cw, w4, g, tq, h, (int)(s.q_beg + m0), issuer, pending);
        } else {
            kiln_mbar_arrive(sbase + BAR_EMPTY + 8 * st);
            add_dq(dqa, m0, hd, dq, rows_here, sds, w4, g, tq);
        }
    }
    if (issuer && pending >= 0) kiln_bulk_wait(); /* no arrival needed: the producer is done */

    /* ---- dK = dK' * sds, dV = dV' * inv_scaling; keys < L, columns 128 cw.. */
    const float inv = f.inv_scaling;
    /* 8-byte stores (store_kv_row()) */
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
        const int j = n0 + w4 * 16 + g + 8 * hf;
        const bool ok = j < L;
        const int c0 = cw * DQN + kiln_chunk_pair_lane(tq);
        uint16_t *dkr = (uint16_t *)p.dk + (s.k_beg + j) * p.dk_row_stride + (int64_t)h * p.dk_head_stride + c0;
        uint16_t *dvr = (uint16_t *)p.dv + (s.k_beg + j) * p.dv_row_stride + (int64_t)h * p.dv_head_stride + c0;
        store_kv_row<8>(dkr, dvr, dk, dv, sds, inv, hf, tq, ok);
    }
}

/* ------------------------------------------- head dim 64 and 128 consumers */
/* Warpgroup cw takes keys 64 cw.. of the block (the header comment), from
 * tile it of the ring; kvn: the parity of the item's K/V fill.  FUSE (the
 * fused dq pass) is a template argument so that its instance holds none of
 * the other dq paths' state: with it, the consumers of the persistent grid
 * fit their 232 registers. */
template <bool FUSE>
KILN_DEV void consume_keys(const kiln_hstu_bwd_tma_kparams &a, const kiln_seq &s, const MRange &mr, uint32_t sbase,
                           int n0, int h, int tid, int &it, uint32_t kvn)
{
    const kiln_hstu_bwd_kparams &p = a.b;
    const kiln_hstu_kparams &f = p.f;
    const int L = s.L, len_q = s.len_q, off = s.off;
    const int wg = tid >> 7;
    const int cw = wg - 1; /* which 64 keys of the block */
    const int t128 = tid & 127;
    const int lane = tid & 31;
    const int w4 = t128 >> 5;  /* warp in the warpgroup: rows 16 w4.. */
    const int g = lane >> 2;   /* fragment row group */
    const int tq = lane & 3;   /* fragment column pair */
    const float ha = 0.5f * f.alpha;
    const float sds = ha * f.inv_scaling; /* dS = dS' * sds */
    const int jw0 = n0 + cw * 64;                 /* this warpgroup's first key */
    const int jw1 = kiln_min(jw0 + 63, L - 1);    /* its last real key (< jw0: none) */
    const uint32_t k_rows = sbase + OFF_K + (uint32_t)(cw * 64 * 128);
    const uint32_t v_rows = sbase + OFF_V + (uint32_t)(cw * 64 * 128);
    /* dQ columns cw * DQN.. of K: a column block (D = 128) or its half */
    const uint32_t k_cols = sbase + OFF_K + (uint32_t)((cw * DQN / 64) * (BN * 128) + (cw * DQN % 64) * 2);

    float dv[D / 2], dk[D / 2];
#pragma unroll
    for (int e = 0; e < D / 2; ++e) {
        dv[e] = 0.f;
        dk[e] = 0.f;
    }

    /* What only the dK, dV stores need again (the item's first key row, its
     * keys, head and this warpgroup's first key): held in registers across
     * the loop they spilled (fp16 keys), so the warp keeps them in shared
     * memory. */
    const uint32_t epi = sbase + W_EPI + 32 * (uint32_t)((tid >> 5) - 4);
    if (lane == 0) {
        kiln_st_shared_u32(epi, (uint32_t)s.k_beg);
        kiln_st_shared_u32(epi + 4, (uint32_t)(s.k_beg >> 32));
        kiln_st_shared_u32(epi + 8, (uint32_t)L);
        kiln_st_shared_u32(epi + 12, (uint32_t)h);
        kiln_st_shared_u32(epi + 16, (uint32_t)jw0);
    }
    kiln_mbar_wait(sbase + BAR_KV, kvn & 1);
    kiln_fence_proxy_async();
    /* Each item arrives on BAR_KVE once (the loader waits for it before it
     * brings the next item's K and V): after its last tile's wgmmas (in
     * the loop), or here when it visits no query tile (delta_q with a
     * window that ends before the queries start). */
    if constexpr (FUSE) kiln_mbar_arrive_if(sbase + BAR_KVE, !mr.valid(mr.first()));

    /* query row 0 of the sequence in dq_accum, from column h D + cw DQN;
     * rows of hd floats (H D < 2^31: H <= 65535) */
    const int hd = f.num_heads * D;
    float *dqa = (float *)p.dq_accum + s.q_beg * hd + (int64_t)h * D + cw * DQN;
    /* The dQ of a tile is added at the start of the next one, after its
     * proxy fence: a proxy fence waits for this thread's outstanding
     * reductions, and the one before the dS^T barrier then comes a whole
     * S, dP, dV phase later. */
    float dq[DQN / 2];
    /* with a descriptor of dq_accum: bulk reductions, as in consume_cols() */
    const bool bulk_dq = !FUSE && a.tma_dq != 0;
    const bool issuer = !FUSE && t128 == 0;
    /* with the fused pass (FUSE) the dq writer takes the staged dQ */
    int pending = -1;
    int prev_m0 = -1;
    int prev_rows = 0;
#pragma unroll 1
    for (int m = mr.first(); mr.valid(m); m = mr.next(m), ++it) {
        const int st = it % STAGES;
        const uint32_t sq = sbase + OFF_Q + (uint32_t)st * 2 * QT_BYTES;
        const uint32_t so = sq + QT_BYTES;
        const uint32_t sdsb = sbase + OFF_DS + (uint32_t)(it & 1) * XCH_BYTES;
        const int m0 = m * BM;
        const int rows_here = kiln_min(BM, len_q - m0);

        /* ---- mask bits (bit 4 nt + 2 hf + e of the accumulator layout:
         * key row 16 w4 + g + 8 hf, query column 8 nt + 2 tq + e) */
        uint32_t mbits = 0xffffffffu;
        if (!(jw1 < jw0 || M::tile_full(s, m0 + off, m0 + rows_here - 1 + off, jw0, jw1)))
            mbits = st_mask_bits<BM / 8>(s, m0 + off, jw0 + w4 * 16 + g, tq);

        kiln_mbar_wait(sbase + BAR_FULL + 8 * st, (uint32_t)((it / STAGES) & 1));
        kiln_fence_proxy_async();
        if (!FUSE && !bulk_dq && prev_m0 >= 0) add_dq(dqa, prev_m0, hd, dq, prev_rows, sds, w4, g, tq);

        /* ---- S^T = K Q^T, dP^T = V dO^T */
        float sa[BM / 2], dp[BM / 2];
        kiln_wgmma_fence();
        issue_s_dp(sa, dp, k_rows, v_rows, sq, so);
        kiln_wgmma_wait<1>();
        kiln_reg_fence(sa);

        /* ---- P'^T = silu(s) packed as A fragments, and 2 silu'(s) packed
         * alike (16 registers, not 32, next to dV', dK' and dP^T: it is
         * rounded to 16 bits like the dS' it scales); 0 where masked */
        uint32_t pa[MSTEPS][4], fk[MSTEPS][4];
#pragma unroll
        for (int kk = 0; kk < MSTEPS; ++kk)
#pragma unroll
            for (int q = 0; q < 4; ++q) {
                /* fragment q: n8 tile 2 kk + (q >> 1), row half q & 1 */
                const int base = 4 * (2 * kk + (q >> 1)) + 2 * (q & 1);
                float pv[2], fv[2];
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const bool ok = (mbits >> (base + e)) & 1u;
                    float fp;
                    const float pp = pointwise(sa[base + e], ha, fp);
                    pv[e] = ok ? pp : 0.f;
                    fv[e] = ok ? fp : 0.f;
                }
                pa[kk][q] = kiln_pack2<DT>(pv[0], pv[1]);
                fk[kk][q] = kiln_pack2<DT>(fv[0], fv[1]);
            }

        /* ---- dV += P'^T dO */
        kiln_wgmma_fence();
        issue_kv_grad(dv, pa, so);
        kiln_wgmma_wait<1>(); /* dP^T */
        kiln_reg_fence(dp);

        /* ---- dS'^T = dP^T 2 silu'(s): A fragments and the smem tile */
        uint32_t da[MSTEPS][4];
#pragma unroll
        for (int kk = 0; kk < MSTEPS; ++kk)
#pragma unroll
            for (int q = 0; q < 4; ++q) {
                const int base = 4 * (2 * kk + (q >> 1)) + 2 * (q & 1);
                float f0, f1;
                kiln_unpack2<DT>(fk[kk][q], f0, f1);
                da[kk][q] = kiln_pack2<DT>(dp[base] * f0, dp[base + 1] * f1);
                /* key row cw 64 + 16 w4 + g + 8 (q & 1) (its low 3 bits are g),
                 * query chunk 2 kk + (q >> 1) */
                const int row = cw * 64 + w4 * 16 + g + 8 * (q & 1);
                const int ch = 2 * kk + (q >> 1);
                kiln_st_shared_u32(sdsb + (uint32_t)(row * 128 + ((ch ^ g) << 4) + 4 * tq), da[kk][q]);
            }

        /* ---- dK += dS'^T Q */
        kiln_wgmma_fence();
        issue_kv_grad(dk, da, sq);

        /* ---- dQ = dS' K once both halves of dS'^T are in place */
        kiln_fence_proxy_async();
        kiln_named_bar_sync(1, CTHREADS);
        kiln_wgmma_fence();
        issue_dq(dq, sdsb, k_cols);
        /* the previous tile's stage (see release_staged()) */
        if (issuer) release_staged(sbase, pending);
        kiln_wgmma_wait<0>();
        kiln_reg_fence(dq);
        kiln_reg_fence(dv);
        kiln_reg_fence(dk);
        kiln_reg_fence(pa);
        kiln_reg_fence(da);
        if constexpr (FUSE) {
            /* the item's last tile: every wgmma that read K and V has
             * completed, so the loader may bring the next item's while this
             * one's dQ is staged and its dK, dV go out */
            kiln_mbar_arrive_if(sbase + BAR_KVE, !mr.valid(mr.next(m)));
            kiln_named_bar_sync(1, CTHREADS); /* both warpgroups done with the stage */
            stage_dq(sq, cw, dq, sds, w4, g, tq);
            kiln_fence_proxy_async();
            kiln_mbar_arrive(sbase + BAR_DQF + 8 * st);
        } else if (bulk_dq) {
            bulk_dq_add(a, dq, sbase, sq, st, sds, cw, w4, g, tq, h, (int)(s.q_beg + m0), issuer, pending);
        } else {
            kiln_mbar_arrive(sbase + BAR_EMPTY + 8 * st);
        }

        prev_m0 = m0;
        prev_rows = rows_here;
    }
    if (!FUSE && !bulk_dq && prev_m0 >= 0) add_dq(dqa, prev_m0, hd, dq, prev_rows, sds, w4, g, tq);
    if (!FUSE && issuer && pending >= 0) kiln_bulk_wait();

    /* ---- dK = dK' * sds, dV = dV' * inv_scaling; keys < L */
    const float inv = f.inv_scaling;
    __syncwarp();
    const int64_t k_beg = (int64_t)(((uint64_t)kiln_ld_shared_u32(epi + 4) << 32) | kiln_ld_shared_u32(epi));
    const int L_ = (int)kiln_ld_shared_u32(epi + 8), h_ = (int)kiln_ld_shared_u32(epi + 12);
    const int jw0_ = (int)kiln_ld_shared_u32(epi + 16);
    /* 8-byte stores (store_kv_row()) */
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
        const int j = jw0_ + w4 * 16 + g + 8 * hf;
        const bool ok = j < L_;
        const int c0 = kiln_chunk_pair_lane(tq);
        uint16_t *dkr = (uint16_t *)p.dk + (k_beg + j) * p.dk_row_stride + (int64_t)h_ * p.dk_head_stride + c0;
        uint16_t *dvr = (uint16_t *)p.dv + (k_beg + j) * p.dv_row_stride + (int64_t)h_ * p.dv_head_stride + c0;
        store_kv_row<D / 16>(dkr, dvr, dk, dv, sds, inv, hf, tq, ok);
    }
}

/* ------------------------------------------------------------ the producer */
/* Rows [rows, NR) of a tile of NR rows (D / 64 column blocks of [NR][128
 * bytes]) at dst set to zero by one warp, then made visible to the async
 * proxy (the wgmmas). */
template <int NR>
KILN_DEV void zero_rows(uint32_t dst, int rows, int lane)
{
#pragma unroll
    for (int cb = 0; cb < D / 64; ++cb)
#pragma unroll 1
        for (int r = rows + (lane >> 3); r < NR; r += 4)
            asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n"
                         :: "r"(dst + (uint32_t)(cb * NR * 128 + r * 128 + (lane & 7) * 16)), "r"(0u) : "memory");
    kiln_fence_proxy_async();
    __syncwarp();
}

/* The fused loader's copy of a tile that runs past its sequence: TMA as
 * for the others (rows past the tensor come as zeros), but onto BAR_LAND,
 * which it waits for (parity land) before it zeroes the rows past the
 * sequence (the next one's: 0 times an Inf or NaN there is not 0) and
 * arrives on full.  (With cp.async by its 32 threads instead, the loader
 * did not fit the producer's registers.) */
template <int NR>
KILN_DEV void land_partial(uint32_t sbase, uint32_t full, uint32_t dst0, uint32_t dst1, int rows, uint32_t &land,
                           int lane)
{
    kiln_mbar_wait(sbase + BAR_LAND, land);
    land ^= 1u;
    zero_rows<NR>(dst0, rows, lane);
    zero_rows<NR>(dst1, rows, lane);
    if (lane == 0) kiln_mbar_arrive(full);
}

/* K and V of keys n0.. (keys of them) into their tiles, completing on
 * BAR_KV: one TMA copy per column block for a whole block; a partial block
 * as land_partial() copies it (the fused pass's loader, FUSE), else by
 * cp.async of the producer warpgroup (rows past the end zero-filled). */
template <bool FUSE>
KILN_DEV void load_kv(const kiln_hstu_bwd_tma_kparams &a, const kiln_seq &s, int n0, int keys, int h, uint32_t sbase,
                      int tid, uint32_t &land)
{
    if (FUSE || (a.tma != 0 && keys == BN)) {
        const uint32_t bar = keys == BN ? sbase + BAR_KV : sbase + BAR_LAND;
        if (tid == 0) {
            kiln_mbar_arrive_expect_tx(bar, 2 * KV_BYTES);
#pragma unroll
            for (int cb = 0; cb < D / 64; ++cb) {
                kiln_tma_load_3d(sbase + OFF_K + (uint32_t)(cb * BN * 128), &a.tmap[KILN_BTMA_K][0], cb * 64, h,
                                 (int)(s.k_beg + n0), bar);
                kiln_tma_load_3d(sbase + OFF_V + (uint32_t)(cb * BN * 128), &a.tmap[KILN_BTMA_V][0], cb * 64, h,
                                 (int)(s.k_beg + n0), bar);
            }
        }
        if (FUSE && keys < BN) land_partial<BN>(sbase, sbase + BAR_KV, sbase + OFF_K, sbase + OFF_V, keys, land, tid);
    } else if constexpr (!FUSE) {
        const kiln_hstu_kparams &f = a.b.f;
        const uint16_t *kg = (const uint16_t *)f.k + (s.k_beg + n0) * f.k_row_stride + (int64_t)h * f.k_head_stride;
        const uint16_t *vg = (const uint16_t *)f.v + (s.k_beg + n0) * f.v_row_stride + (int64_t)h * f.v_head_stride;
        load_tile<BN, D, PTHREADS>(sbase + OFF_K, kg, f.k_row_stride, keys, tid);
        load_tile<BN, D, PTHREADS>(sbase + OFF_V, vg, f.v_row_stride, keys, tid);
        kiln_cp_async_wait_all();
        kiln_fence_proxy_async();
        kiln_named_bar_sync(2, PTHREADS);
        if (tid == 0) kiln_mbar_arrive(sbase + BAR_KV);
    }
}

/* The query tiles of one item (Q and dO) through the STAGES-deep ring, from
 * the CTA's tile it on: one thread with TMA; a tile that runs past the
 * sequence (every tile when the host could not describe the tensors) by
 * cp.async of the whole warpgroup, or, with the fused dq pass (FUSE: warp 0
 * alone, which also describes each tile to the dq writer), as
 * land_partial() copies it. */
template <bool FUSE>
KILN_DEV void load_tiles(const kiln_hstu_bwd_tma_kparams &a, const kiln_seq &s, const MRange &mr, int h, int b,
                         uint32_t sbase, int tid, int &it, uint32_t &land)
{
    const kiln_hstu_bwd_kparams &p = a.b;
    const kiln_hstu_kparams &f = p.f;
    const bool leader = tid == 0;
#pragma unroll 1
    for (int m = mr.first(); mr.valid(m); m = mr.next(m), ++it) {
        const int st = it % STAGES;
        /* every producer thread follows every phase: a parity wait
         * cannot tell a phase from the one two before it */
        if (it >= STAGES) kiln_mbar_wait(sbase + BAR_EMPTY + 8 * st, (uint32_t)((it / STAGES - 1) & 1));
        const int mrow = m * BM;
        const uint32_t sq = sbase + OFF_Q + (uint32_t)st * 2 * QT_BYTES;
        const uint32_t full = sbase + BAR_FULL + 8 * st;
        const int rows = s.len_q - mrow;
        if constexpr (FUSE) {
            /* for the dq writer, which has no registers to spare */
            TileDesc d;
            d.e = contributors(s, m, tid);
            d.row = (int)s.q_beg + mrow;
            d.rows = kiln_min(BM, rows);
            d.cell = sync_index(a, s, b, h, m);
            d.h = h;
            if (leader) put_desc(sbase, st, d);
        }
        if (FUSE || (a.tma != 0 && rows >= BM)) {
            const uint32_t bar = rows >= BM ? full : sbase + BAR_LAND;
            if (leader) {
                kiln_mbar_arrive_expect_tx(bar, 2 * QT_BYTES);
#pragma unroll
                for (int cb = 0; cb < D / 64; ++cb) {
                    kiln_tma_load_3d(sq + (uint32_t)(cb * BM * 128), &a.tmap[KILN_BTMA_Q][0], cb * 64, h,
                                     (int)(s.q_beg + mrow), bar);
                    kiln_tma_load_3d(sq + QT_BYTES + (uint32_t)(cb * BM * 128), &a.tmap[KILN_BTMA_DO][0], cb * 64,
                                     h, (int)(s.q_beg + mrow), bar);
                }
            }
            if (FUSE && rows < BM) land_partial<BM>(sbase, full, sq, sq + QT_BYTES, rows, land, tid);
        } else if constexpr (!FUSE) {
            /* (addresses formed here: the producer has few registers) */
            const int64_t r = s.q_beg + mrow;
            const uint16_t *qg = (const uint16_t *)f.q + r * f.q_row_stride + (int64_t)h * f.q_head_stride;
            const uint16_t *og = (const uint16_t *)p.dout + r * p.dout_row_stride + (int64_t)h * p.dout_head_stride;
            load_tile<BM, D, PTHREADS>(sq, qg, f.q_row_stride, rows, tid);
            load_tile<BM, D, PTHREADS>(sq + QT_BYTES, og, p.dout_row_stride, rows, tid);
            kiln_cp_async_wait_all();
            kiln_fence_proxy_async();
            kiln_named_bar_sync(2, PTHREADS);
            if (leader) kiln_mbar_arrive(full);
        }
    }
}

/* ------------------------------------------------------------ work items */
/* A work item is (sequence b, head h, key block kb), numbered
 * kb + nb (h + H b).  The loader hands each item to the consumers through
 * two slots (I_SLOT, BAR_IFULL / BAR_IEMPTY; each of the 8 consumer warps
 * takes it; the dq writer follows the tiles' TileDesc instead); -1 ends
 * them.  The one-item
 * grid (kb, h, b) hands over the block's own item.  With fuse_dq and
 * a.persist, the persistent grid: a CTA per SM (or fewer) takes items from
 * a counter (the first 4 bytes of dq_sync, zeroed with the sync words):
 * CTA c starts with item c, then takes gridDim.x + the counter's next
 * value, skipping items with no keys.  It brings an item's K and V once
 * the consumers are done with the last item's (BAR_KVE), so that these
 * loads and the item's first query tiles, the dK and dV stores before them
 * and the dq pass of the tiles after them overlap, where each block of the
 * one-item grid paid them in turn.  The ring's position runs on across
 * items.  Items of one sequence and head are still taken together, so that
 * their query tiles meet in the L2 as the one-item grid's blocks do.  The
 * dq protocol needs nothing more: a claimant still sets READY before it
 * waits for any later tile, and a CTA visits its items' tiles in order. */
struct Item {
    kiln_seq s;
    int b, h, n0, keys;
};

/* Item idx into x; false when it has no keys, or its offsets fail the
 * guard, which item (b, 0, 0) counts in debug mode (count), like block
 * (0, 0, b) of the one-item grid.  CHECK false: the loader has found the
 * item good (so no branch leaves x's fields unset). */
template <bool CHECK = true>
KILN_DEV bool decode_item(const kiln_hstu_kparams &f, int kb, int h, int b, Item &x, bool count)
{
    x.h = h;
    x.b = b;
    x.n0 = kb * BN;
    if (!kiln_seq_load<DELTA_Q, CONTEXT, TARGET, LOCAL, CHECK>(f, x.b, x.s)) {
        if (count && kb == 0 && x.h == 0 && f.debug_counter != 0) kiln_red_add_u64(f.debug_counter, 1ull);
        return false;
    }
    x.keys = kiln_min(BN, x.s.L - x.n0);
    return x.keys > 0;
}

template <bool CHECK = true>
KILN_DEV bool decode_item(const kiln_hstu_kparams &f, int nb, int idx, Item &x, bool count)
{
    const int hb = idx / nb;
    return decode_item<CHECK>(f, idx - hb * nb, hb % f.num_heads, hb / f.num_heads, x, count);
}

/* The one-item grid's block (kb, h, b). */
template <bool CHECK = true>
KILN_DEV bool block_item(const kiln_hstu_kparams &f, Item &x, bool count)
{
    return decode_item<CHECK>(f, (int)blockIdx.x, (int)blockIdx.y, (int)blockIdx.z, x, count);
}

/* The one-item grid's item: block (kb, h, b). */
KILN_DEV int own_item(const kiln_hstu_kparams &f, int nb)
{
    return (int)(blockIdx.x + nb * (blockIdx.y + f.num_heads * blockIdx.z));
}

/* The persistent grid's next item after idx (thread 0's counter read,
 * shared with the warp), or -1. */
KILN_DEV int next_item(const kiln_hstu_bwd_tma_kparams &a, int total, int tid)
{
    uint32_t nx = 0;
    if (tid == 0) nx = kiln_atom_add_relaxed_gpu((uint32_t *)a.dq_sync, 1u);
    const int idx = (int)(gridDim.x + __shfl_sync(0xffffffffu, nx, 0));
    return idx < total ? idx : -1;
}

/* The loader of the fused dq pass: warp 0 of the producer, with or
 * without the persistent grid. */
KILN_DEV void loader(const kiln_hstu_bwd_tma_kparams &a, uint32_t sbase, int tid, bool persist)
{
    const kiln_hstu_kparams &f = a.b.f;
    const int nb = a.b.num_n_blocks;
    const int total = nb * f.num_heads * f.batch; /* < 2^30: the runtime checks */
    int idx = persist ? (int)blockIdx.x : own_item(f, nb);
    int it = 0;
    uint32_t land = 0;
    /* its count of items published lives in shared memory (I_COUNT of warp
     * 0), as the readers' do: in a register it spilled (causal + context +
     * target) */
    const uint32_t count = sbase + I_COUNT;
#pragma unroll 1
    for (;;) {
        __syncwarp();
        const uint32_t n = kiln_ld_shared_u32(count);
        Item x;
#pragma unroll 1
        while (idx >= 0 && !decode_item(f, nb, idx, x, tid == 0)) idx = persist ? next_item(a, total, tid) : -1;
        const int slot = (int)(n & 1);
        if (n >= 2) kiln_mbar_wait(sbase + BAR_IEMPTY + 8 * slot, ((n >> 1) - 1) & 1);
        if (tid == 0) {
            const uint32_t cell = sbase + I_SLOT + 16 * slot;
            kiln_st_shared_u32(cell, idx < 0 ? ~0u : (uint32_t)(x.n0 / BN));
            kiln_st_shared_u32(cell + 4, (uint32_t)x.h);
            kiln_st_shared_u32(cell + 8, (uint32_t)x.b);
            kiln_mbar_arrive(sbase + BAR_IFULL + 8 * slot);
        }
        if (idx < 0) break;
        if (tid == 0) kiln_st_shared_u32(count, n + 1);
        if (n > 0) kiln_mbar_wait(sbase + BAR_KVE, (n - 1) & 1);
        load_kv<true>(a, x.s, x.n0, x.keys, x.h, sbase, tid, land);
        load_tiles<true>(a, x.s, M::visit_range(x.s, x.n0, x.keys), x.h, x.b, sbase, tid, it, land);
        idx = persist ? next_item(a, total, tid) : -1;
    }
    /* no more tiles: the dq writer's stop, in the next stage */
    const int st = it % STAGES;
    if (it >= STAGES) kiln_mbar_wait(sbase + BAR_EMPTY + 8 * st, (uint32_t)((it / STAGES - 1) & 1));
    if (tid == 0) {
        TileDesc d;
        d.row = d.e = d.h = 0;
        d.cell = 0;
        d.rows = -1;
        put_desc(sbase, st, d);
        kiln_mbar_arrive(sbase + BAR_FULL + 8 * st);
    }
}

/* A reading warp's next item from the slots into x (false: stop), and in
 * kv the parity of its K/V fill; lane 0 frees the slot.  The slot holds the
 * item decoded (key block, head, sequence): a division by the runtime
 * block and head counts here would keep its constants live across the
 * consumers' loop, which then spilled.  The warp's count of items taken
 * lives in shared memory (I_COUNT) for the same reason. */
KILN_DEV bool take_item(const kiln_hstu_kparams &f, uint32_t sbase, int lane, Item &x, uint32_t &kv)
{
    const uint32_t count = sbase + I_COUNT + 4 * (threadIdx.x >> 5);
    __syncwarp();
    const uint32_t n = kiln_ld_shared_u32(count);
    const int slot = (int)(n & 1);
    const uint32_t cell = sbase + I_SLOT + 16 * slot;
    kiln_mbar_wait(sbase + BAR_IFULL + 8 * slot, (n >> 1) & 1);
    const int kb = (int)kiln_ld_shared_u32(cell);
    const int h = (int)kiln_ld_shared_u32(cell + 4);
    const int b = (int)kiln_ld_shared_u32(cell + 8);
    __syncwarp();
    if (lane == 0) {
        kiln_mbar_arrive(sbase + BAR_IEMPTY + 8 * slot);
        kiln_st_shared_u32(count, n + 1);
    }
    kv = n & 1;
    if (kb < 0) return false;
    decode_item<false>(f, kb, h, b, x, false);
    return true;
}

} /* namespace kiln_hstu_bwd_sm90_impl */

/* ===================================================================== main */
extern "C" __global__ void __launch_bounds__(KILN_WARPS * 32, 1)
kiln_hstu_bwd_main(const __grid_constant__ kiln_hstu_bwd_tma_kparams a)
{
    using namespace kiln_hstu_bwd_sm90_impl;
    extern __shared__ __align__(1024) unsigned char kiln_smem[];
    const kiln_hstu_bwd_kparams &p = a.b;
    const kiln_hstu_kparams &f = p.f;
    const int tid = threadIdx.x;
    /* head dim 128 runs the fused dq pass only (the runtime sends calls it
     * cannot make, without TMA descriptors of everything, to hstu_bwd.cu) */
    constexpr bool fuse = FUSE_OK;
    const bool persist = fuse && a.persist != 0;

    /* a block of the one-item grid with no keys leaves at once (each role
     * decodes its item again, after the register split: values held
     * across it spill where the producer has few registers) */
    if (!persist) {
        Item y;
        if (!block_item(f, y, tid == 0)) return;
    }

    const uint32_t sbase = (kiln_smem_u32(kiln_smem) + 1023u) & ~1023u;
    if (tid == 0) {
#pragma unroll
        for (int st = 0; st < STAGES; ++st) {
            kiln_mbar_init(sbase + BAR_FULL + 8 * st, 1);
            /* with fuse_dq the dq writer frees a stage, once it has its dQ */
            kiln_mbar_init(sbase + BAR_EMPTY + 8 * st, fuse ? 1 : CTHREADS);
        }
        kiln_mbar_init(sbase + BAR_KV, 1);
        kiln_mbar_init(sbase + BAR_KVE, CTHREADS);
        kiln_mbar_init(sbase + BAR_LAND, 1);
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            kiln_mbar_init(sbase + BAR_CFULL + 8 * j, 1);
            kiln_mbar_init(sbase + BAR_CEMPTY + 8 * j, 64);
            kiln_mbar_init(sbase + BAR_IFULL + 8 * j, 1);
            /* the consumer warps take each item */
            kiln_mbar_init(sbase + BAR_IEMPTY + 8 * j, CTHREADS / 32);
        }
#pragma unroll
        for (int st = 0; st < STAGES; ++st) kiln_mbar_init(sbase + BAR_DQF + 8 * st, CTHREADS);
#pragma unroll
        for (int w = 0; w < NTHREADS / 32; ++w) kiln_st_shared_u32(sbase + I_COUNT + 4 * w, 0u);
        /* make the initialized barriers visible to the TMA unit */
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();

    const int wg = tid >> 7;
    const int lane = tid & 31;
    if constexpr (!fuse) {
        /* head dims 64 and 256: one item per block, no item slots */
        Item x;
        int it = 0;
        if (wg == 0) {
            kiln_setmaxnreg_dec<KILN_PREGS>();
            block_item<false>(f, x, false);
            uint32_t land = 0; /* (unused: no fused pass) */
            load_kv<false>(a, x.s, x.n0, x.keys, x.h, sbase, tid, land);
            load_tiles<false>(a, x.s, M::visit_range(x.s, x.n0, x.keys), x.h, x.b, sbase, tid, it, land);
        } else {
            kiln_setmaxnreg_inc<KILN_CREGS>();
            block_item<false>(f, x, false);
            const MRange mr = M::visit_range(x.s, x.n0, x.keys);
            if constexpr (COLSPLIT) consume_cols(a, x.s, mr, sbase, x.n0, x.h, tid);
            else consume_keys<false>(a, x.s, mr, sbase, x.n0, x.h, tid, it, 0u);
        }
    } else {
        uint32_t kv;
        if (wg == 0) {
            /* ================= producer =================
             * warp 0 loads, warp 1 writes dq, warps 2 and 3 convert */
            kiln_setmaxnreg_dec<KILN_PREGS>();
            if (tid >= 64) {
                dq_converter(p, sbase, tid - 64);
            } else if (tid >= 32) {
                dq_writer(a, sbase, lane);
            } else {
                loader(a, sbase, tid, persist);
            }
        } else {
            /* ================= consumers ================= */
            kiln_setmaxnreg_inc<KILN_CREGS>();
            int it = 0;
            Item x;
#pragma unroll 1
            while (take_item(f, sbase, lane, x, kv)) {
                consume_keys<true>(a, x.s, M::visit_range(x.s, x.n0, x.keys), sbase, x.n0, x.h, tid, it, kv);
            }
        }
    }
}

/* ===================================================================== dq */
/* The deterministic dQ pass of hstu_bwd.cu; never launched for this
 * template (no deterministic keys), present so that every backward module
 * has the same entries. */
extern "C" __global__ void kiln_hstu_bwd_dq(const __grid_constant__ kiln_hstu_bwd_kparams p)
{
    (void)p;
}

/* ===================================================================== convert */
/* dq_accum -> dq on the rows of valid sequences: sequence b in the blocks of
 * blockIdx.y = b (mod gridDim.y), rows over blockIdx.x (convert_dq_rows). */
extern "C" __global__ void __launch_bounds__(256, 1)
kiln_hstu_bwd_convert(const __grid_constant__ kiln_hstu_bwd_kparams p)
{
    using namespace kiln_hstu_bwd_sm90_impl;
    const kiln_hstu_kparams &f = p.f;
    if (p.dq_accum == 0) return;
    const int H = f.num_heads;
#pragma unroll 1
    for (int b = (int)blockIdx.y; b < f.batch; b += (int)gridDim.y) {
        kiln_seq s;
        if (!kiln_seq_load<DELTA_Q, CONTEXT, TARGET, LOCAL>(f, b, s)) continue;
        convert_dq_rows<DT, D>((const float *)p.dq_accum + s.q_beg * H * (int64_t)D,
                               (uint16_t *)p.dq + s.q_beg * p.dq_row_stride, p.dq_row_stride, p.dq_head_stride,
                               s.len_q, H, (int)threadIdx.x);
    }
}
