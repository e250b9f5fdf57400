/* demo.c -- `make demo`: what kiln does, end to end, in one run.
 *
 * With a GPU: HSTU forward (bf16, head_dim 128, causal) on a random jagged
 * batch, checked against the double-precision CPU reference, then timed on
 * the benchmark shape (B=32, max_len=4096, H=4, D=128, lengths uniform in
 * [2048, 4096]) and reported in TFLOP/s, with the latency of the first call
 * (a compile or a cache hit).
 * Without a GPU: says why, prewarms a few sm_90a keys into the default cache
 * (NVRTC only) and lists the cache like `kiln ls`.
 *
 * Uses the default cache ($KILN_CACHE_DIR, else ~/.cache/kiln).  Exit status
 * 0 on success, 1 on any failure.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln.h"
#include "ref_hstu.h"
#include "util_gpu.h"

#define TOL_BF16 2e-2 /* as in tests/test_hstu_gpu.c */

typedef struct jagged {
    int B, H, D, max_len;
    int64_t total;
    int32_t *offsets; /* B+1 */
    uint16_t *q, *k, *v, *out;
    uint64_t dq, dk, dv, dout, doff;
    kiln_hstu_fwd_params p;
} jagged;

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "demo: out of host memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

static void fill(kt_rng *r, uint16_t *x, size_t n, double amp) {
    for (size_t i = 0; i < n; i++)
        x[i] = kt_f32_to_bf16((float)kt_rng_range(r, -amp, amp));
}

/* A causal bf16 batch with the given lengths, on the host and the device. */
static int jagged_make(jagged *j, int B, const int *lens, int H, int D, uint64_t seed) {
    memset(j, 0, sizeof *j);
    j->B = B;
    j->H = H;
    j->D = D;
    j->offsets = xmalloc((size_t)(B + 1) * sizeof(int32_t));
    j->offsets[0] = 0;
    for (int b = 0; b < B; b++) {
        j->offsets[b + 1] = j->offsets[b] + lens[b];
        if (lens[b] > j->max_len) j->max_len = lens[b];
    }
    j->total = j->offsets[B];
    size_t n = (size_t)j->total * H * D;
    j->q = xmalloc(n * 2);
    j->k = xmalloc(n * 2);
    j->v = xmalloc(n * 2);
    j->out = xmalloc(n * 2);
    kt_rng r;
    kt_rng_seed(&r, seed);
    double amp = pow(9.0 / D, 0.25); /* q.k with variance ~1 */
    fill(&r, j->q, n, amp);
    fill(&r, j->k, n, amp);
    fill(&r, j->v, n, 1.0);
    j->dq = kt_gpu_alloc_copy(j->q, n * 2);
    j->dk = kt_gpu_alloc_copy(j->k, n * 2);
    j->dv = kt_gpu_alloc_copy(j->v, n * 2);
    j->dout = kt_gpu_alloc(n * 2);
    j->doff = kt_gpu_alloc_copy(j->offsets, (size_t)(B + 1) * sizeof(int32_t));
    if (!j->dq || !j->dk || !j->dv || !j->dout || !j->doff ||
        kt_gpu_memset8(j->dout, 0xff, n * 2)) {
        fprintf(stderr, "demo: device memory: %s\n", kt_gpu_error());
        return -1;
    }
    kiln_hstu_fwd_params *p = &j->p;
    kiln_hstu_fwd_params_init(p);
    p->dtype = KILN_DTYPE_BF16;
    p->head_dim = D;
    p->num_heads = H;
    p->batch = B;
    p->total_q = p->total_k = j->total;
    p->q = j->dq;
    p->k = j->dk;
    p->v = j->dv;
    p->out = j->dout;
    p->q_row_stride = p->k_row_stride = p->v_row_stride = p->out_row_stride = (int64_t)H * D;
    p->q_head_stride = p->k_head_stride = p->v_head_stride = p->out_head_stride = D;
    p->seq_offsets_q = j->doff;
    p->offsets_type = KILN_INDEX_INT32;
    p->max_seqlen_q = p->max_seqlen_k = j->max_len;
    p->window_left = -1;
    p->window_right = 0; /* causal */
    p->alpha = 1.0f;
    return 0;
}

static void jagged_free(jagged *j) {
    kt_gpu_free(j->dq);
    kt_gpu_free(j->dk);
    kt_gpu_free(j->dv);
    kt_gpu_free(j->dout);
    kt_gpu_free(j->doff);
    free(j->offsets);
    free(j->q);
    free(j->k);
    free(j->v);
    free(j->out);
    memset(j, 0, sizeof *j);
}

static int launch(kiln_engine *e, const kiln_hstu_fwd_params *p) {
    kiln_status st = kiln_hstu_fwd(e, p, NULL);
    if (st != KILN_OK) {
        fprintf(stderr, "demo: kiln_hstu_fwd: %s: %s\n", kiln_status_name(st), kiln_last_error());
        return -1;
    }
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int demo_gpu(kiln_engine *e) {
    char arch[16];
    kt_gpu_arch(arch);
    printf("device: %s (%s, %d SMs)\n\n", kt_gpu_name(), arch, kt_gpu_sm_count());

    /* ---- 1. correctness on a small jagged batch */
    enum { B1 = 8, H = 4, D = 128 };
    int lens[B1];
    kt_rng r;
    kt_rng_seed(&r, 1);
    for (int b = 0; b < B1; b++) lens[b] = b == 0 ? 1024 : kt_rng_int(&r, 1, 1024);
    jagged j;
    if (jagged_make(&j, B1, lens, H, D, 2)) return 1;
    char key[256] = "";
    kiln_hstu_fwd_key(&j.p, NULL, key, sizeof key);
    printf("1. check: %s, B=%d, lengths", key, B1);
    for (int b = 0; b < B1; b++) printf(" %d", lens[b]);
    printf(", H=%d\n", H);

    kiln_cache_stats s0, s1;
    kiln_cache_stats_get(e, &s0);
    double t0 = kt_now_ms();
    if (launch(e, &j.p) || kt_gpu_sync()) {
        if (kt_gpu_error()[0]) fprintf(stderr, "demo: %s\n", kt_gpu_error());
        jagged_free(&j);
        return 1;
    }
    double first_ms = kt_now_ms() - t0;
    kiln_cache_stats_get(e, &s1);
    const char *how = s1.compiles > s0.compiles     ? "NVRTC compile"
                      : s1.disk_hits > s0.disk_hits ? "disk cache hit"
                                                    : "memory hit";
    printf("   first call: %.1f ms (%s, includes the kernel)\n", first_ms, how);
    t0 = kt_now_ms();
    if (launch(e, &j.p)) {
        jagged_free(&j);
        return 1;
    }
    double launch_us = (kt_now_ms() - t0) * 1e3;
    kt_gpu_sync();
    printf("   next call:  %.1f us on the host (in-memory hit + launch)\n", launch_us);

    size_t n = (size_t)j.total * H * D;
    if (kt_gpu_download(j.out, j.dout, n * 2)) {
        fprintf(stderr, "demo: %s\n", kt_gpu_error());
        jagged_free(&j);
        return 1;
    }
    double *ref = xmalloc(n * sizeof(double));
    kt_hstu_host hh = {.q = j.q, .k = j.k, .v = j.v, .seq_offsets_q = j.offsets};
    t0 = kt_now_ms();
    kt_ref_hstu_fwd(&j.p, &hh, ref);
    double ref_s = (kt_now_ms() - t0) / 1e3;
    /* per sequence: max|out-ref| <= tol * max|ref| (as the tests) */
    double worst = 0, max_abs = 0;
    int64_t nonfinite = 0;
    for (int b = 0; b < B1; b++) {
        double smax = 0, serr = 0;
        for (size_t i = (size_t)j.offsets[b] * H * D; i < (size_t)j.offsets[b + 1] * H * D; i++) {
            double o = kt_bf16_to_f32(j.out[i]);
            if (!isfinite(o)) {
                nonfinite++;
                continue;
            }
            smax = fmax(smax, fabs(ref[i]));
            serr = fmax(serr, fabs(o - ref[i]));
        }
        max_abs = fmax(max_abs, serr);
        if (smax > 0) worst = fmax(worst, serr / smax);
    }
    free(ref);
    int ok = nonfinite == 0 && worst <= TOL_BF16;
    printf("   vs the CPU reference (%.1f s): max error %.2e of the sequence's max |ref| "
           "(abs %.2e), tolerance %.0e, %lld non-finite -> %s\n\n",
           ref_s, worst, max_abs, TOL_BF16, (long long)nonfinite, ok ? "OK" : "FAILED");
    jagged_free(&j);
    if (!ok) return 1;

    /* ---- 2. timing on the benchmark shape */
    enum { B2 = 32, MAXLEN = 4096, WARMUP = 3, ITERS = 20 };
    int lens2[B2];
    double flops = 0;
    for (int b = 0; b < B2; b++) {
        lens2[b] = kt_rng_int(&r, MAXLEN / 2, MAXLEN);
        flops += 2.0 * H * D * (double)lens2[b] * lens2[b]; /* causal: 4HDL^2 / 2 */
    }
    if (jagged_make(&j, B2, lens2, H, D, 3)) return 1;
    j.p.max_seqlen_q = j.p.max_seqlen_k = MAXLEN;
    printf("2. time: B=%d, max_len=%d, H=%d, D=%d, lengths uniform in [%d, %d] "
           "(total %lld rows), causal bf16\n",
           B2, MAXLEN, H, D, MAXLEN / 2, MAXLEN, (long long)j.total);
    t0 = kt_now_ms();
    if (launch(e, &j.p) || kt_gpu_sync()) {
        jagged_free(&j);
        return 1;
    }
    printf("   first call at this shape: %.1f ms\n", kt_now_ms() - t0);
    for (int i = 0; i < WARMUP; i++)
        if (launch(e, &j.p)) {
            jagged_free(&j);
            return 1;
        }
    void *ev0 = kt_gpu_event_create(), *ev1 = kt_gpu_event_create();
    double ms[ITERS];
    for (int i = 0; i < ITERS; i++) {
        kt_gpu_event_record(ev0, NULL);
        if (launch(e, &j.p)) {
            jagged_free(&j);
            return 1;
        }
        kt_gpu_event_record(ev1, NULL);
        ms[i] = kt_gpu_event_ms(ev0, ev1);
        if (ms[i] < 0) {
            fprintf(stderr, "demo: %s\n", kt_gpu_error());
            jagged_free(&j);
            return 1;
        }
    }
    kt_gpu_event_destroy(ev0);
    kt_gpu_event_destroy(ev1);
    qsort(ms, ITERS, sizeof ms[0], cmp_double);
    double med = (ms[ITERS / 2 - 1] + ms[ITERS / 2]) / 2;
    printf("   %d iterations: median %.3f ms (min %.3f, max %.3f) -> %.1f TFLOP/s "
           "(FLOPs = sum 2*H*D*len^2 = %.3g)\n",
           ITERS, med, ms[0], ms[ITERS - 1], flops / (med * 1e-3) / 1e12, flops);
    jagged_free(&j);
    return 0;
}

/* ---- without a GPU: prewarm a few keys, list the cache */

typedef struct keyset {
    char keys[8][160];
    int n;
    const char *const *prefer; /* suffixes to take from the second pattern */
} keyset;

static int have(const keyset *k, const char *key) {
    for (int i = 0; i < k->n; i++)
        if (!strcmp(k->keys[i], key)) return 1;
    return 0;
}

static int take_all(const char *key, void *user) {
    keyset *k = user;
    if (k->n < 8 && !have(k, key)) snprintf(k->keys[k->n++], sizeof k->keys[0], "%s", key);
    return k->n >= 8;
}

static int take_preferred(const char *key, void *user) {
    keyset *k = user;
    size_t n = strlen(key);
    for (const char *const *s = k->prefer; *s; s++) {
        size_t m = strlen(*s);
        if (n >= m && !strcmp(key + n - m, *s)) return take_all(key, user);
    }
    return 0;
}

typedef struct lister {
    int width, count;
} lister;

static int measure_entry(const kiln_cache_entry *e, void *user) {
    lister *l = user;
    int n = (int)strlen(e->key);
    if (n > l->width) l->width = n;
    return 0;
}

/* One line per entry, the columns of `kiln ls`. */
static int print_entry(const kiln_cache_entry *e, void *user) {
    lister *l = user;
    if (!l->count++)
        printf("%-*s  %10s  %4s  %6s  %10s  %6s\n", l->width, "KEY", "BYTES", "REGS", "SPILLS",
               "COMPILE", "HITS");
    char ms[32];
    snprintf(ms, sizeof ms, "%.0f ms", e->compile_ms);
    printf("%-*s  %10llu  %4d  %6d  %10s  %6lld\n", l->width, e->key,
           (unsigned long long)e->bytes, e->regs, e->spills, ms, (long long)e->hits);
    return 0;
}

static int demo_prewarm(kiln_engine *e, const char *why) {
    printf("no GPU: %s\n", why);
    printf("prewarming sm_90a kernels instead (NVRTC only, no GPU needed):\n");
    static const char *const prefer[] = {"/causal/rab", "/causal+target",
                                         "/causal+context+target/rab", "/none", NULL};
    keyset k = {.n = 0, .prefer = prefer};
    kiln_status st = kiln_key_expand("hstu_fwd/sm_90a/bf16/*/causal", NULL, take_all, &k);
    if (st == KILN_OK)
        st = kiln_key_expand("hstu_fwd/sm_90a/bf16/d128/*", NULL, take_preferred, &k);
    if (st == KILN_OK && k.n < 8)
        st = kiln_key_expand("hstu_fwd/sm_90a/bf16/d128/*", NULL, take_all, &k);
    if (st != KILN_OK) {
        fprintf(stderr, "demo: kiln_key_expand: %s: %s\n", kiln_status_name(st), kiln_last_error());
        return 1;
    }
    int failed = 0;
    double total = kt_now_ms();
    for (int i = 0; i < k.n; i++) {
        kiln_cache_stats a, b;
        kiln_cache_stats_get(e, &a);
        double t0 = kt_now_ms();
        st = kiln_prewarm(e, k.keys[i], NULL);
        double ms = kt_now_ms() - t0;
        kiln_cache_stats_get(e, &b);
        if (st == KILN_OK) {
            printf("  ok   %-52s %6.0f ms%s\n", k.keys[i], ms,
                   b.compiles > a.compiles ? "" : " (cached)");
        } else {
            failed++;
            printf("  FAIL %-52s %s: %.300s\n", k.keys[i], kiln_status_name(st), kiln_last_error());
        }
    }
    printf("%d keys in %.1f s, %d failed\n\n", k.n, (kt_now_ms() - total) / 1e3, failed);

    kiln_cache_stats cs;
    if (kiln_cache_stats_get(e, &cs) == KILN_OK)
        printf("cache %s:\n", cs.path[0] ? cs.path : "(memory only)");
    lister l = {.width = 3, .count = 0};
    st = kiln_cache_list(e, NULL, measure_entry, &l);
    if (st == KILN_OK) st = kiln_cache_list(e, NULL, print_entry, &l);
    if (st != KILN_OK) {
        fprintf(stderr, "demo: kiln_cache_list: %s: %s\n", kiln_status_name(st), kiln_last_error());
        return 1;
    }
    if (!l.count) printf("(empty)\n");
    return failed ? 1 : 0;
}

int main(void) {
    printf("kiln %s -- demo\n", kiln_version_string());
    char why[256];
    int gpu = kt_gpu_init(why, sizeof why) == 0;
    kiln_engine *e = NULL;
    kiln_status st = kiln_engine_create(NULL, &e);
    if (st != KILN_OK) {
        fprintf(stderr, "demo: kiln_engine_create: %s: %s\n", kiln_status_name(st), kiln_last_error());
        return 1;
    }
    int rc = gpu ? demo_gpu(e) : demo_prewarm(e, why);
    kiln_engine_destroy(e);
    return rc;
}
