/* hstu_fwd_sm90_fp8.cu -- HSTU attention forward for Hopper (sm_90a) with
 * e4m3 q, k, v and per-tensor descale factors; fp16 or bf16 out.
 *
 * out_r = sum over valid j of silu(alpha * (dq dk q8_r . k8_j + rab[i, j]))
 *         * inv_scaling * dv v8_j                    (SPEC.md section 1)
 *
 * Same masks, tile skipping, offsets guard and debug counter as
 * hstu_fwd_sm90.cu, with a grid and params of its own (below); the other
 * differences are all about 8-bit operands:
 *
 *   S = Q K^T: wgmma m64nBNk32 .e4m3, K-major (rows of D bytes, the
 *     128-byte swizzle; 64-byte for D = 64); K from shared memory, Q from
 *     registers where QREG allows (ldmatrix once per m-block), else from
 *     shared memory too.
 *   P = silu(s) is quantized to e4m3 in registers with no scale: e4m3
 *     covers [2^-9, 448], silu(s) > 448 saturates to 448 and |silu(s)| below
 *     2^-10 rounds to 0.  Rounding is to nearest, at most 2^-4 relative
 *     (e4m3 has 3 mantissa bits); over a sum of many keys the errors
 *     average, so out is typically within ~1% of the exact value and within
 *     ~5% of the largest output in the worst element (tests/
 *     test_hstu_fp8_gpu.c states and checks the bound).
 *   O += P V: e4m3 wgmma needs V K-major too, i.e. V^T with keys contiguous.
 *     The producer warpgroup transposes each V tile: TMA into a staging
 *     tile laid out as K's, then ldmatrix.trans, one prmt per word and
 *     stmatrix (transpose_v) into the wgmma-canonical swizzled V^T tile.
 *     The S accumulator's register layout does not match the 8-bit A
 *     fragment's, so instead of moving P between threads the keys of every
 *     16-block of V^T are stored in the order kiln_p8_perm() gives
 *     (kiln_sm90_fp8.cuh explains the layouts).
 *   dq dk scale S before the SiLU, dv and inv_scaling scale O at the end.
 *
 * One CTA = a unit of one (batch, head): its m-blocks of 128 query rows
 * paired so that the pairs cost about the same (kiln_unit_mblock: under a
 * causal mask the heaviest with the lightest); grid (units of the longest
 * sequence, heads, batch).  The second m-block's loads overlap the first's
 * key loop, and its first S goes to the tensor cores beside the first's
 * last P V, whose O is then stored: the fill and drain that one m-block
 * per CTA paid each time (its Q wait, its first tile's wait, a lone S, a
 * lone P V and the stores: about 14% of all warp stall samples at
 * (32, 4096, 4, 128) in ncu) are paid once per two.  On an H100, with Q
 * and K by TMA (below), in TFLOP/s against one m-block per CTA:
 * (256, 1024, 4, 128) 384 -> 424, (64, 2048, 8, 64) 345 -> 359,
 * (32, 4096, 4, 128) 671 -> 721 (one machine; on another, with the other
 * P packing of kiln_sm90_fp8.cuh, means of 2 runs 377 -> 402, 344 -> 363,
 * 661 -> 686).
 * 12 warps:
 *   warpgroup 0 (producer): thread 0 issues TMA copies of both Qs (a buffer
 *     each) and of K per key tile, straight into the swizzled tiles (the
 *     stage's "full" mbarrier: one arrival and the bytes), and of V into
 *     a staging tile (NSTG = 3 of them, an mbarrier each: V of tiles t+1
 *     and t+2 are in flight while tile t is transposed); all 128 threads
 *     transpose V from staging into the stage's V^T, then arrive on
 *     "full" after the transposed tile is written and fenced for the async
 *     proxy (128 more: "full" expects 129).  So a consumer needs no proxy
 *     fence after its wait (K used to come by cp.async, a generic-proxy
 *     write, and every step paid a MEMBAR.ALL.CTA for it).
 *   warpgroups 1, 2 (consumers): 64 query rows each, the S / P V software
 *     pipeline of hstu_fwd_sm90.cu, across the unit's two m-blocks.  O is
 *     stored from registers (8-byte stores after a pairwise exchange,
 *     guarded by row < len_q): it is a small part of the time, and it
 *     leaves the shared memory of the pipeline alone.
 *
 * Shared memory (bytes; see kiln__hstu_fwd_sm90_smem()): up to 1024 of
 * alignment slack, then
 *   2 x Q [128 x D] | STAGES (4, or 3 at head dim 256; with rab 3 at head
 *   dim 64, else 2) x (K [BN x D] | V^T [D x BN] | with rab, rab [128 x BN]
 *   in 16 bits) | NSTG x staging [BN x D] | mbarriers and the output scale
 *   (128)
 * Q and K: D/128 column blocks of [rows][128 bytes], 128-byte swizzle (16-
 * byte chunk c of row r at chunk c ^ (r & 7)); D = 64: [rows][64], 64-byte
 * swizzle (c ^ ((r >> 1) & 3)).  V^T: [D][BN] with the 128-byte swizzle
 * (BN = 128) or the 64-byte one (BN = 64).  Staging: as K (TMA writes it
 * with K's box and swizzle).
 *
 * Where a step's time goes (H100, (32, 4096, 4, 128)): about 2450 clocks,
 * against 1024 for the two consumers' wgmmas at peak.  Left out for
 * timing (wrong results; TFLOP/s at (32, 4096), (256, 1024), (64, 2048, 8,
 * 64), 2026-11-24, base 742-769, 421-435, 392-397):
 *   the tanh alone (FMUL and FFMA kept)        775, 446, 456
 *   the whole SiLU (P = S, converted)          826-857, 472-474, 493
 *   the V transpose (staging copy kept)        832, 453, 400
 *   the V path (staging copy and transpose)    858, 481, 424
 *   the V path and the SiLU                    1166, 572, 599
 * The tanh costs little at head dim 128 (1 to 4%; 15% at 64).  The SiLU
 * costs 7 to 26%, the V path 7 to 14%, the two together 34 to 55%: they
 * contend for something both use, most likely the ALU pipe (the
 * transposer's PRMTs and address arithmetic; the consumers' e4m3
 * conversions and mask compares), which running wgmmas slow about 2x
 * (tests/standalone/sm90_wgmma_rate.cu).  Moving part of the SiLU to the
 * FMA pipe (a degree-7 polynomial for tanh, 10 instructions, error 1.6e-3)
 * slows every shape, the more the larger the share: 1/4 of the elements
 * -4%, 1/2 -16%, 3/4 -23% at (32, 4096).  Ping-pong of the consumers gains
 * nothing.  The transposer then in use (4 x 4 byte transposes: 16-byte
 * loads, two PRMT stages, 4-byte stores; about 170 instructions per tile
 * and thread) gave way to today's (about 50), on an H100, 2 runs each,
 * same session, 2026-11-25: (32, 4096) 738, 767 -> 777, 783; (256, 1024)
 * 424, 428 -> 442, 441; (64, 2048, 8, 64) 395, 392 -> 395, 396 (where the
 * SiLU binds).  The SiLU in f16x2 (cvt to f16x2 after the FMULs, tanh,
 * one HFMA2, cvt to e4m3 from f16x2: the same instruction count, two FFMAs
 * traded for an HFMA2 and an F2FP) lost 4 to 7% (same session: 782, 794 ->
 * 731, 738; 442, 440 -> 416, 405; 400, 397 -> 382, 380): tanh.approx.f16x2
 * is two MUFU.TANH.F16 at the f32 rate (sm90_wgmma_rate), and the extra
 * conversion costs more than the FFMA it replaces.  V into staging by TMA
 * rather than by the producer's cp.async (8 16-byte copies per tile and
 * thread, and the zero-fill of rows past the sequence, now a mask in the
 * transposer's registers on a sequence's last tile): on an H100, 2 runs
 * each, same session, 2026-11-25: (32, 4096) 773, 779 -> 829, 807;
 * (256, 1024) 441, 429 -> 457, 452; (64, 2048, 8, 64) 399, 403 -> 412,
 * 412.  What the transpose still costs could go to a pre-pass making V^T
 * once per call (one more read and write of V, about 7% of the forward at
 * (32, 4096), and a workspace) so that TMA brings it like K.
 *
 * Requirements on the inputs (checked by the runtime): q, k, v, out 16-byte
 * aligned; q, k, v row and head strides multiples of 16 elements, out's of
 * 8; q, k and v describable by TMA (runtime/hstu_tma.c; else the portable
 * kernel runs). */
#include "kiln_common.cuh"
#include "kiln_sm90.cuh"
#include "kiln_sm90_fp8.cuh"
#include "kiln_sm90_rab.cuh"
#include "hstu_params.h"
#include "hstu_fp8_params.h"
#include "kiln_hstu_seq.cuh"

#if !defined(KILN_DTYPE) || !defined(KILN_HEAD_DIM) || !defined(KILN_BLOCK_M) || \
    !defined(KILN_BLOCK_N) || !defined(KILN_WARPS) || !defined(KILN_OUT_DTYPE)
#error "hstu_fwd_sm90_fp8.cu: the specialization prelude is missing"
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

namespace kiln_hstu_fwd_sm90_fp8_impl {

constexpr int OT = KILN_OUT_DTYPE;       /* out and rab: fp16 or bf16 */
constexpr int D = KILN_HEAD_DIM;
constexpr int BM = KILN_BLOCK_M;
constexpr int BN = KILN_BLOCK_N;
constexpr int NTHREADS = KILN_WARPS * 32;
/* K/V ring depth: must match kiln__hstu_fwd_sm90_smem().  Four where
 * they fit (221 KB at head dim 128; head dim 256 would need 250): the
 * producer runs further ahead, and ring arithmetic is shifts.  On an H100,
 * 2 runs: (32, 4096, 4, 128) 702, 724 -> 725, 748 TFLOP/s; (256, 1024, 4,
 * 128) and (64, 2048, 8, 64) even.  With rab a stage holds a 16-bit rab
 * tile too: three fit at head dim 64, two elsewhere. */
constexpr int STAGES = KILN_RAB ? (D <= 64 ? 3 : 2) : (D <= 128 ? 4 : 3);
constexpr int PTHREADS = 128;            /* producer warpgroup */
/* setmaxnreg moves registers inside the CTA's launch allocation (384 x 168,
 * from __launch_bounds__(384, 1)): asking the consumers for more than the
 * producer gives back blocks them forever. */
constexpr int PREGS = 40;
constexpr int CREGS = 232;
constexpr int CPR = D / 16;              /* 16-byte chunks per row */
constexpr int SN = BN / 8;               /* n8 blocks of S */
constexpr int KSTEPS = D / 32;           /* k32 steps of Q K^T */
constexpr int PSTEPS = BN / 32;          /* k32 steps of P V */
constexpr bool SW128 = D >= 128;         /* Q, K rows */
constexpr bool VSW128 = BN == 128;       /* V^T rows */
constexpr bool CAUSAL = KILN_CAUSAL != 0;
constexpr bool LOCAL = KILN_LOCAL != 0;
constexpr bool CONTEXT = KILN_CONTEXT != 0;
constexpr bool TARGET = KILN_TARGET != 0;
constexpr bool DELTA_Q = KILN_DELTA_Q != 0;
constexpr bool RAB = KILN_RAB != 0;
/* V staging buffers: V(t + 1) and V(t + 2) are in flight while V(t) is
 * transposed (with two, V(t + 1) alone: (256, 1024, 4, 128) ran ~2% slower
 * on an H100).  Must match kiln__hstu_fwd_sm90_smem(). */
constexpr int NSTG = 3;
/* Q K^T takes Q from registers (loaded once per m-block) rather than shared
 * memory: an e4m3 wgmma with both operands in shared memory reads 6 KB per
 * 64 clocks of tensor work (96 of shared memory's 128 bytes a clock), on
 * top of the producer's traffic.  On an H100, (256, 1024, 4, 128): 371 ->
 * 384 TFLOP/s; (64, 2048, 8, 64) and (32, 4096, 4, 128) even.  Not at
 * head dim 256 (its 32 registers do not fit beside O), nor with rab,
 * contexts and targets at 128 (ptxas spilled 8 bytes there).  With rab
 * (from shared memory, which freed the registers of its row pointers),
 * (32, 4096, 4, 128) causal, one rab head: 493, 466 -> 507, 510 TFLOP/s
 * on an H100, alternated runs. */
constexpr bool QREG = D <= 128 && !(KILN_RAB && D == 128 && KILN_CONTEXT && KILN_TARGET);
/* Head dim 256 with rab packs P with fewer registers (kiln_pack4_e4m3):
 * with the other form ptxas spilled 8 to 60 bytes in those variants. */
constexpr bool PACK_MERGE = D == 256 && RAB;
/* S in two halves of BN / 2 keys at BN = 128, a commit group each: the
 * SiLU of the first half runs while the tensor cores compute the second,
 * instead of waiting for all of S.  On an H100, 2 runs each, TFLOP/s:
 * (64, 2048, 8, 64) 374, 372 -> 382, 383; (32, 4096, 4, 128) 747, 726 ->
 * 743, 764; (256, 1024, 4, 128) 437, 428 -> 433, 421 (noise).  Not at
 * head dim 128 with rab and targets, where ptxas then spilled 20 bytes. */
constexpr int SPARTS = BN == 128 && !(D == 128 && RAB && TARGET) ? 2 : 1;
/* Head dim 64 (with S in halves): P V of the tile before is issued after
 * the SiLU of S's first half rather than beside S, so the tensor cores run
 * it during the second half's SiLU.  On an H100, 2 runs, TFLOP/s: (64,
 * 2048, 8, 64) 382, 384 -> 393, 393; at head dim 128 it lost 1 to 2%
 * ((32, 4096) 761, 760 -> 756, 752; (256, 1024) 429, 431 -> 424, 423). */
constexpr bool LATE_PV = D == 64 && SPARTS == 2;

static_assert(KILN_DTYPE == KILN_DT_E4M3, "dtype");
static_assert(OT == KILN_DT_FP16 || OT == KILN_DT_BF16, "out dtype");
static_assert(D == 64 || D == 128 || D == 256, "head dim");
static_assert(BM == 128 && NTHREADS == 384, "128 rows, 3 warpgroups");
static_assert(BN == 64 || BN == 128, "BLOCK_N");
static_assert(!(CONTEXT || TARGET) || CAUSAL, "context/target need causal");
static_assert(PTHREADS * PREGS + (NTHREADS - PTHREADS) * CREGS <= NTHREADS * 168,
              "setmaxnreg beyond the launch allocation deadlocks");

constexpr uint32_t Q_BYTES = BM * D;
constexpr uint32_t KV_BYTES = BN * D;    /* K, and V^T */
constexpr uint32_t VS_BYTES = KV_BYTES;  /* staging: a K tile */
constexpr uint32_t OFF_Q = 0;                        /* [2]: the CTA's m-blocks */
constexpr uint32_t OFF_KV = 2 * Q_BYTES;
/* with rab a stage is K | V^T | rab [BM x BN] in 16 bits (TMA's 128-byte
 * swizzle, column blocks of 64), which the consumers read at S and free
 * with the stage after P V */
constexpr uint32_t R_BYTES = RAB ? BM * BN * 2 : 0;
constexpr uint32_t STAGE_BYTES = 2 * KV_BYTES + R_BYTES;
constexpr uint32_t OFF_VS = OFF_KV + STAGES * STAGE_BYTES;
constexpr uint32_t OFF_BAR = OFF_VS + NSTG * VS_BYTES;
constexpr uint32_t BAR_FULL = OFF_BAR;              /* [STAGES] */
constexpr uint32_t BAR_EMPTY = OFF_BAR + 8 * STAGES; /* [STAGES] */
constexpr uint32_t BAR_Q = OFF_BAR + 16 * STAGES;    /* [2] */
constexpr uint32_t BAR_VS = BAR_Q + 16;              /* [NSTG]: V landed in staging */
constexpr uint32_t OUT_SCALE = BAR_VS + 8 * NSTG;    /* float: descale_v / scaling */
constexpr int PBAR = 1;                  /* named barrier of the producer */
/* bytes from OFF_BAR on: must match kiln__hstu_fwd_sm90_smem() */
static_assert(OUT_SCALE + 4 - OFF_BAR <= 128, "barrier area");
static_assert(Q_BYTES % 1024 == 0 && KV_BYTES % 1024 == 0, "swizzle alignment");
static_assert(OFF_BAR + 128 + 1024 <= 232448, "the shared memory of an H100 CTA");

/* Byte offset of 16-byte chunk c of row `row` in a Q or K tile of ROWS rows. */
template <int ROWS> KILN_DEV uint32_t tile_off(int row, int c)
{
    if constexpr (SW128)
        return (uint32_t)((c >> 3) * (ROWS * 128) + row * 128 + (((c & 7) ^ (row & 7)) << 4));
    else
        return (uint32_t)(row * 64 + ((c ^ ((row >> 1) & 3)) << 4));
}

/* Producer leader: a Q, K or V (staging) tile of ROWS rows from row `row`
 * of head h by TMA, its column blocks into their swizzled tiles, all
 * completing on mbarrier bar (one arrival and the bytes). */
template <int ROWS> KILN_DEV void tma_tile(uint32_t dst, const void *tm, int h, int row, uint32_t bar)
{
    kiln_mbar_arrive_expect_tx(bar, ROWS * D);
#pragma unroll
    for (int cb = 0; cb < (SW128 ? D / 128 : 1); ++cb)
        kiln_tma_load_3d(dst + (uint32_t)(cb * ROWS * 128), tm, cb * 128, h, row, bar);
}

/* V^T: the 16 positions of key block blk in row d. */
KILN_DEV uint32_t vt_off(int d, int blk)
{
    if constexpr (VSW128)
        return (uint32_t)(d * 128 + ((blk ^ (d & 7)) << 4));
    else
        return (uint32_t)(d * 64 + ((blk ^ ((d >> 1) & 3)) << 4));
}

/* Producer: V tile in staging (keys in order, laid out and swizzled as a
 * K tile) -> V^T tile (keys of each 16-block in kiln_p8_perm order).  The
 * byte transpose is done in two halves: ldmatrix.trans transposes 16-bit
 * pairs (two d values of one key), one PRMT per word interleaves the bytes
 * of two such pairs, and stmatrix writes the rows.  A warp's step is one
 * 16-key block times 32 d values:
 *   ldmatrix.x4.trans, matrices {keys 0-7, keys 8-15} x {chunk 2c, 2c + 1}:
 *     lane (j = l / 4, q = l % 4) gets, per matrix, keys 2q + {0, 1} (+ 8)
 *     at d = 2j + {0, 1} (+ 16): a = [k0 d0, k0 d1, k1 d0, k1 d1] and b the
 *     same for keys 2q + 8, 2q + 9;
 *   prmt(a, b, 0x6420) is row d0 of V^T at positions 4q .. 4q + 3 (keys 2q,
 *     2q + 1, 2q + 8, 2q + 9: the p8 order), 0x7531 row d1;
 *   stmatrix.x4 takes, from lane j, row j of each matrix: the lanes with
 *     j < 4 put their d0 words in matrix 0 and d1 in matrix 1, those with
 *     j >= 4 the other way round, so a matrix's rows are d = {0, 2, 4, 6,
 *     9, 11, 13, 15} (or the rest), whose V^T swizzle lands in 8 distinct
 *     16-byte bank groups (with d = 0, 2, .., 14, two ways).
 * ldmatrix's 8 rows (keys 8m .. 8m + 7, one chunk) sit in 8 distinct bank
 * groups by the staging swizzle.  Warp w takes blocks w, w + 4.  TAIL: the
 * sequence ends at key nvalid of the tile, and the keys from there on (the
 * next sequence's V, which a NaN would carry into P V as 0 * NaN) are
 * zeroed in registers.  Per 16 KB tile and thread: 8 ldmatrix, 32 PRMT,
 * 8 stmatrix. */
template <bool TAIL>
KILN_DEV void transpose_v(uint32_t vs, uint32_t vt, int ptid, int nvalid)
{
    constexpr int NB = BN / 16;
    constexpr int CP = D / 32;
    static_assert(NB % 4 == 0 && (NB == 4 || VSW128), "blocks per warp");
    const int w = ptid >> 5, l = ptid & 31;
    const int mi = l >> 3, r = l & 7;
    const int key = 16 * w + 8 * (mi & 1) + r;   /* row this lane addresses (block w) */
    const uint32_t st = vt + vt_off(16 * (mi >> 1) + 2 * r + ((mi & 1) ^ (r >> 2)), w);
    const uint32_t sel0 = l < 16 ? 0x6420u : 0x7531u, sel1 = sel0 ^ 0x1111u;
    const int k0 = 16 * w + 2 * (l & 3);         /* key of bytes 0, 1 of matrix 0's word */
#pragma unroll
    for (int i = 0; i < NB / 4; ++i)
#pragma unroll
        for (int c = 0; c < CP; ++c) {
            uint32_t m[4];
            kiln_ldmatrix_x4_trans(m, vs + tile_off<BN>(key + 64 * i, 2 * c + (mi >> 1)));
            if constexpr (TAIL) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int kk = k0 + 64 * i + 8 * (e & 1);
                    m[e] &= (kk < nvalid ? 0x0000ffffu : 0u) | (kk + 1 < nvalid ? 0xffff0000u : 0u);
                }
            }
            const uint32_t x[4] = {kiln_prmt(m[0], m[1], sel0), kiln_prmt(m[0], m[1], sel1),
                                   kiln_prmt(m[2], m[3], sel0), kiln_prmt(m[2], m[3], sel1)};
            /* block w + 4: its swizzle chunk is w's xor 4 (V^T is 1024-aligned) */
            kiln_stmatrix_x4((st ^ (uint32_t)(64 * i)) + (uint32_t)(32 * c * BN), x);
        }
}

/* wgmma descriptors. */
KILN_DEV uint64_t desc_qk(uint32_t addr)
{
    return kiln_gmma_desc(addr, 16, SW128 ? 1024 : 512, SW128 ? 1 : 2);
}

KILN_DEV uint64_t desc_vt(uint32_t addr)
{
    return kiln_gmma_desc(addr, 16, VSW128 ? 1024 : 512, VSW128 ? 1 : 2);
}

/* Address of the k32 step ks of a Q or K tile of ROWS rows, from row r0. */
template <int ROWS> KILN_DEV uint32_t kstep_addr(uint32_t base, int r0, int ks)
{
    if constexpr (SW128)
        return base + (uint32_t)((ks >> 2) * (ROWS * 128) + r0 * 128 + (ks & 3) * 32);
    else
        return base + (uint32_t)(r0 * 64 + ks * 32);
}

/* What a consumer thread needs to turn S into P. */
struct Ctx {
    kiln_rab_lane rab;        /* RAB: this lane's place in a rab tile */
    float half_alpha;         /* alpha / 2 (RAB), else alpha dq dk / 2 */
    float qk_scale;           /* dq dk (RAB) */
    int L, i0;                /* i0: position of this thread's row (hf = 0) */
    int tq;
    int c_ctx, hist_end, wl, wr;
    int tgt_lo[2];            /* TARGET: first key of the row's target group */
};

/* S of tile n -> P (e4m3 A fragments in kiln_p8_perm key order); MASK:
 * apply the element mask.  RAB: r_addr is the tile's rab; ldmatrix hands
 * each thread the elements of its S fragment (as in hstu_fwd_sm90.cu: the
 * f32 accumulator's layout does not depend on the operands' type). */
template <bool MASK, int PART = 0>
KILN_DEV void process(const Ctx &c, float (&s)[BN / 2], int n, uint32_t (&pa)[PSTEPS][4], uint32_t r_addr)
{
    constexpr int NT0 = PART * SN / SPARTS, NT1 = (PART + 1) * SN / SPARTS;
    const int n0 = n * BN;
    const int L = c.L;
    if constexpr (RAB) {
#pragma unroll
        for (int jj = NT0 / 2; jj < NT1 / 2; ++jj) {
            float f[8];
            kiln_rab_pair<OT, BM>(r_addr, c.rab, jj, f);
#pragma unroll
            for (int i = 0; i < 8; ++i) s[8 * jj + i] = s[8 * jj + i] * c.qk_scale + f[i];
        }
    }
#pragma unroll
    for (int e = 4 * NT0; e < 4 * NT1; ++e) s[e] = kiln_silu_half(c.half_alpha * s[e]);

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
            for (int nt = NT0; nt < NT1; ++nt)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int jj = nt * 8 + e;
                    bool ok = jj >= lo1 && jj < hi1;
                    if (TARGET) ok = ok || (jj >= lo2 && jj < hi2);
                    s[4 * nt + 2 * hf + e] = ok ? s[4 * nt + 2 * hf + e] : 0.f;
                }
        }
    }
    /* k32 step kk covers n8 blocks 4kk..4kk+3; the A fragment's register r
     * (row g + 8 (r & 1), positions 16 (r >> 1) + 4q .. + 3) takes keys
     * 2q, 2q+1, 2q+8, 2q+9 of its 16-block: s[16kk + 8 (r >> 1) + 2 (r & 1)
     * + {0, 1, 4, 5}]. */
#pragma unroll
    for (int kk = NT0 / 4; kk < NT1 / 4; ++kk)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int b = 16 * kk + 8 * (r >> 1) + 2 * (r & 1);
            pa[kk][r] = kiln_pack4_e4m3<PACK_MERGE>(s[b], s[b + 1], s[b + 4], s[b + 5]);
        }
}

/* Part h of S: SPARTS parts of BN / SPARTS keys, a commit group each. */
using SPart = float[BN / SPARTS / 2];
KILN_DEV SPart &s_part(float (&s)[BN / 2], int h)
{
    return *reinterpret_cast<SPart *>(&s[h * (BN / SPARTS / 2)]);
}

/* S = Q K^T for this warpgroup's 64 rows and the K tile at k_addr, Q from
 * its A fragments qa (QREG) or from shared memory at q_addr (its first
 * row).  Bases are opaque to the optimizer (hoisted descriptors would pin
 * registers across the key loop). */
KILN_DEV void issue_s(float (&s)[BN / 2], uint32_t q_addr, const uint32_t (&qa)[KSTEPS][4], uint32_t k_addr)
{
    constexpr int PN = BN / SPARTS;
    const uint64_t dq = QREG ? 0 : desc_qk(kiln_opaque_u32(q_addr));
    const uint64_t dk = desc_qk(kiln_opaque_u32(k_addr));
#pragma unroll
    for (int h = 0; h < SPARTS; ++h) {
#pragma unroll
        for (int ks = 0; ks < KSTEPS; ++ks) {
            if constexpr (QREG)
                kiln_wgmma8_rs<PN>(s_part(s, h), qa[ks], kiln_desc_add(dk, kstep_addr<BN>(0, h * PN, ks)), ks > 0);
            else
                kiln_wgmma8_ss<PN>(s_part(s, h), kiln_desc_add(dq, kstep_addr<BM>(0, 0, ks)),
                                   kiln_desc_add(dk, kstep_addr<BN>(0, h * PN, ks)), ks > 0);
        }
        kiln_wgmma_commit();
    }
}

/* O += P V with the V^T tile at vt_addr; O = P V for an m-block's first
 * tile (acc false: the wgmma's scale-d, so that only wgmmas write O, which
 * ptxas would otherwise answer by serializing them). */
KILN_DEV void issue_pv(float (&o)[D / 2], const uint32_t (&pa)[PSTEPS][4], uint32_t vt_addr, bool acc)
{
    const uint64_t dv = desc_vt(kiln_opaque_u32(vt_addr));
#pragma unroll
    for (int kk = 0; kk < PSTEPS; ++kk)
        kiln_wgmma8_rs<D>(o, pa[kk], kiln_desc_add(dv, (uint32_t)(kk * 32)), kk > 0 || acc);
    kiln_wgmma_commit();
}

KILN_DEV uint32_t k_addr(uint32_t sbase, uint32_t stage)
{
    return sbase + OFF_KV + stage * STAGE_BYTES;
}

/* the rab tile of a stage (RAB) */
KILN_DEV uint32_t r_addr(uint32_t sbase, uint32_t stage)
{
    return k_addr(sbase, stage) + 2 * KV_BYTES;
}

/* Which O: an m-block's first row within its sequence, m0 (a multiple of
 * BM; bit 0 set: the m-block has one key tile, so its last P V is its
 * first and sets O), and how many rows exist; rows 0: nothing (no m-block
 * before).  Built by out_of where it is needed. */
struct Out {
    int m0, rows;
};

KILN_DEV bool out_one_tile(const Out &out)
{
    return (out.m0 & 1) != 0;
}

/* %ctaid read where used (volatile: not hoisted): values held across the
 * key loop, ptxas spilled them with rab and targets. */
KILN_DEV int ctaid(int dim)
{
    uint32_t v;
    if (dim == 0) asm volatile("mov.u32 %0, %%ctaid.x;\n" : "=r"(v));
    else if (dim == 1) asm volatile("mov.u32 %0, %%ctaid.y;\n" : "=r"(v));
    else asm volatile("mov.u32 %0, %%ctaid.z;\n" : "=r"(v));
    return (int)v;
}

/* O scaled by descale_v / scaling, packed and stored straight from the
 * registers, 8 bytes a thread (kiln_st_chunk_pair; 4-byte stores of the
 * column pairs ran (256, 1024, 4, 128) 12% slower on an H100), guarded by
 * row < rows.  The scale and the sequence's first row are read here rather
 * than kept in registers across the key loop (ptxas spilled them).  ZERO:
 * an m-block that sees no key. */
template <bool ZERO = false>
KILN_DEV void store_o(const kiln_hstu_kparams &p, const float (&o)[D / 2], const Out &out, int row0, int tq,
                      uint32_t sbase)
{
    const float osc = kiln_ld_shared_f32(sbase + OUT_SCALE);
    const int64_t ostride = p.out_row_stride;
    const int64_t q_row0 = kiln_ld_offset(p.seq_offsets_q, p.offsets_i64, ctaid(2)) + (out.m0 & ~(BM - 1));
    uint16_t *og = (uint16_t *)p.out + q_row0 * ostride + (int64_t)ctaid(1) * p.out_head_stride;
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
        const int row = row0 + 8 * hf;
        uint16_t *orow = og + (int64_t)row * ostride + kiln_chunk_pair_lane(tq);
#pragma unroll
        for (int c = 0; c < D / 16; ++c) {
            const int d0 = 2 * c, d1 = 2 * c + 1;
            const uint32_t w0 = ZERO ? 0u : kiln_pack2<OT>(o[4 * d0 + 2 * hf] * osc, o[4 * d0 + 2 * hf + 1] * osc);
            const uint32_t w1 = ZERO ? 0u : kiln_pack2<OT>(o[4 * d1 + 2 * hf] * osc, o[4 * d1 + 2 * hf + 1] * osc);
            kiln_st_chunk_pair(orow + 16 * c, w0, w1, tq, row < out.rows);
        }
    }
}

/* Key tile n at ring position t (tiles this CTA consumed before it) while
 * the P of ring tile t - 1 waits in pa: S(n) and P V(t - 1) on the tensor
 * cores (acc: P V adds to O), then SiLU of tile n while P V runs (S in
 * halves: the first half's SiLU while the second half and P V run; with
 * LATE_PV, P V issued after the first half's SiLU); frees the stage of
 * t - 1.  FIRST: tile n is the first of its m-block and t - 1 the
 * last of the m-block before, whose O (complete once P V is) is stored to
 * prev; without one (prev.rows = 0) that P V is of whatever pa holds and
 * is discarded (the next P V sets O), the same code either way: paths that
 * merge with O in different registers make ptxas serialize every wgmma. */
template <bool MASK, bool FIRST>
KILN_DEV void step(const kiln_hstu_kparams &p, const Ctx &c, float (&s)[BN / 2], float (&o)[D / 2],
                   uint32_t (&pa)[PSTEPS][4], int n, uint32_t t, uint32_t sbase, uint32_t q_addr,
                   const uint32_t (&qa)[KSTEPS][4], bool acc, const Out &prev, int row0)
{
    const uint32_t st = t % STAGES, sp = (t - 1) % STAGES;
    const bool pv = !FIRST || prev.rows > 0;
    kiln_mbar_wait(sbase + BAR_FULL + 8 * st, (t / STAGES) & 1);
    kiln_reg_fence(pa);
    kiln_wgmma_fence();
    issue_s(s, q_addr, qa, k_addr(sbase, st));
    uint32_t pn[PSTEPS][4];
    if constexpr (SPARTS == 2) {
        if constexpr (!LATE_PV) issue_pv(o, pa, k_addr(sbase, sp) + KV_BYTES, acc);
        kiln_wgmma_wait<LATE_PV ? 1 : 2>();   /* the first half of S */
        kiln_reg_fence(s_part(s, 0));
        process<MASK, 0>(c, s, n, pn, r_addr(sbase, st));
        if constexpr (LATE_PV) {
            kiln_reg_fence(pa);
            kiln_wgmma_fence();
            issue_pv(o, pa, k_addr(sbase, sp) + KV_BYTES, acc);
        }
        kiln_wgmma_wait<1>();                 /* the second half */
        kiln_reg_fence(s_part(s, 1));
        process<MASK, 1>(c, s, n, pn, r_addr(sbase, st));
    } else {
        issue_pv(o, pa, k_addr(sbase, sp) + KV_BYTES, acc);
        kiln_wgmma_wait<1>();
        kiln_reg_fence(s);
        process<MASK>(c, s, n, pn, r_addr(sbase, st));
    }
    kiln_wgmma_wait<0>();
    kiln_reg_fence(o);
    kiln_reg_fence(pa);
    kiln_mbar_arrive_if(sbase + BAR_EMPTY + 8 * sp, pv);
    if constexpr (FIRST) store_o(p, o, prev, row0, c.tq, sbase);
#pragma unroll
    for (int kk = 0; kk < PSTEPS; ++kk)
#pragma unroll
        for (int e = 0; e < 4; ++e) pa[kk][e] = pn[kk][e];
}

/* P V of ring tile t alone, the last of m-block prev, and its O stored;
 * without one (prev.rows = 0), discarded as in step. */
KILN_DEV void last_pv(const kiln_hstu_kparams &p, float (&o)[D / 2], uint32_t (&pa)[PSTEPS][4], uint32_t t,
                      uint32_t sbase, bool acc, const Out &prev, int row0, int tq)
{
    const uint32_t sl = t % STAGES;
    kiln_reg_fence(pa);
    kiln_wgmma_fence();
    issue_pv(o, pa, k_addr(sbase, sl) + KV_BYTES, acc);
    kiln_wgmma_wait<0>();
    kiln_reg_fence(o);
    kiln_reg_fence(pa);
    kiln_mbar_arrive_if(sbase + BAR_EMPTY + 8 * sl, prev.rows > 0);
    store_o(p, o, prev, row0, tq, sbase);
}

/* The CTA's m-block i (0, 1) of a sequence of len_q rows: kiln_unit_mblock
 * of unit blockIdx.x; < 0: none. */
KILN_DEV int cta_mblock(const kiln_seq &sq, int i)
{
    const int nmb = (sq.len_q + BM - 1) / BM;
    const int nf = CONTEXT ? kiln_min(nmb, (sq.c_ctx + BM - 1) / BM) : 0;
    return kiln_unit_mblock(nmb, ctaid(0), nf, i);
}

/* Key tiles [n_begin, n_end) of m-block mb (none: empty). */
KILN_DEV void mblock_tiles(const kiln_seq &sq, int mb, int wl, int wr, int &n_begin, int &n_end)
{
    n_begin = n_end = 0;
    if (mb < 0) return;
    const int m0 = mb * BM;
    const int rows_here = kiln_min(BM, sq.len_q - m0);
    kiln_fwd_key_tiles<CAUSAL, LOCAL, CONTEXT, BN>(m0 + sq.off, m0 + rows_here - 1 + sq.off, sq.L, sq.c_ctx,
                                                   sq.hist_end, wl, wr, n_begin, n_end);
}

/* The Out of the CTA's m-block i, or rows 0 when it has none or it sees
 * no key.  Recomputed from the sequence where needed rather than carried
 * across the key loop (ptxas spilled it with rab, context and targets). */
KILN_DEV Out out_of(const kiln_hstu_kparams &p, int i, int wl, int wr)
{
    kiln_seq sq = {};
    kiln_seq_load<DELTA_Q, CONTEXT, TARGET, LOCAL>(p, ctaid(2), sq);
    const int mb = cta_mblock(sq, i);
    int n_begin, n_end;
    mblock_tiles(sq, mb, wl, wr, n_begin, n_end);
    Out out;
    out.m0 = kiln_max(mb, 0) * BM;
    out.rows = n_end > n_begin ? kiln_min(BM, sq.len_q - out.m0) : 0;
    out.m0 |= n_end - n_begin == 1 ? 1 : 0;
    return out;
}

} /* namespace kiln_hstu_fwd_sm90_fp8_impl */

extern "C" __global__ void __launch_bounds__(KILN_WARPS * 32, 1)
kiln_hstu_fwd(const __grid_constant__ kiln_hstu_fp8_tma_kparams a)
{
    using namespace kiln_hstu_fwd_sm90_fp8_impl;
    extern __shared__ __align__(1024) unsigned char kiln_smem[];
    const kiln_hstu_fp8_kparams &fp = a.f;
    const kiln_hstu_kparams &p = fp.base;

    const int tid = threadIdx.x;
    const int b = blockIdx.z;
    const int h = blockIdx.y;

    /* ---- sequence bounds and the offsets guard (kiln_hstu_seq.cuh) */
    kiln_seq sq;
    if (!kiln_seq_load<DELTA_Q, CONTEXT, TARGET, LOCAL>(p, b, sq)) {
        kiln_seq_count_bad(p);
        return;
    }
    /* this CTA's unit: one or two m-blocks */
    if ((int)blockIdx.x >= kiln_units_of((sq.len_q + BM - 1) / BM)) return;
    const int wl = LOCAL ? p.window_left : -1;
    const int wr = LOCAL ? p.window_right : -1;

    const uint32_t sbase = (kiln_smem_u32(kiln_smem) + 1023u) & ~1023u;

    if (tid == 0) {
#pragma unroll
        for (int s = 0; s < STAGES; ++s) {
            /* full: K's TMA (one arrival and its bytes) + 128 after the V
             * transpose */
            kiln_mbar_init(sbase + BAR_FULL + 8 * s, 1 + PTHREADS);
            kiln_mbar_init(sbase + BAR_EMPTY + 8 * s, NTHREADS - PTHREADS);
        }
#pragma unroll
        for (int i = 0; i < 2; ++i) kiln_mbar_init(sbase + BAR_Q + 8 * i, 1);
#pragma unroll
        for (int i = 0; i < NSTG; ++i) kiln_mbar_init(sbase + BAR_VS + 8 * i, 1);
        /* make the initialized barriers visible to the TMA unit */
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
        /* this (sequence, head)'s element of the descale arrays */
        const uint64_t ds_i = kiln_fp8_descale_index(fp, b, h);
        const float dsv = fp.descale_v ? kiln_ld_global_f32(fp.descale_v + 4 * ds_i) : 1.f;
        kiln_st_shared_f32(sbase + OUT_SCALE, dsv * p.inv_scaling);
    }
    __syncthreads();

    const int wg = tid >> 7;
    if (wg == 0) {
        /* ================= producer =================
         * Thread 0 issues TMA copies: both m-blocks' Q first (each into a
         * buffer of its own), then K and V (into staging) per tile.  All
         * 128 threads transpose V from staging.  The key tiles of
         * the first m-block and of the second run as one stream: ring
         * position t is tile nb0 + t of the first, or nb1 + t - nt0 of the
         * second (same sequence, same K and V).  A tile that runs past the
         * end of the sequence brings the next sequence's K rows by TMA:
         * they only make S columns that the mask replaces (V's are zeroed
         * by transpose_v<true>). */
        kiln_setmaxnreg_dec<PREGS>();
        const bool leader = tid == 0;
        const void *tm_q = &a.tmap[KILN_TMA8_Q][0];
        const void *tm_k = &a.tmap[KILN_TMA8_K][0];
        const void *tm_v = &a.tmap[KILN_TMA8_V][0];
        int nb0, ne0, nb1, ne1;
        const int mb0 = cta_mblock(sq, 0), mb1 = cta_mblock(sq, 1);
        mblock_tiles(sq, mb0, wl, wr, nb0, ne0);
        mblock_tiles(sq, mb1, wl, wr, nb1, ne1);
        const int nt0 = ne0 - nb0;
        const int ntiles = nt0 + ne1 - nb1;
        const int L = sq.L;
        const uint32_t sVS = sbase + OFF_VS;
        if (leader) {
#pragma unroll 1
            for (int i = 0; i < 2; ++i) {
                const int mb = i == 0 ? mb0 : mb1;
                if (i == 0 ? nt0 > 0 : ntiles > nt0)
                    tma_tile<BM>(sbase + OFF_Q + (uint32_t)i * Q_BYTES, tm_q, h, (int)(sq.q_beg + mb * BM),
                                 sbase + BAR_Q + 8 * i);
            }
        }
        /* key tile at ring position t */
        auto tile_n = [&](int t) { return t < nt0 ? nb0 + t : nb1 + (t - nt0); };
        /* Leader: V(ta) by TMA into staging buffer ta % NSTG, laid out as
         * a K tile; rows past the sequence come along (transpose_v<true>
         * zeroes them), rows past the tensor arrive as zeros. */
        auto issue_v = [&](int ta) {
            const uint32_t buf = (uint32_t)(ta % NSTG);
            tma_tile<BN>(sVS + buf * VS_BYTES, tm_v, h, (int)(sq.k_beg + tile_n(ta) * BN),
                         sbase + BAR_VS + 8 * buf);
        };
        int r_head = 0, r_batch = 0;
        if constexpr (RAB) kiln_rab_coords(p, h, b, r_head, r_batch);
        /* V(0 .. NSTG - 2) in flight before the loop */
        if (leader)
#pragma unroll 1
            for (int i = 0; i < NSTG - 1 && i < ntiles; ++i) issue_v(i);
#pragma unroll 1
        for (int t = 0; t < ntiles; ++t) {
            const int stage = t % STAGES;
            if (t >= STAGES) kiln_mbar_wait(sbase + BAR_EMPTY + 8 * stage, (uint32_t)((t / STAGES - 1) & 1));
            const int n0 = tile_n(t) * BN;
            const uint32_t sK = k_addr(sbase, (uint32_t)stage);
            if (RAB && leader) {
                /* the rab tile of the m-block's rows (i = m0 + off ..) and
                 * the tile's columns; past the tensor TMA writes zeros,
                 * columns past the sequence are masked; before K's arrival,
                 * so that the phase waits for its bytes */
                const uint32_t full = sbase + BAR_FULL + 8 * stage;
                kiln_mbar_expect_tx(full, R_BYTES);
                kiln_rab_tma<BM, BN>(r_addr(sbase, (uint32_t)stage), &a.tmap[KILN_TMA8_RAB][0], n0,
                                     (t < nt0 ? mb0 : mb1) * BM + sq.off, r_head, r_batch, full);
            }
            if (leader) tma_tile<BN>(sK, tm_k, h, (int)(sq.k_beg + n0), sbase + BAR_FULL + 8 * stage);
            /* every producer thread is done reading the staging buffer
             * that V(t + NSTG - 1) goes to (V(t - 1)'s) */
            kiln_named_bar_sync(PBAR, PTHREADS);
            if (leader && t + NSTG - 1 < ntiles) issue_v(t + NSTG - 1);
            kiln_mbar_wait(sbase + BAR_VS + 8 * (uint32_t)(t % NSTG), (uint32_t)((t / NSTG) & 1));
            const uint32_t sv = sVS + (uint32_t)(t % NSTG) * VS_BYTES;
            if (L - n0 >= BN)
                transpose_v<false>(sv, sK + KV_BYTES, tid, BN);
            else
                transpose_v<true>(sv, sK + KV_BYTES, tid, L - n0);
            kiln_fence_proxy_async();
            kiln_mbar_arrive(sbase + BAR_FULL + 8 * stage);
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

        /* O is written by wgmmas only: the first P V of each m-block sets it */
        float o[D / 2];
        float s[BN / 2];
        uint32_t pa[PSTEPS][4];
        uint32_t qa[KSTEPS][4];
        kiln_zero(o);
        kiln_zero(s);
        kiln_zero(pa);
        uint32_t t = 0;   /* key tiles consumed so far (ring position) */

#pragma unroll 1
        for (int i = 0; i < 2; ++i) {
            /* the sequence again rather than held across the key loop (rab
             * with targets spilled) */
            kiln_seq sq = {};
            kiln_seq_load<DELTA_Q, CONTEXT, TARGET, LOCAL>(p, ctaid(2), sq);
            const int mb = cta_mblock(sq, i);
            if (mb < 0) break;
            const int m0 = mb * BM;
            const int L = sq.L, off = sq.off;
            const int rows_here = kiln_min(BM, sq.len_q - m0);
            int n_begin, n_end;
            mblock_tiles(sq, mb, wl, wr, n_begin, n_end);
            const int ntiles = n_end - n_begin;

            if (ntiles == 0) {
                /* no key: O = 0 (the pipeline is not touched) */
                Out zero;
                zero.m0 = m0;
                zero.rows = rows_here;
                store_o<true>(p, o, zero, row0, tq, sbase);
                continue;
            }

            /* rows of this warpgroup, for the per-tile "full" test */
            const int wg_r1 = kiln_min(cw * 64 + 63, rows_here - 1);
            const int wi_min = m0 + cw * 64 + off;
            const int wi_max = m0 + wg_r1 + off;
            /* Tiles the mask leaves whole for every row of this warpgroup (as
             * hstu_fwd_sm90.cu): element masks run only outside [f_lo, f_hi). */
            int f_lo, f_hi;
            kiln_fwd_whole_tiles<CAUSAL, LOCAL, TARGET, BN>(wi_min, wi_max, L, sq.hist_end, wl, wr, n_begin,
                                                            n_end, f_lo, f_hi);

            /* per m-block, like the sequence and the CTA's coordinates
             * (registers) */
            const uint64_t ds_i = kiln_fp8_descale_index(fp, ctaid(2), ctaid(1));
            const float dsq = fp.descale_q ? kiln_ld_global_f32(fp.descale_q + 4 * ds_i) : 1.f;
            const float dsk = fp.descale_k ? kiln_ld_global_f32(fp.descale_k + 4 * ds_i) : 1.f;
            Ctx c;
            c.qk_scale = dsq * dsk;
            c.half_alpha = RAB ? 0.5f * p.alpha : 0.5f * p.alpha * c.qk_scale;
            c.L = L;
            c.i0 = m0 + row0 + off;
            c.tq = tq;
            c.c_ctx = sq.c_ctx;
            c.hist_end = sq.hist_end;
            const int group = TARGET ? kiln_max(p.target_group_size, 1) : 1;
#pragma unroll
            for (int hf = 0; hf < 2; ++hf) {
                const int ii = c.i0 + 8 * hf;
                c.tgt_lo[hf] = TARGET && ii >= sq.hist_end ? sq.hist_end + ((ii - sq.hist_end) / group) * group : 0;
            }
            c.wl = wl;
            c.wr = wr;
            c.rab = kiln_rab_lane_of(cw * 64 + (t128 >> 5) * 16, lane);
            const uint32_t sQ = kiln_opaque_u32(sbase + OFF_Q + (uint32_t)i * Q_BYTES);
            const uint32_t q_addr = kstep_addr<BM>(sQ, cw * 64, 0);

            kiln_mbar_wait(sbase + BAR_Q + 8 * i, 0);
            /* Q as A fragments (QREG; zeros, unused, without): ldmatrix's b16
             * fragment is the e4m3 k32 fragment byte for byte
             * (kiln_sm90_fp8.cuh) */
#pragma unroll
            for (int ks = 0; ks < KSTEPS; ++ks) {
                if constexpr (QREG) {
                    const int r = cw * 64 + (t128 >> 5) * 16 + (lane & 7) + 8 * ((lane >> 3) & 1);
                    kiln_ldmatrix_x4(qa[ks], sQ + tile_off<BM>(r, 2 * ks + (lane >> 4)));
                } else {
#pragma unroll
                    for (int e = 0; e < 4; ++e) qa[ks][e] = 0;
                }
            }

            /* the m-block before, if its last P V (of ring tile t - 1, P in
             * pa) is to come; else rows 0 */
            Out prev;
            prev.m0 = 0;
            prev.rows = 0;
            if (i == 1) prev = out_of(p, 0, wl, wr);
            if (n_begin >= f_lo && n_begin < f_hi)
                step<false, true>(p, c, s, o, pa, n_begin, t, sbase, q_addr, qa, !out_one_tile(prev), prev, row0);
            else
                step<true, true>(p, c, s, o, pa, n_begin, t, sbase, q_addr, qa, !out_one_tile(prev), prev, row0);
            const uint32_t t0 = t - (uint32_t)n_begin; /* ring position of tile n: t0 + n */
            int n = n_begin + 1;
            /* the P V in the step of tile n is that of tile n - 1: the
             * m-block's first when n = n_begin + 1 */
#pragma unroll 1
            for (; n < f_lo; ++n)
                step<true, false>(p, c, s, o, pa, n, t0 + n, sbase, q_addr, qa, n > n_begin + 1, prev, row0);
#pragma unroll 1
            for (; n < f_hi; ++n)
                step<false, false>(p, c, s, o, pa, n, t0 + n, sbase, q_addr, qa, n > n_begin + 1, prev, row0);
#pragma unroll 1
            for (; n < n_end; ++n)
                step<true, false>(p, c, s, o, pa, n, t0 + n, sbase, q_addr, qa, n > n_begin + 1, prev, row0);
            t += (uint32_t)(n_end - n_begin);
        }
        /* the last m-block with a key tile: the second, else the first */
        Out prev = out_of(p, 1, wl, wr);
        if (prev.rows == 0) prev = out_of(p, 0, wl, wr);
        last_pv(p, o, pa, t - 1, sbase, !out_one_tile(prev), prev, row0, tq);
    }
}
