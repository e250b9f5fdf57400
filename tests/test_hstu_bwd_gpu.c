/* test_hstu_bwd_gpu.c -- HSTU backward (kiln_hstu_bwd) on the GPU against
 * the double-precision CPU reference in ref_hstu_bwd.c; argument checking
 * and kiln_hstu_bwd_workspace_size (run without a GPU); CPU tests of the
 * reference itself (finite differences of the forward reference, for every
 * mask family, prove it is the forward's derivative).
 *
 * Without a usable GPU every GPU test prints "skipped: <why> (GPU tests run
 * on the device)" and calls cmocka's skip().
 *
 * Each GPU case: the gradients dq, dk, dv (and drab) and the workspace are
 * filled with 0xFF bytes (NaN) first; the workspace is allocated with
 * kiln_hstu_bwd_workspace_size() bytes plus a guard tail that must stay
 * poisoned.  After the launch every gradient is compared with the reference
 * and every element outside the valid rows (rows of invalid or empty
 * sequences, trailing rows, head/row padding, drab outside [0, len_k)^2 of
 * a valid sequence, a guard tail after every buffer) must still hold the
 * poison.  Deterministic cases run twice (the second time with the
 * workspace poisoned with another byte) and must be bit-identical.
 *
 * Tolerance.  For each gradient tensor T and each valid sequence b:
 *     max |T - ref| over b  <=  tol * scale_b
 *     scale_b = max(max |ref| over b, SCALE_FLOOR * max |ref| of T)
 * with tol = 3e-2 for bf16 and 6e-3 for fp16.  This is the brief's
 * "max|got-ref| <= tol * max|ref| per tensor", made per sequence so that a
 * wrong mask in a short sequence cannot hide behind a long one (the floor
 * keeps sequences whose gradient is ~0 from demanding exactness).  Why
 * these numbers: the inputs are exact 16-bit values, so a correct kernel's
 * error comes from the 16-bit operands of its GEMMs -- p = silu(s)/scaling
 * rounded for dv = p^T do, ds rounded for dq = ds k and dk = ds^T q --
 * (each at most half an ulp relative, bf16 2^-8, fp16 2^-11, adding up like a
 * random walk over the keys) and from rounding the outputs (another half
 * ulp); fp32 atomics add ~1e-7.  The forward rounds once per GEMM; the
 * backward has a rounded operand in every GEMM and ds amplifies through
 * silu', so it gets 1.5x the forward's tolerances (2e-2 / 4e-3).  The dry
 * run (test_sweep_dry_run, on the CPU) measures a kernel stand-in that
 * rounds exactly those operands and the outputs on every sweep case: at
 * most 0.19x the tolerance, while the reference with the diagonal dropped
 * lands at least 4.3x outside it (seed 20261124), a ~5x margin on each
 * side.  The negative controls (a
 * reference with the diagonal dropped, the last key dropped, target groups
 * one larger, silu' without its x term, ds without alpha, dv without
 * 1/scaling, dk built from do, drab not summed over heads; one corrupted,
 * one unwritten, one stray element) prove the tolerance fails wrong
 * answers, and every sweep case reports how far the dropped-diagonal
 * reference lands outside it.
 *
 * Environment:
 *   KILN_TEST_SEED        seed of the random sweep (default 20261124)
 *   KILN_TEST_REPS        random cases per (mask family, dtype, head_dim) cell
 *                         (default 2: 6 x 2 x 4 x 2 = 96, plus the edge cases)
 *   KILN_TEST_FILTER      run only sweep cases whose description has this text
 *   KILN_TEST_NO_PREWARM  1: skip compiling the sweep's kernels in parallel
 *                         before the first launch
 *   KILN_TEST_THREADS     CPU threads for prewarming and references
 *                         (default: all cores, at most 32)
 *   KILN_TEST_NO_GPU      1: behave as if there were no GPU
 *   KILN_TEST_DRY_SWEEP   1/0: run / skip the sweep against the rounded
 *                         reference on the CPU (default: only without a GPU)
 *   KILN_BWD_IMPL=wgmma   the engine runs the Hopper kernel (hstu_bwd_sm90.cu)
 *                         wherever it serves a call; the sweep then drops
 *                         rab, drab and the deterministic mode from its cases
 *                         (the Hopper kernel has none of them) so that every
 *                         head dim 64 / 128 case on sm_90a runs on it, and
 *                         fails if none does
 * The engine uses the default cache ($KILN_CACHE_DIR, else ~/.cache/kiln).
 */
#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "kiln.h"
#include "ref_hstu.h"
#include "ref_hstu_bwd.h"
#include "util_case.h"
#include "util_gpu.h"

#define TOL_BF16 3e-2
#define TOL_FP16 6e-3
#define SCALE_FLOOR 1e-2
#define WS_GUARD 256 /* poisoned bytes after the workspace */

static double tol_for(int dtype) { return dtype == KILN_DTYPE_FP16 ? TOL_FP16 : TOL_BF16; }

/* ------------------------------------------------------------------ state */

static int g_gpu_ok;
static char g_why[256];
static kiln_engine *g_engine;   /* default cache; for the GPU tests */
static kiln_engine *g_nolaunch; /* NO_DISK_CACHE | NO_COMPILE: can never launch */
static int g_ctx_lost;
static int g_cases, g_passed, g_failed, g_skipped;
static int g_det_cases, g_det_identical;
static int g_neg_checked, g_neg_missed;
static int g_wgmma;      /* KILN_BWD_IMPL=wgmma */
static int g_wgmma_runs; /* sweep cases the Hopper kernel served */
static double g_neg_weakest = INFINITY, g_worst_ratio;

#define REQUIRE_GPU()                                                          \
    do {                                                                       \
        if (!g_gpu_ok) {                                                       \
            printf("skipped: %s (GPU tests run on the device)\n", g_why);     \
            skip();                                                            \
            return;                                                            \
        }                                                                      \
        assert_non_null(g_engine);                                             \
        if (g_ctx_lost) fail_msg("the CUDA context faulted in an earlier test"); \
    } while (0)

static int cpu_threads(void) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int n = kt_env_int("KILN_TEST_THREADS", (int)(cpus < 1 ? 1 : cpus));
    return n < 1 ? 1 : n > 32 ? 32 : n;
}

/* ------------------------------------------------------------------ cases */

enum tensor { T_DQ, T_DK, T_DV, T_DRAB, T_COUNT };
static const char *const tensor_name[T_COUNT] = {"dq", "dk", "dv", "drab"};

/* ------------------------------------------------------------------ data */

enum { NBUF = 4 };

typedef struct bdata {
    kiln_hstu_bwd_params p;
    kt_hstu_bwd_host h;
    kt_inputs in;   /* q, k, v, rab, offsets */
    uint16_t *bdo;  /* dout */
    size_t ndo;     /* elements */
    /* gradients: buffer tbuf[t] holds tensor t from element tat[t] on
     * (packed: dq, dk, dv interleaved in buffer 0) */
    uint16_t *g[NBUF]; /* host copy of the device buffer */
    size_t gn[NBUF];   /* elements, guard included; 0: unused */
    int tbuf[T_COUNT]; /* -1: tensor absent */
    size_t tat[T_COUNT];
    double *ref[NBUF];  /* exact reference; NaN where nothing is written */
    double *mref[NBUF]; /* reference with the diagonal dropped, or NULL */
    double *eref[NBUF]; /* reference with rounded GEMM operands, or NULL */
    uint64_t ws_bytes;
    /* device */
    uint64_t dqkv[3], drab_in, ddo, doffq, doffk, dctx, dtgt, dg[NBUF], dws, dfunc;
} bdata;

enum { REF_EXACT = 1, REF_NEG = 2, REF_EMUL = 4 };

static double *alloc_nan(size_t n) {
    double *p = kt_xmalloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++) p[i] = NAN;
    return p;
}

/* The reference's output pointers for a set of buffers (NaN-filled). */
static kt_hstu_bwd_out out_views(const bdata *d, double *const *bufs) {
    kt_hstu_bwd_out o = {NULL, NULL, NULL, NULL};
    double **slot[T_COUNT] = {&o.dq, &o.dk, &o.dv, &o.drab};
    for (int t = 0; t < T_COUNT; t++)
        if (d->tbuf[t] >= 0) *slot[t] = bufs[d->tbuf[t]] + d->tat[t];
    return o;
}

/* One NaN-filled double buffer per gradient buffer of d (NULL where unused). */
static void alloc_refs(const bdata *d, double **bufs) {
    for (int i = 0; i < NBUF; i++) bufs[i] = d->gn[i] ? alloc_nan(d->gn[i]) : NULL;
}

static void ref_into(const bdata *d, double **bufs, int mutation, int flags) {
    alloc_refs(d, bufs);
    kt_hstu_bwd_out o = out_views(d, bufs);
    kt_ref_hstu_bwd_ex(&d->p, &d->h, &o, mutation, flags);
}

/* Build case c: params, host tensors and the references asked for (refs:
 * REF_* bits).  custom_off, if not NULL, replaces both offset arrays (B+1
 * entries) after the buffers are sized from the lengths.  params_only: no
 * buffers, fake aligned device pointers (for computing keys). */
static void build_case(const kt_case *c, const int64_t *custom_off, int params_only, int refs,
                       bdata *d) {
    memset(d, 0, sizeof *d);
    kt_rng r;
    kt_rng_seed(&r, c->seed);
    const int B = c->B, H = c->H, D = c->D, dt = c->dtype;
    kt_shape s;
    kt_case_shape(c, custom_off, &d->in, &s);
    const int64_t total_q = s.total_q, total_k = s.total_k;
    const int64_t tq1 = total_q > 0 ? total_q : 1, tk1 = total_k > 0 ? total_k : 1;

    /* dout and gradients: strides per layout (the inputs' are shared with
     * the forward, in s) */
    int64_t ors, ohs, grs[3], ghs[3];
    switch (c->layout) {
    case KT_L_PACKED:
        ors = (int64_t)H * D;
        ohs = D;
        for (int t = 0; t < 3; t++) {
            grs[t] = 3 * (int64_t)H * D;
            ghs[t] = D;
        }
        break;
    case KT_L_PADDED:
        ohs = D + 24;
        ors = (int64_t)H * (D + 24) + 16;
        for (int t = 0; t < 3; t++) {
            ghs[t] = D + 16;
            grs[t] = (int64_t)H * (D + 16) + 8 * t; /* dq, dk, dv: different padding */
        }
        break;
    case KT_L_HEADMAJOR:
        ors = D;
        ohs = tq1 * D;
        for (int t = 0; t < 3; t++) {
            grs[t] = D;
            ghs[t] = (t == T_DQ ? tq1 : tk1) * D;
        }
        break;
    default:
        ors = (int64_t)H * D;
        ohs = D;
        for (int t = 0; t < 3; t++) {
            grs[t] = (int64_t)H * D;
            ghs[t] = D;
        }
        break;
    }

    kiln_hstu_bwd_params *bp = &d->p;
    kiln_hstu_bwd_params_init(bp);
    kiln_hstu_fwd_params *p = &bp->fwd;
    kt_case_fwd_params(c, &s, p);
    /* fwd.out is not read by the backward (0 below); its strides say where
     * the forward reference of the finite-difference test writes */
    p->out_row_stride = (int64_t)H * D;
    p->out_head_stride = D;
    const int msk1 = s.msk > 0 ? s.msk : 1;
    bp->dout_row_stride = ors;
    bp->dout_head_stride = ohs;
    bp->dq_row_stride = grs[T_DQ];
    bp->dq_head_stride = ghs[T_DQ];
    bp->dk_row_stride = grs[T_DK];
    bp->dk_head_stride = ghs[T_DK];
    bp->dv_row_stride = grs[T_DV];
    bp->dv_head_stride = ghs[T_DV];
    const int has_drab = c->drab && c->rab_heads > 0;
    if (has_drab) {
        if (c->drab_own) { /* wider rows, a gap between batches */
            bp->drab_row_stride = (msk1 + 7) / 8 * 8 + 8;
            bp->drab_head_stride = (int64_t)msk1 * bp->drab_row_stride;
            bp->drab_batch_stride = c->rab_heads * bp->drab_head_stride + 8;
        } else {
            bp->drab_row_stride = p->rab_row_stride;
            bp->drab_head_stride = p->rab_head_stride;
            bp->drab_batch_stride = p->rab_batch_stride;
        }
    }
    bp->deterministic = c->det;

    /* where each gradient lives */
    for (int t = 0; t < T_COUNT; t++) d->tbuf[t] = -1;
    if (c->layout == KT_L_PACKED) {
        d->gn[0] = (size_t)total_q * 3 * H * D + KT_GUARD;
        for (int t = 0; t < 3; t++) {
            d->tbuf[t] = 0;
            d->tat[t] = (size_t)t * H * D;
        }
    } else {
        for (int t = 0; t < 3; t++) {
            d->tbuf[t] = t;
            d->gn[t] = kt_span(t == T_DQ ? total_q : total_k, grs[t], ghs[t], H, D) + KT_GUARD;
        }
    }
    if (has_drab) {
        d->tbuf[T_DRAB] = 3;
        d->gn[3] = (size_t)B * (size_t)bp->drab_batch_stride + KT_GUARD;
    }

    if (params_only) {
        const uint64_t base = 0x7f0000000000ull; /* fake, aligned, never dereferenced */
        kt_fake_input_ptrs(c, &s, p);
        bp->dout = base + 0xa00000;
        bp->dq = base + 0xb00000;
        bp->dk = base + 0xc00000;
        bp->dv = base + 0xd00000;
        bp->drab = has_drab ? base + 0xe00000 : 0;
        bp->workspace = base + 0xf00000;
        return;
    }

    /* the inputs, then dout and rab in this order: the RNG stream decides
     * the data, so the order is part of the case */
    kt_fill_qkv(c, &s, &r, &d->in);
    d->ndo = kt_span(total_q, ors, ohs, H, D) + KT_GUARD;
    d->bdo = kt_alloc_poison(d->ndo);
    kt_fill_rows(&r, dt, d->bdo, total_q, ors, ohs, H, D, 1.0, c->grid_values);
    kt_fill_rab(c, p, &r, &d->in);
    kt_fill_func(c, &s, &d->in);
    for (int i = 0; i < NBUF; i++)
        if (d->gn[i]) d->g[i] = kt_alloc_poison(d->gn[i]);

    kt_host_view(c, &s, &d->in, &d->h.f);
    d->h.dout = d->bdo;

    if (refs & REF_EXACT) ref_into(d, d->ref, KT_REF_EXACT, 0);
    if (refs & REF_NEG) ref_into(d, d->mref, KT_REF_DROP_DIAG, 0);
    if (refs & REF_EMUL) ref_into(d, d->eref, KT_REF_EXACT, KT_BWD_ROUND_OPERANDS);
}

static void free_device(bdata *d) {
    for (int i = 0; i < 3; i++) kt_gpu_free(d->dqkv[i]);
    uint64_t *ptrs[] = {&d->drab_in, &d->ddo,  &d->doffq, &d->doffk,
                        &d->dctx,    &d->dtgt, &d->dws,   &d->dfunc};
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++) kt_gpu_free(*ptrs[i]);
    for (int i = 0; i < NBUF; i++) kt_gpu_free(d->dg[i]);
    memset(d->dqkv, 0, sizeof d->dqkv);
    memset(d->dg, 0, sizeof d->dg);
    d->drab_in = d->ddo = d->doffq = d->doffk = d->dctx = d->dtgt = d->dws = d->dfunc = 0;
}

static void free_refs(double **bufs) {
    for (int i = 0; i < NBUF; i++) {
        free(bufs[i]);
        bufs[i] = NULL;
    }
}

static void free_case(bdata *d) {
    free_device(d);
    kt_inputs_free(&d->in);
    free(d->bdo);
    for (int i = 0; i < NBUF; i++) free(d->g[i]);
    free_refs(d->ref);
    free_refs(d->mref);
    free_refs(d->eref);
    memset(d, 0, sizeof *d);
}

/* ------------------------------------------------------------------ elements */

static int rab_heads_of(const bdata *d) {
    return d->p.fwd.rab_heads > 0 ? d->p.fwd.rab_heads : 1;
}

/* Elements of tensor t that valid sequence s (number b) owns. */
static int64_t seq_count(const bdata *d, int t, const kt_hstu_seq *s) {
    const int64_t HD = (int64_t)d->p.fwd.num_heads * d->p.fwd.head_dim;
    switch (t) {
    case T_DQ: return s->len_q * HD;
    case T_DK:
    case T_DV: return s->len_k * HD;
    default: return (int64_t)rab_heads_of(d) * s->len_k * s->len_k;
    }
}

/* The n-th of them: its index in the gradient buffer (grad = 1, from tat[t])
 * or in the matching input tensor (grad = 0: q, k, v or rab, from the
 * tensor's first element). */
static int64_t seq_index(const bdata *d, int t, int b, const kt_hstu_seq *s, int64_t n,
                         int grad) {
    const kiln_hstu_bwd_params *bp = &d->p;
    const kiln_hstu_fwd_params *p = &bp->fwd;
    if (t == T_DRAB) {
        const int64_t L = s->len_k, col = n % L, row = (n / L) % L, hr = n / L / L;
        if (grad)
            return (int64_t)d->tat[t] + b * bp->drab_batch_stride + hr * bp->drab_head_stride +
                   row * bp->drab_row_stride + col;
        return b * p->rab_batch_stride + hr * p->rab_head_stride + row * p->rab_row_stride + col;
    }
    const int64_t D = p->head_dim, H = p->num_heads;
    const int64_t dd = n % D, hh = (n / D) % H, r = n / D / H;
    const int64_t row = (t == T_DQ ? s->q_start : s->k_start) + r;
    int64_t rs, hs;
    if (grad) {
        rs = t == T_DQ ? bp->dq_row_stride : t == T_DK ? bp->dk_row_stride : bp->dv_row_stride;
        hs = t == T_DQ ? bp->dq_head_stride : t == T_DK ? bp->dk_head_stride : bp->dv_head_stride;
        return (int64_t)d->tat[t] + row * rs + hh * hs + dd;
    }
    rs = t == T_DQ ? p->q_row_stride : t == T_DK ? p->k_row_stride : p->v_row_stride;
    hs = t == T_DQ ? p->q_head_stride : t == T_DK ? p->k_head_stride : p->v_head_stride;
    return row * rs + hh * hs + dd;
}

/* The input tensor that tensor t is the gradient of (host copy). */
static uint16_t *input_of(bdata *d, int t) {
    switch (t) {
    case T_DQ: return d->in.bq + d->in.q_at;
    case T_DK: return d->in.bk + d->in.k_at;
    case T_DV: return d->in.bv + d->in.v_at;
    default: return d->in.brab;
    }
}

/* ------------------------------------------------------------------ compare */

typedef struct tcmp {
    double ratio;     /* max over sequences of max|got-ref| / scale_b */
    double max_ref;   /* max |ref| over the tensor */
    int64_t compared; /* finite elements compared */
    int64_t nonfinite;
    char where[200];
} tcmp;

typedef struct gcmp {
    tcmp t[T_COUNT];
    double ratio;     /* max over the tensors */
    int worst;        /* the tensor with that ratio, or -1 */
    int64_t compared, nonfinite;
    int64_t touched;  /* elements changed that must stay poisoned */
    char where[300];
} gcmp;

/* Compare the gradients got (one array per buffer, 16-bit bits) with ref
 * (double; NaN where nothing is written) as described at the top. */
static void compare_grads(const bdata *d, uint16_t *const *got, double *const *ref, gcmp *r) {
    memset(r, 0, sizeof *r);
    r->worst = -1;
    const kiln_hstu_fwd_params *p = &d->p.fwd;
    const int dt = p->dtype;
    unsigned char *mark[NBUF];
    for (int i = 0; i < NBUF; i++) {
        mark[i] = d->gn[i] ? kt_xmalloc(d->gn[i]) : NULL;
        if (mark[i]) memset(mark[i], 0, d->gn[i]);
    }
    kt_hstu_seq seqs[KT_MAXB];
    int valid[KT_MAXB] = {0};
    const int B = p->batch < KT_MAXB ? p->batch : KT_MAXB;
    for (int b = 0; b < B; b++) valid[b] = kt_ref_hstu_seq(p, &d->h.f, b, &seqs[b]);

    for (int t = 0; t < T_COUNT; t++) {
        const int bi = d->tbuf[t];
        if (bi < 0) continue;
        tcmp *tc = &r->t[t];
        double seq_max[KT_MAXB] = {0}, seq_err[KT_MAXB] = {0};
        int64_t seq_worst[KT_MAXB] = {0};
        for (int b = 0; b < B; b++) {
            if (!valid[b]) continue;
            const int64_t cnt = seq_count(d, t, &seqs[b]);
            for (int64_t n = 0; n < cnt; n++) {
                const int64_t idx = seq_index(d, t, b, &seqs[b], n, 1);
                mark[bi][idx] = 1;
                const double e = ref[bi][idx];
                const double o = (double)kt_half_to_f32(dt, got[bi][idx]);
                if (fabs(e) > seq_max[b]) seq_max[b] = fabs(e);
                if (!isfinite(o) || !isfinite(e)) {
                    if (!tc->nonfinite++)
                        snprintf(tc->where, sizeof tc->where,
                                 "seq %d element %lld of %s not written (bits 0x%04x, ref %g)", b,
                                 (long long)n, tensor_name[t], got[bi][idx], e);
                    continue;
                }
                tc->compared++;
                if (fabs(o - e) > seq_err[b]) {
                    seq_err[b] = fabs(o - e);
                    seq_worst[b] = idx;
                }
            }
            if (seq_max[b] > tc->max_ref) tc->max_ref = seq_max[b];
        }
        int worst_b = -1;
        for (int b = 0; b < B; b++) {
            if (!valid[b]) continue;
            const double scale = fmax(fmax(seq_max[b], SCALE_FLOOR * tc->max_ref), 1e-30);
            const double ratio = seq_err[b] / scale;
            if (ratio > tc->ratio) {
                tc->ratio = ratio;
                worst_b = b;
            }
        }
        if (worst_b >= 0 && !tc->nonfinite) {
            const int64_t idx = seq_worst[worst_b];
            snprintf(tc->where, sizeof tc->where,
                     "%s seq %d buffer element %lld: got %.6g ref %.6g (seq max|ref| %.3g)",
                     tensor_name[t], worst_b, (long long)idx,
                     (double)kt_half_to_f32(dt, got[bi][idx]), ref[bi][idx], seq_max[worst_b]);
        }
        r->compared += tc->compared;
        r->nonfinite += tc->nonfinite;
        if (r->worst < 0 || tc->ratio > r->ratio) {
            r->ratio = tc->ratio;
            r->worst = t;
        }
        if (tc->nonfinite && !r->where[0]) snprintf(r->where, sizeof r->where, "%s", tc->where);
    }
    for (int i = 0; i < NBUF; i++) {
        if (!d->gn[i]) continue;
        for (size_t k = 0; k < d->gn[i]; k++)
            if (!mark[i][k] && got[i][k] != 0xffffu && !r->touched++)
                snprintf(r->where, sizeof r->where,
                         "gradient buffer %d element %zu written (0x%04x) but belongs to no "
                         "valid row",
                         i, k, got[i][k]);
        free(mark[i]);
    }
    if (!r->where[0] && r->worst >= 0) snprintf(r->where, sizeof r->where, "%s", r->t[r->worst].where);
}

static int cmp_ok(const gcmp *r, int dtype) {
    return r->nonfinite == 0 && r->touched == 0 && r->ratio <= tol_for(dtype);
}

static void ratios_text(const bdata *d, const gcmp *r, char *buf, size_t n) {
    size_t o = 0;
    buf[0] = 0;
    for (int t = 0; t < T_COUNT && o < n; t++)
        if (d->tbuf[t] >= 0)
            o += (size_t)snprintf(buf + o, n - o, "%s%s %.1e", o ? " " : "", tensor_name[t],
                                  r->t[t].ratio);
}

/* The CPU's kernel stand-in: d->g = the reference with rounded GEMM
 * operands (d->eref), rounded to the output type -- what a correct kernel
 * would write, so the dry run and the negative controls can be checked
 * without a GPU. */
static void stand_in(bdata *d) {
    const int dt = d->p.fwd.dtype;
    for (int b = 0; b < NBUF; b++)
        for (size_t k = 0; k < d->gn[b]; k++)
            if (!isnan(d->eref[b][k])) d->g[b][k] = kt_f32_to_half(dt, (float)d->eref[b][k]);
}

/* ------------------------------------------------------------------ running */

enum { R_PASS, R_FAIL, R_SKIP };

/* Copy the inputs to the device, allocate the gradients and the workspace
 * (kiln_hstu_bwd_workspace_size() bytes plus a guard), point the params at
 * them.  R_PASS, R_SKIP (KILN_EUNSUPPORTED) or R_FAIL with msg. */
static int upload_case(bdata *d, char *msg, size_t n) {
    kiln_hstu_bwd_params *bp = &d->p;
    kiln_hstu_fwd_params *p = &bp->fwd;
    const int B = p->batch, i64 = p->offsets_type == KILN_INDEX_INT64;
    const size_t osz = (size_t)(B + 1) * (i64 ? 8 : 4);
    int fail = 0;
    d->dqkv[0] = kt_gpu_alloc_copy(d->in.bq, d->in.nq * 2);
    fail |= !d->dqkv[0];
    if (d->in.bk != d->in.bq) {
        d->dqkv[1] = kt_gpu_alloc_copy(d->in.bk, d->in.nk * 2);
        d->dqkv[2] = kt_gpu_alloc_copy(d->in.bv, d->in.nv * 2);
        fail |= !d->dqkv[1] || !d->dqkv[2];
    }
    d->ddo = kt_gpu_alloc_copy(d->bdo, d->ndo * 2);
    d->doffq = kt_gpu_alloc_copy(d->h.f.seq_offsets_q, osz);
    fail |= !d->ddo || !d->doffq;
    if (d->h.f.seq_offsets_k) fail |= !(d->doffk = kt_gpu_alloc_copy(d->h.f.seq_offsets_k, osz));
    if (d->h.f.num_contexts) fail |= !(d->dctx = kt_gpu_alloc_copy(d->in.ctx, sizeof d->in.ctx));
    if (d->h.f.num_targets) fail |= !(d->dtgt = kt_gpu_alloc_copy(d->in.tgt, sizeof d->in.tgt));
    if (d->in.brab) fail |= !(d->drab_in = kt_gpu_alloc_copy(d->in.brab, d->in.nrab * 2));
    if (d->in.func) fail |= !(d->dfunc = kt_gpu_alloc_copy(d->in.func, d->in.nfunc * 4));
    for (int i = 0; i < NBUF; i++)
        if (d->gn[i]) fail |= !(d->dg[i] = kt_gpu_alloc(d->gn[i] * 2));
    if (fail) {
        snprintf(msg, n, "device setup: %s", kt_gpu_error());
        return R_FAIL;
    }
    if (d->in.bk == d->in.bq) {
        p->q = d->dqkv[0] + d->in.q_at * 2;
        p->k = d->dqkv[0] + d->in.k_at * 2;
        p->v = d->dqkv[0] + d->in.v_at * 2;
    } else {
        p->q = d->dqkv[0];
        p->k = d->dqkv[1];
        p->v = d->dqkv[2];
    }
    p->out = 0; /* not read by the backward */
    p->seq_offsets_q = d->doffq;
    p->seq_offsets_k = d->doffk;
    p->num_contexts = d->dctx;
    p->num_targets = d->dtgt;
    p->rab = d->drab_in;
    p->func = d->dfunc;
    bp->dout = d->ddo;
    bp->dq = d->dg[d->tbuf[T_DQ]] + d->tat[T_DQ] * 2;
    bp->dk = d->dg[d->tbuf[T_DK]] + d->tat[T_DK] * 2;
    bp->dv = d->dg[d->tbuf[T_DV]] + d->tat[T_DV] * 2;
    bp->drab = d->tbuf[T_DRAB] >= 0 ? d->dg[d->tbuf[T_DRAB]] : 0;
    uint64_t ws = 0;
    kiln_status st = kiln_hstu_bwd_workspace_size(bp, &ws);
    if (st != KILN_OK) {
        snprintf(msg, n, "kiln_hstu_bwd_workspace_size: %s: %.400s", kiln_status_name(st),
                 kiln_last_error());
        return st == KILN_EUNSUPPORTED ? R_SKIP : R_FAIL;
    }
    d->ws_bytes = ws;
    d->dws = kt_gpu_alloc((size_t)ws + WS_GUARD);
    if (!d->dws) {
        snprintf(msg, n, "workspace of %llu bytes: %s", (unsigned long long)ws, kt_gpu_error());
        return R_FAIL;
    }
    bp->workspace = d->dws;
    bp->workspace_bytes = ws;
    return R_PASS;
}

/* Poison the gradients (0xFF) and the workspace (ws_poison, guard included),
 * launch on engine e, synchronize, download the gradients into dst[] and
 * check the workspace guard.  R_PASS, R_SKIP or R_FAIL with msg. */
static int run_once(kiln_engine *e, bdata *d, unsigned char ws_poison, uint16_t **dst, char *msg,
                    size_t n) {
    for (int i = 0; i < NBUF; i++)
        if (d->gn[i] && kt_gpu_memset8(d->dg[i], 0xff, d->gn[i] * 2) != 0) {
            snprintf(msg, n, "poison: %s", kt_gpu_error());
            return R_FAIL;
        }
    if (kt_gpu_memset8(d->dws, ws_poison, (size_t)d->ws_bytes + WS_GUARD) != 0) {
        snprintf(msg, n, "poison workspace: %s", kt_gpu_error());
        return R_FAIL;
    }
    kiln_status st = kiln_hstu_bwd(e, &d->p, NULL);
    if (st == KILN_EUNSUPPORTED) {
        snprintf(msg, n, "unsupported: %.400s", kiln_last_error());
        return R_SKIP;
    }
    if (st != KILN_OK) {
        snprintf(msg, n, "kiln_hstu_bwd: %s: %.450s", kiln_status_name(st), kiln_last_error());
        return R_FAIL;
    }
    if (kt_gpu_sync() != 0) {
        g_ctx_lost = 1;
        snprintf(msg, n, "after the launch: %s", kt_gpu_error());
        return R_FAIL;
    }
    for (int i = 0; i < NBUF; i++)
        if (d->gn[i] && kt_gpu_download(dst[i], d->dg[i], d->gn[i] * 2) != 0) {
            snprintf(msg, n, "download: %s", kt_gpu_error());
            return R_FAIL;
        }
    unsigned char guard[WS_GUARD];
    if (kt_gpu_download(guard, d->dws + d->ws_bytes, WS_GUARD) != 0) {
        snprintf(msg, n, "download: %s", kt_gpu_error());
        return R_FAIL;
    }
    for (int i = 0; i < WS_GUARD; i++)
        if (guard[i] != ws_poison) {
            snprintf(msg, n, "wrote past the workspace: byte %llu + %d (workspace_bytes %llu)",
                     (unsigned long long)d->ws_bytes, i, (unsigned long long)d->ws_bytes);
            return R_FAIL;
        }
    return R_PASS;
}

typedef struct result {
    int status;
    gcmp cmp;
    double neg_ratio; /* ratio against the dropped-diagonal reference (-1: not run) */
    int det_checked, det_diff; /* deterministic: second run compared, elements differing */
    char msg[700];
} result;

/* Run prepared case d (host data and references built) on engine e. */
static void run_built(kiln_engine *e, bdata *d, result *res) {
    memset(res, 0, sizeof *res);
    res->neg_ratio = -1;
    if (g_ctx_lost) {
        res->status = R_FAIL;
        snprintf(res->msg, sizeof res->msg, "not run: the CUDA context faulted earlier");
        return;
    }
    res->status = upload_case(d, res->msg, sizeof res->msg);
    if (res->status == R_PASS) res->status = run_once(e, d, 0xff, d->g, res->msg, sizeof res->msg);
    if (res->status != R_PASS) return;
    if (d->p.deterministic) {
        uint16_t *second[NBUF] = {NULL};
        for (int i = 0; i < NBUF; i++)
            if (d->gn[i]) second[i] = kt_xmalloc(d->gn[i] * 2);
        int st = run_once(e, d, 0x5a, second, res->msg, sizeof res->msg);
        if (st == R_PASS) {
            res->det_checked = 1;
            for (int i = 0; i < NBUF; i++)
                for (size_t k = 0; k < d->gn[i]; k++)
                    if (second[i][k] != d->g[i][k] && !res->det_diff++)
                        snprintf(res->msg, sizeof res->msg,
                                 "deterministic runs differ: buffer %d element %zu 0x%04x vs "
                                 "0x%04x",
                                 i, k, d->g[i][k], second[i][k]);
        }
        for (int i = 0; i < NBUF; i++) free(second[i]);
        if (st != R_PASS) {
            res->status = st;
            return;
        }
    }
    compare_grads(d, d->g, d->ref, &res->cmp);
    if (!cmp_ok(&res->cmp, d->p.fwd.dtype)) {
        res->status = R_FAIL;
        snprintf(res->msg, sizeof res->msg, "%lld not written, %lld written outside, %s",
                 (long long)res->cmp.nonfinite, (long long)res->cmp.touched, res->cmp.where);
    } else if (res->det_diff) {
        res->status = R_FAIL; /* msg says where */
    }
    if (d->mref[0] || d->mref[3]) {
        if (res->cmp.compared > 0) {
            gcmp m;
            compare_grads(d, d->g, d->mref, &m);
            res->neg_ratio = m.ratio;
        }
    }
}

/* ------------------------------------------------------------------ keys */

/* Whether the Hopper backward serves bp, whose forward key is fk (the rule
 * of kiln__hstu_bwd_sm90_serves, restated so that a change there shows up
 * here as a case that no longer runs on it). */
static int wgmma_serves(const kiln_hstu_bwd_params *bp, const char *fk) {
    const int d = bp->fwd.head_dim;
    return strstr(fk, "/sm_90a/") && (d == 64 || d == 128) && !bp->fwd.rab && !bp->drab &&
           !bp->deterministic && !bp->fwd.func;
}

/* The key kiln_hstu_bwd compiles for bp on arch (NULL: the device): the
 * forward's key (same mask and rab rules) with the family hstu_bwd, the
 * forward's tile fields and persist dropped (the backward has its own) and
 * drab / det added, canonicalized.  0, or -1 with the reason in buf. */
static int bwd_key(const kiln_hstu_bwd_params *bp, const char *arch, char *buf, size_t n) {
    kiln_hstu_fwd_params f = bp->fwd;
    if (!f.out) f.out = 0x7f0000400000ull; /* the forward key wants one; never read */
    char fk[KT_KEYLEN], text[KT_KEYLEN];
    kiln_status st = kiln_hstu_fwd_key(&f, arch, fk, sizeof fk);
    if (st != KILN_OK || strncmp(fk, "hstu_fwd/", 9) != 0) {
        snprintf(buf, n, "no forward key: %s", kiln_last_error());
        return -1;
    }
    size_t o = (size_t)snprintf(text, sizeof text, "hstu_bwd");
    char *save = NULL;
    for (char *seg = strtok_r(fk + 9, "/", &save); seg; seg = strtok_r(NULL, "/", &save)) {
        /* the forward's tiles, and its grid choice (persist) */
        int tile = (seg[0] == 'b' && (seg[1] == 'm' || seg[1] == 'n') && isdigit((unsigned char)seg[2])) ||
                   (seg[0] == 'w' && isdigit((unsigned char)seg[1])) || strcmp(seg, "persist") == 0;
        if (!tile && o < sizeof text) o += (size_t)snprintf(text + o, sizeof text - o, "/%s", seg);
    }
    if (bp->drab && o < sizeof text) o += (size_t)snprintf(text + o, sizeof text - o, "/drab");
    if (bp->deterministic && o < sizeof text) o += (size_t)snprintf(text + o, sizeof text - o, "/det");
    if (g_wgmma && wgmma_serves(bp, fk) && o < sizeof text)
        snprintf(text + o, sizeof text - o, "/wgmma");
    st = kiln_key_canonical(text, NULL, buf, n);
    if (st != KILN_OK) {
        char why[300];
        snprintf(why, sizeof why, "%s", kiln_last_error());
        snprintf(buf, n, "%.100s: %.140s", text, why);
        return -1;
    }
    return 0;
}

/* Fill every case's key (arch NULL: the device's) and return the distinct
 * ones (caller frees). */
static char (*collect_keys(kt_case *cases, int n, const char *arch, int *nkeys))[KT_KEYLEN] {
    char (*keys)[KT_KEYLEN] = kt_xmalloc((size_t)(n ? n : 1) * KT_KEYLEN);
    int nk = 0;
    for (int i = 0; i < n; i++) {
        bdata d;
        build_case(&cases[i], NULL, 1, 0, &d);
        char why[KT_KEYLEN];
        if (bwd_key(&d.p, arch, why, sizeof why) != 0) {
            cases[i].key[0] = 0;
            char desc[400];
            kt_describe(&cases[i], 1, desc, sizeof desc);
            printf("  no key for %s: %s\n", desc, why);
            continue;
        }
        snprintf(cases[i].key, KT_KEYLEN, "%s", why);
        kt_key_add(keys, &nk, cases[i].key);
    }
    *nkeys = nk;
    return keys;
}

/* Compile every distinct key of the sweep on all cores before the first
 * launch, so the launches hit the cache.  Failures are only reported here;
 * the launch reports them again as the case's failure. */
static void prewarm_keys(kt_case *cases, int n) {
    int nk = 0;
    char (*keys)[KT_KEYLEN] = collect_keys(cases, n, NULL, &nk);
    if (kt_env_int("KILN_TEST_NO_PREWARM", 0) || nk == 0) {
        free(keys);
        return;
    }
    int nt = cpu_threads();
    if (nt > nk) nt = nk;
    double t0 = kt_now_ms();
    int used, failed = kt_prewarm_keys(g_engine, keys, nk, nt, &used);
    printf("prewarm: %d distinct hstu_bwd kernels in %.1f s on %d threads, %d failed\n", nk,
           (kt_now_ms() - t0) / 1e3, used, failed);
    fflush(stdout);
    free(keys);
}

/* ------------------------------------------------------------------ sweep */

/* One random case of cell (family f, dtype, D); idx numbers the case over
 * the whole grid and cycles the features every cell must see: rab off / on
 * with rab_heads = H / on with rab_heads = 1 < H (idx % 3), drab when rab is
 * on ((idx / 3) % 2), delta_q where the mask allows it (idx % 2),
 * deterministic ((idx / 2) % 2), layouts ((idx / 4) % 4). */
static kt_case grid_case(int f, int dtype, int D, int idx, uint64_t seed) {
    kt_rng r;
    kt_case c = kt_grid_case_begin(f, dtype, D, idx, seed, &r);
    switch (idx % 3) {
    case 1: c.rab_heads = c.H; break;
    case 2:
        if (c.H < 2) c.H = 2;
        c.rab_heads = 1;
        break;
    default: break;
    }
    c.drab = c.rab_heads > 0 && (idx / 3) % 2 == 0;
    c.drab_own = c.drab && kt_rng_uniform(&r) < 0.3;
    c.rab_exact = kt_rng_uniform(&r) < 0.5;
    c.det = (idx / 2) % 2;
    c.layout = (idx / 4) % KT_L_COUNT;
    kt_grid_case_finish(&c, f, idx, &r);
    return c;
}

static int edge_cases(kt_case *out) {
    int n = 0;
    kt_case c;
    const int bf = KILN_DTYPE_BF16, fp = KILN_DTYPE_FP16;
#define L(...) ((const int[]){__VA_ARGS__})
    c = kt_base_case("empty-but-one", KT_F_CAUSAL, bf, 64, 2, 5, L(0, 0, 1, 0, 0));
    c.rab_heads = 1;
    c.drab = 1;
    out[n++] = c;
    c = kt_base_case("single-row", KT_F_NONE, fp, 32, 1, 1, L(1));
    c.det = 1;
    out[n++] = c;
    c = kt_base_case("all-empty", KT_F_NONE, bf, 128, 2, 3, L(0, 0, 0));
    c.extra_rows = 3;
    c.rab_heads = 2;
    c.drab = 1;
    out[n++] = c;
    c = kt_base_case("long-causal", KT_F_CAUSAL, bf, 128, 2, 2, L(700, 333));
    c.rab_heads = 1;
    c.drab = 1;
    c.msq_extra = 3; /* rab rows 703 apart: not 16-byte aligned */
    c.rab_exact = 1;
    c.alpha = 0.7f;
    out[n++] = c;
    c = kt_base_case("long-causal-det", KT_F_CAUSAL, fp, 64, 2, 2, L(600, 77));
    c.rab_heads = 2;
    c.drab = 1;
    c.det = 1;
    out[n++] = c;
    c = kt_base_case("long-none", KT_F_NONE, fp, 256, 1, 2, L(300, 5));
    out[n++] = c;
    c = kt_base_case("tile-multiples", KT_F_CAUSAL, fp, 64, 3, 4, L(16, 64, 128, 256));
    c.rab_heads = 3;
    c.drab = 1;
    c.det = 1;
    out[n++] = c;
    c = kt_base_case("clamped-ctx-tgt", KT_F_CTX_TGT, bf, 64, 2, 4, L(10, 40, 7, 0));
    memcpy(c.ctx, L(15, 30, 3, 4), 4 * sizeof(int));
    memcpy(c.tgt, L(5, 20, 9, 2), 4 * sizeof(int));
    c.group = 2;
    c.rab_heads = 1;
    c.drab = 1;
    out[n++] = c;
    c = kt_base_case("all-targets", KT_F_TARGET, fp, 128, 2, 3, L(50, 17, 1));
    memcpy(c.tgt, L(50, 17, 1), 3 * sizeof(int));
    c.group = 7;
    c.det = 1;
    out[n++] = c;
    c = kt_base_case("delta-decode", KT_F_CAUSAL, bf, 128, 4, 3, L(1, 1, 1));
    memcpy(c.len_k, L(1, 77, 200), 3 * sizeof(int));
    c.delta_q = 1;
    c.rab_heads = 4;
    c.drab = 1;
    c.det = 1;
    out[n++] = c;
    c = kt_base_case("delta-local", KT_F_LOCAL, fp, 64, 2, 4, L(64, 17, 0, 0));
    memcpy(c.len_k, L(64, 130, 5, 0), 4 * sizeof(int));
    c.delta_q = 1;
    c.wl = 32;
    c.wr = 0;
    c.rab_heads = 1;
    c.rab_exact = 1; /* rows 130 apart */
    c.drab = 1;
    out[n++] = c;
    /* The Hopper kernel's persistent grid at head dim 128 (no rab, no det):
     * 4 x 8 x 10 = 320 work items, more than one per SM, and most key blocks
     * seen by no query (the window ends long before the queries start), so
     * CTAs take items that visit no query tile between ones that do. */
    c = kt_base_case("delta-local-empty-items", KT_F_LOCAL, bf, 128, 8, 4, L(40, 40, 3, 40));
    memcpy(c.len_k, L(1200, 900, 1200, 700), 4 * sizeof(int));
    c.delta_q = 1;
    c.wl = 32;
    c.wr = 0;
    out[n++] = c;
    c = kt_base_case("delta-none-rab", KT_F_NONE, bf, 256, 2, 3, L(50, 31, 1));
    memcpy(c.len_k, L(100, 31, 2), 3 * sizeof(int));
    c.delta_q = 1;
    c.rab_heads = 2;
    c.drab = 1;
    c.drab_own = 1;
    c.layout = KT_L_HEADMAJOR;
    out[n++] = c;
    c = kt_base_case("trailing-rows", KT_F_NONE, bf, 64, 3, 3, L(17, 0, 63));
    c.extra_rows = 7;
    c.i64 = 1;
    c.det = 1;
    out[n++] = c;
    c = kt_base_case("maxlen-and-scaling", KT_F_CAUSAL, fp, 128, 2, 3, L(20, 45, 9));
    c.msq_extra = 100;
    c.scaling = 37.5f;
    c.rab_heads = 1;
    c.drab = 1;
    out[n++] = c;
    c = kt_base_case("diagonal-only", KT_F_LOCAL, bf, 64, 2, 3, L(1, 2, 65));
    c.wl = 0;
    c.wr = 0;
    c.rab_heads = 2;
    c.drab = 1;
    out[n++] = c;
    c = kt_base_case("sep-k-offsets-packed", KT_F_TARGET, bf, 128, 1, 3, L(30, 70, 12));
    memcpy(c.tgt, L(4, 70, 3), 3 * sizeof(int));
    c.layout = KT_L_PACKED;
    c.sep_k_offsets = 1;
    c.det = 1;
    out[n++] = c;
    c = kt_base_case("packed-rab-drab", KT_F_CAUSAL, fp, 32, 4, 3, L(33, 0, 100));
    c.layout = KT_L_PACKED;
    c.rab_heads = 1;
    c.drab = 1;
    out[n++] = c;
    c = kt_base_case("ctx-tgt-g7", KT_F_CTX_TGT, fp, 256, 2, 3, L(200, 129, 63));
    memcpy(c.ctx, L(20, 5, 0), 3 * sizeof(int));
    memcpy(c.tgt, L(30, 14, 63), 3 * sizeof(int));
    c.group = 7;
    c.i64 = 1;
    c.layout = KT_L_PADDED;
    c.rab_heads = 1;
    c.drab = 1;
    c.det = 1;
    out[n++] = c;
    /* NVIDIA's arbitrary mask */
    c = kt_base_case("func-long", KT_F_FUNC, bf, 128, 2, 4, L(700, 129, 0, 1));
    c.n_func = 5;
    c.rab_heads = 1;
    c.rab_exact = 1; /* rows 700 apart */
    c.drab = 1;
    c.i64 = 1;
    out[n++] = c;
    c = kt_base_case("func-delta-det", KT_F_FUNC, fp, 64, 4, 3, L(1, 50, 0));
    memcpy(c.len_k, L(77, 200, 5), 3 * sizeof(int));
    c.delta_q = 1;
    c.rab_heads = 4;
    c.drab = 1;
    c.drab_own = 1;
    c.det = 1;
    c.func_pad = 0;
    out[n++] = c;
    c = kt_base_case("func-n1-packed", KT_F_FUNC, fp, 32, 3, 3, L(33, 130, 17));
    c.n_func = 1;
    c.layout = KT_L_PACKED;
    c.rab_heads = 1;
    c.drab = 1;
    out[n++] = c;
    c = kt_base_case("func-d256-det", KT_F_FUNC, bf, 256, 2, 2, L(300, 64));
    c.det = 1;
    c.func_pad = 3;
    c.extra_rows = 4;
    out[n++] = c;
    /* sequence 1's V is NaN and has no queries; 0's key tiles run into it */
    out[n++] = kt_nan_next_case("nan-next-v", KT_F_CAUSAL, bf, 128, 2, L(150, 0, 100), L(200, 60, 130));
#undef L
    return n;
}

static kt_case *make_sweep(int *count, int *reps_out, uint64_t *seed_out) {
    kt_case *all = kt_make_sweep(20261124, grid_case, edge_cases, 1, count, reps_out, seed_out);
    if (g_wgmma) /* after drawing: the data of every case stays the same */
        for (int i = 0; i < *count; i++) {
            all[i].rab_heads = 0;
            all[i].drab = all[i].drab_own = 0;
            all[i].det = 0;
        }
    return all;
}

/* What the sweep covers, for the log. */
static void coverage_text(const kt_case *all, int n, char *buf, size_t len) {
    int det = 0, rab_h = 0, rab_1 = 0, drab = 0, dq = 0, packed = 0, i64 = 0, empty = 0;
    for (int i = 0; i < n; i++) {
        const kt_case *c = &all[i];
        det += c->det;
        rab_h += c->rab_heads > 0 && c->rab_heads == c->H;
        rab_1 += c->rab_heads == 1 && c->H > 1;
        drab += c->drab && c->rab_heads > 0;
        dq += c->delta_q;
        packed += c->layout == KT_L_PACKED;
        i64 += c->i64;
        for (int b = 0; b < c->B; b++)
            if (c->len_q[b] == 0) {
                empty++;
                break;
            }
    }
    snprintf(buf, len,
             "%d deterministic, %d atomic; rab with rab_heads = H in %d, rab_heads = 1 < H in "
             "%d, drab in %d; delta_q in %d; qkv-packed in %d; int64 offsets in %d; an empty "
             "sequence in %d",
             det, n - det, rab_h, rab_1, drab, dq, packed, i64, empty);
}

/* Cases are built (inputs and references, the expensive part on the CPU)
 * by worker threads, at most `ahead` cases in front of the consumer, which
 * takes them in order. */
typedef struct pipeline {
    kt_case *cases;
    bdata *data;
    int *ready;
    int n, next, consumed, ahead, refs;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t th[32];
    int nthreads;
} pipeline;

static void *pipeline_worker(void *arg) {
    pipeline *pl = arg;
    for (;;) {
        pthread_mutex_lock(&pl->mu);
        while (pl->next < pl->n && pl->next >= pl->consumed + pl->ahead)
            pthread_cond_wait(&pl->cv, &pl->mu);
        if (pl->next >= pl->n) {
            pthread_mutex_unlock(&pl->mu);
            return NULL;
        }
        int i = pl->next++;
        pthread_mutex_unlock(&pl->mu);
        build_case(&pl->cases[i], NULL, 0, pl->refs, &pl->data[i]);
        pthread_mutex_lock(&pl->mu);
        pl->ready[i] = 1;
        pthread_cond_broadcast(&pl->cv);
        pthread_mutex_unlock(&pl->mu);
    }
}

static void pipeline_start(pipeline *pl, kt_case *cases, int n, int refs) {
    memset(pl, 0, sizeof *pl);
    pl->cases = cases;
    pl->n = n;
    pl->refs = refs;
    pl->data = kt_xmalloc((size_t)(n ? n : 1) * sizeof *pl->data);
    pl->ready = kt_xmalloc((size_t)(n ? n : 1) * sizeof *pl->ready);
    memset(pl->ready, 0, (size_t)(n ? n : 1) * sizeof *pl->ready);
    int nt = cpu_threads();
    pl->ahead = 2 * nt;
    pthread_mutex_init(&pl->mu, NULL);
    pthread_cond_init(&pl->cv, NULL);
    for (int t = 0; t < nt; t++)
        if (pthread_create(&pl->th[pl->nthreads], NULL, pipeline_worker, pl) == 0) pl->nthreads++;
}

/* Case i, built (by a worker, or here if there is none). */
static bdata *pipeline_get(pipeline *pl, int i) {
    if (!pl->nthreads) {
        build_case(&pl->cases[i], NULL, 0, pl->refs, &pl->data[i]);
        return &pl->data[i];
    }
    pthread_mutex_lock(&pl->mu);
    while (!pl->ready[i]) pthread_cond_wait(&pl->cv, &pl->mu);
    pthread_mutex_unlock(&pl->mu);
    return &pl->data[i];
}

static void pipeline_done(pipeline *pl, int i) {
    free_case(&pl->data[i]);
    pthread_mutex_lock(&pl->mu);
    pl->consumed = i + 1;
    pthread_cond_broadcast(&pl->cv);
    pthread_mutex_unlock(&pl->mu);
}

static void pipeline_finish(pipeline *pl) {
    pthread_mutex_lock(&pl->mu);
    pl->consumed = pl->n; /* release the workers */
    pthread_cond_broadcast(&pl->cv);
    pthread_mutex_unlock(&pl->mu);
    for (int t = 0; t < pl->nthreads; t++) pthread_join(pl->th[t], NULL);
    pthread_mutex_destroy(&pl->mu);
    pthread_cond_destroy(&pl->cv);
    free(pl->data);
    free(pl->ready);
}

/* The sweep on the CPU: a kernel stand-in (the reference with rounded GEMM
 * operands, rounded to the output type) must pass every case, and the
 * reference with the diagonal dropped must fail every case -- the
 * tolerances separate a kernel-like rounding error from a wrong mask on the
 * data actually drawn.  Runs by default only without a GPU. */
static void test_sweep_dry_run(void **state) {
    (void)state;
    if (!kt_dry_sweep_wanted(g_gpu_ok)) {
        skip();
        return;
    }
    int n, reps;
    uint64_t seed;
    kt_case *all = make_sweep(&n, &reps, &seed);
    double t0 = kt_now_ms();
    int nkeys = 0;
    free(collect_keys(all, n, "sm_90a", &nkeys));
    double worst = 0, weakest = INFINITY, worst_t[T_COUNT] = {0};
    int missed = 0, failed = 0;
    pipeline pl;
    pipeline_start(&pl, all, n, REF_EXACT | REF_NEG | REF_EMUL);
    for (int i = 0; i < n; i++) {
        bdata *d = pipeline_get(&pl, i);
        const int dt = all[i].dtype;
        const double tol = tol_for(dt);
        stand_in(d);
        gcmp r, m;
        compare_grads(d, d->g, d->ref, &r);
        char desc[400];
        kt_describe(&all[i], 1, desc, sizeof desc);
        if (!cmp_ok(&r, dt)) {
            failed++;
            printf("FAIL stand-in %s: ratio %.2e (%s)\n", desc, r.ratio, r.where);
        }
        worst = fmax(worst, r.ratio / tol);
        for (int t = 0; t < T_COUNT; t++) worst_t[t] = fmax(worst_t[t], r.t[t].ratio / tol);
        if (r.compared) {
            compare_grads(d, d->g, d->mref, &m);
            weakest = fmin(weakest, m.ratio / tol);
            missed += m.ratio <= tol;
            if (m.ratio <= 3 * tol) printf("weak negative control %.1fx: %s\n", m.ratio / tol, desc);
        }
        pipeline_done(&pl, i);
    }
    pipeline_finish(&pl);
    char cov[400];
    coverage_text(all, n, cov, sizeof cov);
    printf("dry sweep: %d cases (%s; %d distinct sm_90a kernels) in %.1f s; the stand-in at "
           "most %.2fx the tolerance (dq %.2f, dk %.2f, dv %.2f, drab %.2f); dropped diagonal "
           "at least %.1fx, missed in %d\n",
           n, cov, nkeys, (kt_now_ms() - t0) / 1e3, worst, worst_t[T_DQ], worst_t[T_DK],
           worst_t[T_DV], worst_t[T_DRAB], weakest, missed);
    free(all);
    assert_int_equal(failed, 0);
    assert_int_equal(missed, 0);
}

static int other_gpu_cases(kt_case *out);

static void test_gpu_sweep(void **state) {
    (void)state;
    REQUIRE_GPU();
    int n, reps;
    uint64_t seed;
    kt_case *all = make_sweep(&n, &reps, &seed);
    char arch[16];
    kt_gpu_arch(arch);
    char cov[400];
    coverage_text(all, n, cov, sizeof cov);
    printf("hstu_bwd sweep on %s (%s, %d SMs): %d cases, seed %llu, %d per cell (%s)\n",
           kt_gpu_name(), arch, kt_gpu_sm_count(), n, (unsigned long long)seed, reps, cov);
    double t0 = kt_now_ms();
    { /* the sweep's kernels and those of the other GPU tests, on all cores */
        kt_case *warm = kt_xmalloc((size_t)(n + KT_MAX_EDGE) * sizeof *warm);
        memcpy(warm, all, (size_t)n * sizeof *warm);
        int nw = n + other_gpu_cases(warm + n);
        prewarm_keys(warm, nw);
        for (int i = 0; i < n; i++) memcpy(all[i].key, warm[i].key, KT_KEYLEN);
        free(warm);
    }
    pipeline pl;
    pipeline_start(&pl, all, n, REF_EXACT | REF_NEG);
    for (int i = 0; i < n; i++) {
        char desc[400];
        kt_describe(&all[i], 1, desc, sizeof desc);
        bdata *d = pipeline_get(&pl, i);
        char at[32];
        snprintf(at, sizeof at, "/%s/", arch);
        const int on_wgmma = g_wgmma && wgmma_serves(&d->p, at);
        result res;
        double t1 = kt_now_ms();
        run_built(g_engine, d, &res);
        double ms = kt_now_ms() - t1;
        char rt[160];
        ratios_text(d, &res.cmp, rt, sizeof rt);
        pipeline_done(&pl, i);
        const double tol = tol_for(all[i].dtype);
        g_cases++;
        g_wgmma_runs += on_wgmma && res.status != R_SKIP;
        const char *tag = "PASS";
        if (res.status == R_PASS)
            g_passed++;
        else if (res.status == R_SKIP) {
            g_skipped++;
            tag = "SKIP";
        } else {
            g_failed++;
            tag = "FAIL";
        }
        if (res.status == R_PASS) g_worst_ratio = fmax(g_worst_ratio, res.cmp.ratio / tol);
        if (res.det_checked) {
            g_det_cases++;
            g_det_identical += res.det_diff == 0;
        }
        char neg[64] = "";
        if (res.neg_ratio >= 0) {
            g_neg_checked++;
            if (res.neg_ratio <= tol) g_neg_missed++;
            if (res.neg_ratio / tol < g_neg_weakest) g_neg_weakest = res.neg_ratio / tol;
            snprintf(neg, sizeof neg, " neg %.1fx", res.neg_ratio / tol);
        }
        printf("%s [%3d] %s%s  err %.2e/%.0e (%s)%s%s (%.0f ms)%s%s\n", tag, i, desc,
               on_wgmma ? " [wgmma]" : "",
               res.cmp.ratio, tol, rt, neg,
               res.det_checked ? (res.det_diff ? " det DIFFERS" : " det identical") : "", ms,
               res.status == R_PASS ? "" : "\n       ", res.status == R_PASS ? "" : res.msg);
        if (res.status != R_PASS && all[i].key[0]) printf("       key %s\n", all[i].key);

        fflush(stdout);
    }
    pipeline_finish(&pl);
    printf("sweep: %.1f s in all; deterministic cases bit-identical in %d of %d; negative "
           "control (diagonal dropped from the reference): detected in %d of %d cases, weakest "
           "at %.1fx the tolerance; worst passing case at %.2fx the tolerance\n",
           (kt_now_ms() - t0) / 1e3, g_det_identical, g_det_cases, g_neg_checked - g_neg_missed,
           g_neg_checked, g_neg_checked ? g_neg_weakest : 0.0, g_worst_ratio);
    free(all);
    if (g_wgmma) {
        printf("KILN_BWD_IMPL=wgmma: %d of %d sweep cases ran on the Hopper kernel "
               "(hstu_bwd_sm90.cu)\n", g_wgmma_runs, n);
        if (strcmp(arch, "sm_90a") == 0) assert_true(g_wgmma_runs > 0);
    }
    assert_int_equal(g_failed, 0);
}

/* ------------------------------------------------------------------ negative controls */

/* The case the negative controls use: every mask feature at once, a rab
 * head shared by both heads (so the head sum of drab matters), alpha and
 * scaling away from 1. */
static kt_case neg_case(int dtype, int func) {
    kt_case c = func ? kt_neg_func_case(dtype) : kt_neg_case(dtype);
    c.drab = 1;
    c.alpha = 0.7f;
    c.scaling = 150.0f;
    c.det = dtype == KILN_DTYPE_BF16;
    return c;
}

/* d->g holds the gradients under test (the kernel's, or the CPU stand-in):
 * the comparison must accept them and reject every mutated reference and
 * every kind of corruption. */
static void check_negative_controls(bdata *d, const char *who) {
    const int dt = d->p.fwd.dtype;
    const double tol = tol_for(dt);
    gcmp r;
    char rt[160];
    compare_grads(d, d->g, d->ref, &r);
    ratios_text(d, &r, rt, sizeof rt);
    printf("%s %s: exact reference %.2e (%s; tol %.0e)%s%s\n", who,
           dt == KILN_DTYPE_FP16 ? "fp16" : "bf16", r.ratio, rt, tol,
           cmp_ok(&r, dt) ? "" : ": ", cmp_ok(&r, dt) ? "" : r.where);
    assert_true(cmp_ok(&r, dt));
    assert_true(r.compared > 0);

    /* func cases have no target groups: their third mutation lengthens
     * every interval by one key */
    const int func = d->h.f.func != NULL;
    const struct {
        int m;
        const char *name;
    } muts[] = {{KT_REF_DROP_DIAG, "diagonal dropped"},
                {KT_REF_DROP_LAST_KEY, "last key dropped"},
                {func ? KT_REF_FUNC_HI_PLUS1 : KT_REF_TARGET_GROUP_PLUS1,
                 func ? "func ends + 1" : "target group g+1"},
                {KT_BWD_SILU_NO_X_TERM, "silu' = sigmoid"},
                {KT_BWD_NO_ALPHA, "ds without alpha"},
                {KT_BWD_DV_NO_SCALING, "dv without 1/scaling"},
                {KT_BWD_DK_FROM_DO, "dk from do, not q"},
                {KT_BWD_DRAB_ONE_HEAD, "drab of one head"}};
    int missed = 0;
    for (size_t k = 0; k < sizeof muts / sizeof muts[0]; k++) {
        double *mref[NBUF];
        ref_into(d, mref, muts[k].m, 0);
        gcmp m;
        compare_grads(d, d->g, mref, &m);
        ratios_text(d, &m, rt, sizeof rt);
        printf("  reference with %-20s: %.2e = %6.1fx tol (%s) -> %s\n", muts[k].name, m.ratio,
               m.ratio / tol, rt, cmp_ok(&m, dt) ? "NOT DETECTED" : "detected");
        missed += cmp_ok(&m, dt);
        free_refs(mref);
    }
    assert_int_equal(missed, 0);

    /* one element of each gradient in seq 1 moved by 3 tolerances */
    kt_hstu_seq s;
    assert_true(kt_ref_hstu_seq(&d->p.fwd, &d->h.f, 1, &s));
    for (int t = 0; t < T_COUNT; t++) {
        const int bi = d->tbuf[t];
        if (bi < 0) continue;
        const int64_t cnt = seq_count(d, t, &s);
        double smax = 0;
        for (int64_t n = 0; n < cnt; n++)
            smax = fmax(smax, fabs(d->ref[bi][seq_index(d, t, 1, &s, n, 1)]));
        int64_t at = seq_index(d, t, 1, &s, cnt / 2, 1);
        const uint16_t keep = d->g[bi][at];
        d->g[bi][at] = kt_f32_to_half(dt, (float)(d->ref[bi][at] + 3 * tol * smax));
        compare_grads(d, d->g, d->ref, &r);
        printf("  one element of %-4s off by 3 tol: %.2e -> %s\n", tensor_name[t], r.ratio,
               cmp_ok(&r, dt) ? "NOT DETECTED" : "detected");
        assert_false(cmp_ok(&r, dt));
        d->g[bi][at] = 0xffff; /* unwritten */
        compare_grads(d, d->g, d->ref, &r);
        assert_int_equal(r.nonfinite, 1);
        assert_false(cmp_ok(&r, dt));
        d->g[bi][at] = keep;
        /* one element written past the end of the buffer */
        d->g[bi][d->gn[bi] - 1] = 0;
        compare_grads(d, d->g, d->ref, &r);
        assert_int_equal(r.touched, 1);
        assert_false(cmp_ok(&r, dt));
        d->g[bi][d->gn[bi] - 1] = 0xffff;
    }
    /* drab: an element past len_k of seq 1 (inside max_seqlen_k) written */
    if (d->tbuf[T_DRAB] >= 0) {
        const int bi = d->tbuf[T_DRAB];
        const int64_t at = (int64_t)d->tat[T_DRAB] + 1 * d->p.drab_batch_stride +
                           (int64_t)(s.len_k - 1) * d->p.drab_row_stride + s.len_k;
        assert_true(s.len_k < d->p.fwd.max_seqlen_k);
        d->g[bi][at] = 0;
        compare_grads(d, d->g, d->ref, &r);
        assert_int_equal(r.touched, 1);
        d->g[bi][at] = 0xffff;
    }
    compare_grads(d, d->g, d->ref, &r);
    assert_true(cmp_ok(&r, dt)); /* restored */
}

/* CPU: a kernel stand-in (rounded GEMM operands, rounded outputs) passes,
 * every mutation and corruption fails, for both dtypes. */
static void test_ref_negative_controls(void **state) {
    (void)state;
    for (int t = 0; t < 4; t++) { /* fp16, bf16; then with the func mask */
        kt_case c = neg_case(t % 2 ? KILN_DTYPE_BF16 : KILN_DTYPE_FP16, t >= 2);
        bdata d;
        build_case(&c, NULL, 0, REF_EXACT | REF_EMUL, &d);
        stand_in(&d);
        check_negative_controls(&d, "cpu stand-in");
        free_case(&d);
    }
}

/* GPU: the same with the kernel's gradients. */
static void test_gpu_negative_controls(void **state) {
    (void)state;
    REQUIRE_GPU();
    for (int t = 0; t < 4; t++) { /* fp16, bf16; then with the func mask */
        kt_case c = neg_case(t % 2 ? KILN_DTYPE_BF16 : KILN_DTYPE_FP16, t >= 2);
        bdata d;
        build_case(&c, NULL, 0, REF_EXACT, &d);
        result res;
        run_built(g_engine, &d, &res);
        if (res.status != R_PASS) {
            free_case(&d);
            fail_msg("%s", res.msg);
        }
        check_negative_controls(&d, "gpu kernel");
        free_case(&d);
    }
}

/* ------------------------------------------------------------------ GPU edge behaviour */

static void test_gpu_batch0(void **state) {
    (void)state;
    REQUIRE_GPU();
    kt_case c = kt_base_case("batch0", KT_F_CAUSAL, KILN_DTYPE_BF16, 128, 2, 1, (const int[]){8});
    c.rab_heads = 1;
    c.drab = 1;
    bdata d;
    char msg[600];
    build_case(&c, NULL, 0, 0, &d);
    d.p.fwd.batch = 0;
    int st = upload_case(&d, msg, sizeof msg);
    if (st == R_PASS) st = run_once(g_engine, &d, 0xff, d.g, msg, sizeof msg);
    if (st != R_PASS) {
        free_case(&d);
        fail_msg("batch 0: %s", msg);
    }
    printf("batch 0: workspace %llu bytes; nothing may be written\n",
           (unsigned long long)d.ws_bytes);
    for (int b = 0; b < NBUF; b++)
        for (size_t k = 0; k < d.gn[b]; k++)
            if (d.g[b][k] != 0xffff) fail_msg("batch 0: buffer %d element %zu written", b, k);
    free_case(&d);
}

static kt_case invalid_offsets_case(void) {
    kt_case c = kt_invalid_offsets_case();
    c.rab_heads = 1;
    c.drab = 1;
    return c;
}

/* Offsets [0, 10, 4, 40, 50, 66] over 60 rows, max_seqlen 16: sequence 1
 * decreases, 2 is longer than max_seqlen, 4 ends past total; 0 and 3 are
 * valid.  The invalid ones must be skipped (their dq/dk/dv rows and drab
 * blocks untouched), counted by the debug checks, and the engine must keep
 * working. */
static void test_gpu_invalid_offsets(void **state) {
    (void)state;
    REQUIRE_GPU();
    kiln_engine_options o;
    assert_int_equal(kiln_engine_options_init(&o), KILN_OK);
    o.flags = KILN_ENGINE_DEBUG_CHECKS;
    kiln_engine *e = NULL;
    assert_int_equal(kiln_engine_create(&o, &e), KILN_OK);
    int64_t bad = -1;
    kiln_status st = kiln_engine_debug_report(e, &bad);
    if (st != KILN_OK) fail_msg("debug_report: %s: %s", kiln_status_name(st), kiln_last_error());
    assert_int_equal(bad, 0);

    for (int pass = 0; pass < 4; pass++) { /* debug checks / plain, atomic / det */
        kiln_engine *eng = pass % 2 == 0 ? e : g_engine;
        kt_case c = invalid_offsets_case();
        c.det = pass >= 2;
        bdata d;
        build_case(&c, kt_invalid_offsets, 0, REF_EXACT, &d);
        assert_int_equal(d.p.fwd.total_q, 60);
        {
            double *tmp[NBUF];
            alloc_refs(&d, tmp);
            kt_hstu_bwd_out ov = out_views(&d, tmp);
            assert_int_equal(kt_ref_hstu_bwd(&d.p, &d.h, &ov), 3); /* the reference agrees */
            free_refs(tmp);
        }
        result res;
        run_built(eng, &d, &res);
        if (res.status != R_PASS && res.cmp.compared == 0) {
            free_case(&d);
            fail_msg("%s", res.msg);
        }
        printf("invalid offsets (%s, %s): valid rows err %.2e, %lld unwritten, %lld written "
               "outside%s%s\n",
               pass % 2 == 0 ? "debug checks" : "plain", c.det ? "det" : "atomic", res.cmp.ratio,
               (long long)res.cmp.nonfinite, (long long)res.cmp.touched,
               res.status == R_PASS ? "" : ": ", res.status == R_PASS ? "" : res.msg);
        /* seqs 0 and 3: dq, dk, dv 2 x 10 rows x 2 heads x 64; drab 2 x 10 x 10 */
        assert_int_equal(res.cmp.compared, 3 * 2 * 10 * 2 * 64 + 2 * 10 * 10);
        assert_int_equal(res.status, R_PASS);
        free_case(&d);
        if (pass % 2 == 0) {
            st = kiln_engine_debug_report(e, &bad);
            if (st != KILN_OK)
                fail_msg("debug_report: %s: %s", kiln_status_name(st), kiln_last_error());
            /* 3 per launch; deterministic cases launch twice */
            const int64_t want = 3 * (c.det ? 2 : 1);
            printf("debug report: %lld invalid sequences (expected %lld)\n", (long long)bad,
                   (long long)want);
            assert_int_equal(bad, want);
        }
    }

    /* the next valid call works and reports nothing */
    kt_case ok = kt_after_invalid_case();
    bdata d;
    build_case(&ok, NULL, 0, REF_EXACT, &d);
    result res;
    run_built(e, &d, &res);
    free_case(&d);
    if (res.status != R_PASS) fail_msg("valid call after invalid offsets: %s", res.msg);
    assert_int_equal(kiln_engine_debug_report(e, &bad), KILN_OK);
    assert_int_equal(bad, 0);
    assert_int_equal(kiln_engine_destroy(e), KILN_OK);
}

/* The cases of the GPU tests outside the sweep, for prewarming. */
static int other_gpu_cases(kt_case *out) {
    int n = 0;
    for (int t = 0; t < 4; t++)
        out[n++] = neg_case(t % 2 ? KILN_DTYPE_BF16 : KILN_DTYPE_FP16, t >= 2);
    for (int det = 0; det < 2; det++) {
        out[n] = invalid_offsets_case();
        out[n++].det = det;
    }
    out[n++] = kt_after_invalid_case();
    return n;
}

/* ------------------------------------------------------------------ bad arguments */

/* Valid backward params with fake, aligned pointers (never dereferenced):
 * bf16, d128, 4 heads, 2 sequences over 64 rows, causal, with rab and
 * drab; atomic mode; workspace_bytes exactly the size asked for. */
static void valid_fake_params(kiln_hstu_bwd_params *bp) {
    assert_int_equal(kiln_hstu_bwd_params_init(bp), KILN_OK);
    const uint64_t base = 0x7f0000000000ull;
    kiln_hstu_fwd_params *p = &bp->fwd;
    kt_fake_fwd_params(p);
    p->out = 0; /* not read by the backward */
    p->rab = base + 0x900000;
    p->rab_heads = 1;
    p->rab_row_stride = 32;
    p->rab_head_stride = 32 * 32;
    p->rab_batch_stride = 32 * 32;
    bp->dout = base + 0xa00000;
    bp->dq = base + 0xb00000;
    bp->dk = base + 0xc00000;
    bp->dv = base + 0xd00000;
    bp->dout_row_stride = bp->dq_row_stride = bp->dk_row_stride = bp->dv_row_stride = 4 * 128;
    bp->dout_head_stride = bp->dq_head_stride = bp->dk_head_stride = bp->dv_head_stride = 128;
    bp->drab = base + 0xe00000;
    bp->drab_row_stride = 32;
    bp->drab_head_stride = 32 * 32;
    bp->drab_batch_stride = 32 * 32;
    bp->workspace = base + 0xf00000;
    uint64_t ws = 0;
    kiln_status st = kiln_hstu_bwd_workspace_size(bp, &ws);
    if (st != KILN_OK)
        fail_msg("workspace_size of valid params: %s: %s", kiln_status_name(st), kiln_last_error());
    bp->workspace_bytes = ws;
}

static void test_params_init_defaults(void **state) {
    (void)state;
    kiln_hstu_bwd_params p;
    memset(&p, 0x5a, sizeof p);
    assert_int_equal(kiln_hstu_bwd_params_init(&p), KILN_OK);
    assert_int_equal(p.struct_size, sizeof p);
    assert_int_equal(p.fwd.struct_size, sizeof p.fwd);
    assert_int_equal(p.fwd.dtype, KILN_DTYPE_BF16);
    assert_int_equal(p.fwd.window_left, -1);
    assert_int_equal(p.fwd.window_right, -1);
    assert_true(p.fwd.alpha == 1.0f);
    assert_int_equal(p.fwd.target_group_size, 1);
    assert_int_equal(p.fwd.rab_heads, 1);
    assert_int_equal(p.fwd.batch, 0);
    assert_true(p.fwd.q == 0 && p.fwd.rab == 0);
    assert_true(p.fwd.func == 0 && p.fwd.n_func == 0 && p.fwd.func_stride == 0);
    assert_true(p.dout == 0 && p.dq == 0 && p.dk == 0 && p.dv == 0 && p.drab == 0);
    assert_true(p.workspace == 0 && p.workspace_bytes == 0);
    assert_int_equal(p.deterministic, 0);
    assert_true(p.dq_row_stride == 0 && p.drab_row_stride == 0);
    assert_int_equal(kiln_hstu_bwd_params_init(NULL), KILN_EBADARG);
}

enum {
    BAD_DOUT_NULL, BAD_DQ_NULL, BAD_DK_NULL, BAD_DV_NULL, BAD_DRAB_NO_RAB, BAD_WS_SMALL,
    BAD_WS_NULL, BAD_DQ_MISALIGNED, BAD_DK_MISALIGNED, BAD_DV_MISALIGNED, BAD_DOUT_MISALIGNED,
    BAD_DRAB_MISALIGNED, BAD_WS_MISALIGNED, BAD_HEAD_DIM, BAD_FWD_Q_MISALIGNED,
    BAD_STRUCT_SIZE, BAD_FWD_STRUCT_SIZE, BAD_FUNC_EVEN, BAD_FUNC_MISALIGNED, BAD_FUNC_STRIDE,
    BAD_FUNC_CAUSAL, BAD_FUNC_TARGETS, BAD_COUNT
};

static const struct {
    const char *what;
    const char *fields[4]; /* the message must name one of these */
} bad_cases[BAD_COUNT] = {
    [BAD_DOUT_NULL] = {"dout = 0", {"dout"}},
    [BAD_DQ_NULL] = {"dq = 0", {"dq"}},
    [BAD_DK_NULL] = {"dk = 0", {"dk"}},
    [BAD_DV_NULL] = {"dv = 0", {"dv"}},
    [BAD_DRAB_NO_RAB] = {"drab without rab", {"drab", "rab"}},
    [BAD_WS_SMALL] = {"workspace_bytes = required - 1", {"workspace_bytes"}},
    [BAD_WS_NULL] = {"workspace = 0", {"workspace"}},
    [BAD_DQ_MISALIGNED] = {"dq misaligned by 8 bytes", {"dq"}},
    [BAD_DK_MISALIGNED] = {"dk misaligned by 2 bytes", {"dk"}},
    [BAD_DV_MISALIGNED] = {"dv misaligned by 8 bytes", {"dv"}},
    [BAD_DOUT_MISALIGNED] = {"dout misaligned by 2 bytes", {"dout"}},
    [BAD_DRAB_MISALIGNED] = {"drab misaligned by 1 byte", {"drab"}},
    [BAD_WS_MISALIGNED] = {"workspace misaligned by 8 bytes", {"workspace"}},
    [BAD_HEAD_DIM] = {"fwd.head_dim = 100", {"head_dim"}},
    [BAD_FWD_Q_MISALIGNED] = {"fwd.q misaligned by 2 bytes", {"q"}},
    [BAD_STRUCT_SIZE] = {"struct_size = 0", {"struct_size"}},
    [BAD_FWD_STRUCT_SIZE] = {"fwd.struct_size = 0", {"struct_size"}},
    [BAD_FUNC_EVEN] = {"fwd.func with n_func = 4", {"n_func"}},
    [BAD_FUNC_MISALIGNED] = {"fwd.func misaligned by 1 byte", {"func"}},
    [BAD_FUNC_STRIDE] = {"fwd.func_stride = 0", {"func_stride"}},
    [BAD_FUNC_CAUSAL] = {"fwd.func with the causal window", {"func", "window_left", "window_right"}},
    [BAD_FUNC_TARGETS] = {"fwd.func with num_targets", {"num_targets"}},
};

/* valid func params: no window, three values per row of (1, 3, total_q + 256) */
static void make_func(kiln_hstu_fwd_params *p) {
    p->window_left = p->window_right = -1;
    p->func = 0x7f0001000000ull;
    p->n_func = 3;
    p->func_stride = p->total_q + 256;
}

static void make_bad(kiln_hstu_bwd_params *p, int which) {
    valid_fake_params(p);
    switch (which) {
    case BAD_DOUT_NULL: p->dout = 0; break;
    case BAD_DQ_NULL: p->dq = 0; break;
    case BAD_DK_NULL: p->dk = 0; break;
    case BAD_DV_NULL: p->dv = 0; break;
    case BAD_DRAB_NO_RAB: p->fwd.rab = 0; break;
    case BAD_WS_SMALL: p->workspace_bytes -= 1; break;
    case BAD_WS_NULL: p->workspace = 0; break;
    case BAD_DQ_MISALIGNED: p->dq += 8; break;
    case BAD_DK_MISALIGNED: p->dk += 2; break;
    case BAD_DV_MISALIGNED: p->dv += 8; break;
    case BAD_DOUT_MISALIGNED: p->dout += 2; break;
    case BAD_DRAB_MISALIGNED: p->drab += 1; break;
    case BAD_WS_MISALIGNED: p->workspace += 8; break;
    case BAD_HEAD_DIM: p->fwd.head_dim = 100; break;
    case BAD_FWD_Q_MISALIGNED: p->fwd.q += 2; break;
    case BAD_STRUCT_SIZE: p->struct_size = 0; break;
    case BAD_FWD_STRUCT_SIZE: p->fwd.struct_size = 0; break;
    case BAD_FUNC_EVEN: make_func(&p->fwd); p->fwd.n_func = 4; break;
    case BAD_FUNC_MISALIGNED: make_func(&p->fwd); p->fwd.func += 1; break;
    case BAD_FUNC_STRIDE: make_func(&p->fwd); p->fwd.func_stride = 0; break;
    case BAD_FUNC_CAUSAL: make_func(&p->fwd); p->fwd.window_right = 0; break;
    case BAD_FUNC_TARGETS: make_func(&p->fwd); p->fwd.num_targets = 0x7f0000800000ull; break;
    default: break;
    }
}

/* Runs with or without a GPU, on an engine that can never launch (no disk
 * cache, no compiling), so a wrongly accepted call cannot touch the fake
 * pointers: it fails with ENOTFOUND or ENODEV instead of EBADARG. */
static void test_bad_args(void **state) {
    (void)state;
    assert_non_null(g_nolaunch);
    kiln_hstu_bwd_params p;
    valid_fake_params(&p);
    const uint64_t required = p.workspace_bytes;
    kiln_status st = kiln_hstu_bwd(g_nolaunch, &p, NULL);
    printf("valid params on a no-compile engine: %s (%s); workspace %llu bytes\n",
           kiln_status_name(st), kiln_last_error(), (unsigned long long)required);
    assert_int_not_equal(st, KILN_OK);
    assert_int_not_equal(st, KILN_EBADARG); /* the base is valid */
    assert_true(required > 0);              /* atomic mode accumulates dq in fp32 */
    p.deterministic = 1;
    assert_int_equal(kiln_hstu_bwd_workspace_size(&p, &p.workspace_bytes), KILN_OK);
    st = kiln_hstu_bwd(g_nolaunch, &p, NULL);
    assert_int_not_equal(st, KILN_OK);
    assert_int_not_equal(st, KILN_EBADARG); /* deterministic is valid too */
    make_func(&p.fwd);
    st = kiln_hstu_bwd(g_nolaunch, &p, NULL);
    assert_int_not_equal(st, KILN_OK);
    assert_int_not_equal(st, KILN_EBADARG); /* and with a func mask */
    /* func keys never take the Hopper backward, asked for or not */
    char key[KT_KEYLEN];
    p.fwd.rab = 0;
    p.drab = 0;
    p.deterministic = 0;
    p.fwd.head_dim = 64;
    assert_int_equal(kiln_hstu_bwd_workspace_size(&p, &p.workspace_bytes), KILN_OK);
    assert_int_equal(kiln_hstu_bwd_key(&p, "sm_90a", key, sizeof key), KILN_OK);
    assert_string_equal(key, "hstu_bwd/sm_90a/bf16/d64/func");

    char need[32];
    snprintf(need, sizeof need, "%llu", (unsigned long long)required);
    int wrong = 0;
    for (int w = 0; w < BAD_COUNT; w++) {
        make_bad(&p, w);
        st = kiln_hstu_bwd(g_nolaunch, &p, NULL);
        const char *msg = kiln_last_error();
        int named = 0;
        for (int f = 0; f < 4 && bad_cases[w].fields[f]; f++)
            named |= kt_names_field(msg, bad_cases[w].fields[f]);
        if (w == BAD_WS_SMALL) named &= kt_names_field(msg, need); /* and the size it needs */
        int ok = st == KILN_EBADARG && named;
        printf("%s %-36s -> %s \"%s\"\n", ok ? "ok  " : "FAIL", bad_cases[w].what,
               kiln_status_name(st), msg);
        wrong += !ok;
    }
    st = kiln_hstu_bwd(g_nolaunch, NULL, NULL);
    printf("%s %-36s -> %s\n", st == KILN_EBADARG ? "ok  " : "FAIL", "params = NULL",
           kiln_status_name(st));
    wrong += st != KILN_EBADARG;
    valid_fake_params(&p);
    st = kiln_hstu_bwd(NULL, &p, NULL);
    printf("%s %-36s -> %s\n", st == KILN_EBADARG ? "ok  " : "FAIL", "engine = NULL",
           kiln_status_name(st));
    wrong += st != KILN_EBADARG;
    if (wrong) printf("(the workspace-too-small message must name workspace_bytes and %s)\n", need);
    assert_int_equal(wrong, 0);
}

static void test_workspace_size(void **state) {
    (void)state;
    kiln_hstu_bwd_params p;
    valid_fake_params(&p);
    uint64_t small = 0, big = 0, moved = 0, det = 0, nodrab = 0, untouched = 12345;
    assert_int_equal(kiln_hstu_bwd_workspace_size(NULL, &untouched), KILN_EBADARG);
    assert_true(untouched == 12345); /* written on success only */
    assert_int_equal(kiln_hstu_bwd_workspace_size(&p, NULL), KILN_EBADARG);

    assert_int_equal(kiln_hstu_bwd_workspace_size(&p, &small), KILN_OK);
    /* shapes, not pointers */
    p.fwd.q += 0x1000;
    p.dq += 0x2000;
    p.workspace += 0x10000;
    assert_int_equal(kiln_hstu_bwd_workspace_size(&p, &moved), KILN_OK);
    assert_true(moved == small);
    /* 64x the rows */
    p.fwd.total_q = p.fwd.total_k = 64 * 64;
    assert_int_equal(kiln_hstu_bwd_workspace_size(&p, &big), KILN_OK);
    p.fwd.total_q = p.fwd.total_k = 64;
    p.deterministic = 1;
    assert_int_equal(kiln_hstu_bwd_workspace_size(&p, &det), KILN_OK);
    p.deterministic = 0;
    p.drab = 0;
    assert_int_equal(kiln_hstu_bwd_workspace_size(&p, &nodrab), KILN_OK);
    printf("workspace: %llu bytes for 64 rows, %llu for 4096 rows; deterministic %llu; "
           "without drab %llu (bf16 d128 H4 B2 max_seqlen 32, causal, rab)\n",
           (unsigned long long)small, (unsigned long long)big, (unsigned long long)det,
           (unsigned long long)nodrab);
    assert_true(small > 0);
    assert_true(big > small);
}

/* ------------------------------------------------------------------ CPU: the reference */

/* L = sum over valid rows of out . do, out from the forward reference. */
static double fd_loss(const bdata *d, double *out, size_t nout) {
    const kiln_hstu_fwd_params *p = &d->p.fwd;
    for (size_t i = 0; i < nout; i++) out[i] = 0;
    kt_ref_hstu_fwd(p, &d->h.f, out);
    double L = 0;
    for (int64_t row = 0; row < p->total_q; row++)
        for (int hh = 0; hh < p->num_heads; hh++)
            for (int dd = 0; dd < p->head_dim; dd++)
                L += out[row * p->out_row_stride + hh * p->out_head_stride + dd] *
                     (double)kt_half_to_f32(p->dtype,
                                            d->bdo[row * d->p.dout_row_stride +
                                                   hh * d->p.dout_head_stride + dd]);
    return L;
}

/* max over the tensors of max|a - b| / max|b| over the elements valid
 * sequences own; *which receives the worst tensor. */
static double grad_distance(const bdata *d, double *const *a, double *const *b, int *which) {
    double worst = 0;
    *which = -1;
    const kiln_hstu_fwd_params *p = &d->p.fwd;
    for (int t = 0; t < T_COUNT; t++) {
        const int bi = d->tbuf[t];
        if (bi < 0) continue;
        double err = 0, mx = 0;
        for (int s = 0; s < p->batch; s++) {
            kt_hstu_seq q;
            if (!kt_ref_hstu_seq(p, &d->h.f, s, &q)) continue;
            for (int64_t n = 0; n < seq_count(d, t, &q); n++) {
                const int64_t idx = seq_index(d, t, s, &q, n, 1);
                err = fmax(err, fabs(a[bi][idx] - b[bi][idx]));
                mx = fmax(mx, fabs(b[bi][idx]));
            }
        }
        const double r = err / fmax(mx, 1e-300);
        if (*which < 0 || r > worst) {
            worst = r;
            *which = t;
        }
    }
    return worst;
}

/* The backward reference is the derivative of the forward reference: for
 * every input element x of q, k, v and rab that a valid sequence owns,
 * (L(x + h) - L(x - h)) / 2h with L = sum(out * do) matches dq, dk, dv,
 * drab, for every mask family.  Inputs are multiples of 2^-10 in [-1, 1]
 * and h = 2^-9, so x +- h is exact in fp16 and the difference quotient is
 * computed in double: its error is the O(h^2) truncation alone (~1e-6).
 * References with a dropped term must not match. */
static void test_ref_finite_differences(void **state) {
    (void)state;
    static const struct {
        const char *name;
        int family, wl, wr, delta_q, group, rab_heads;
        float scaling;
    } fams[] = {
        {"none", KT_F_NONE, -1, -1, 0, 1, 1, 0},
        {"causal", KT_F_CAUSAL, -1, 0, 0, 1, 2, 3.0f},
        {"local(2,1)", KT_F_LOCAL, 2, 1, 0, 1, 1, 0},
        {"causal+local(2,0)", KT_F_LOCAL, 2, 0, 0, 1, 1, 2.5f},
        {"local(-1,2)", KT_F_LOCAL, -1, 2, 0, 1, 2, 0},
        {"local(1,-1)", KT_F_LOCAL, 1, -1, 0, 1, 1, 0},
        {"causal+context", KT_F_CONTEXT, -1, 0, 0, 1, 1, 0},
        {"causal+target g2", KT_F_TARGET, -1, 0, 0, 2, 1, 4.0f},
        {"causal+context+target g1", KT_F_CTX_TGT, -1, 0, 0, 1, 1, 0},
        {"causal+context+target g2", KT_F_CTX_TGT, -1, 0, 0, 2, 2, 0},
        {"delta_q causal", KT_F_CAUSAL, -1, 0, 1, 1, 1, 0},
        {"delta_q local(1,0)", KT_F_LOCAL, 1, 0, 1, 1, 1, 0},
        {"delta_q none", KT_F_NONE, -1, -1, 1, 1, 2, 2.0f},
    };
    static const struct {
        int m;
        const char *name;
    } muts[] = {{KT_BWD_SILU_NO_X_TERM, "silu' = sigmoid"},
                {KT_BWD_NO_ALPHA, "ds without alpha"},
                {KT_BWD_DV_NO_SCALING, "dv without 1/scaling"},
                {KT_BWD_DK_FROM_DO, "dk from do"},
                {KT_REF_DROP_DIAG, "diagonal dropped"},
                {KT_BWD_DRAB_ONE_HEAD, "drab of one head"}};
    const double h = 1.0 / 512, FD_TOL = 1e-5;
    double worst = 0, weakest = INFINITY;
    int64_t checked = 0;
    for (size_t f = 0; f < sizeof fams / sizeof fams[0]; f++) {
        kt_case c = kt_base_case("fd", fams[f].family, KILN_DTYPE_FP16, 4, 2, 3,
                            (const int[]){5, 0, 7});
        c.wl = fams[f].wl;
        c.wr = fams[f].wr;
        c.group = fams[f].group;
        c.rab_heads = fams[f].rab_heads;
        c.drab = 1;
        c.alpha = 0.75f;
        c.scaling = fams[f].scaling;
        c.grid_values = 1;
        c.seed = 1000 + f;
        memcpy(c.ctx, (const int[]){2, 0, 3}, 3 * sizeof(int));
        memcpy(c.tgt, (const int[]){2, 0, 3}, 3 * sizeof(int));
        if (fams[f].delta_q) {
            c.delta_q = 1;
            memcpy(c.len_q, (const int[]){3, 0, 7}, 3 * sizeof(int));
            memcpy(c.len_k, (const int[]){5, 2, 7}, 3 * sizeof(int));
        }
        bdata d;
        build_case(&c, NULL, 0, REF_EXACT, &d);
        const kiln_hstu_fwd_params *p = &d.p.fwd;
        const size_t nout = kt_span(p->total_q, p->out_row_stride, p->out_head_stride,
                                 p->num_heads, p->head_dim);
        double *out = kt_xmalloc(nout * sizeof(double));
        double *num[NBUF];
        alloc_refs(&d, num);
        for (int t = 0; t < T_COUNT; t++) {
            uint16_t *in = input_of(&d, t);
            for (int b = 0; b < p->batch; b++) {
                kt_hstu_seq s;
                if (!kt_ref_hstu_seq(p, &d.h.f, b, &s)) continue;
                for (int64_t n = 0; n < seq_count(&d, t, &s); n++) {
                    uint16_t *x = in + seq_index(&d, t, b, &s, n, 0);
                    const uint16_t keep = *x;
                    const double xv = (double)kt_fp16_to_f32(keep);
                    const uint16_t up = kt_f32_to_fp16((float)(xv + h)),
                                   dn = kt_f32_to_fp16((float)(xv - h));
                    assert_true((double)kt_fp16_to_f32(up) == xv + h);
                    assert_true((double)kt_fp16_to_f32(dn) == xv - h);
                    *x = up;
                    const double lp = fd_loss(&d, out, nout);
                    *x = dn;
                    const double lm = fd_loss(&d, out, nout);
                    *x = keep;
                    num[d.tbuf[t]][seq_index(&d, t, b, &s, n, 1)] = (lp - lm) / (2 * h);
                    checked++;
                }
            }
        }
        int which;
        const double r = grad_distance(&d, num, d.ref, &which);
        worst = fmax(worst, r);
        printf("finite differences %-26s: max|num - ana| / max|ana| = %.1e (worst %s)", fams[f].name,
               r, which >= 0 ? tensor_name[which] : "-");
        int caught = 0, tried = 0;
        for (size_t m = 0; m < sizeof muts / sizeof muts[0]; m++) {
            if (muts[m].m == KT_BWD_DRAB_ONE_HEAD && fams[f].rab_heads == c.H) continue;
            double *mref[NBUF];
            ref_into(&d, mref, muts[m].m, 0);
            int w2;
            const double mr = grad_distance(&d, num, mref, &w2);
            weakest = fmin(weakest, mr / FD_TOL);
            tried++;
            caught += mr > FD_TOL;
            if (mr <= FD_TOL) printf("\n  NOT DETECTED: %s (%.1e)", muts[m].name, mr);
            free_refs(mref);
        }
        printf("; %d of %d wrong references rejected\n", caught, tried);
        assert_true(r <= FD_TOL);
        assert_int_equal(caught, tried);
        free_refs(num);
        free(out);
        free_case(&d);
    }
    printf("finite differences: %lld input elements, worst %.1e (tolerance %.0e); wrong "
           "references at least %.0fx the tolerance away\n",
           (long long)checked, worst, FD_TOL, weakest);
}

/* The same logical tensors in four layouts give the same gradients; with
 * rab head 1 a copy of head 0, rab_heads 2 and rab_heads 1 give the same
 * dq, dk, dv and drab(1) = drab(2)[0] + drab(2)[1]. */
static void test_ref_layouts(void **state) {
    (void)state;
    kt_case c = kt_layouts_case();
    c.rab_heads = 2;
    c.drab = 1;
    bdata base;
    build_case(&c, NULL, 0, REF_EXACT, &base);
    for (int l = 1; l < KT_L_COUNT; l++) {
        c.layout = l;
        c.drab_own = l % 2;
        bdata d;
        build_case(&c, NULL, 0, REF_EXACT, &d);
        for (int t = 0; t < T_COUNT; t++)
            for (int b = 0; b < c.B; b++) {
                kt_hstu_seq s;
                if (!kt_ref_hstu_seq(&d.p.fwd, &d.h.f, b, &s)) continue;
                for (int64_t n = 0; n < seq_count(&d, t, &s); n++) {
                    double x = base.ref[base.tbuf[t]][seq_index(&base, t, b, &s, n, 1)];
                    double y = d.ref[d.tbuf[t]][seq_index(&d, t, b, &s, n, 1)];
                    if (x != y || isnan(x))
                        fail_msg("%s: %s seq %d element %lld: %g vs %g", kt_layout_name[l],
                                 tensor_name[t], b, (long long)n, x, y);
                }
            }
        /* and nothing else of the buffers is written */
        int64_t written = 0, owned = 0;
        for (int i = 0; i < NBUF; i++)
            for (size_t k = 0; k < d.gn[i]; k++) written += !isnan(d.ref[i][k]);
        for (int t = 0; t < T_COUNT; t++)
            for (int b = 0; b < c.B; b++) {
                kt_hstu_seq s;
                if (kt_ref_hstu_seq(&d.p.fwd, &d.h.f, b, &s)) owned += seq_count(&d, t, &s);
            }
        assert_int_equal(written, owned);
        free_case(&d);
    }
    free_case(&base);

    c.layout = KT_L_CONTIG;
    c.drab_own = 0;
    bdata d;
    build_case(&c, NULL, 0, 0, &d);
    for (int b = 0; b < c.B; b++)
        memcpy(d.in.brab + b * d.p.fwd.rab_batch_stride + d.p.fwd.rab_head_stride,
               d.in.brab + b * d.p.fwd.rab_batch_stride, (size_t)d.p.fwd.rab_head_stride * 2);
    double *r2[NBUF], *r1[NBUF];
    ref_into(&d, r2, KT_REF_EXACT, 0);
    d.p.fwd.rab_heads = 1;
    ref_into(&d, r1, KT_REF_EXACT, 0);
    for (int t = 0; t < T_DRAB; t++)
        for (size_t k = 0; k < d.gn[d.tbuf[t]]; k++) {
            double x = r1[d.tbuf[t]][k], y = r2[d.tbuf[t]][k];
            assert_true(x == y || (isnan(x) && isnan(y)));
        }
    const int bi = d.tbuf[T_DRAB];
    int64_t nz = 0;
    for (int b = 0; b < c.B; b++) {
        kt_hstu_seq s;
        if (!kt_ref_hstu_seq(&d.p.fwd, &d.h.f, b, &s)) continue;
        for (int i = 0; i < s.len_k; i++)
            for (int j = 0; j < s.len_k; j++) {
                int64_t at = b * d.p.drab_batch_stride + i * d.p.drab_row_stride + j;
                double sum = r2[bi][at] + r2[bi][at + d.p.drab_head_stride];
                assert_true(fabs(r1[bi][at] - sum) <= 1e-12 * fmax(1, fabs(sum)));
                assert_true(isnan(r1[bi][at + d.p.drab_head_stride])); /* head 1 untouched */
                nz += r1[bi][at] != 0;
            }
    }
    assert_true(nz > 0);
    free_refs(r1);
    free_refs(r2);
    free_case(&d);
}

/* ------------------------------------------------------------------ main */

static int setup(void **state) {
    (void)state;
    const char *impl = getenv("KILN_BWD_IMPL");
    g_wgmma = impl && strcmp(impl, "wgmma") == 0;
    return kt_open_engines(&g_gpu_ok, g_why, sizeof g_why, &g_engine, &g_nolaunch);
}

static int teardown(void **state) {
    (void)state;
    kiln_engine_destroy(g_engine);
    kiln_engine_destroy(g_nolaunch);
    printf("hstu_bwd gpu: %d cases, %d passed, %d failed, %d skipped, tolerance bf16 %.0e, "
           "fp16 %.0e (per gradient and sequence: max|got-ref| <= tol * max|ref| of the "
           "sequence, floor %.0e * max|ref| of the tensor; deterministic runs bit-identical)%s%s\n",
           g_cases, g_passed, g_failed, g_skipped, TOL_BF16, TOL_FP16, SCALE_FLOOR,
           g_gpu_ok ? "" : "; GPU tests skipped: ", g_gpu_ok ? "" : g_why);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_params_init_defaults),
        cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_workspace_size),
        cmocka_unit_test(test_ref_finite_differences),
        cmocka_unit_test(test_ref_layouts),
        cmocka_unit_test(test_ref_negative_controls),
        cmocka_unit_test(test_sweep_dry_run),
        cmocka_unit_test(test_gpu_batch0),
        cmocka_unit_test(test_gpu_sweep), /* prewarms the kernels of the tests below too */
        cmocka_unit_test(test_gpu_negative_controls),
        cmocka_unit_test(test_gpu_invalid_offsets),
    };
    return cmocka_run_group_tests_name("hstu_bwd_gpu", tests, setup, teardown);
}
