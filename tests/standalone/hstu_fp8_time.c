/* hstu_fp8_time.c -- time kiln's HSTU forward, e4m3 (bf16 out) against bf16,
 * on one shape: B sequences of lengths uniform in [max_len/2, max_len]
 * (seeded), H heads, head dim D, causal.  TFLOP/s counts 2 H D len^2 per
 * sequence (bench/RESULTS.md's convention).  Built by hand:
 *   cc -std=c11 -O2 -Iinclude -Itests tests/standalone/hstu_fp8_time.c \
 *      build/obj/tests/util_gpu.o build/libkiln.a -lsqlite3 -lxxhash -ldl -lpthread -lm
 * Usage: hstu_fp8_time [B max_len H D] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln.h"
#include "util_gpu.h"

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int B = argc > 4 ? atoi(argv[1]) : 32, ML = argc > 4 ? atoi(argv[2]) : 4096;
    int H = argc > 4 ? atoi(argv[3]) : 4, D = argc > 4 ? atoi(argv[4]) : 128;
    char why[256];
    if (kt_gpu_init(why, sizeof why)) {
        printf("skipped: %s\n", why);
        return 0;
    }
    kt_rng r;
    kt_rng_seed(&r, 7);
    int64_t *off = malloc(sizeof(int64_t) * (size_t)(B + 1));
    off[0] = 0;
    double flops = 0;
    for (int b = 0; b < B; b++) {
        int len = kt_rng_int(&r, ML / 2, ML);
        off[b + 1] = off[b] + len;
        flops += 2.0 * H * D * (double)len * len;
    }
    const int64_t T = off[B];
    const size_t n = (size_t)T * H * D;
    uint8_t *h8 = malloc(n * 3);
    uint16_t *h16 = malloc(n * 2 * 3);
    for (size_t i = 0; i < n * 3; i++) {
        uint64_t x = kt_rng_u64(&r);
        h8[i] = (uint8_t)((x & 0x3f) | 0x00) ^ (uint8_t)(x >> 8 & 0x80); /* |v| <= 0.875 * 2^0 */
        h16[i] = kt_f32_to_bf16((float)kt_rng_range(&r, -1, 1));
    }
    uint64_t d8 = kt_gpu_alloc_copy(h8, n * 3), d16 = kt_gpu_alloc_copy(h16, n * 2 * 3);
    uint64_t dout = kt_gpu_alloc(n * 2), doff = kt_gpu_alloc_copy(off, sizeof(int64_t) * (size_t)(B + 1));
    const float one[4] = {1, 1, 1, 0};
    uint64_t dsc = kt_gpu_alloc_copy(one, sizeof one);
    if (!d8 || !d16 || !dout || !doff || !dsc) {
        printf("alloc: %s\n", kt_gpu_error());
        return 1;
    }
    kiln_engine *e;
    if (kiln_engine_create(NULL, &e) != KILN_OK) return 1;
    void *ev0 = kt_gpu_event_create(), *ev1 = kt_gpu_event_create();
    for (int fp8 = 0; fp8 < 2; fp8++) {
        kiln_hstu_fwd_params p;
        kiln_hstu_fwd_params_init(&p);
        int es = fp8 ? 1 : 2;
        uint64_t base = fp8 ? d8 : d16;
        p.dtype = fp8 ? KILN_DTYPE_E4M3 : KILN_DTYPE_BF16;
        p.out_dtype = fp8 ? KILN_DTYPE_BF16 : 0;
        p.head_dim = D;
        p.num_heads = H;
        p.batch = B;
        p.total_q = p.total_k = T;
        p.q = base;
        p.k = base + n * (size_t)es;
        p.v = base + 2 * n * (size_t)es;
        p.out = dout;
        p.q_row_stride = p.k_row_stride = p.v_row_stride = p.out_row_stride = (int64_t)H * D;
        p.q_head_stride = p.k_head_stride = p.v_head_stride = p.out_head_stride = D;
        p.seq_offsets_q = doff;
        p.offsets_type = KILN_INDEX_INT64;
        p.max_seqlen_q = p.max_seqlen_k = ML;
        p.window_left = -1;
        p.window_right = 0;
        p.alpha = 1.0f / 11.3137f;
        if (fp8) {
            p.descale_q = dsc;
            p.descale_k = dsc + 4;
            p.descale_v = dsc + 8;
        }
        char key[200] = "";
        kiln_hstu_fwd_key(&p, NULL, key, sizeof key);
        double ms[20];
        for (int it = 0; it < 3 + 20; it++) {
            kt_gpu_event_record(ev0, NULL);
            kiln_status s = kiln_hstu_fwd(e, &p, NULL);
            kt_gpu_event_record(ev1, NULL);
            if (s != KILN_OK) {
                printf("%s: %s: %s\n", key, kiln_status_name(s), kiln_last_error());
                return 1;
            }
            double t = kt_gpu_event_ms(ev0, ev1);
            if (it >= 3) ms[it - 3] = t;
        }
        qsort(ms, 20, sizeof ms[0], cmp_d);
        printf("%-44s B %d max_len %d H %d D %d causal: median %.3f ms (min %.3f), %.1f TFLOP/s\n",
               key, B, ML, H, D, ms[10], ms[0], flops / (ms[10] * 1e-3) / 1e12);
        fflush(stdout);
    }
    kiln_engine_destroy(e);
    return 0;
}
