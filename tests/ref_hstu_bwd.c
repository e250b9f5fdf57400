/* ref_hstu_bwd.c -- see ref_hstu_bwd.h.  One loop nest over (b, h, i, j),
 * the forward reference's sequence and validity functions, no tiling. */
#include "ref_hstu_bwd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util_gpu.h"

double kt_ref_silu_grad(double x) {
    const double sg = 1.0 / (1.0 + exp(-x));
    return sg * (1.0 + x * (1.0 - sg));
}

static double load(int dtype, const uint16_t *base, int64_t idx) {
    return (double)kt_half_to_f32(dtype, base[idx]);
}

/* x rounded to the 16-bit input type (through float, as a kernel would). */
static double round16(int dtype, double x) {
    return (double)kt_half_to_f32(dtype, kt_f32_to_half(dtype, (float)x));
}

static double *grow(double *buf, size_t *cap, size_t need) {
    if (need <= *cap) return buf;
    free(buf);
    *cap = need;
    buf = malloc(sizeof(double) * need);
    if (!buf) abort();
    return buf;
}

int64_t kt_ref_hstu_bwd_ex(const kiln_hstu_bwd_params *bp, const kt_hstu_bwd_host *h,
                           const kt_hstu_bwd_out *out, int mutation, int flags) {
    const kiln_hstu_fwd_params *p = &bp->fwd;
    const int D = p->head_dim, H = p->num_heads, dt = p->dtype;
    const int RH = p->rab_heads > 0 ? p->rab_heads : 1;
    const double alpha = (double)p->alpha;
    const double scaling = p->scaling_seqlen > 0 ? (double)p->scaling_seqlen
                                                 : (double)p->max_seqlen_q;
    const int mask_mut = mutation < KT_BWD_SILU_NO_X_TERM ? mutation : KT_REF_EXACT;
    const int round_ops = (flags & KT_BWD_ROUND_OPERANDS) != 0;
    const int with_rab = h->f.rab != NULL;
    const int with_drab = with_rab && out->drab != NULL;
    int64_t bad = 0;
    /* one sequence and one head, converted once: q, do, dq (len_q x D);
     * k, v, dk, dv (len_k x D) */
    size_t qcap = 0, kcap = 0;
    double *qd = NULL, *dod = NULL, *dqd = NULL;
    double *kd = NULL, *vd = NULL, *dkd = NULL, *dvd = NULL;
    size_t kcap2 = 0, kcap3 = 0, kcap4 = 0, qcap2 = 0, qcap3 = 0;

    for (int b = 0; b < p->batch; b++) {
        kt_hstu_seq s;
        if (!kt_ref_hstu_seq(p, &h->f, b, &s)) {
            bad++;
            continue;
        }
        const size_t nq = (size_t)s.len_q * D, nk = (size_t)s.len_k * D;
        qd = grow(qd, &qcap, nq ? nq : 1);
        dod = grow(dod, &qcap2, nq ? nq : 1);
        dqd = grow(dqd, &qcap3, nq ? nq : 1);
        kd = grow(kd, &kcap, nk ? nk : 1);
        vd = grow(vd, &kcap2, nk ? nk : 1);
        dkd = grow(dkd, &kcap3, nk ? nk : 1);
        dvd = grow(dvd, &kcap4, nk ? nk : 1);
        if (with_drab) /* the whole [0, len_k)^2 block of every rab head */
            for (int hr = 0; hr < RH; hr++)
                for (int row = 0; row < s.len_k; row++)
                    for (int col = 0; col < s.len_k; col++)
                        out->drab[(int64_t)b * bp->drab_batch_stride +
                                  (int64_t)hr * bp->drab_head_stride +
                                  (int64_t)row * bp->drab_row_stride + col] = 0;

        for (int hh = 0; hh < H; hh++) {
            const int rh = hh % RH;
            for (int r = 0; r < s.len_q; r++)
                for (int d = 0; d < D; d++) {
                    const int64_t row = s.q_start + r;
                    qd[(size_t)r * D + d] =
                        load(dt, h->f.q, row * p->q_row_stride + (int64_t)hh * p->q_head_stride + d);
                    dod[(size_t)r * D + d] =
                        load(dt, h->dout,
                             row * bp->dout_row_stride + (int64_t)hh * bp->dout_head_stride + d);
                    dqd[(size_t)r * D + d] = 0;
                }
            for (int j = 0; j < s.len_k; j++)
                for (int d = 0; d < D; d++) {
                    const int64_t row = s.k_start + j;
                    kd[(size_t)j * D + d] =
                        load(dt, h->f.k, row * p->k_row_stride + (int64_t)hh * p->k_head_stride + d);
                    vd[(size_t)j * D + d] =
                        load(dt, h->f.v, row * p->v_row_stride + (int64_t)hh * p->v_head_stride + d);
                    dkd[(size_t)j * D + d] = 0;
                    dvd[(size_t)j * D + d] = 0;
                }
            for (int r = 0; r < s.len_q; r++) {
                const int i = r + s.offset; /* the query's position */
                const double *qi = qd + (size_t)r * D, *doi = dod + (size_t)r * D;
                double *dqi = dqd + (size_t)r * D;
                for (int j = 0; j < s.len_k; j++) {
                    if (!kt_ref_hstu_pair(p, &h->f, &s, r, j, mask_mut)) continue;
                    const double *kj = kd + (size_t)j * D, *vj = vd + (size_t)j * D;
                    double qk = 0, dp = 0;
                    for (int d = 0; d < D; d++) {
                        qk += qi[d] * kj[d];
                        dp += doi[d] * vj[d];
                    }
                    const int64_t ridx = (int64_t)b * p->rab_batch_stride +
                                         (int64_t)rh * p->rab_head_stride +
                                         (int64_t)i * p->rab_row_stride + j;
                    if (with_rab) qk += load(dt, h->f.rab, ridx);
                    const double x = alpha * qk;
                    double pw = kt_ref_silu(x);
                    if (mutation != KT_BWD_DV_NO_SCALING) pw /= scaling;
                    double g = mutation == KT_BWD_SILU_NO_X_TERM ? 1.0 / (1.0 + exp(-x))
                                                                  : kt_ref_silu_grad(x);
                    double ds = dp * g / scaling;
                    if (mutation != KT_BWD_NO_ALPHA) ds *= alpha;
                    if (with_drab && (mutation != KT_BWD_DRAB_ONE_HEAD || hh == rh))
                        out->drab[(int64_t)b * bp->drab_batch_stride +
                                  (int64_t)rh * bp->drab_head_stride +
                                  (int64_t)i * bp->drab_row_stride + j] += ds;
                    if (round_ops) {
                        pw = round16(dt, pw);
                        ds = round16(dt, ds);
                    }
                    double *dkj = dkd + (size_t)j * D, *dvj = dvd + (size_t)j * D;
                    const double *kterm = mutation == KT_BWD_DK_FROM_DO ? doi : qi;
                    for (int d = 0; d < D; d++) {
                        dvj[d] += pw * doi[d];
                        dqi[d] += ds * kj[d];
                        dkj[d] += ds * kterm[d];
                    }
                }
            }
            for (int r = 0; r < s.len_q; r++) {
                const int64_t o = (s.q_start + r) * bp->dq_row_stride + (int64_t)hh * bp->dq_head_stride;
                memcpy(out->dq + o, dqd + (size_t)r * D, sizeof(double) * (size_t)D);
            }
            for (int j = 0; j < s.len_k; j++) {
                const int64_t ok = (s.k_start + j) * bp->dk_row_stride + (int64_t)hh * bp->dk_head_stride;
                const int64_t ov = (s.k_start + j) * bp->dv_row_stride + (int64_t)hh * bp->dv_head_stride;
                memcpy(out->dk + ok, dkd + (size_t)j * D, sizeof(double) * (size_t)D);
                memcpy(out->dv + ov, dvd + (size_t)j * D, sizeof(double) * (size_t)D);
            }
        }
    }
    free(qd);
    free(dod);
    free(dqd);
    free(kd);
    free(vd);
    free(dkd);
    free(dvd);
    return bad;
}

int64_t kt_ref_hstu_bwd(const kiln_hstu_bwd_params *p, const kt_hstu_bwd_host *h,
                        const kt_hstu_bwd_out *out) {
    return kt_ref_hstu_bwd_ex(p, h, out, KT_REF_EXACT, 0);
}
