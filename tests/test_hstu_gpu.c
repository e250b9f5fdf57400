/* test_hstu_gpu.c -- HSTU forward (kiln_hstu_fwd) on the GPU against the
 * double-precision CPU reference in ref_hstu.c; argument checking (runs
 * without a GPU: bad arguments must be rejected before the driver is
 * touched); CPU tests of the reference and of the test helpers themselves.
 *
 * Without a usable GPU every GPU test prints "skipped: <why> (GPU tests run
 * on the device)" and calls cmocka's skip().
 *
 * Tolerance.  A case passes when, for every valid sequence b,
 *     max |out - ref| over b  <=  tol * scale_b
 *     scale_b = max(max |ref| over b, SCALE_FLOOR * max |ref| over the case)
 * with tol = 2e-2 for bf16 and 4e-3 for fp16, every row of every valid
 * sequence finite, and every other element of out (rows of invalid or empty
 * sequences, trailing rows, head/row padding, a guard tail) still holding the
 * 0xFF poison written before the launch.  Why these numbers: inputs are the
 * exact 16-bit values, so the kernel's error comes from rounding the SiLU
 * weights to the input type for the second GEMM and from rounding out, each
 * at most half an ulp relative (bf16 2^-8 = 0.4%, fp16 2^-11 = 0.05%), i.e.
 * about 0.6% / 0.08% of the scale in the worst element: a 3-5x margin.  The
 * output rounding alone measures 0.28% (bf16) and 0.035% (fp16) on the
 * negative-control case (test_ref_negative_controls).  The scale is per
 * sequence and relative (not max(1, |ref|)): the outputs of the data drawn
 * here are O(0.01-0.1) (a sum of ~sqrt(L) random terms over scaling_seqlen),
 * so an absolute floor of 1 would let a wrong mask pass.  The negative
 * controls (a reference with the diagonal dropped, the last key dropped, the
 * target groups one larger; a single corrupted element) check that these
 * tolerances do fail wrong answers; the sweep prints how far the
 * dropped-diagonal reference lands outside the tolerance in every case.
 *
 * Environment:
 *   KILN_TEST_SEED        seed of the random sweep (default 20261123)
 *   KILN_TEST_REPS        random cases per (mask family, dtype, head_dim) cell
 *                         (default 2: 7 x 2 x 4 x 2 = 112, plus the edge cases;
 *                         the seventh family is NVIDIA's arbitrary func mask)
 *   KILN_TEST_FILTER      run only sweep cases whose description has this text
 *   KILN_TEST_NO_PREWARM  1: skip compiling the sweep's kernels in parallel
 *                         before the first launch
 *   KILN_TEST_NO_GPU      1: behave as if there were no GPU
 *   KILN_TEST_DRY_SWEEP   1/0: run / skip the sweep against the rounded
 *                         reference on the CPU (default: only without a GPU)
 * The engine uses the default cache ($KILN_CACHE_DIR, else ~/.cache/kiln).
 */
#include <math.h>
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
#include "util_case.h"
#include "util_gpu.h"

#define TOL_BF16 2e-2
#define TOL_FP16 4e-3
#define SCALE_FLOOR 1e-2

static double tol_for(int dtype) { return dtype == KILN_DTYPE_FP16 ? TOL_FP16 : TOL_BF16; }

/* ------------------------------------------------------------------ state */

static int g_gpu_ok;          /* kt_gpu_init succeeded */
static char g_why[256];       /* why not */
static kiln_engine *g_engine; /* default cache; for the GPU tests */
static kiln_engine *g_nolaunch; /* NO_DISK_CACHE | NO_COMPILE: can never launch */
static int g_ctx_lost;        /* a kernel faulted: the context is unusable */
static int g_cases, g_passed, g_failed, g_skipped; /* the sweep */
static int g_neg_checked, g_neg_missed;
static double g_neg_weakest = INFINITY;

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

/* ------------------------------------------------------------------ cases */

/* ------------------------------------------------------------------ data */

typedef struct cdata {
    kiln_hstu_fwd_params p;
    kt_hstu_host h;
    kt_inputs in;                        /* q, k, v, rab, offsets */
    uint16_t *out;                       /* host copy of out */
    size_t nout;                         /* elements */
    double *ref;                         /* reference, out's layout, NaN elsewhere */
    uint64_t dq, dk, dv, drab, dout, doffq, doffk, dctx, dtgt, dfunc;
} cdata;

/* Build case c: params, host tensors and the reference.  custom_off, if not
 * NULL, replaces both offset arrays (B+1 entries) after the buffers are sized
 * from the lengths.  params_only: no buffers, fake aligned device pointers
 * (for computing keys). */
static void build_case(const kt_case *c, const int64_t *custom_off, int params_only,
                       cdata *d) {
    memset(d, 0, sizeof *d);
    kt_rng r;
    kt_rng_seed(&r, c->seed);
    const int H = c->H, D = c->D;
    kt_shape s;
    kt_case_shape(c, custom_off, &d->in, &s);

    int64_t ors, ohs;
    switch (c->layout) {
    case KT_L_PADDED:
        ohs = D + 16;
        ors = (int64_t)H * (D + 16) + 8;
        break;
    case KT_L_HEADMAJOR:
        ors = D;
        ohs = (s.total_q > 0 ? s.total_q : 1) * D;
        break;
    default: /* packed: q, k, v interleaved, out on its own */
        ors = (int64_t)H * D;
        ohs = D;
        break;
    }

    kiln_hstu_fwd_params *p = &d->p;
    kiln_hstu_fwd_params_init(p);
    kt_case_fwd_params(c, &s, p);
    p->out_row_stride = ors;
    p->out_head_stride = ohs;

    if (params_only) {
        kt_fake_input_ptrs(c, &s, p);
        p->out = 0x7f0000000000ull + 0x400000;
        return;
    }

    kt_fill_qkv(c, &s, &r, &d->in);
    kt_fill_rab(c, p, &r, &d->in);
    kt_fill_func(c, &s, &d->in);
    d->nout = kt_span(s.total_q, ors, ohs, H, D) + KT_GUARD;
    d->out = kt_alloc_poison(d->nout);
    kt_host_view(c, &s, &d->in, &d->h);

    d->ref = kt_xmalloc(d->nout * sizeof(double));
    for (size_t i = 0; i < d->nout; i++) d->ref[i] = NAN;
    kt_ref_hstu_fwd(p, &d->h, d->ref);
}

static void free_device(cdata *d) {
    uint64_t *ptrs[] = {&d->dq, &d->dk, &d->dv, &d->drab, &d->dout,
                        &d->doffq, &d->doffk, &d->dctx, &d->dtgt, &d->dfunc};
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++) {
        kt_gpu_free(*ptrs[i]);
        *ptrs[i] = 0;
    }
}

static void free_case(cdata *d) {
    free_device(d);
    kt_inputs_free(&d->in);
    free(d->out);
    free(d->ref);
    memset(d, 0, sizeof *d);
}

/* Copy the inputs to the device and point the params at them; out is
 * poisoned with 0xFF bytes.  0, or -1 with msg. */
static int upload_case(cdata *d, char *msg, size_t n) {
    kiln_hstu_fwd_params *p = &d->p;
    const int B = p->batch, i64 = p->offsets_type == KILN_INDEX_INT64;
    const size_t osz = (size_t)(B + 1) * (i64 ? 8 : 4);
    d->dq = kt_gpu_alloc_copy(d->in.bq, d->in.nq * 2);
    if (d->in.bk != d->in.bq) {
        d->dk = kt_gpu_alloc_copy(d->in.bk, d->in.nk * 2);
        d->dv = kt_gpu_alloc_copy(d->in.bv, d->in.nv * 2);
    }
    d->dout = kt_gpu_alloc(d->nout * 2);
    d->doffq = kt_gpu_alloc_copy(d->h.seq_offsets_q, osz);
    if (d->h.seq_offsets_k) d->doffk = kt_gpu_alloc_copy(d->h.seq_offsets_k, osz);
    if (d->h.num_contexts) d->dctx = kt_gpu_alloc_copy(d->in.ctx, sizeof d->in.ctx);
    if (d->h.num_targets) d->dtgt = kt_gpu_alloc_copy(d->in.tgt, sizeof d->in.tgt);
    if (d->in.brab) d->drab = kt_gpu_alloc_copy(d->in.brab, d->in.nrab * 2);
    if (d->in.func) d->dfunc = kt_gpu_alloc_copy(d->in.func, d->in.nfunc * 4);
    if (!d->dq || (d->in.bk != d->in.bq && (!d->dk || !d->dv)) || !d->dout || !d->doffq ||
        (d->h.seq_offsets_k && !d->doffk) || (d->h.num_contexts && !d->dctx) ||
        (d->h.num_targets && !d->dtgt) || (d->in.brab && !d->drab) ||
        (d->in.func && !d->dfunc) ||
        kt_gpu_memset8(d->dout, 0xff, d->nout * 2) != 0) {
        snprintf(msg, n, "device setup: %s", kt_gpu_error());
        return -1;
    }
    if (d->in.bk == d->in.bq) {
        p->q = d->dq + d->in.q_at * 2;
        p->k = d->dq + d->in.k_at * 2;
        p->v = d->dq + d->in.v_at * 2;
    } else {
        p->q = d->dq;
        p->k = d->dk;
        p->v = d->dv;
    }
    p->out = d->dout;
    p->seq_offsets_q = d->doffq;
    p->seq_offsets_k = d->doffk;
    p->num_contexts = d->dctx;
    p->num_targets = d->dtgt;
    p->rab = d->drab;
    p->func = d->dfunc;
    return 0;
}

/* ------------------------------------------------------------------ compare */

typedef struct cmp_result {
    double ratio;           /* max over sequences of max|out-ref| / scale_b */
    double max_ref;         /* max |ref| over the case */
    int64_t compared;       /* elements compared */
    int64_t nonfinite;      /* NaN/inf in rows that must be written */
    int64_t touched;        /* elements changed that must stay poisoned */
    char where[200];        /* the worst or first bad element */
} cmp_result;

static void compare_out(const kiln_hstu_fwd_params *p, const kt_hstu_host *h,
                        const uint16_t *out, const double *ref, size_t nout,
                        cmp_result *r) {
    memset(r, 0, sizeof *r);
    unsigned char *mark = calloc(nout ? nout : 1, 1);
    if (!mark) abort();
    const int H = p->num_heads, D = p->head_dim;
    double seq_max[KT_MAXB] = {0}, seq_err[KT_MAXB] = {0};
    int valid[KT_MAXB] = {0};
    int64_t seq_worst[KT_MAXB] = {0};
    int B = p->batch < KT_MAXB ? p->batch : KT_MAXB;
    for (int b = 0; b < B; b++) {
        kt_hstu_seq s;
        if (!(valid[b] = kt_ref_hstu_seq(p, h, b, &s))) continue;
        for (int64_t row = s.q_start; row < s.q_start + s.len_q; row++)
            for (int hh = 0; hh < H; hh++)
                for (int dd = 0; dd < D; dd++) {
                    int64_t idx = row * p->out_row_stride + (int64_t)hh * p->out_head_stride + dd;
                    mark[idx] = 1;
                    double o = (double)kt_half_to_f32(p->dtype, out[idx]);
                    double e = ref[idx];
                    if (fabs(e) > seq_max[b]) seq_max[b] = fabs(e);
                    if (!isfinite(o)) {
                        if (!r->nonfinite++)
                            snprintf(r->where, sizeof r->where,
                                     "seq %d row %lld head %d d %d not written (bits 0x%04x)", b,
                                     (long long)(row - s.q_start), hh, dd, out[idx]);
                        continue;
                    }
                    r->compared++;
                    if (fabs(o - e) > seq_err[b]) {
                        seq_err[b] = fabs(o - e);
                        seq_worst[b] = idx;
                    }
                }
        if (seq_max[b] > r->max_ref) r->max_ref = seq_max[b];
    }
    int worst_b = -1;
    for (int b = 0; b < B; b++) {
        if (!valid[b]) continue;
        double scale = fmax(fmax(seq_max[b], SCALE_FLOOR * r->max_ref), 1e-30);
        double ratio = seq_err[b] / scale;
        if (ratio > r->ratio) {
            r->ratio = ratio;
            worst_b = b;
        }
    }
    if (worst_b >= 0 && !r->nonfinite) {
        int64_t idx = seq_worst[worst_b];
        snprintf(r->where, sizeof r->where, "seq %d element %lld: out %.6g ref %.6g (seq max|ref| %.3g)",
                 worst_b, (long long)idx, (double)kt_half_to_f32(p->dtype, out[idx]), ref[idx],
                 seq_max[worst_b]);
    }
    for (size_t i = 0; i < nout; i++)
        if (!mark[i] && out[i] != 0xffffu) {
            if (!r->touched++ && !r->nonfinite)
                snprintf(r->where, sizeof r->where,
                         "element %zu written (0x%04x) but belongs to no valid row", i, out[i]);
        }
    free(mark);
}

static int cmp_ok(const cmp_result *r, int dtype) {
    return r->nonfinite == 0 && r->touched == 0 && r->ratio <= tol_for(dtype);
}

/* ------------------------------------------------------------------ running */

enum { R_PASS, R_FAIL, R_SKIP };

typedef struct result {
    int status;
    cmp_result cmp;
    double neg_ratio; /* ratio against the mutated reference (-1: not run) */
    char msg[600];
} result;

/* Upload, poison, launch on engine e, synchronize, download into d->out.
 * R_PASS (ran), R_SKIP (KILN_EUNSUPPORTED) or R_FAIL, with msg. */
static int launch_and_fetch(kiln_engine *e, cdata *d, char *msg, size_t n) {
    if (upload_case(d, msg, n)) return R_FAIL;
    kiln_status st = kiln_hstu_fwd(e, &d->p, NULL);
    if (st == KILN_EUNSUPPORTED) {
        snprintf(msg, n, "unsupported: %.400s", kiln_last_error());
        return R_SKIP;
    }
    if (st != KILN_OK) {
        snprintf(msg, n, "kiln_hstu_fwd: %s: %.450s", kiln_status_name(st), kiln_last_error());
        return R_FAIL;
    }
    if (kt_gpu_sync() != 0) {
        g_ctx_lost = 1;
        snprintf(msg, n, "after the launch: %s", kt_gpu_error());
        return R_FAIL;
    }
    if (kt_gpu_download(d->out, d->dout, d->nout * 2) != 0) {
        snprintf(msg, n, "%s", kt_gpu_error());
        return R_FAIL;
    }
    return R_PASS;
}

static void run_case(kiln_engine *e, const kt_case *c, int mutation, result *res) {
    memset(res, 0, sizeof *res);
    res->neg_ratio = -1;
    if (g_ctx_lost) {
        res->status = R_FAIL;
        snprintf(res->msg, sizeof res->msg, "not run: the CUDA context faulted earlier");
        return;
    }
    cdata d;
    build_case(c, NULL, 0, &d);
    res->status = launch_and_fetch(e, &d, res->msg, sizeof res->msg);
    if (res->status == R_PASS) {
        compare_out(&d.p, &d.h, d.out, d.ref, d.nout, &res->cmp);
        if (!cmp_ok(&res->cmp, c->dtype)) {
            res->status = R_FAIL;
            snprintf(res->msg, sizeof res->msg, "%lld not written, %lld written outside, %s",
                     (long long)res->cmp.nonfinite, (long long)res->cmp.touched, res->cmp.where);
        }
        if (mutation && res->cmp.compared > 0) {
            double *mref = kt_xmalloc(d.nout * sizeof(double));
            for (size_t i = 0; i < d.nout; i++) mref[i] = NAN;
            kt_ref_hstu_fwd_ex(&d.p, &d.h, mref, mutation);
            cmp_result m;
            compare_out(&d.p, &d.h, d.out, mref, d.nout, &m);
            res->neg_ratio = m.ratio;
            free(mref);
        }
    }
    free_case(&d);
}

/* ------------------------------------------------------------------ sweep */

/* One random case of cell (family f, dtype, D); n numbers the case and
 * cycles the features every family must see (rab modes, delta_q, layouts,
 * target groups). */
static kt_case grid_case(int f, int dtype, int D, int n, uint64_t seed) {
    kt_rng r;
    kt_case c = kt_grid_case_begin(f, dtype, D, n, seed, &r);
    c.rab_exact = (n / 3) % 2;
    switch (n % 3) { /* rab: off, one head, H/2 heads */
    case 1: c.rab_heads = 1; break;
    case 2:
        if (c.H % 2) c.H = c.H == 1 ? 2 : 4;
        c.rab_heads = c.H / 2;
        break;
    default: break;
    }
    c.layout = (n / 2) % KT_L_COUNT;
    kt_grid_case_finish(&c, f, n, &r);
    return c;
}

static int edge_cases(kt_case *out) {
    int n = 0;
    kt_case c;
    const int bf = KILN_DTYPE_BF16, fp = KILN_DTYPE_FP16;
#define L(...) ((const int[]){__VA_ARGS__})
    out[n++] = kt_base_case("empty-but-one", KT_F_CAUSAL, bf, 64, 2, 5, L(0, 0, 1, 0, 0));
    out[n++] = kt_base_case("single-row", KT_F_NONE, fp, 32, 1, 1, L(1));
    c = kt_base_case("all-empty", KT_F_NONE, bf, 128, 2, 3, L(0, 0, 0));
    c.extra_rows = 3;
    out[n++] = c;
    c = kt_base_case("long-causal", KT_F_CAUSAL, bf, 128, 2, 2, L(1000, 333));
    c.rab_heads = 1;
    c.msq_extra = 3; /* rab rows 1003 apart: not 16-byte aligned */
    c.rab_exact = 1;
    c.alpha = 0.7f;
    out[n++] = c;
    out[n++] = kt_base_case("long-none", KT_F_NONE, fp, 256, 1, 2, L(300, 5));
    out[n++] = kt_base_case("tile-multiples", KT_F_CAUSAL, fp, 64, 3, 4, L(16, 64, 128, 256));
    c = kt_base_case("clamped-ctx-tgt", KT_F_CTX_TGT, bf, 64, 2, 4, L(10, 40, 7, 0));
    memcpy(c.ctx, L(15, 30, 3, 4), 4 * sizeof(int));
    memcpy(c.tgt, L(5, 20, 9, 2), 4 * sizeof(int));
    c.group = 2;
    out[n++] = c;
    c = kt_base_case("all-targets", KT_F_TARGET, fp, 128, 2, 3, L(50, 17, 1));
    memcpy(c.tgt, L(50, 17, 1), 3 * sizeof(int));
    c.group = 7;
    out[n++] = c;
    c = kt_base_case("context-all-or-none", KT_F_CONTEXT, bf, 32, 1, 2, L(33, 64));
    memcpy(c.ctx, L(33, 0), 2 * sizeof(int));
    out[n++] = c;
    c = kt_base_case("delta-decode", KT_F_CAUSAL, bf, 128, 4, 3, L(1, 1, 1));
    memcpy(c.len_k, L(1, 77, 200), 3 * sizeof(int));
    c.delta_q = 1;
    c.rab_heads = 4;
    out[n++] = c;
    c = kt_base_case("delta-local", KT_F_LOCAL, fp, 64, 2, 4, L(64, 17, 0, 0));
    memcpy(c.len_k, L(64, 130, 5, 0), 4 * sizeof(int));
    c.delta_q = 1;
    c.wl = 32;
    c.wr = 0;
    c.rab_heads = 1;
    c.rab_exact = 1; /* rows 130 apart */
    out[n++] = c;
    c = kt_base_case("delta-none-rab", KT_F_NONE, bf, 256, 2, 3, L(50, 31, 1));
    memcpy(c.len_k, L(100, 31, 2), 3 * sizeof(int));
    c.delta_q = 1;
    c.rab_heads = 2;
    c.layout = KT_L_HEADMAJOR;
    out[n++] = c;
    c = kt_base_case("trailing-rows", KT_F_NONE, bf, 64, 3, 3, L(17, 0, 63));
    c.extra_rows = 7;
    c.i64 = 1;
    out[n++] = c;
    c = kt_base_case("maxlen-and-scaling", KT_F_CAUSAL, fp, 128, 2, 3, L(20, 45, 9));
    c.msq_extra = 100;
    c.scaling = 37.5f;
    out[n++] = c;
    c = kt_base_case("diagonal-only", KT_F_LOCAL, bf, 64, 2, 3, L(1, 2, 65));
    c.wl = 0;
    c.wr = 0;
    out[n++] = c;
    c = kt_base_case("sep-k-offsets", KT_F_TARGET, bf, 128, 1, 3, L(30, 70, 12));
    memcpy(c.tgt, L(4, 70, 3), 3 * sizeof(int));
    c.layout = KT_L_PACKED;
    c.sep_k_offsets = 1;
    out[n++] = c;
    /* rab by TMA in the Hopper kernel (rows 16-byte aligned): broadcast
     * over the batch, NaN past each sequence, a partial last tile */
    c = kt_base_case("rab-bcast-nan", KT_F_CAUSAL, bf, 128, 4, 3, L(300, 129, 64));
    c.rab_heads = 2;
    c.rab_bcast = 1;
    c.rab_nan_pad = 1;
    c.msq_extra = 4; /* rows 304 apart */
    out[n++] = c;
    c = kt_base_case("rab-nan-targets", KT_F_CTX_TGT, fp, 64, 2, 3, L(250, 77, 1));
    memcpy(c.ctx, L(9, 3, 0), 3 * sizeof(int));
    memcpy(c.tgt, L(40, 10, 1), 3 * sizeof(int));
    c.rab_heads = 1;
    c.rab_nan_pad = 1;
    c.msq_extra = 6; /* rows 256 apart */
    out[n++] = c;
    c = kt_base_case("rab-all-heads", KT_F_CAUSAL, bf, 64, 4, 2, L(129, 64));
    c.rab_heads = 4;
    c.rab_exact = 1; /* rows 129 apart */
    c.layout = KT_L_HEADMAJOR;
    out[n++] = c;
    c = kt_base_case("local-right-only", KT_F_LOCAL, fp, 32, 2, 3, L(40, 3, 90));
    c.wl = -1;
    c.wr = 5;
    out[n++] = c;
    c = kt_base_case("local-left-only", KT_F_LOCAL, bf, 256, 1, 2, L(70, 33));
    c.wl = 10;
    c.wr = -1;
    out[n++] = c;
    c = kt_base_case("ctx-tgt-g7", KT_F_CTX_TGT, fp, 256, 2, 3, L(200, 129, 63));
    memcpy(c.ctx, L(20, 5, 0), 3 * sizeof(int));
    memcpy(c.tgt, L(30, 14, 63), 3 * sizeof(int));
    c.group = 7;
    c.i64 = 1;
    c.layout = KT_L_PADDED;
    c.rab_heads = 1;
    out[n++] = c;
    /* NVIDIA's arbitrary mask */
    c = kt_base_case("func-long", KT_F_FUNC, bf, 128, 2, 4, L(700, 129, 0, 1));
    c.n_func = 5;
    c.rab_heads = 1;
    c.rab_exact = 1; /* rows 700 apart */
    c.i64 = 1;
    out[n++] = c;
    c = kt_base_case("func-delta-rab", KT_F_FUNC, fp, 64, 4, 3, L(1, 50, 0));
    memcpy(c.len_k, L(77, 200, 5), 3 * sizeof(int));
    c.delta_q = 1;
    c.rab_heads = 2;
    c.func_pad = 0; /* rows exactly total_q apart */
    out[n++] = c;
    c = kt_base_case("func-n1", KT_F_FUNC, bf, 256, 1, 3, L(33, 130, 17));
    c.n_func = 1;
    c.layout = KT_L_PADDED;
    c.extra_rows = 5;
    out[n++] = c;
    c = kt_base_case("func-d32-packed", KT_F_FUNC, fp, 32, 3, 2, L(300, 64));
    c.layout = KT_L_PACKED;
    c.func_pad = 3;
    out[n++] = c;
    /* past KILN_SM90_PERSIST_MAX_MBLOCKS m-blocks: the Hopper forward's
     * CTA-per-m-block kernel (every other case runs the persistent one) */
    c = kt_base_case("blocks-mode", KT_F_CTX_TGT, bf, 64, 2, 2, L(2200, 130));
    memcpy(c.ctx, L(70, 3), 2 * sizeof(int));
    memcpy(c.tgt, L(100, 30), 2 * sizeof(int));
    out[n++] = c;
    out[n++] = kt_base_case("blocks-mode-causal", KT_F_CAUSAL, fp, 128, 1, 1, L(2077));
    /* sequence 1's V is NaN and has no queries; 0's last key tile runs into it */
    out[n++] = kt_nan_next_case("nan-next-v", KT_F_NONE, bf, 128, 2, L(150, 0, 100), L(200, 60, 130));
    out[n++] = kt_nan_next_case("nan-next-v-causal", KT_F_CAUSAL, fp, 64, 1, L(170, 0, 3), L(190, 33, 3));
#undef L
    return n;
}

/* Compile every distinct key of the sweep on all cores first: the launches
 * then hit the cache.  Failures are only reported here; the launch reports
 * them again as the case's failure. */
static void prewarm_keys(kt_case *cases, int n) {
    char (*keys)[KT_KEYLEN] = kt_xmalloc((size_t)(n ? n : 1) * KT_KEYLEN);
    int nk = 0;
    for (int i = 0; i < n; i++) {
        cdata d;
        build_case(&cases[i], NULL, 1, &d);
        if (kiln_hstu_fwd_key(&d.p, NULL, cases[i].key, KT_KEYLEN) != KILN_OK) {
            cases[i].key[0] = 0;
            continue;
        }
        kt_key_add(keys, &nk, cases[i].key);
    }
    if (kt_env_int("KILN_TEST_NO_PREWARM", 0)) {
        free(keys);
        return;
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int nt = (int)(cpus < 1 ? 1 : cpus > 32 ? 32 : cpus), used;
    if (nt > nk) nt = nk;
    double t0 = kt_now_ms();
    int failed = kt_prewarm_keys(g_engine, keys, nk, nt, &used);
    printf("prewarm: %d distinct kernels in %.1f s on %d threads, %d failed\n", nk,
           (kt_now_ms() - t0) / 1e3, used, failed);
    free(keys);
}

static kt_case *make_sweep(int *count, int *reps_out, uint64_t *seed_out) {
    return kt_make_sweep(20261123, grid_case, edge_cases, 0, count, reps_out, seed_out);
}

/* The sweep's cases on the CPU, with the reference rounded to the output
 * type standing in for the kernel: every case must pass and the reference
 * with the diagonal dropped must fail every case, i.e. the tolerance can tell
 * a wrong mask for the data actually drawn.  Also shows what the references
 * cost.  Runs by default only without a GPU (where test_gpu_sweep makes the
 * same check with the kernel's output); KILN_TEST_DRY_SWEEP=1 forces it,
 * =0 turns it off. */
static void test_sweep_dry_run(void **state) {
    (void)state;
    if (!kt_dry_sweep_wanted(g_gpu_ok)) {
        skip();
        return;
    }
    int n, reps;
    uint64_t seed;
    kt_case *all = make_sweep(&n, &reps, &seed);
    double t0 = kt_now_ms(), worst = 0, weakest = INFINITY;
    int missed = 0, nkeys = 0;
    char (*keys)[KT_KEYLEN] = kt_xmalloc((size_t)n * KT_KEYLEN);
    for (int i = 0; i < n; i++) {
        cdata d;
        build_case(&all[i], NULL, 1, &d);
        if (kiln_hstu_fwd_key(&d.p, "sm_90a", all[i].key, KT_KEYLEN) == KILN_OK)
            kt_key_add(keys, &nkeys, all[i].key);
        else
            printf("no key for case %d: %s\n", i, kiln_last_error());
    }
    free(keys);
    for (int i = 0; i < n; i++) {
        cdata d;
        build_case(&all[i], NULL, 0, &d);
        for (size_t k = 0; k < d.nout; k++)
            if (!isnan(d.ref[k])) d.out[k] = kt_f32_to_half(all[i].dtype, (float)d.ref[k]);
        cmp_result r, m;
        compare_out(&d.p, &d.h, d.out, d.ref, d.nout, &r);
        double tol = tol_for(all[i].dtype);
        assert_true(cmp_ok(&r, all[i].dtype));
        worst = fmax(worst, r.ratio / tol);
        if (r.compared) {
            double *mref = kt_xmalloc(d.nout * sizeof(double));
            for (size_t k = 0; k < d.nout; k++) mref[k] = NAN;
            kt_ref_hstu_fwd_ex(&d.p, &d.h, mref, KT_REF_DROP_DIAG);
            compare_out(&d.p, &d.h, d.out, mref, d.nout, &m);
            free(mref);
            weakest = fmin(weakest, m.ratio / tol);
            missed += m.ratio <= tol;
            if (m.ratio <= 3 * tol) {
                char desc[400];
                kt_describe(&all[i], 0, desc, sizeof desc);
                printf("weak negative control %.1fx: %s\n", m.ratio / tol, desc);
            }
        }
        free_case(&d);
    }
    printf("dry sweep: %d cases (%d distinct sm_90a kernels) in %.1f s; rounded reference at most %.2fx the tolerance; "
           "dropped diagonal at least %.1fx, missed in %d\n",
           n, nkeys, (kt_now_ms() - t0) / 1e3, worst, weakest, missed);
    free(all);
    assert_int_equal(missed, 0);
}

static void test_gpu_sweep(void **state) {
    (void)state;
    REQUIRE_GPU();
    int n, reps;
    uint64_t seed;
    kt_case *all = make_sweep(&n, &reps, &seed);
    char arch[16];
    kt_gpu_arch(arch);
    printf("hstu_fwd sweep on %s (%s, %d SMs): %d cases, seed %llu, %d per cell\n",
           kt_gpu_name(), arch, kt_gpu_sm_count(), n, (unsigned long long)seed, reps);
    prewarm_keys(all, n);

    for (int i = 0; i < n; i++) {
        char desc[400];
        kt_describe(&all[i], 0, desc, sizeof desc);
        result res;
        double t0 = kt_now_ms();
        run_case(g_engine, &all[i], KT_REF_DROP_DIAG, &res);
        double ms = kt_now_ms() - t0;
        double tol = tol_for(all[i].dtype);
        g_cases++;
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
        char neg[64] = "";
        if (res.neg_ratio >= 0) {
            g_neg_checked++;
            if (res.neg_ratio <= tol) g_neg_missed++;
            if (res.neg_ratio / tol < g_neg_weakest) g_neg_weakest = res.neg_ratio / tol;
            snprintf(neg, sizeof neg, " neg %.1fx", res.neg_ratio / tol);
        }
        printf("%s [%3d] %s  err %.2e/%.0e%s (%.0f ms)%s%s\n", tag, i, desc,
               res.cmp.ratio, tol, neg, ms, res.status == R_PASS ? "" : "\n       ",
               res.status == R_PASS ? "" : res.msg);
        if (res.status != R_PASS && all[i].key[0])
            printf("       key %s\n", all[i].key);
        fflush(stdout);
    }
    printf("negative control (diagonal dropped from the reference): detected in %d of %d "
           "cases, weakest at %.1fx the tolerance\n",
           g_neg_checked - g_neg_missed, g_neg_checked,
           g_neg_checked ? g_neg_weakest : 0.0);
    free(all);
    assert_int_equal(g_failed, 0);
}

/* ------------------------------------------------------------------ negative controls */

/* Checks that the comparison accepts out (the kernel's or the rounded
 * reference) and rejects each mutation of the reference and each kind of
 * corruption of out.  d->out holds the output under test. */
static void check_negative_controls(cdata *d, const char *who) {
    const int dt = d->p.dtype;
    const double tol = tol_for(dt);
    cmp_result r;
    compare_out(&d->p, &d->h, d->out, d->ref, d->nout, &r);
    printf("%s %s: exact reference %.2e (tol %.0e)\n", who,
           dt == KILN_DTYPE_FP16 ? "fp16" : "bf16", r.ratio, tol);
    assert_true(cmp_ok(&r, dt));
    assert_true(r.compared > 0);

    /* func cases have no target groups: their third mutation lengthens
     * every interval by one key */
    const int func = d->h.func != NULL;
    const struct { int m; const char *name; } muts[] = {
        {KT_REF_DROP_DIAG, "diagonal dropped"},
        {KT_REF_DROP_LAST_KEY, "last key dropped"},
        {func ? KT_REF_FUNC_HI_PLUS1 : KT_REF_TARGET_GROUP_PLUS1,
         func ? "func ends + 1" : "target group g+1"}};
    double *mref = kt_xmalloc(d->nout * sizeof(double));
    for (size_t k = 0; k < sizeof muts / sizeof muts[0]; k++) {
        for (size_t i = 0; i < d->nout; i++) mref[i] = NAN;
        kt_ref_hstu_fwd_ex(&d->p, &d->h, mref, muts[k].m);
        cmp_result m;
        compare_out(&d->p, &d->h, d->out, mref, d->nout, &m);
        printf("  reference with %-17s: %.2e = %.1fx tol -> %s\n", muts[k].name, m.ratio,
               m.ratio / tol, cmp_ok(&m, dt) ? "NOT DETECTED" : "detected");
        assert_false(cmp_ok(&m, dt));
    }
    free(mref);

    /* one element of seq 1 (row 50, head 1, d 7) moved by 3 tolerances */
    uint16_t *bad = kt_xmalloc(d->nout * sizeof(uint16_t));
    kt_hstu_seq s;
    assert_true(kt_ref_hstu_seq(&d->p, &d->h, 1, &s));
    double smax = 0;
    for (int row = 0; row < s.len_q; row++)
        for (int hh = 0; hh < d->p.num_heads; hh++)
            for (int dd = 0; dd < d->p.head_dim; dd++) {
                int64_t i = (s.q_start + row) * d->p.out_row_stride +
                            hh * d->p.out_head_stride + dd;
                smax = fmax(smax, fabs(d->ref[i]));
            }
    int64_t at = (s.q_start + 50) * d->p.out_row_stride + 1 * d->p.out_head_stride + 7;
    memcpy(bad, d->out, d->nout * sizeof(uint16_t));
    bad[at] = kt_f32_to_half(dt, (float)(d->ref[at] + 3 * tol * smax));
    compare_out(&d->p, &d->h, bad, d->ref, d->nout, &r);
    printf("  one element off by 3 tol: %.2e -> %s\n", r.ratio,
           cmp_ok(&r, dt) ? "NOT DETECTED" : "detected");
    assert_false(cmp_ok(&r, dt));
    /* one element left unwritten */
    memcpy(bad, d->out, d->nout * sizeof(uint16_t));
    bad[at] = 0xffff;
    compare_out(&d->p, &d->h, bad, d->ref, d->nout, &r);
    assert_int_equal(r.nonfinite, 1);
    assert_false(cmp_ok(&r, dt));
    /* one element written past the end */
    memcpy(bad, d->out, d->nout * sizeof(uint16_t));
    bad[d->nout - 1] = 0;
    compare_out(&d->p, &d->h, bad, d->ref, d->nout, &r);
    assert_int_equal(r.touched, 1);
    assert_false(cmp_ok(&r, dt));
    free(bad);
}

/* CPU: an ideal kernel (the reference rounded to the output type) passes and
 * every mutation / corruption fails, for both dtypes. */
static void test_ref_negative_controls(void **state) {
    (void)state;
    for (int t = 0; t < 4; t++) { /* fp16, bf16; then with the func mask */
        const int dt = t % 2 ? KILN_DTYPE_BF16 : KILN_DTYPE_FP16;
        kt_case c = t < 2 ? kt_neg_case(dt) : kt_neg_func_case(dt);
        cdata d;
        build_case(&c, NULL, 0, &d);
        for (size_t i = 0; i < d.nout; i++)
            if (!isnan(d.ref[i])) d.out[i] = kt_f32_to_half(c.dtype, (float)d.ref[i]);
        check_negative_controls(&d, "cpu rounded reference");
        free_case(&d);
    }
}

/* GPU: the same with the kernel's output. */
static void test_gpu_negative_controls(void **state) {
    (void)state;
    REQUIRE_GPU();
    for (int t = 0; t < 4; t++) { /* fp16, bf16; then with the func mask */
        const int dt = t % 2 ? KILN_DTYPE_BF16 : KILN_DTYPE_FP16;
        kt_case c = t < 2 ? kt_neg_case(dt) : kt_neg_func_case(dt);
        cdata d;
        char msg[600];
        build_case(&c, NULL, 0, &d);
        int st = launch_and_fetch(g_engine, &d, msg, sizeof msg);
        if (st != R_PASS) {
            free_case(&d);
            fail_msg("%s", msg);
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
    cdata d;
    char msg[600];
    build_case(&c, NULL, 0, &d);
    assert_int_equal(upload_case(&d, msg, sizeof msg), 0);
    d.p.batch = 0;
    kiln_status st = kiln_hstu_fwd(g_engine, &d.p, NULL);
    if (st != KILN_OK) fail_msg("batch 0: %s: %s", kiln_status_name(st), kiln_last_error());
    assert_int_equal(kt_gpu_sync(), 0);
    assert_int_equal(kt_gpu_download(d.out, d.dout, d.nout * 2), 0);
    for (size_t i = 0; i < d.nout; i++) assert_int_equal(d.out[i], 0xffff); /* nothing written */
    free_case(&d);
}

/* Offsets [0, 10, 4, 40, 50, 66] over 60 rows, max_seqlen 16: sequence 1 is
 * decreasing, 2 is longer than max_seqlen, 4 ends past total; 0 and 3 are
 * valid.  The invalid ones must be skipped (rows untouched), counted by the
 * debug checks, and the engine must keep working. */
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

    for (int pass = 0; pass < 2; pass++) { /* with and without debug checks */
        kiln_engine *eng = pass == 0 ? e : g_engine;
        kt_case c = kt_invalid_offsets_case();
        cdata d;
        char msg[600];
        build_case(&c, kt_invalid_offsets, 0, &d);
        assert_int_equal(d.p.total_q, 60);
        assert_int_equal(kt_ref_hstu_fwd(&d.p, &d.h, d.ref), 3); /* the reference agrees */
        int r = launch_and_fetch(eng, &d, msg, sizeof msg);
        if (r != R_PASS) {
            free_case(&d);
            fail_msg("%s", msg);
        }
        cmp_result cr;
        compare_out(&d.p, &d.h, d.out, d.ref, d.nout, &cr);
        printf("invalid offsets (%s): valid rows err %.2e, %lld unwritten, %lld written "
               "outside%s%s\n",
               pass == 0 ? "debug checks" : "plain", cr.ratio, (long long)cr.nonfinite,
               (long long)cr.touched, cmp_ok(&cr, c.dtype) ? "" : ": ", cmp_ok(&cr, c.dtype) ? "" : cr.where);
        assert_int_equal(cr.compared, 2 * 10 * 2 * 64); /* seqs 0 and 3 */
        assert_true(cmp_ok(&cr, c.dtype));
        free_case(&d);
        if (pass == 0) {
            st = kiln_engine_debug_report(e, &bad);
            if (st != KILN_OK)
                fail_msg("debug_report: %s: %s", kiln_status_name(st), kiln_last_error());
            printf("debug report: %lld invalid sequences (expected 3)\n", (long long)bad);
            assert_int_equal(bad, 3);
        }
    }

    /* the next valid call works and reports nothing */
    kt_case ok = kt_after_invalid_case();
    result res;
    run_case(e, &ok, 0, &res);
    if (res.status != R_PASS) fail_msg("valid call after invalid offsets: %s", res.msg);
    assert_int_equal(kiln_engine_debug_report(e, &bad), KILN_OK);
    assert_int_equal(bad, 0);
    assert_int_equal(kiln_engine_destroy(e), KILN_OK);
}

/* ------------------------------------------------------------------ bad arguments */

static void valid_fake_params(kiln_hstu_fwd_params *p) {
    assert_int_equal(kiln_hstu_fwd_params_init(p), KILN_OK);
    kt_fake_fwd_params(p);
    p->out = 0x7f0000000000ull + 0x400000; /* never dereferenced */
}

static void test_params_init_defaults(void **state) {
    (void)state;
    kiln_hstu_fwd_params p;
    memset(&p, 0x5a, sizeof p);
    assert_int_equal(kiln_hstu_fwd_params_init(&p), KILN_OK);
    assert_int_equal(p.struct_size, sizeof p);
    assert_int_equal(p.dtype, KILN_DTYPE_BF16);
    assert_int_equal(p.window_left, -1);
    assert_int_equal(p.window_right, -1);
    assert_true(p.alpha == 1.0f);
    assert_int_equal(p.target_group_size, 1);
    assert_int_equal(p.rab_heads, 1);
    assert_int_equal(p.batch, 0);
    assert_true(p.q == 0 && p.out == 0 && p.rab == 0 && p.num_targets == 0);
    assert_true(p.scaling_seqlen == 0.0f);
    assert_int_equal(p.is_delta_q, 0);
    assert_true(p.func == 0 && p.n_func == 0 && p.func_stride == 0);
    assert_int_equal(kiln_hstu_fwd_params_init(NULL), KILN_EBADARG);
}

enum {
    BAD_OUT_NULL, BAD_HEAD_DIM, BAD_NUM_HEADS, BAD_RAB_HEADS, BAD_CONTEXT_NO_CAUSAL,
    BAD_TARGETS_NO_CAUSAL, BAD_GROUP_ZERO, BAD_BATCH_BIG, BAD_BATCH_NEG, BAD_Q_MISALIGNED,
    BAD_OUT_MISALIGNED, BAD_DTYPE, BAD_STRUCT_SIZE, BAD_OFFSETS_NULL, BAD_FUNC_EVEN,
    BAD_FUNC_ZERO, BAD_FUNC_BIG, BAD_FUNC_MISALIGNED, BAD_FUNC_STRIDE, BAD_FUNC_STRIDE_BIG,
    BAD_FUNC_CAUSAL, BAD_FUNC_LOCAL, BAD_FUNC_CONTEXTS, BAD_FUNC_TARGETS, BAD_NFUNC_NO_FUNC,
    BAD_COUNT
};

static const struct {
    const char *what;
    const char *fields[4]; /* the message must name one of these */
} bad_cases[BAD_COUNT] = {
    [BAD_OUT_NULL] = {"out = 0", {"out"}},
    [BAD_HEAD_DIM] = {"head_dim = 100", {"head_dim"}},
    [BAD_NUM_HEADS] = {"num_heads = 0", {"num_heads"}},
    [BAD_RAB_HEADS] = {"rab_heads = 3 with num_heads = 4", {"rab_heads"}},
    [BAD_CONTEXT_NO_CAUSAL] = {"num_contexts without causal",
                               {"num_contexts", "window_right", "window_left", "causal"}},
    [BAD_TARGETS_NO_CAUSAL] = {"num_targets without causal",
                               {"num_targets", "window_right", "window_left", "causal"}},
    [BAD_GROUP_ZERO] = {"target_group_size = 0 with num_targets", {"target_group_size"}},
    [BAD_BATCH_BIG] = {"batch = 65536", {"batch"}},
    [BAD_BATCH_NEG] = {"batch = -1", {"batch"}},
    [BAD_Q_MISALIGNED] = {"q misaligned by 2 bytes", {"q"}},
    [BAD_OUT_MISALIGNED] = {"out misaligned by 8 bytes", {"out"}},
    [BAD_DTYPE] = {"dtype = 99", {"dtype"}},
    [BAD_STRUCT_SIZE] = {"struct_size = 0", {"struct_size"}},
    [BAD_OFFSETS_NULL] = {"seq_offsets_q = 0", {"seq_offsets_q"}},
    [BAD_FUNC_EVEN] = {"func with n_func = 2", {"n_func"}},
    [BAD_FUNC_ZERO] = {"func with n_func = 0", {"n_func"}},
    [BAD_FUNC_BIG] = {"func with n_func = 257", {"n_func"}},
    [BAD_FUNC_MISALIGNED] = {"func misaligned by 2 bytes", {"func"}},
    [BAD_FUNC_STRIDE] = {"func_stride = total_q - 1", {"func_stride"}},
    [BAD_FUNC_STRIDE_BIG] = {"func_stride = 2^31", {"func_stride"}},
    [BAD_FUNC_CAUSAL] = {"func with the causal window", {"func", "window_left", "window_right"}},
    [BAD_FUNC_LOCAL] = {"func with window (4, 4)", {"func", "window_left", "window_right"}},
    [BAD_FUNC_CONTEXTS] = {"func with num_contexts", {"num_contexts"}},
    [BAD_FUNC_TARGETS] = {"func with num_targets", {"num_targets"}},
    [BAD_NFUNC_NO_FUNC] = {"n_func = 3 without func", {"n_func", "func"}},
};

/* valid func params: no window, three values per row of (1, 3, total_q + 256) */
static void make_func(kiln_hstu_fwd_params *p) {
    p->window_left = p->window_right = -1;
    p->func = 0x7f0000b00000ull;
    p->n_func = 3;
    p->func_stride = p->total_q + 256;
}

static void make_bad(kiln_hstu_fwd_params *p, int which) {
    valid_fake_params(p);
    const uint64_t fake = 0x7f0000a00000ull;
    switch (which) {
    case BAD_OUT_NULL: p->out = 0; break;
    case BAD_HEAD_DIM: p->head_dim = 100; break;
    case BAD_NUM_HEADS: p->num_heads = 0; break;
    case BAD_RAB_HEADS:
        p->rab = fake;
        p->rab_heads = 3;
        p->rab_row_stride = 32;
        p->rab_head_stride = 32 * 32;
        p->rab_batch_stride = 3 * 32 * 32;
        break;
    case BAD_CONTEXT_NO_CAUSAL: p->window_right = -1; p->num_contexts = fake; break;
    case BAD_TARGETS_NO_CAUSAL: p->window_right = -1; p->num_targets = fake; break;
    case BAD_GROUP_ZERO: p->num_targets = fake; p->target_group_size = 0; break;
    case BAD_BATCH_BIG: p->batch = 65536; break;
    case BAD_BATCH_NEG: p->batch = -1; break;
    case BAD_Q_MISALIGNED: p->q += 2; break;
    case BAD_OUT_MISALIGNED: p->out += 8; break;
    case BAD_DTYPE: p->dtype = 99; break;
    case BAD_STRUCT_SIZE: p->struct_size = 0; break;
    case BAD_OFFSETS_NULL: p->seq_offsets_q = 0; break;
    case BAD_FUNC_EVEN: make_func(p); p->n_func = 2; break;
    case BAD_FUNC_ZERO: make_func(p); p->n_func = 0; break;
    case BAD_FUNC_BIG: make_func(p); p->n_func = KILN_HSTU_FUNC_MAX + 2; break;
    case BAD_FUNC_MISALIGNED: make_func(p); p->func += 2; break;
    case BAD_FUNC_STRIDE: make_func(p); p->func_stride = p->total_q - 1; break;
    case BAD_FUNC_STRIDE_BIG: make_func(p); p->func_stride = 1ll << 31; break;
    case BAD_FUNC_CAUSAL: make_func(p); p->window_right = 0; break;
    case BAD_FUNC_LOCAL: make_func(p); p->window_left = p->window_right = 4; break;
    case BAD_FUNC_CONTEXTS: make_func(p); p->num_contexts = fake; break;
    case BAD_FUNC_TARGETS: make_func(p); p->num_targets = fake; break;
    case BAD_NFUNC_NO_FUNC: make_func(p); p->func = 0; break;
    default: break;
    }
}

/* Runs with or without a GPU, on an engine that can never launch (no disk
 * cache, no compiling), so a wrongly accepted call cannot touch the fake
 * pointers: it fails with ENOTFOUND or ENODEV instead of EBADARG. */
static void test_bad_args(void **state) {
    (void)state;
    assert_non_null(g_nolaunch);
    kiln_hstu_fwd_params p;
    valid_fake_params(&p);
    kiln_status st = kiln_hstu_fwd(g_nolaunch, &p, NULL);
    printf("valid params on a no-compile engine: %s (%s)\n", kiln_status_name(st),
           kiln_last_error());
    assert_int_not_equal(st, KILN_OK);
    assert_int_not_equal(st, KILN_EBADARG); /* the base is valid */
    make_func(&p); /* and so is it with a func mask */
    st = kiln_hstu_fwd(g_nolaunch, &p, NULL);
    printf("valid func params on a no-compile engine: %s (%s)\n", kiln_status_name(st),
           kiln_last_error());
    assert_int_not_equal(st, KILN_OK);
    assert_int_not_equal(st, KILN_EBADARG);
    char key[KT_KEYLEN];
    assert_int_equal(kiln_hstu_fwd_key(&p, "sm_90a", key, sizeof key), KILN_OK);
    assert_string_equal(key, "hstu_fwd/sm_90a/bf16/d128/func"); /* never the Hopper kernel */
    p.is_delta_q = 1;
    assert_int_equal(kiln_hstu_fwd_key(&p, "sm_80", key, sizeof key), KILN_OK);
    assert_string_equal(key, "hstu_fwd/sm_80/bf16/d128/deltaq+func");
    /* fp8 has no func kernel: unsupported, not a bad argument */
    valid_fake_params(&p);
    make_func(&p);
    p.dtype = KILN_DTYPE_E4M3;
    p.out_dtype = KILN_DTYPE_BF16;
    st = kiln_hstu_fwd(g_nolaunch, &p, NULL);
    printf("%s %-42s -> %s \"%s\"\n",
           st == KILN_EUNSUPPORTED && kt_names_field(kiln_last_error(), "func") ? "ok  " : "FAIL",
           "e4m3 with func", kiln_status_name(st), kiln_last_error());
    assert_int_equal(st, KILN_EUNSUPPORTED);
    assert_true(kt_names_field(kiln_last_error(), "func"));
    valid_fake_params(&p);

    int wrong = 0;
    for (int w = 0; w < BAD_COUNT; w++) {
        make_bad(&p, w);
        st = kiln_hstu_fwd(g_nolaunch, &p, NULL);
        const char *msg = kiln_last_error();
        int named = 0;
        for (int f = 0; f < 4 && bad_cases[w].fields[f]; f++)
            named |= kt_names_field(msg, bad_cases[w].fields[f]);
        int ok = st == KILN_EBADARG && named;
        printf("%s %-42s -> %s \"%s\"\n", ok ? "ok  " : "FAIL", bad_cases[w].what,
               kiln_status_name(st), msg);
        wrong += !ok;
    }
    st = kiln_hstu_fwd(g_nolaunch, NULL, NULL);
    printf("%s %-42s -> %s\n", st == KILN_EBADARG ? "ok  " : "FAIL", "params = NULL",
           kiln_status_name(st));
    wrong += st != KILN_EBADARG;
    valid_fake_params(&p);
    st = kiln_hstu_fwd(NULL, &p, NULL);
    printf("%s %-42s -> %s\n", st == KILN_EBADARG ? "ok  " : "FAIL", "engine = NULL",
           kiln_status_name(st));
    wrong += st != KILN_EBADARG;
    assert_int_equal(wrong, 0);
}

/* ------------------------------------------------------------------ CPU: helpers */

static void test_half_conversions(void **state) {
    (void)state;
    assert_int_equal(kt_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(kt_f32_to_bf16(-2.0f), 0xc000);
    /* ties to even: 1 + 2^-8 lies halfway between 0x3f80 and 0x3f81 */
    assert_int_equal(kt_f32_to_bf16(1.00390625f), 0x3f80);
    assert_int_equal(kt_f32_to_bf16(1.01171875f), 0x3f82); /* 0x3f818000 -> even */
    assert_int_equal(kt_f32_to_bf16(INFINITY), 0x7f80);
    assert_true(isnan(kt_bf16_to_f32(kt_f32_to_bf16(NAN))));
    assert_int_equal(kt_f32_to_fp16(1.0f), 0x3c00);
    assert_int_equal(kt_f32_to_fp16(65504.0f), 0x7bff);
    assert_int_equal(kt_f32_to_fp16(65519.0f), 0x7bff);
    assert_int_equal(kt_f32_to_fp16(65520.0f), 0x7c00);
    assert_int_equal(kt_f32_to_fp16(ldexpf(1, -14)), 0x0400);
    assert_int_equal(kt_f32_to_fp16(ldexpf(1, -24)), 0x0001);
    assert_int_equal(kt_f32_to_fp16(ldexpf(1, -25)), 0x0000);        /* tie -> even 0 */
    assert_int_equal(kt_f32_to_fp16(ldexpf(3, -25)), 0x0002);        /* 1.5 ulp -> 2 */
    assert_int_equal(kt_f32_to_fp16(ldexpf(1, -25) * 1.0001f), 0x0001);
    assert_int_equal(kt_f32_to_fp16(-0.0f), 0x8000);
    assert_true(isnan(kt_fp16_to_f32(kt_f32_to_fp16(NAN))));
    /* every finite 16-bit value converts back to itself */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) != 0x7c00) assert_int_equal(kt_f32_to_fp16(kt_fp16_to_f32((uint16_t)h)), h);
        if ((h & 0x7f80) != 0x7f80) assert_int_equal(kt_f32_to_bf16(kt_bf16_to_f32((uint16_t)h)), h);
    }
#ifdef __FLT16_MANT_DIG__
    /* against the compiler's own round-to-nearest-even conversion */
    kt_rng r;
    kt_rng_seed(&r, 7);
    for (int i = 0; i < 2000000; i++) {
        uint32_t u = (uint32_t)kt_rng_u64(&r);
        if (i % 2) u = (u & 0x807fffffu) | ((uint32_t)kt_rng_int(&r, 100, 145) << 23);
        float f;
        memcpy(&f, &u, 4);
        if (isnan(f)) continue;
        _Float16 g = (_Float16)f;
        uint16_t want;
        memcpy(&want, &g, 2);
        if (kt_f32_to_fp16(f) != want) fail_msg("fp16(%a) = 0x%04x, want 0x%04x", (double)f, kt_f32_to_fp16(f), want);
    }
#endif
}

static void test_rng_and_arch(void **state) {
    (void)state;
    kt_rng a, b;
    kt_rng_seed(&a, 42);
    kt_rng_seed(&b, 42);
    for (int i = 0; i < 100; i++) assert_true(kt_rng_u64(&a) == kt_rng_u64(&b));
    for (int i = 0; i < 10000; i++) {
        int v = kt_rng_int(&a, -3, 4);
        assert_true(v >= -3 && v <= 4);
        double u = kt_rng_uniform(&a);
        assert_true(u >= 0 && u < 1);
    }
    static const struct { int cc; const char *arch; } m[] = {
        {80, "sm_80"}, {86, "sm_86"}, {89, "sm_89"}, {90, "sm_90a"}, {100, "sm_100a"}, {120, "sm_120"}};
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
        char buf[16];
        kt_gpu_arch_for_cc(m[i].cc, buf);
        assert_string_equal(buf, m[i].arch);
    }
    char buf[16];
    if (g_gpu_ok) {
        assert_int_equal(kt_gpu_arch(buf), 0);
        assert_true(strncmp(buf, "sm_", 3) == 0);
    } else {
        assert_true(g_why[0] != 0);
        assert_int_equal(kt_gpu_arch(buf), -1);
        assert_int_equal(kt_gpu_alloc(16), 0);
    }
}

/* ------------------------------------------------------------------ CPU: the reference */

/* One head, head_dim 1, q = k = v = 1: s = alpha * (1 + rab), so every output
 * is (number of valid keys) * silu(s) / scaling_seqlen. */
static void test_ref_closed_form(void **state) {
    (void)state;
    enum { L = 5, N = 8 };
    uint16_t ones[2 * L];
    for (int i = 0; i < 2 * L; i++) ones[i] = 0x3f80; /* bf16 1.0 */
    int32_t offs[2] = {0, L}, offq[2] = {0, 2};
    int32_t ctx[1] = {2}, tgt[1] = {2};
    kiln_hstu_fwd_params p;
    memset(&p, 0, sizeof p);
    p.dtype = KILN_DTYPE_BF16;
    p.head_dim = 1;
    p.num_heads = 1;
    p.batch = 1;
    p.total_q = p.total_k = L;
    p.q_row_stride = p.k_row_stride = p.v_row_stride = p.out_row_stride = 1;
    p.q_head_stride = p.k_head_stride = p.v_head_stride = p.out_head_stride = 1;
    p.max_seqlen_q = p.max_seqlen_k = N;
    p.window_left = p.window_right = -1;
    p.alpha = 1.0f;
    p.rab_heads = 1;
    p.target_group_size = 1;
    kt_hstu_host h = {.q = ones, .k = ones, .v = ones, .seq_offsets_q = offs};
    double out[L];
    const double w = kt_ref_silu(1.0) / N;

    kt_ref_hstu_fwd(&p, &h, out); /* no mask: all L keys */
    for (int r = 0; r < L; r++) assert_float_equal(out[r], L * w, 1e-15);
    p.window_right = 0; /* causal: r + 1 keys */
    kt_ref_hstu_fwd(&p, &h, out);
    for (int r = 0; r < L; r++) assert_float_equal(out[r], (r + 1) * w, 1e-15);
    /* rab = 1, alpha = 0.5: s = 0.5 * (1 + 1) = 1 again */
    uint16_t rab[N * N];
    for (int i = 0; i < N * N; i++) rab[i] = 0x3f80;
    h.rab = rab;
    p.rab_row_stride = N;
    p.rab_head_stride = p.rab_batch_stride = N * N;
    p.alpha = 0.5f;
    kt_ref_hstu_fwd(&p, &h, out);
    for (int r = 0; r < L; r++) assert_float_equal(out[r], (r + 1) * w, 1e-15);
    h.rab = NULL;
    p.alpha = 1.0f;
    /* explicit scaling_seqlen */
    p.scaling_seqlen = 2.0f;
    kt_ref_hstu_fwd(&p, &h, out);
    for (int r = 0; r < L; r++) assert_float_equal(out[r], (r + 1) * kt_ref_silu(1.0) / 2, 1e-15);
    p.scaling_seqlen = 0;
    /* context 2: rows 0, 1 see all 5 keys; the rest causal */
    h.num_contexts = ctx;
    kt_ref_hstu_fwd(&p, &h, out);
    static const int nctx[L] = {5, 5, 3, 4, 5};
    for (int r = 0; r < L; r++) assert_float_equal(out[r], nctx[r] * w, 1e-15);
    /* + 2 targets, group 1: history ends at 3; context rows see keys 0..2,
     * targets see 0..2 and themselves */
    h.num_targets = tgt;
    kt_ref_hstu_fwd(&p, &h, out);
    static const int nct[L] = {3, 3, 3, 4, 4};
    for (int r = 0; r < L; r++) assert_float_equal(out[r], nct[r] * w, 1e-15);
    h.num_contexts = h.num_targets = NULL;
    /* delta_q: 2 queries at positions 3 and 4 of 5 keys, causal */
    p.is_delta_q = 1;
    p.total_q = 2;
    h.seq_offsets_q = offq;
    h.seq_offsets_k = offs;
    for (int r = 0; r < L; r++) out[r] = -1;
    kt_ref_hstu_fwd(&p, &h, out);
    assert_float_equal(out[0], 4 * w, 1e-15);
    assert_float_equal(out[1], 5 * w, 1e-15);
    assert_true(out[2] == -1); /* untouched */
}

/* func: the same closed form, each row seeing its own key intervals;
 * empty, overlapping, negative, past-the-end and extreme values. */
static void test_ref_func(void **state) {
    (void)state;
    enum { L = 6, NF = 3, ST = L + 2 };
    uint16_t ones[L];
    for (int i = 0; i < L; i++) ones[i] = 0x3f80;
    int32_t offs[2] = {0, L};
    /* rows (F0, F1, F2) -> [0, F0) U [F1, F2) */
    static const int32_t rows[L][NF] = {
        {2, 4, 6},                          /* 0 1 . . 4 5: 4 keys */
        {0, 3, 2},                          /* empty, empty: 0 */
        {-5, 1, 100},                       /* 1..5: 5 */
        {7, 0, 0},                          /* all 6 */
        {1, 0, 3},                          /* overlapping: 0 1 2: 3 */
        {INT32_MIN, INT32_MAX, INT32_MAX}}; /* 0 */
    static const int want[L] = {4, 0, 5, 6, 3, 0};
    int32_t func[NF * ST];
    for (int i = 0; i < NF * ST; i++) func[i] = 1000; /* padding: never read */
    for (int r = 0; r < L; r++)
        for (int f = 0; f < NF; f++) func[f * ST + r] = rows[r][f];
    kiln_hstu_fwd_params p;
    memset(&p, 0, sizeof p);
    p.dtype = KILN_DTYPE_BF16;
    p.head_dim = p.num_heads = p.batch = 1;
    p.total_q = p.total_k = L;
    p.q_row_stride = p.k_row_stride = p.v_row_stride = p.out_row_stride = 1;
    p.q_head_stride = p.k_head_stride = p.v_head_stride = p.out_head_stride = 1;
    p.max_seqlen_q = p.max_seqlen_k = L;
    p.window_left = p.window_right = -1;
    p.alpha = 1.0f;
    p.rab_heads = p.target_group_size = 1;
    p.n_func = NF;
    p.func_stride = ST;
    kt_hstu_host h = {.q = ones, .k = ones, .v = ones, .seq_offsets_q = offs, .func = func};
    double out[L];
    const double w = kt_ref_silu(1.0) / L;
    kt_ref_hstu_fwd(&p, &h, out);
    for (int r = 0; r < L; r++) assert_float_equal(out[r], want[r] * w, 1e-15);
    /* n_func 1: only [0, F0) */
    p.n_func = 1;
    kt_ref_hstu_fwd(&p, &h, out);
    static const int want1[L] = {2, 0, 0, 6, 1, 0};
    for (int r = 0; r < L; r++) assert_float_equal(out[r], want1[r] * w, 1e-15);
    p.n_func = NF;
    /* the window is not looked at with func */
    p.window_right = 0;
    kt_ref_hstu_fwd(&p, &h, out);
    for (int r = 0; r < L; r++) assert_float_equal(out[r], want[r] * w, 1e-15);
    p.window_right = -1;
    /* the mutations */
    kt_hstu_seq sq;
    assert_int_equal(kt_ref_hstu_seq(&p, &h, 0, &sq), 1);
    assert_int_equal(kt_ref_hstu_pair(&p, &h, &sq, 0, 2, KT_REF_EXACT), 0);
    assert_int_equal(kt_ref_hstu_pair(&p, &h, &sq, 0, 2, KT_REF_FUNC_HI_PLUS1), 1);
    assert_int_equal(kt_ref_hstu_pair(&p, &h, &sq, 3, 3, KT_REF_DROP_DIAG), 0);
    assert_int_equal(kt_ref_hstu_pair(&p, &h, &sq, 3, 5, KT_REF_DROP_LAST_KEY), 0);
    assert_int_equal(kt_ref_hstu_pair(&p, &h, &sq, 5, 0, KT_REF_FUNC_HI_PLUS1), 0);
    /* delta_q: 2 queries of 6 keys; the intervals are those of their global
     * rows 0 and 1, their rab rows (positions) 4 and 5 */
    int32_t offq[2] = {0, 2};
    p.is_delta_q = 1;
    p.total_q = 2;
    h.seq_offsets_q = offq;
    h.seq_offsets_k = offs;
    for (int r = 0; r < L; r++) out[r] = -1;
    kt_ref_hstu_fwd(&p, &h, out);
    assert_float_equal(out[0], 4 * w, 1e-15);
    assert_float_equal(out[1], 0, 1e-15);
    assert_true(out[2] == -1);
}

/* Mask matrices written out by hand (rows i, columns j; 1 = valid). */
static void check_mask(int L, int c, int t, int wl, int wr, int g, const char *const *rows) {
    for (int i = 0; i < L; i++)
        for (int j = 0; j < L; j++) {
            int want = rows[i][j] == '1';
            int got = kt_ref_hstu_valid(i, j, L, c, t, wl, wr, g, KT_REF_EXACT);
            if (want != got)
                fail_msg("L=%d c=%d t=%d w=(%d,%d) g=%d: (%d,%d) is %d, want %d", L, c, t, wl,
                         wr, g, i, j, got, want);
        }
}

static void test_ref_masks(void **state) {
    (void)state;
    /* context 2, targets 3 in groups of 2, history end 5 */
    check_mask(8, 2, 3, -1, 0, 2,
               (const char *const[]){"11111000", "11111000", "11100000", "11110000",
                                     "11111000", "11111100", "11111110", "11111001"});
    /* targets 3, group 1: each target sees only itself among targets */
    check_mask(6, 0, 3, -1, 0, 1,
               (const char *const[]){"100000", "110000", "111000", "111100", "111010",
                                     "111001"});
    /* local (2, 1) */
    check_mask(6, 0, 0, 2, 1, 1,
               (const char *const[]){"110000", "111000", "111100", "011110", "001111",
                                     "000111"});
    /* local (1, 0) = causal + local */
    check_mask(4, 0, 0, 1, 0, 1, (const char *const[]){"1000", "1100", "0110", "0011"});
    /* (-1, 2): right bound only; (1, -1): left bound only */
    check_mask(4, 0, 0, -1, 2, 1, (const char *const[]){"1110", "1111", "1111", "1111"});
    check_mask(4, 0, 0, 1, -1, 1, (const char *const[]){"1111", "1111", "0111", "0011"});
    /* no mask */
    check_mask(3, 0, 0, -1, -1, 1, (const char *const[]){"111", "111", "111"});
    /* the mutations change what they say */
    assert_int_equal(kt_ref_hstu_valid(2, 2, 4, 0, 0, -1, 0, 1, KT_REF_DROP_DIAG), 0);
    assert_int_equal(kt_ref_hstu_valid(3, 3, 4, 0, 0, -1, 0, 1, KT_REF_DROP_LAST_KEY), 0);
    assert_int_equal(kt_ref_hstu_valid(7, 6, 8, 0, 3, -1, 0, 2, KT_REF_TARGET_GROUP_PLUS1), 1);
}

/* The same logical tensors in four layouts give the same reference; rab is
 * read as head h % rab_heads; invalid offsets are classified. */
static void test_ref_layouts(void **state) {
    (void)state;
    kt_case c = kt_layouts_case();
    cdata base;
    build_case(&c, NULL, 0, &base);
    for (int l = 1; l < KT_L_COUNT; l++) {
        c.layout = l;
        cdata d;
        build_case(&c, NULL, 0, &d);
        for (int64_t row = 0; row < base.p.total_q - c.extra_rows; row++)
            for (int hh = 0; hh < c.H; hh++)
                for (int dd = 0; dd < c.D; dd++) {
                    double a = base.ref[row * base.p.out_row_stride + hh * base.p.out_head_stride + dd];
                    double b = d.ref[row * d.p.out_row_stride + hh * d.p.out_head_stride + dd];
                    if (a != b) fail_msg("%s: row %lld head %d d %d: %g vs %g", kt_layout_name[l], (long long)row, hh, dd, a, b);
                }
        free_case(&d);
    }
    free_case(&base);

    /* rab heads: with head 1 a copy of head 0, rab_heads 2 == rab_heads 1 */
    c.layout = KT_L_CONTIG;
    c.rab_heads = 2;
    cdata d;
    build_case(&c, NULL, 0, &d);
    for (int b = 0; b < c.B; b++)
        memcpy(d.in.brab + b * d.p.rab_batch_stride + d.p.rab_head_stride,
               d.in.brab + b * d.p.rab_batch_stride, (size_t)d.p.rab_head_stride * 2);
    double *r2 = kt_xmalloc(d.nout * sizeof(double)), *r1 = kt_xmalloc(d.nout * sizeof(double));
    for (size_t i = 0; i < d.nout; i++) r1[i] = r2[i] = NAN;
    kt_ref_hstu_fwd(&d.p, &d.h, r2);
    d.p.rab_heads = 1;
    kt_ref_hstu_fwd(&d.p, &d.h, r1);
    for (int64_t i = 0; i < (int64_t)d.nout - KT_GUARD; i++) assert_true(r1[i] == r2[i] || (isnan(r1[i]) && isnan(r2[i])));
    /* and rab matters */
    d.h.rab = NULL;
    kt_ref_hstu_fwd(&d.p, &d.h, r1);
    assert_true(r1[0] != r2[0]);
    free(r1);
    free(r2);
    free_case(&d);
}

static void test_ref_sequences(void **state) {
    (void)state;
    kiln_hstu_fwd_params p;
    memset(&p, 0, sizeof p);
    p.batch = 6;
    p.total_q = p.total_k = 60;
    p.max_seqlen_q = p.max_seqlen_k = 16;
    p.offsets_type = KILN_INDEX_INT64;
    static const int64_t offs[] = {0, 10, 4, 40, 50, 66, -1};
    int32_t ctx[6] = {20, -3, 0, 4, 0, 0}, tgt[6] = {5, 0, 0, 9, 0, 0};
    kt_hstu_host h = {.seq_offsets_q = offs, .num_contexts = ctx, .num_targets = tgt};
    kt_hstu_seq s;
    assert_int_equal(kt_ref_hstu_seq(&p, &h, 0, &s), 1);
    assert_int_equal(s.len_q, 10);
    assert_int_equal(s.contexts, 10); /* clamped to L */
    assert_int_equal(s.targets, 0);   /* clamped to L - c */
    assert_int_equal(kt_ref_hstu_seq(&p, &h, 1, &s), 0); /* decreasing */
    assert_int_equal(kt_ref_hstu_seq(&p, &h, 2, &s), 0); /* 36 > max_seqlen */
    assert_int_equal(kt_ref_hstu_seq(&p, &h, 3, &s), 1);
    assert_int_equal(s.contexts, 4);
    assert_int_equal(s.targets, 6);                     /* 10 - 4 */
    assert_int_equal(kt_ref_hstu_seq(&p, &h, 4, &s), 0); /* past total */
    assert_int_equal(kt_ref_hstu_seq(&p, &h, 5, &s), 0); /* negative end */
    /* delta_q: len_q <= len_k, query 0 at position len_k - len_q */
    static const int32_t oq[] = {0, 3, 3}, ok[] = {0, 10, 12};
    p.offsets_type = KILN_INDEX_INT32;
    p.batch = 2;
    p.is_delta_q = 1;
    kt_hstu_host h2 = {.seq_offsets_q = oq, .seq_offsets_k = ok};
    assert_int_equal(kt_ref_hstu_seq(&p, &h2, 0, &s), 1);
    assert_int_equal(s.offset, 7);
    assert_int_equal(kt_ref_hstu_seq(&p, &h2, 1, &s), 1);
    assert_int_equal(s.len_q, 0);
    assert_int_equal(s.len_k, 2);
    p.is_delta_q = 0; /* len_q != len_k without delta_q */
    assert_int_equal(kt_ref_hstu_seq(&p, &h2, 0, &s), 0);
}

/* ------------------------------------------------------------------ main */

static int setup(void **state) {
    (void)state;
    return kt_open_engines(&g_gpu_ok, g_why, sizeof g_why, &g_engine, &g_nolaunch);
}

static int teardown(void **state) {
    (void)state;
    kiln_engine_destroy(g_engine);
    kiln_engine_destroy(g_nolaunch);
    printf("hstu_fwd gpu: %d cases, %d passed, %d failed, %d skipped, tolerance bf16 %.0e, "
           "fp16 %.0e (max|out-ref| per sequence <= tol * max|ref| of the sequence, "
           "floor %.0e * max|ref| of the case)%s%s\n",
           g_cases, g_passed, g_failed, g_skipped, TOL_BF16, TOL_FP16, SCALE_FLOOR,
           g_gpu_ok ? "" : "; GPU tests skipped: ", g_gpu_ok ? "" : g_why);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_half_conversions),
        cmocka_unit_test(test_rng_and_arch),
        cmocka_unit_test(test_ref_closed_form),
        cmocka_unit_test(test_ref_masks),
        cmocka_unit_test(test_ref_func),
        cmocka_unit_test(test_ref_sequences),
        cmocka_unit_test(test_ref_layouts),
        cmocka_unit_test(test_ref_negative_controls),
        cmocka_unit_test(test_sweep_dry_run),
        cmocka_unit_test(test_params_init_defaults),
        cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_gpu_batch0),
        cmocka_unit_test(test_gpu_sweep),
        cmocka_unit_test(test_gpu_negative_controls),
        cmocka_unit_test(test_gpu_invalid_offsets),
    };
    return cmocka_run_group_tests_name("hstu_gpu", tests, setup, teardown);
}
