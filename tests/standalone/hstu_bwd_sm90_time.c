/* hstu_bwd_sm90_time.c -- times kiln's HSTU backward, the portable kernel
 * (KILN_BWD_IMPL=mma) against the Hopper one (KILN_BWD_IMPL=wgmma), and the
 * forward, on the benchmark shape of generative-recommenders' Triton HSTU:
 * B = 32 sequences with lengths uniform in [max_len / 2, max_len], H = 4,
 * causal; and compares the two backwards' gradients element by element.
 * Not part of the product build; built against build/libkiln.a and the
 * tests' helpers:
 *
 *   cc -std=c11 -O2 -D_GNU_SOURCE -Iinclude -Itests tests/standalone/hstu_bwd_sm90_time.c \
 *      build/obj/tests/util_gpu.o build/libkiln.a -lsqlite3 -lxxhash -ldl -lpthread -lm \
 *      -o build/hstu_bwd_sm90_time
 *   build/hstu_bwd_sm90_time [D [max_len [dtype(bf16|fp16) [window_left window_right]]]]
 *
 * Flops as generative-recommenders counts them: forward 2 GEMMs of
 * 2 * L^2 / 2 * D over the causal triangle per (sequence, head), backward
 * 2.5 times that.  Exits 1 when the two backwards disagree by more than
 * 2e-2 (bf16) / 5e-3 (fp16) of a tensor's max |value|. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln.h"
#include "util_gpu.h"

#define REPS 10

static kiln_engine *engine_with(const char *impl)
{
    setenv("KILN_BWD_IMPL", impl, 1);
    kiln_engine *e = NULL;
    if (kiln_engine_create(NULL, &e) != KILN_OK) {
        fprintf(stderr, "engine: %s\n", kiln_last_error());
        exit(2);
    }
    unsetenv("KILN_BWD_IMPL");
    return e;
}

static double time_ms(kiln_engine *e, const kiln_hstu_bwd_params *b, int fwd)
{
    void *t0 = kt_gpu_event_create(), *t1 = kt_gpu_event_create();
    for (int i = 0; i < REPS + 3; i++) {
        if (i == 3) kt_gpu_event_record(t0, NULL);
        kiln_status s = fwd ? kiln_hstu_fwd(e, &b->fwd, NULL) : kiln_hstu_bwd(e, b, NULL);
        if (s != KILN_OK) {
            fprintf(stderr, "%s: %s\n", fwd ? "kiln_hstu_fwd" : "kiln_hstu_bwd", kiln_last_error());
            exit(2);
        }
    }
    kt_gpu_event_record(t1, NULL);
    double ms = kt_gpu_event_ms(t0, t1) / REPS;
    kt_gpu_event_destroy(t0);
    kt_gpu_event_destroy(t1);
    return ms;
}

static double max_rel(const uint16_t *a, const uint16_t *b, size_t n, int dt, size_t *bad)
{
    double err = 0, mx = 0;
    *bad = 0;
    for (size_t i = 0; i < n; i++) {
        double x = kt_half_to_f32(dt, a[i]), y = kt_half_to_f32(dt, b[i]);
        if (!isfinite(x) || !isfinite(y)) {
            ++*bad;
            continue;
        }
        err = fmax(err, fabs(x - y));
        mx = fmax(mx, fabs(y));
    }
    return err / fmax(mx, 1e-30);
}

int main(int argc, char **argv)
{
    const int D = argc > 1 ? atoi(argv[1]) : 128;
    const int max_len = argc > 2 ? atoi(argv[2]) : 4096;
    const int dt = argc > 3 && strcmp(argv[3], "fp16") == 0 ? KILN_DTYPE_FP16 : KILN_DTYPE_BF16;
    const int wl = argc > 5 ? atoi(argv[4]) : -1, wr = argc > 5 ? atoi(argv[5]) : 0;
    const int B = 32, H = 4;
    char why[256];
    if (kt_gpu_init(why, sizeof why) != 0) {
        printf("skipped: %s\n", why);
        return 0;
    }
    kt_rng r;
    kt_rng_seed(&r, 20261124);
    int64_t off[33];
    off[0] = 0;
    double flops_fwd = 0;
    for (int b = 0; b < B; b++) {
        int len = kt_rng_int(&r, max_len / 2, max_len);
        off[b + 1] = off[b] + len;
        flops_fwd += (wr == 0 ? 2.0 : 4.0) * (double)len * len * D * H; /* causal: half */
    }
    const int64_t total = off[B];
    const size_t n = (size_t)total * H * D;
    uint16_t *h = malloc(n * 2);
    uint64_t dev[8];
    for (int t = 0; t < 8; t++) { /* q k v dout, then out dq dk dv */
        for (size_t i = 0; i < n; i++) h[i] = kt_f32_to_half(dt, (float)kt_rng_range(&r, -1, 1));
        dev[t] = t < 4 ? kt_gpu_alloc_copy(h, n * 2) : kt_gpu_alloc(n * 2);
        if (!dev[t]) {
            fprintf(stderr, "alloc: %s\n", kt_gpu_error());
            return 2;
        }
    }
    uint64_t doff = kt_gpu_alloc_copy(off, sizeof off);

    kiln_hstu_bwd_params bp;
    kiln_hstu_bwd_params_init(&bp);
    kiln_hstu_fwd_params *p = &bp.fwd;
    p->dtype = dt;
    p->head_dim = D;
    p->num_heads = H;
    p->batch = B;
    p->q = dev[0];
    p->k = dev[1];
    p->v = dev[2];
    p->out = dev[4];
    p->total_q = p->total_k = total;
    p->q_row_stride = p->k_row_stride = p->v_row_stride = p->out_row_stride = (int64_t)H * D;
    p->q_head_stride = p->k_head_stride = p->v_head_stride = p->out_head_stride = D;
    p->seq_offsets_q = doff;
    p->offsets_type = KILN_INDEX_INT64;
    p->max_seqlen_q = p->max_seqlen_k = max_len;
    p->window_left = wl;
    p->window_right = wr;
    p->alpha = 1.0f / sqrtf((float)D);
    bp.dout = dev[3];
    bp.dq = dev[5];
    bp.dk = dev[6];
    bp.dv = dev[7];
    bp.dout_row_stride = bp.dq_row_stride = bp.dk_row_stride = bp.dv_row_stride = (int64_t)H * D;
    bp.dout_head_stride = bp.dq_head_stride = bp.dk_head_stride = bp.dv_head_stride = D;
    uint64_t ws = 0;
    kiln_hstu_bwd_workspace_size(&bp, &ws);
    bp.workspace = kt_gpu_alloc((size_t)ws);
    bp.workspace_bytes = ws;

    kiln_engine *mma = engine_with("mma"), *wg = engine_with("wgmma");
    char kmma[160] = "", kwg[160] = "";
    kiln_hstu_bwd_key(&bp, NULL, kmma, sizeof kmma);
    snprintf(kwg, sizeof kwg, "%s/wgmma", kmma);

    /* gradients of both, compared */
    uint16_t *g[2][3];
    for (int e = 0; e < 2; e++) {
        if (kiln_hstu_bwd(e ? wg : mma, &bp, NULL) != KILN_OK || kt_gpu_sync() != 0) {
            fprintf(stderr, "bwd %s: %s %s\n", e ? "wgmma" : "mma", kiln_last_error(), kt_gpu_error());
            return 2;
        }
        for (int t = 0; t < 3; t++) {
            g[e][t] = malloc(n * 2);
            kt_gpu_download(g[e][t], dev[5 + t], n * 2);
        }
    }
    const double tol = dt == KILN_DTYPE_FP16 ? 5e-3 : 2e-2;
    int ok = 1;
    static const char *const names[3] = {"dq", "dk", "dv"};
    printf("B=%d H=%d D=%d max_len=%d %s window (%d, %d), lengths in [%d, %d], total %lld\n", B, H, D,
           max_len, dt == KILN_DTYPE_FP16 ? "fp16" : "bf16", wl, wr, max_len / 2, max_len,
           (long long)total);
    for (int t = 0; t < 3; t++) {
        size_t bad;
        double rel = max_rel(g[1][t], g[0][t], n, dt, &bad);
        printf("  wgmma vs mma %s: max|diff| / max|mma| = %.2e, %zu non-finite%s\n", names[t], rel, bad,
               rel <= tol && bad == 0 ? "" : "  <-- MISMATCH");
        ok &= rel <= tol && bad == 0;
    }
    const double ms_f = time_ms(wg, &bp, 1);
    const double ms_m = time_ms(mma, &bp, 0);
    const double ms_w = time_ms(wg, &bp, 0);
    const double fb = 2.5 * flops_fwd;
    printf("  fwd (default kernel)  %7.3f ms  %6.1f TFLOP/s\n", ms_f, flops_fwd / ms_f * 1e-9);
    printf("  bwd mma   %-44s %7.3f ms  %6.1f TFLOP/s\n", kmma, ms_m, fb / ms_m * 1e-9);
    printf("  bwd wgmma %-44s %7.3f ms  %6.1f TFLOP/s  (%.2fx)\n", kwg, ms_w, fb / ms_w * 1e-9, ms_m / ms_w);
    printf("  fwd+bwd: mma %6.1f TFLOP/s, wgmma %6.1f TFLOP/s\n", (flops_fwd + fb) / (ms_f + ms_m) * 1e-9,
           (flops_fwd + fb) / (ms_f + ms_w) * 1e-9);
    kiln_engine_destroy(mma);
    kiln_engine_destroy(wg);
    return ok ? 0 : 1;
}
