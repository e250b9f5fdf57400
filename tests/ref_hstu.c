/* ref_hstu.c -- see ref_hstu.h.  Straightforward on purpose: one loop nest,
 * one validity function, no tiling, so that it is easy to check by eye. */
#include "ref_hstu.h"

#include <math.h>
#include <stdlib.h>

#include "util_gpu.h"

double kt_ref_silu(double x) { return x / (1.0 + exp(-x)); }

static int64_t offset_at(const void *offs, int i64, int i) {
    return i64 ? ((const int64_t *)offs)[i] : (int64_t)((const int32_t *)offs)[i];
}

int kt_ref_hstu_seq(const kiln_hstu_fwd_params *p, const kt_hstu_host *h,
                    int b, kt_hstu_seq *s) {
    int i64 = p->offsets_type == KILN_INDEX_INT64;
    const void *oq = h->seq_offsets_q;
    const void *ok = h->seq_offsets_k ? h->seq_offsets_k : h->seq_offsets_q;
    int64_t q0 = offset_at(oq, i64, b), q1 = offset_at(oq, i64, b + 1);
    int64_t k0 = offset_at(ok, i64, b), k1 = offset_at(ok, i64, b + 1);
    if (q0 < 0 || q1 < q0 || q1 > p->total_q) return 0;
    if (k0 < 0 || k1 < k0 || k1 > p->total_k) return 0;
    int64_t lq = q1 - q0, lk = k1 - k0;
    if (lq > p->max_seqlen_q || lk > p->max_seqlen_k) return 0;
    if (p->is_delta_q ? lq > lk : lq != lk) return 0;
    s->q_start = q0;
    s->k_start = k0;
    s->len_q = (int)lq;
    s->len_k = (int)lk;
    s->offset = (int)(lk - lq);
    int L = (int)lk;
    int c = h->num_contexts ? h->num_contexts[b] : 0;
    c = c < 0 ? 0 : c > L ? L : c;
    int t = h->num_targets ? h->num_targets[b] : 0;
    t = t < 0 ? 0 : t > L - c ? L - c : t;
    s->contexts = c;
    s->targets = t;
    return 1;
}

int kt_ref_hstu_valid(int i, int j, int L, int c, int t, int wl, int wr,
                      int g, int mutation) {
    if (j < 0 || j >= L) return 0;
    if (mutation == KT_REF_DROP_LAST_KEY && j == L - 1) return 0;
    if (mutation == KT_REF_DROP_DIAG && j == i) return 0;
    if (mutation == KT_REF_TARGET_GROUP_PLUS1) g += 1;
    /* window: (-1,-1) none, (-1,0) causal, (l,0) causal+local, else local;
     * all of them are this one test */
    int ok = (wl < 0 || j >= i - wl) && (wr < 0 || j <= i + wr);
    int causal = wr == 0;
    if (!causal) return ok;
    int hist_end = L - t;
    if (t > 0 && j >= hist_end) {
        /* a target key: only for target rows of the same group, causally */
        if (i < hist_end) return 0;
        if (g < 1) g = 1;
        return ok && (j - hist_end) / g == (i - hist_end) / g && j <= i;
    }
    /* context rows see the whole history (and context) */
    if (i < c && j < hist_end) return 1;
    return ok;
}

int kt_ref_hstu_pair(const kiln_hstu_fwd_params *p, const kt_hstu_host *h,
                     const kt_hstu_seq *s, int r, int j, int mutation) {
    const int i = r + s->offset; /* the query's position */
    if (!h->func)
        return kt_ref_hstu_valid(i, j, s->len_k, s->contexts, s->targets, p->window_left,
                                 p->window_right, p->target_group_size, mutation);
    if (j < 0 || j >= s->len_k) return 0;
    if (mutation == KT_REF_DROP_LAST_KEY && j == s->len_k - 1) return 0;
    if (mutation == KT_REF_DROP_DIAG && j == i) return 0;
    const int64_t plus = mutation == KT_REF_FUNC_HI_PLUS1;
    const int32_t *f = h->func + s->q_start + r;
    const int64_t st = p->func_stride;
    /* [0, F0) U [F1, F2) U ...: integer ranges, in 64 bits (F + 1 may pass
     * INT32_MAX) */
    if (j < (int64_t)f[0] + plus) return 1;
    for (int k = 1; k + 1 < p->n_func; k += 2)
        if (j >= (int64_t)f[k * st] && j < (int64_t)f[(k + 1) * st] + plus) return 1;
    return 0;
}

static double load(int dtype, const uint16_t *base, int64_t idx) {
    return (double)kt_half_to_f32(dtype, base[idx]);
}

int64_t kt_ref_hstu_fwd_ex(const kiln_hstu_fwd_params *p,
                           const kt_hstu_host *h, double *out, int mutation) {
    const int D = p->head_dim, H = p->num_heads, dt = p->dtype;
    const double alpha = (double)p->alpha;
    const double scaling = p->scaling_seqlen > 0 ? (double)p->scaling_seqlen
                                                 : (double)p->max_seqlen_q;
    int64_t bad = 0;
    double *qrow = malloc(sizeof(double) * (size_t)D);
    double *acc = malloc(sizeof(double) * (size_t)D);
    /* one sequence's keys and values of one head, converted once */
    size_t kv_cap = 0;
    double *kd = NULL, *vd = NULL;
    if (!qrow || !acc) abort();

    for (int b = 0; b < p->batch; b++) {
        kt_hstu_seq s;
        if (!kt_ref_hstu_seq(p, h, b, &s)) {
            bad++;
            continue;
        }
        if ((size_t)s.len_k * D > kv_cap) {
            kv_cap = (size_t)s.len_k * D;
            free(kd);
            free(vd);
            kd = malloc(sizeof(double) * kv_cap);
            vd = malloc(sizeof(double) * kv_cap);
            if (!kd || !vd) abort();
        }
        for (int hh = 0; hh < H; hh++) {
            const int rh = p->rab_heads > 0 ? hh % p->rab_heads : 0;
            for (int j = 0; j < s.len_k; j++)
                for (int d = 0; d < D; d++) {
                    kd[(size_t)j * D + d] = load(dt, h->k, (s.k_start + j) * p->k_row_stride +
                                                               (int64_t)hh * p->k_head_stride + d);
                    vd[(size_t)j * D + d] = load(dt, h->v, (s.k_start + j) * p->v_row_stride +
                                                               (int64_t)hh * p->v_head_stride + d);
                }
            for (int r = 0; r < s.len_q; r++) {
                const int i = r + s.offset; /* position of this query */
                const int64_t qo = (s.q_start + r) * p->q_row_stride +
                                   (int64_t)hh * p->q_head_stride;
                for (int d = 0; d < D; d++) {
                    qrow[d] = load(dt, h->q, qo + d);
                    acc[d] = 0;
                }
                for (int j = 0; j < s.len_k; j++) {
                    if (!kt_ref_hstu_pair(p, h, &s, r, j, mutation)) continue;
                    const double *kj = kd + (size_t)j * D, *vj = vd + (size_t)j * D;
                    double dot = 0;
                    for (int d = 0; d < D; d++) dot += qrow[d] * kj[d];
                    if (h->rab)
                        dot += load(dt, h->rab,
                                    (int64_t)b * p->rab_batch_stride +
                                        (int64_t)rh * p->rab_head_stride +
                                        (int64_t)i * p->rab_row_stride + j);
                    const double w = kt_ref_silu(alpha * dot) / scaling;
                    for (int d = 0; d < D; d++) acc[d] += w * vj[d];
                }
                const int64_t oo = (s.q_start + r) * p->out_row_stride +
                                   (int64_t)hh * p->out_head_stride;
                for (int d = 0; d < D; d++) out[oo + d] = acc[d];
            }
        }
    }
    free(qrow);
    free(acc);
    free(kd);
    free(vd);
    return bad;
}

int64_t kt_ref_hstu_fwd(const kiln_hstu_fwd_params *p, const kt_hstu_host *h,
                        double *out) {
    return kt_ref_hstu_fwd_ex(p, h, out, KT_REF_EXACT);
}
