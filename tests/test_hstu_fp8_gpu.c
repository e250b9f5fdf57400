/* test_hstu_fp8_gpu.c -- fp8 (e4m3) HSTU forward (kiln_hstu_fwd with
 * dtype KILN_DTYPE_E4M3) on the GPU against double-precision CPU references;
 * its argument checks (no GPU needed); the e4m3 codec and the tolerances on
 * the CPU.
 *
 * Two kernels serve fp8: on sm_90 the fp8 wgmma kernel (P rounded to e4m3,
 * checked as below), elsewhere and under $KILN_FWD_IMPL=mma the portable
 * one (e4m3 widened to 16 bits as loaded, P in 16 bits: checked against the
 * exact reference with the 16-bit forward's tolerances, see portable_run);
 * so is the case whose V is head-major (v-head-major: no TMA map of it, so
 * the portable kernel serves it on sm_90a too; P rounded to e4m3 would miss
 * the 16-bit tolerance).  Without a GPU every GPU test prints "skipped:
 * <why>" and calls skip().
 *
 * References.  Both read the e4m3 inputs exactly (decoded, times their
 * descale factors) and compute in double:
 *   exact:     out_i = sum_j silu(s_ij) / scaling * v_j, SPEC.md section 1;
 *   rounded:   the same with silu(s_ij) rounded to e4m3 (round to nearest
 *              even, saturating at 448), which is what the kernel feeds its
 *              second product.
 * Tolerances, per valid sequence b, relative to
 *   scale_b = max(max |ref| over b, 1e-2 * max |ref| over the case):
 *   - against the rounded reference: TOL_ROUNDED = 4e-2 (bf16 and fp16
 *     out).  What remains is the out rounding (2^-9 / 2^-12 relative) and
 *     the kernel's fp32 SiLU (tanh.approx, ~2^-11) landing on the other
 *     side of an e4m3 rounding boundary for a few P values (a flip costs one
 *     e4m3 step, 2^-3 relative, of one term out of the row's sum).  Rows
 *     with few keys (a short local window, a sequence of 1) do not average
 *     flips out: on the H100 one such fp16 case came out at 3.0e-2, so the
 *     output dtype's rounding does not set this bound and both share it;
 *   - against the exact reference: TOL_EXACT = 0.12, the quantization of P
 *     itself (up to 2^-4 relative per P value).  test_rounding_error_bound
 *     measures this on the CPU for every case (rounded vs exact reference)
 *     and requires at most 2/3 of it.
 * Negative controls: the rounded reference with the diagonal dropped, and
 * with descale_v off by 6%, must fail TOL_ROUNDED for the kernel's output
 * (GPU) and for the rounded reference itself (CPU).  Outputs are poisoned
 * (0xFFFF) first; every element outside the valid rows must stay poisoned.
 *
 * Environment: KILN_TEST_SEED (default 20261124), KILN_TEST_FILTER (run only
 * cases whose description contains it), KILN_TEST_NO_GPU=1.
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
#include "util_case.h"
#include "util_gpu.h"

#define TOL_ROUNDED_BF16 4e-2
#define TOL_ROUNDED_FP16 4e-2
#define TOL_EXACT 0.12
#define SCALE_FLOOR 1e-2
#define MAXB 6

static double tol_rounded(int out_dtype)
{
    return out_dtype == KILN_DTYPE_FP16 ? TOL_ROUNDED_FP16 : TOL_ROUNDED_BF16;
}

/* ------------------------------------------------------------------ e4m3 */

static double e4m3_to_double(uint8_t b)
{
    int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
    if (e == 15 && m == 7) return NAN;
    double v = e == 0 ? ldexp((double)m, -9) : ldexp(1.0 + m / 8.0, e - 7);
    return s ? -v : v;
}

/* Round to nearest even, saturating to +-448 (cvt.rn.satfinite). */
static uint8_t double_to_e4m3(double x)
{
    if (isnan(x)) return 0x7f;
    uint8_t s = x < 0 ? 0x80 : 0;
    double a = fabs(x);
    if (a >= 448) return s | 0x7e;
    if (a < ldexp(1, -6)) { /* subnormal: multiples of 2^-9 */
        double m = nearbyint(ldexp(a, 9));
        return s | (uint8_t)m; /* m == 8 is 2^-6, the first normal: code 0x08 */
    }
    int e;
    double f = frexp(a, &e); /* a = f 2^e, f in [0.5, 1) */
    e -= 1;                  /* a = (2f) 2^e, 2f in [1, 2) */
    double m = nearbyint((2 * f - 1) * 8);
    if (m == 8) {
        m = 0;
        e++;
    }
    if (e > 8 || (e == 8 && m > 6)) return s | 0x7e;
    return s | (uint8_t)((e + 7) << 3) | (uint8_t)m;
}

static double round_e4m3(double x) { return e4m3_to_double(double_to_e4m3(x)); }

/* ------------------------------------------------------------------ cases */

enum { F_NONE, F_CAUSAL, F_LOCAL, F_CAUSAL_LOCAL, F_CONTEXT, F_TARGET, F_CTX_TGT, F_DELTA,
       F_COUNT };
static const char *const fam_name[F_COUNT] = {"none",   "causal", "local",   "causal+local",
                                              "context", "target", "ctx+tgt", "deltaq"};

typedef struct fcase {
    char label[40];
    int fam, D, H, B, out_dtype, rab, pad, i64;
    int len_q[MAXB], len_k[MAXB];
    int ctx[MAXB], tgt[MAXB], group, wl, wr;
    int msq_extra;
    int saturates; /* P beyond 448 on purpose: no comparison with the exact reference */
    float alpha, scaling;
    float dq, dk, dv; /* descales; 0: pass a NULL pointer (1.0) */
    int ds;           /* descale layout: 0 one per tensor, 3 per (sequence, head), 4 per sequence */
    int nan_v;        /* 1 + a sequence (no query rows) whose V is all NaN: the tiles of the one
                         before that run past its end must not carry it into P V; 0: none */
    int v_hm;         /* V head-major (heads not side by side in a row: no TMA map of it, so the
                         Hopper kernel must give way to the portable one), q and k as usual */
    uint64_t seed;
} fcase;

/* rab rows: max_seqlen_k apart in padded cases (NVIDIA's layout; not
 * 16-byte aligned for most lengths, so the Hopper kernel gives way to the
 * portable one), else padded to 8 elements (its rab tiles by TMA). */
static int64_t rab_row_stride(const fcase *c, int msk)
{
    return c->pad ? msk : (msk + 7) / 8 * 8;
}

static void describe(const fcase *c, char *buf, size_t n)
{
    int len = snprintf(buf, n, "%s e4m3->%s d%d %s H%d B%d%s%s%s%s lens", c->label,
                       c->out_dtype == KILN_DTYPE_FP16 ? "fp16" : "bf16", c->D,
                       fam_name[c->fam], c->H, c->B, c->rab ? " rab" : "",
                       c->pad ? " padded" : "", c->i64 ? " i64" : "",
                       c->ds == 3 ? " ds(b,h)" : c->ds == 4 ? " ds(b)" : "");
    for (int b = 0; b < c->B && len > 0 && (size_t)len < n; b++)
        len += snprintf(buf + len, n - (size_t)len, " %d", c->len_q[b]);
}

typedef struct fdata {
    kiln_hstu_fwd_params p;
    uint8_t *q, *k, *v;              /* e4m3, params' strides */
    uint16_t *rab;                   /* out dtype */
    int64_t offq[MAXB + 1], offk[MAXB + 1];
    int32_t offq32[MAXB + 1], offk32[MAXB + 1];
    int32_t ctx[MAXB], tgt[MAXB];
    size_t nq, nk, nv, nrab, nout;
    uint16_t *out;                   /* host copy of out */
    double *ref, *ref_exact;         /* out's layout; NaN where not written */
} fdata;

enum { M_NONE, M_DROP_DIAG, M_DESCALE_V, M_DESCALE_FLAT };

/* Factor of sequence b, head h on the case's descales: with ds 3 or 4 they
 * differ between sequences (and heads), so a kernel reading element 0 for
 * every CTA fails (M_DESCALE_FLAT is that kernel). */
static double ds_factor(const fcase *c, int b, int h, int mutation)
{
    if (mutation == M_DESCALE_FLAT) return 1;
    if (c->ds == 3) return 1 + 0.25 * ((b * c->H + h) % 3);
    if (c->ds == 4) return 1 + 0.25 * (b % 3);
    return 1;
}

/* Element strides of the descale arrays: (H + 1, 1) when padded, to
 * exercise a batch stride other than H. */
static void ds_strides(const fcase *c, int64_t *sb, int64_t *sh)
{
    *sb = c->ds == 3 ? c->H + (c->pad ? 1 : 0) : c->ds == 4 ? 1 : 0;
    *sh = c->ds == 3 ? 1 : 0;
}

static int valid_pair(const fcase *c, int i, int j, int L, int cc, int t, int mutation)
{
    if (j < 0 || j >= L) return 0;
    int ok = (c->wl < 0 || j >= i - c->wl) && (c->wr < 0 || j <= i + c->wr);
    if (c->wr != 0) return ok;
    int hist_end = L - t;
    if (t > 0 && j >= hist_end) {
        if (i < hist_end) return 0;
        int g = c->group < 1 ? 1 : c->group;
        return ok && (j - hist_end) / g == (i - hist_end) / g && j <= i;
    }
    if (i < cc && j < hist_end) return 1;
    return ok;
}

/* The references for every valid sequence, in one pass: ref (P rounded to
 * e4m3), exact (P exact) and nodiag (ref without the pair (i, i): a
 * negative control).  Any of them may be NULL. */
static void reference(const fcase *c, const fdata *d, double *ref, double *exact,
                      double *nodiag, int mutation)
{
    const kiln_hstu_fwd_params *p = &d->p;
    const int D = c->D, H = c->H;
    const double dq0 = c->dq ? c->dq : 1, dk0 = c->dk ? c->dk : 1;
    const double dv0 = c->dv ? c->dv : 1;
    const double scaling = c->scaling > 0 ? c->scaling : (double)p->max_seqlen_q;
    double *acc = kt_xmalloc(sizeof(double) * (size_t)D * 3), *qd = kt_xmalloc(sizeof(double) * (size_t)D);
    for (int b = 0; b < c->B; b++) {
        const int L = c->len_k[b], lq = c->len_q[b], off = L - lq;
        int cc = c->ctx[b] < 0 ? 0 : c->ctx[b] > L ? L : c->ctx[b];
        int t = c->tgt[b] < 0 ? 0 : c->tgt[b] > L - cc ? L - cc : c->tgt[b];
        if (c->fam != F_CONTEXT && c->fam != F_CTX_TGT) cc = 0;
        if (c->fam != F_TARGET && c->fam != F_CTX_TGT) t = 0;
        for (int h = 0; h < H; h++)
            for (int r = 0; r < lq; r++) {
                const int i = r + off;
                const double f = ds_factor(c, b, h, mutation);
                const double dq = c->dq ? dq0 * f : 1, dk = c->dk ? dk0 * f : 1;
                const double dv = c->dv ? dv0 * f : 1;
                const uint8_t *qr = d->q + (d->offq[b] + r) * p->q_row_stride + h * p->q_head_stride;
                for (int e = 0; e < D; e++) qd[e] = e4m3_to_double(qr[e]);
                for (int e = 0; e < 3 * D; e++) acc[e] = 0;
                for (int j = 0; j < L; j++) {
                    if (!valid_pair(c, i, j, L, cc, t, M_NONE)) continue;
                    const uint8_t *kr = d->k + (d->offk[b] + j) * p->k_row_stride + h * p->k_head_stride;
                    const uint8_t *vr = d->v + (d->offk[b] + j) * p->v_row_stride + h * p->v_head_stride;
                    double dot = 0;
                    for (int e = 0; e < D; e++) dot += qd[e] * e4m3_to_double(kr[e]);
                    dot *= dq * dk;
                    if (c->rab)
                        dot += kt_half_to_f32(c->out_dtype,
                                              d->rab[(int64_t)b * p->rab_batch_stride +
                                                     (int64_t)(h % p->rab_heads) * p->rab_head_stride +
                                                     (int64_t)i * p->rab_row_stride + j]);
                    const double s = (double)c->alpha * dot;
                    const double w = s / (1 + exp(-s)) * dv / scaling;
                    const double wr = round_e4m3(s / (1 + exp(-s))) * dv / scaling;
                    const double wn = j == i ? 0 : wr;
                    for (int e = 0; e < D; e++) {
                        const double x = e4m3_to_double(vr[e]);
                        acc[e] += wr * x;
                        acc[D + e] += w * x;
                        acc[2 * D + e] += wn * x;
                    }
                }
                const int64_t o = (d->offq[b] + r) * p->out_row_stride + h * p->out_head_stride;
                for (int e = 0; e < D; e++) {
                    if (ref) ref[o + e] = acc[e];
                    if (exact) exact[o + e] = acc[D + e];
                    if (nodiag) nodiag[o + e] = acc[2 * D + e];
                }
            }
    }
    free(acc);
    free(qd);
}

/* Negative control mu of the rounded reference into m. */
static void mutated(const fcase *c, const fdata *d, double *m, int mu)
{
    for (size_t k = 0; k < d->nout; k++) m[k] = NAN;
    if (mu == M_DROP_DIAG) {
        reference(c, d, NULL, NULL, m, M_NONE);
    } else if (mu == M_DESCALE_FLAT) {
        reference(c, d, m, NULL, NULL, M_DESCALE_FLAT);
    } else { /* descale_v 6% off */
        for (size_t k = 0; k < d->nout; k++) m[k] = d->ref[k] * 1.06;
    }
}

static void fill_e4m3(kt_rng *r, uint8_t *buf, size_t n, double amp)
{
    for (size_t i = 0; i < n; i++) buf[i] = double_to_e4m3(kt_rng_range(r, -amp, amp));
}

/* Params with fake device pointers (0x7f...: never dereferenced) and the
 * host data; the reference too unless params_only. */
static void build(const fcase *c, int params_only, fdata *d)
{
    memset(d, 0, sizeof *d);
    kt_rng r;
    kt_rng_seed(&r, c->seed);
    const int D = c->D, H = c->H;
    int64_t tq = 0, tk = 0;
    int msq = 0, msk = 0;
    d->offq[0] = d->offk[0] = 0;
    for (int b = 0; b < c->B; b++) {
        tq += c->len_q[b];
        tk += c->len_k[b];
        d->offq[b + 1] = tq;
        d->offk[b + 1] = tk;
        if (c->len_q[b] > msq) msq = c->len_q[b];
        if (c->len_k[b] > msk) msk = c->len_k[b];
    }
    for (int b = 0; b <= c->B; b++) {
        d->offq32[b] = (int32_t)d->offq[b];
        d->offk32[b] = (int32_t)d->offk[b];
    }
    for (int b = 0; b < c->B; b++) {
        d->ctx[b] = c->ctx[b];
        d->tgt[b] = c->tgt[b];
    }
    msq += c->msq_extra;
    msk += c->msq_extra;
    if (c->fam != F_DELTA) msk = msq;
    kiln_hstu_fwd_params *p = &d->p;
    kiln_hstu_fwd_params_init(p);
    p->dtype = KILN_DTYPE_E4M3;
    p->out_dtype = c->out_dtype;
    p->head_dim = D;
    p->num_heads = H;
    p->batch = c->B;
    p->total_q = tq;
    p->total_k = tk;
    const int64_t hs = c->pad ? D + 16 : D, rs = c->pad ? H * (D + 16) + 32 : H * D;
    p->q_row_stride = p->k_row_stride = p->v_row_stride = rs;
    p->q_head_stride = p->k_head_stride = p->v_head_stride = hs;
    if (c->v_hm) {
        p->v_row_stride = D;
        p->v_head_stride = (tk + 1) * D;
    }
    p->out_row_stride = c->pad ? H * (D + 8) + 8 : H * D;
    p->out_head_stride = c->pad ? D + 8 : D;
    p->offsets_type = c->i64 ? KILN_INDEX_INT64 : KILN_INDEX_INT32;
    p->max_seqlen_q = msq;
    p->max_seqlen_k = msk;
    p->window_left = c->wl;
    p->window_right = c->wr;
    p->target_group_size = c->group;
    p->alpha = c->alpha;
    p->scaling_seqlen = c->scaling;
    p->is_delta_q = c->fam == F_DELTA;
    uint64_t fake = 0x7f0000000000ull;
    p->q = fake;
    p->k = fake + 0x10000000;
    p->v = fake + 0x20000000;
    p->out = fake + 0x30000000;
    p->seq_offsets_q = fake + 0x40000000;
    p->seq_offsets_k = c->fam == F_DELTA ? fake + 0x40001000 : 0;
    if (c->fam == F_CONTEXT || c->fam == F_CTX_TGT) p->num_contexts = fake + 0x40002000;
    if (c->fam == F_TARGET || c->fam == F_CTX_TGT) p->num_targets = fake + 0x40003000;
    if (c->dq) p->descale_q = fake + 0x40004000;
    if (c->dk) p->descale_k = fake + 0x40004010;
    if (c->dv) p->descale_v = fake + 0x40004020;
    ds_strides(c, &p->descale_batch_stride, &p->descale_head_stride);
    if (c->rab) {
        p->rab = fake + 0x50000000;
        p->rab_heads = c->rab;
        p->rab_row_stride = rab_row_stride(c, msk);
        p->rab_head_stride = (int64_t)msk * p->rab_row_stride;
        p->rab_batch_stride = (int64_t)c->rab * p->rab_head_stride;
    }
    if (params_only) return;

    d->nq = kt_span(tq, rs, hs, H, D) + 64;
    d->nk = kt_span(tk, rs, hs, H, D) + 64;
    d->q = kt_xmalloc(d->nq);
    d->k = kt_xmalloc(d->nk);
    d->nv = kt_span(tk, p->v_row_stride, p->v_head_stride, H, D) + 64;
    d->v = kt_xmalloc(d->nv);
    /* q and k at +-8 with descales near 1/4: q . k of a few units times
     * alpha = 1/sqrt(D) gives s over the whole interesting range of silu */
    fill_e4m3(&r, d->q, d->nq, 8);
    fill_e4m3(&r, d->k, d->nk, 8);
    fill_e4m3(&r, d->v, d->nv, 4);
    if (c->nan_v)
        for (int64_t j = d->offk[c->nan_v - 1]; j < d->offk[c->nan_v]; j++)
            for (int h = 0; h < H; h++)
                memset(d->v + j * p->v_row_stride + h * p->v_head_stride, 0x7f, (size_t)D);
    if (c->rab) {
        d->nrab = (size_t)c->B * (size_t)p->rab_batch_stride + 64;
        d->rab = kt_xmalloc(d->nrab * 2);
        for (size_t i = 0; i < d->nrab; i++)
            d->rab[i] = kt_f32_to_half(c->out_dtype, (float)kt_rng_range(&r, -1, 1));
    }
    d->nout = kt_span(tq, p->out_row_stride, p->out_head_stride, H, D) + 64;
    d->out = kt_alloc_poison(d->nout);
    d->ref = kt_xmalloc(d->nout * sizeof(double));
    d->ref_exact = kt_xmalloc(d->nout * sizeof(double));
    for (size_t i = 0; i < d->nout; i++) d->ref[i] = d->ref_exact[i] = NAN;
    reference(c, d, d->ref, d->ref_exact, NULL, M_NONE);
}

static void free_data(fdata *d)
{
    free(d->q);
    free(d->k);
    free(d->v);
    free(d->rab);
    free(d->out);
    free(d->ref);
    free(d->ref_exact);
    memset(d, 0, sizeof *d);
}

/* max over valid sequences of max |got - ref| / scale_b; got NULL: the
 * rounded reference d->ref stands in for the kernel (CPU checks).  *bad
 * counts non-finite written elements and poisoned ones that changed. */
static double compare(const fcase *c, const fdata *d, const double *ref, int64_t *bad,
                      char *where, size_t wn)
{
    const kiln_hstu_fwd_params *p = &d->p;
    unsigned char *mark = calloc(d->nout, 1);
    if (!mark) abort();
    double seq_max[MAXB] = {0}, seq_err[MAXB] = {0}, case_max = 0;
    *bad = 0;
    if (where && wn) where[0] = 0;
    for (int b = 0; b < c->B; b++) {
        for (int64_t row = d->offq[b]; row < d->offq[b + 1]; row++)
            for (int h = 0; h < c->H; h++)
                for (int e = 0; e < c->D; e++) {
                    int64_t idx = row * p->out_row_stride + h * p->out_head_stride + e;
                    mark[idx] = 1;
                    double o = d->out ? (double)kt_half_to_f32(c->out_dtype, d->out[idx]) : 0;
                    if (!d->out) o = d->ref[idx];
                    if (!isfinite(o)) {
                        if (!(*bad)++ && where)
                            snprintf(where, wn, "seq %d row %lld head %d d %d not written", b,
                                     (long long)(row - d->offq[b]), h, e);
                        continue;
                    }
                    seq_max[b] = fmax(seq_max[b], fabs(ref[idx]));
                    if (fabs(o - ref[idx]) > seq_err[b]) {
                        seq_err[b] = fabs(o - ref[idx]);
                        if (where && !*bad)
                            snprintf(where, wn, "seq %d row %lld head %d d %d: out %.6g ref %.6g", b,
                                     (long long)(row - d->offq[b]), h, e, o, ref[idx]);
                    }
                }
        case_max = fmax(case_max, seq_max[b]);
    }
    double ratio = 0;
    for (int b = 0; b < c->B; b++)
        if (d->offq[b + 1] > d->offq[b])
            ratio = fmax(ratio, seq_err[b] / fmax(fmax(seq_max[b], SCALE_FLOOR * case_max), 1e-30));
    if (d->out)
        for (size_t i = 0; i < d->nout; i++)
            if (!mark[i] && d->out[i] != 0xffffu) {
                if (!(*bad)++ && where)
                    snprintf(where, wn, "element %zu written (0x%04x) outside every row", i,
                             d->out[i]);
            }
    free(mark);
    return ratio;
}

/* ------------------------------------------------------------------ the sweep */

static int g_gpu_ok, g_sm90;
static char g_why[256];
static kiln_engine *g_engine, *g_nolaunch;

static fcase base(const char *label, int fam, int D, int H, int B, const int *lens, int out)
{
    fcase c;
    memset(&c, 0, sizeof c);
    snprintf(c.label, sizeof c.label, "%s", label);
    c.fam = fam;
    c.D = D;
    c.H = H;
    c.B = B;
    c.out_dtype = out;
    for (int b = 0; b < B; b++) c.len_q[b] = c.len_k[b] = lens[b];
    c.group = 1;
    c.wl = c.wr = -1;
    if (fam == F_CAUSAL || fam == F_CONTEXT || fam == F_TARGET || fam == F_CTX_TGT) c.wr = 0;
    c.alpha = 1.0f / sqrtf((float)D);
    c.dq = 0.25f;
    c.dk = 0.3f;
    c.dv = 0.5f;
    c.seed = kt_hash_str(label) ^ ((uint64_t)D << 32) ^ (uint64_t)fam;
    return c;
}

static int make_cases(fcase *out, uint64_t seed)
{
    static const int pool[] = {0, 1, 2, 17, 63, 64, 65, 100, 127, 128, 129, 200, 255, 257, 300, 383};
    const int np = (int)(sizeof pool / sizeof pool[0]);
    static const int dims[] = {64, 128, 256};
    kt_rng r;
    kt_rng_seed(&r, seed);
    int n = 0;
    for (int di = 0; di < 3; di++)
        for (int f = 0; f < F_COUNT; f++) {
            int lens[MAXB];
            const int B = kt_rng_int(&r, 2, 5);
            for (int b = 0; b < B; b++) lens[b] = pool[kt_rng_int(&r, 0, np - 1)];
            lens[kt_rng_int(&r, 0, B - 1)] = 150 + kt_rng_int(&r, 0, 250); /* one long */
            fcase c = base("grid", f, dims[di], kt_rng_int(&r, 1, 3), B, lens,
                           (n & 1) ? KILN_DTYPE_FP16 : KILN_DTYPE_BF16);
            c.seed ^= seed;
            c.rab = n % 3 == 1 ? 1 : 0;
            c.pad = n % 4 == 2;
            c.i64 = n % 5 == 3;
            c.msq_extra = n % 7 == 4 ? 5 : 0;
            c.scaling = n % 6 == 5 ? 77.0f : 0.0f;
            if (n % 8 == 6) c.dq = c.dk = c.dv = 0; /* NULL descales: 1.0 */
            c.ds = n % 4 == 1 ? 3 : n % 4 == 3 ? 4 : 0;
            if (n % 8 == 6) c.alpha = 0.25f / sqrtf((float)c.D);
            if (f == F_LOCAL) {
                c.wl = kt_rng_int(&r, 0, 80);
                c.wr = kt_rng_int(&r, -1, 40);
            }
            if (f == F_CAUSAL_LOCAL) {
                c.wl = kt_rng_int(&r, 0, 150);
                c.wr = 0;
            }
            if (f == F_CONTEXT || f == F_CTX_TGT)
                for (int b = 0; b < B; b++) c.ctx[b] = kt_rng_int(&r, -2, lens[b] / 2 + 3);
            if (f == F_TARGET || f == F_CTX_TGT) {
                c.group = kt_rng_int(&r, 1, 9);
                for (int b = 0; b < B; b++) c.tgt[b] = kt_rng_int(&r, 0, lens[b] / 2 + 3);
            }
            if (f == F_DELTA) {
                c.wr = n % 2 ? 0 : -1; /* delta_q alone and with causal */
                for (int b = 0; b < B; b++) {
                    c.len_k[b] = lens[b];
                    c.len_q[b] = lens[b] ? kt_rng_int(&r, 0, lens[b]) : 0;
                }
            }
            out[n++] = c;
        }
#define LENS(...) ((const int[]){__VA_ARGS__})
    out[n++] = base("all-empty", F_NONE, 128, 2, 3, LENS(0, 0, 0), KILN_DTYPE_BF16);
    out[n++] = base("single-row", F_CAUSAL, 64, 1, 1, LENS(1), KILN_DTYPE_FP16);
    fcase c = base("long-causal", F_CAUSAL, 128, 2, 2, LENS(1000, 333), KILN_DTYPE_BF16);
    out[n++] = c;
    c = base("tile-multiples", F_NONE, 256, 1, 4, LENS(64, 128, 192, 256), KILN_DTYPE_BF16);
    out[n++] = c;
    c = base("decode", F_DELTA, 128, 2, 3, LENS(1, 1, 1), KILN_DTYPE_BF16);
    memcpy(c.len_k, LENS(1, 77, 500), 3 * sizeof(int));
    c.wr = 0;
    out[n++] = c;
    for (int i = 0; i < 3; i++) {
        /* sequence 1's V is NaN; sequence 0's last key tile runs into it */
        c = base("nan-next-v", F_DELTA, dims[i], 2, 3, LENS(200, 60, 130), KILN_DTYPE_BF16);
        memcpy(c.len_q, LENS(150, 0, 100), 3 * sizeof(int));
        c.wr = i == 1 ? 0 : -1;
        c.nan_v = 2;
        out[n++] = c;
    }
    c = base("v-head-major", F_CAUSAL, 128, 3, 3, LENS(300, 1, 129), KILN_DTYPE_FP16);
    c.v_hm = 1;
    out[n++] = c;
    for (int i = 0; i < 3; i++) {
        /* rab by TMA (rows 16-byte aligned), heads sharing it, several
         * tiles and a partial last one for both m-blocks of a CTA */
        c = base("rab-tma", i == 1 ? F_CTX_TGT : F_CAUSAL, dims[i], 4, 3, LENS(390, 1, 200),
                 i == 2 ? KILN_DTYPE_FP16 : KILN_DTYPE_BF16);
        if (i == 1) {
            memcpy(c.ctx, LENS(7, 0, 3), 3 * sizeof(int));
            memcpy(c.tgt, LENS(50, 1, 9), 3 * sizeof(int));
        }
        c.rab = 2;
        c.msq_extra = 2; /* rows 392 apart */
        out[n++] = c;
    }
    c = base("saturating", F_CAUSAL, 64, 1, 2, LENS(130, 40), KILN_DTYPE_FP16);
    c.alpha = 30.0f; /* s far above 448: P saturates in kernel and rounded reference */
    c.saturates = 1;
    out[n++] = c;
#undef LENS
    return n;
}

static int want(const fcase *c)
{
    const char *f = getenv("KILN_TEST_FILTER");
    if (!f || !*f) return 1;
    char desc[300];
    describe(c, desc, sizeof desc);
    return strstr(desc, f) != NULL;
}

static uint64_t seed_of(void)
{
    const char *s = getenv("KILN_TEST_SEED");
    return s && *s ? strtoull(s, NULL, 10) : 20261124ull;
}

#define NCASES_MAX 48

/* CPU: for every case the rounded reference is within 2/3 of TOL_EXACT of
 * the exact one (the bound the GPU test relies on), and each negative
 * control moves it beyond TOL_ROUNDED. */
static int flat_detectable(const fcase *c, const fdata *d)
{
    if (!c->ds || !c->dq) return 0;
    for (int b = 0; b < c->B; b++)
        for (int h = 0; h < c->H; h++)
            if (ds_factor(c, b, h, M_NONE) != 1 && d->offq[b + 1] > d->offq[b]) return 1;
    return 0;
}

static void test_rounding_error_bound(void **state)
{
    (void)state;
    fcase cs[NCASES_MAX];
    int n = make_cases(cs, seed_of());
    double worst = 0, weakest = INFINITY;
    int checked = 0;
    for (int i = 0; i < n; i++) {
        if (!want(&cs[i])) continue;
        fdata d;
        build(&cs[i], 0, &d);
        free(d.out);
        d.out = NULL; /* the rounded reference stands in for the kernel */
        int64_t bad;
        double e = compare(&cs[i], &d, d.ref_exact, &bad, NULL, 0);
        assert_int_equal(bad, 0);
        if (!cs[i].saturates) worst = fmax(worst, e);
        if (d.p.total_q > 0 && strcmp(cs[i].label, "all-empty") != 0) {
            double *m = kt_xmalloc(d.nout * sizeof(double));
            for (int mu = M_DROP_DIAG; mu <= M_DESCALE_FLAT; mu++) {
                /* a flat descale differs only where some sequence other
                 * than the first (or a head other than 0) has rows */
                if (mu == M_DESCALE_FLAT && !flat_detectable(&cs[i], &d)) continue;
                mutated(&cs[i], &d, m, mu);
                double neg = compare(&cs[i], &d, m, &bad, NULL, 0);
                weakest = fmin(weakest, neg / tol_rounded(cs[i].out_dtype));
                if (neg <= tol_rounded(cs[i].out_dtype)) {
                    char desc[300];
                    describe(&cs[i], desc, sizeof desc);
                    fail_msg("negative control %d not detected (%.3g): %s", mu, neg, desc);
                }
            }
            free(m);
        }
        checked++;
        free_data(&d);
    }
    printf("%d cases: P rounded to e4m3 moves out by at most %.3g of the sequence scale "
           "(tolerance %.2g); negative controls at least %.1fx TOL_ROUNDED\n",
           checked, worst, TOL_EXACT, weakest);
    assert_true(worst <= TOL_EXACT * 2 / 3);
}

static void test_e4m3_codec(void **state)
{
    (void)state;
    /* every finite code round-trips; NaN codes decode to NaN */
    for (int b = 0; b < 256; b++) {
        double x = e4m3_to_double((uint8_t)b);
        if ((b & 0x7f) == 0x7f) {
            assert_true(isnan(x));
            continue;
        }
        if (b == 0x80) continue; /* -0 encodes as +0's sign bit: fine either way */
        assert_int_equal(double_to_e4m3(x), b);
    }
    assert_true(e4m3_to_double(0x7e) == 448.0);
    assert_true(e4m3_to_double(0x01) == ldexp(1, -9));
    assert_true(round_e4m3(1e6) == 448.0 && round_e4m3(-500) == -448.0);
    assert_true(round_e4m3(1.0625) == 1.0);   /* tie to even */
    assert_true(round_e4m3(1.1875) == 1.25);  /* tie to even (odd mantissa below) */
    assert_true(round_e4m3(ldexp(1, -11)) == 0); /* below half the smallest subnormal */
}

/* Every bad fp8 field is named; runs without a GPU (the no-launch engine). */
static void test_bad_fp8_args(void **state)
{
    (void)state;
    static const int lens[2] = {10, 20};
    fcase c = base("args", F_CAUSAL, 128, 2, 2, lens, KILN_DTYPE_BF16);
    struct {
        const char *what;
        int field;
        kiln_status st;
        const char *needle;
    } bad[] = {
        {"out_dtype 0", 0, KILN_EBADARG, "out_dtype 0"},
        {"out_dtype e4m3", 1, KILN_EBADARG, "out_dtype 3"},
        {"misaligned descale_k", 2, KILN_EBADARG, "descale_k"},
        {"descale with bf16", 3, KILN_EBADARG, "descale_q"},
        {"stride not a multiple of 16", 4, KILN_EBADARG, "q_row_stride 264"},
        {"head_dim 32", 5, KILN_EUNSUPPORTED, "head_dim 32"},
        {"out_dtype with bf16", 6, KILN_EBADARG, "out_dtype 1"},
        {"negative descale stride", 7, KILN_EBADARG, "descale_batch_stride -1"},
        {"descale stride with bf16", 8, KILN_EBADARG, "descale_head_stride 1"},
        {"descale stride past int32", 9, KILN_EBADARG, "descale_head_stride 2147483648"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fdata d;
        build(&c, 1, &d);
        kiln_hstu_fwd_params *p = &d.p;
        switch (bad[i].field) {
        case 0: p->out_dtype = 0; break;
        case 1: p->out_dtype = KILN_DTYPE_E4M3; break;
        case 2: p->descale_k += 2; break;
        case 3: p->dtype = KILN_DTYPE_BF16; p->out_dtype = 0; break;
        case 4: p->q_row_stride = 264; break;
        case 5: p->head_dim = 32; p->q_head_stride = p->k_head_stride = p->v_head_stride = 32;
                p->out_head_stride = 32; break;
        case 6: p->dtype = KILN_DTYPE_BF16; p->out_dtype = KILN_DTYPE_FP16;
                p->descale_q = p->descale_k = p->descale_v = 0; break;
        case 7: p->descale_batch_stride = -1; break;
        case 8: p->dtype = KILN_DTYPE_BF16; p->out_dtype = 0;
                p->descale_q = p->descale_k = p->descale_v = 0;
                p->descale_head_stride = 1; break;
        case 9: p->descale_head_stride = 1ll << 31; break;
        }
        kiln_status s = kiln_hstu_fwd(g_nolaunch, p, NULL);
        if (s != bad[i].st || !strstr(kiln_last_error(), bad[i].needle))
            fail_msg("%s: %s '%s', wanted %s with '%s'", bad[i].what, kiln_status_name(s),
                     kiln_last_error(), kiln_status_name(bad[i].st), bad[i].needle);
    }
    /* fp8 wgmma on sm_90a, the portable kernel elsewhere; the key names
     * the out dtype */
    fdata d;
    build(&c, 1, &d);
    char key[256];
    assert_int_equal(kiln_hstu_fwd_key(&d.p, "sm_80", key, sizeof key), KILN_OK);
    assert_string_equal(key, "hstu_fwd/sm_80/e4m3-bf16/d128/causal");
    assert_int_equal(kiln_hstu_fwd_key(&d.p, "sm_89", key, sizeof key), KILN_OK);
    assert_string_equal(key, "hstu_fwd/sm_89/e4m3-bf16/d128/causal");
    assert_int_equal(kiln_hstu_fwd_key(&d.p, "sm_90a", key, sizeof key), KILN_OK);
    assert_string_equal(key, "hstu_fwd/sm_90a/e4m3-bf16/d128/causal");
    d.p.out_dtype = KILN_DTYPE_FP16;
    d.p.rab = 0x7f0000000000ull;
    d.p.rab_row_stride = 32;
    assert_int_equal(kiln_hstu_fwd_key(&d.p, "sm_90a", key, sizeof key), KILN_OK);
    assert_string_equal(key, "hstu_fwd/sm_90a/e4m3-fp16/d128/causal/rab");
}

/* Upload, launch, fetch.  0, or -1 with msg. */
static int run_gpu(fdata *d, const fcase *c, char *msg, size_t n)
{
    kiln_hstu_fwd_params *p = &d->p;
    uint64_t dq = kt_gpu_alloc_copy(d->q, d->nq), dk = kt_gpu_alloc_copy(d->k, d->nk),
             dv = kt_gpu_alloc_copy(d->v, d->nv), dout = kt_gpu_alloc(d->nout * 2);
    const size_t osz = (size_t)(c->B + 1) * (c->i64 ? 8 : 4);
    uint64_t doq = kt_gpu_alloc_copy(c->i64 ? (const void *)d->offq : (const void *)d->offq32, osz);
    uint64_t dok = kt_gpu_alloc_copy(c->i64 ? (const void *)d->offk : (const void *)d->offk32, osz);
    uint64_t dctx = kt_gpu_alloc_copy(d->ctx, sizeof d->ctx);
    uint64_t dtgt = kt_gpu_alloc_copy(d->tgt, sizeof d->tgt);
    /* descale_q | _k | _v, each (B, H + 1) floats laid out by ds_strides */
    enum { DSN = MAXB * 8 };
    float sc[3 * DSN];
    int64_t sb, sh;
    ds_strides(c, &sb, &sh);
    for (int i = 0; i < 3 * DSN; i++) sc[i] = NAN; /* elements no CTA may read */
    for (int b = 0; b < (c->ds ? c->B : 1); b++)
        for (int h = 0; h < (c->ds == 3 ? c->H : 1); h++) {
            const double f = ds_factor(c, b, h, M_NONE);
            const int64_t at = b * sb + h * sh;
            sc[at] = (float)(c->dq * f);
            sc[DSN + at] = (float)(c->dk * f);
            sc[2 * DSN + at] = (float)(c->dv * f);
        }
    uint64_t dsc = kt_gpu_alloc_copy(sc, sizeof sc);
    uint64_t drab = d->rab ? kt_gpu_alloc_copy(d->rab, d->nrab * 2) : 0;
    int rc = -1;
    if (!dq || !dk || !dv || !dout || !doq || !dok || !dctx || !dtgt || !dsc ||
        (d->rab && !drab) || kt_gpu_memset8(dout, 0xff, d->nout * 2)) {
        snprintf(msg, n, "device setup: %s", kt_gpu_error());
        goto done;
    }
    p->q = dq;
    p->k = dk;
    p->v = dv;
    p->out = dout;
    p->seq_offsets_q = doq;
    if (p->seq_offsets_k) p->seq_offsets_k = dok;
    if (p->num_contexts) p->num_contexts = dctx;
    if (p->num_targets) p->num_targets = dtgt;
    if (p->descale_q) p->descale_q = dsc;
    if (p->descale_k) p->descale_k = dsc + 4 * DSN;
    if (p->descale_v) p->descale_v = dsc + 8 * DSN;
    if (p->rab) p->rab = drab;
    kiln_status s = kiln_hstu_fwd(g_engine, p, NULL);
    if (s != KILN_OK) {
        snprintf(msg, n, "kiln_hstu_fwd: %s: %.400s", kiln_status_name(s), kiln_last_error());
        goto done;
    }
    if (kt_gpu_sync() || kt_gpu_download(d->out, dout, d->nout * 2)) {
        snprintf(msg, n, "after the launch: %s", kt_gpu_error());
        goto done;
    }
    rc = 0;
done:
    kt_gpu_free(dq);
    kt_gpu_free(dk);
    kt_gpu_free(dv);
    kt_gpu_free(dout);
    kt_gpu_free(doq);
    kt_gpu_free(dok);
    kt_gpu_free(dctx);
    kt_gpu_free(dtgt);
    kt_gpu_free(dsc);
    kt_gpu_free(drab);
    return rc;
}

#define REQUIRE_GPU()                                                              \
    do {                                                                           \
        if (!g_gpu_ok) {                                                           \
            printf("skipped: %s\n", g_why);                                        \
            skip();                                                                \
            return;                                                                \
        }                                                                          \
    } while (0)

/* The portable kernel serves fp8 off sm_90 and under $KILN_FWD_IMPL=mma: it
 * widens e4m3 to the out dtype and rounds P to 16 bits, not to e4m3, so it
 * is checked against the exact reference with the 16-bit forward's
 * tolerances (tests/test_hstu_gpu.c): bf16 2e-2, fp16 4e-3. */
static int portable_run(void)
{
    const char *impl = getenv("KILN_FWD_IMPL");
    return !g_sm90 || (impl && strcmp(impl, "mma") == 0);
}

static double tol16(int out_dtype)
{
    return out_dtype == KILN_DTYPE_FP16 ? 4e-3 : 2e-2;
}

static void test_gpu_sweep(void **state)
{
    (void)state;
    REQUIRE_GPU();
    const int portable = portable_run();
    fcase cs[NCASES_MAX];
    int n = make_cases(cs, seed_of());
    /* compile every distinct kernel on all cores first */
    char (*keys)[KT_KEYLEN] = kt_xmalloc((size_t)n * KT_KEYLEN);
    int nk = 0, used;
    for (int i = 0; i < n; i++) {
        fdata d;
        build(&cs[i], 1, &d);
        char key[KT_KEYLEN];
        if (want(&cs[i]) && kiln_hstu_fwd_key(&d.p, NULL, key, sizeof key) == KILN_OK)
            kt_key_add(keys, &nk, key);
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    double t0 = kt_now_ms();
    int failed_pw = kt_prewarm_keys(g_engine, keys, nk, cpus > 16 ? 16 : (int)cpus, &used);
    printf("prewarm: %d kernels in %.1f s, %d failed\n", nk, (kt_now_ms() - t0) / 1e3, failed_pw);
    free(keys);
    int passed = 0, failed = 0, neg_missed = 0;
    double worst_r = 0, worst_e = 0, weakest = INFINITY;
    for (int i = 0; i < n; i++) {
        if (!want(&cs[i])) continue;
        char desc[300], msg[600] = "", where[200] = "";
        describe(&cs[i], desc, sizeof desc);
        fdata d;
        build(&cs[i], 0, &d);
        /* a V the Hopper kernel cannot map goes to the portable one, on
         * sm_90a too: checked as that one (P in 16 bits; P rounded to e4m3
         * would miss the 16-bit tolerance) */
        const int pc = portable || cs[i].v_hm;
        int ok = run_gpu(&d, &cs[i], msg, sizeof msg) == 0;
        double er = 0, ee = 0, neg = INFINITY;
        if (ok) {
            int64_t bad, bad2;
            er = compare(&cs[i], &d, d.ref, &bad, where, sizeof where);
            ee = compare(&cs[i], &d, d.ref_exact, &bad2, NULL, 0);
            if (cs[i].saturates && !pc) ee = 0; /* portable: P is not saturated */
            const double tol = pc ? tol16(cs[i].out_dtype) : tol_rounded(cs[i].out_dtype);
            ok = bad == 0 && (pc ? ee <= tol : er <= tol && ee <= TOL_EXACT);
            if (!ok)
                snprintf(msg, sizeof msg, "%lld bad elements; vs rounded %.3g, vs exact %.3g; %s",
                         (long long)bad, er, ee, where);
            if (d.p.total_q > 0 && strcmp(cs[i].label, "all-empty") != 0) {
                double *m = kt_xmalloc(d.nout * sizeof(double));
                mutated(&cs[i], &d, m, M_DROP_DIAG);
                neg = compare(&cs[i], &d, m, &bad, NULL, 0) / tol;
                free(m);
                weakest = fmin(weakest, neg);
                if (neg <= 1) neg_missed++;
            }
            if (pc == portable) { /* the summary's kernel */
                worst_r = fmax(worst_r, (pc ? ee : er) / tol);
                worst_e = fmax(worst_e, ee);
            }
        }
        ok ? passed++ : failed++;
        printf("%s [%2d] %s  rounded %.2e exact %.2e neg %.1fx%s%s\n", ok ? "PASS" : "FAIL", i,
               desc, er, ee, neg, ok ? "" : "\n       ", ok ? "" : msg);
        fflush(stdout);
        free_data(&d);
    }
    if (portable)
        printf("fp8 sweep (portable kernel, P in 16 bits): %d passed, %d failed; worst "
               "%.2fx the 16-bit tolerance against the exact reference; dropped diagonal "
               "detected in all but %d, weakest %.1fx\n",
               passed, failed, worst_r, neg_missed, weakest);
    else
        printf("fp8 sweep: %d passed, %d failed; worst %.2fx TOL_ROUNDED, worst vs exact "
               "%.3g (TOL_EXACT %.2g); dropped diagonal detected in all but %d, weakest "
               "%.1fx\n",
               passed, failed, worst_r, worst_e, TOL_EXACT, neg_missed, weakest);
    assert_int_equal(failed, 0);
    assert_int_equal(neg_missed, 0);
}

static int setup(void **state)
{
    (void)state;
    if (kt_open_engines(&g_gpu_ok, g_why, sizeof g_why, &g_engine, &g_nolaunch)) return -1;
    if (g_gpu_ok) {
        g_sm90 = kt_gpu_cc() == 90; /* the fp8 wgmma kernel, unless $KILN_FWD_IMPL=mma */
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    kiln_engine_destroy(g_engine);
    kiln_engine_destroy(g_nolaunch);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_e4m3_codec),
        cmocka_unit_test(test_bad_fp8_args),
        cmocka_unit_test(test_rounding_error_bound),
        cmocka_unit_test(test_gpu_sweep),
    };
    return cmocka_run_group_tests_name("hstu_fp8_gpu", tests, setup, teardown);
}
