/* util_case.c -- see util_case.h. */
#include "util_case.h"

#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const kt_family_name[KT_F_COUNT] = {
    "none", "causal", "local", "causal+context", "causal+target", "causal+context+target",
    "func"};
const char *const kt_layout_name[KT_L_COUNT] = {"contig", "qkvpacked", "padded", "headmajor"};

/* ------------------------------------------------------------------ memory, data */

void *kt_xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of host memory (%zu bytes)\n", n);
        abort();
    }
    return p;
}

uint16_t *kt_alloc_poison(size_t n) {
    uint16_t *p = kt_xmalloc(n * sizeof *p);
    memset(p, 0xff, n * sizeof *p);
    return p;
}

size_t kt_span(int64_t total, int64_t rs, int64_t hs, int H, int D) {
    if (total <= 0) return 0;
    return (size_t)((total - 1) * rs + (int64_t)(H - 1) * hs + D);
}

uint16_t kt_draw_half(kt_rng *r, int dtype, double amp, int grid) {
    if (grid) return kt_f32_to_half(dtype, (float)(kt_rng_int(r, -1024, 1024) / 1024.0));
    return kt_f32_to_half(dtype, (float)kt_rng_range(r, -amp, amp));
}

void kt_fill_rows(kt_rng *r, int dtype, uint16_t *buf, int64_t total, int64_t rs, int64_t hs,
                  int H, int D, double amp, int grid) {
    for (int64_t row = 0; row < total; row++)
        for (int h = 0; h < H; h++)
            for (int d = 0; d < D; d++)
                buf[row * rs + (int64_t)h * hs + d] = kt_draw_half(r, dtype, amp, grid);
}

void kt_draw_lengths(kt_rng *r, int B, int *len) {
    static const int pool[] = {0, 1, 17, 63, 129, 200};
    len[0] = kt_rng_int(r, 0, 1);
    for (int b = 1; b < B; b++)
        len[b] = kt_rng_uniform(r) < 0.6 ? pool[kt_rng_int(r, 0, 5)] : kt_rng_int(r, 2, 256);
    for (int b = B - 1; b > 0; b--) { /* shuffle */
        int j = kt_rng_int(r, 0, b), t = len[b];
        len[b] = len[j];
        len[j] = t;
    }
    int sum = 0;
    for (int b = 0; b < B; b++) sum += len[b];
    if (sum < 2) len[B - 1] = kt_rng_int(r, 2, 256);
}

uint64_t kt_hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* ------------------------------------------------------------------ cases */

kt_case kt_base_case(const char *label, int family, int dtype, int D, int H, int B,
                     const int *lens) {
    kt_case c;
    memset(&c, 0, sizeof c);
    snprintf(c.label, sizeof c.label, "%s", label);
    c.family = family;
    c.dtype = dtype;
    c.D = D;
    c.H = H;
    c.B = B;
    for (int b = 0; b < B; b++) c.len_q[b] = c.len_k[b] = lens[b];
    c.wl = -1;
    c.wr = family == KT_F_NONE || family == KT_F_FUNC ? -1 : 0;
    c.n_func = family == KT_F_FUNC ? 3 : 0;
    c.func_pad = family == KT_F_FUNC ? 256 : 0; /* NVIDIA's (1, n_func, total_q + 256) */
    c.group = 1;
    c.has_ctx = family == KT_F_CONTEXT || family == KT_F_CTX_TGT;
    c.has_tgt = family == KT_F_TARGET || family == KT_F_CTX_TGT;
    c.alpha = 1.0f;
    c.seed = kt_hash_str(label);
    return c;
}

void kt_describe(const kt_case *c, int bwd, char *buf, size_t n) {
    char lens[160];
    size_t o = 0;
    lens[0] = 0;
    for (int b = 0; b < c->B && o < sizeof lens; b++) {
        if (c->delta_q)
            o += (size_t)snprintf(lens + o, sizeof lens - o, "%s%d/%d", b ? "," : "",
                                  c->len_q[b], c->len_k[b]);
        else
            o += (size_t)snprintf(lens + o, sizeof lens - o, "%s%d", b ? "," : "",
                                  c->len_q[b]);
    }
    char extra[200];
    o = 0;
    extra[0] = 0;
#define ADD(...) o += (size_t)snprintf(extra + o, o < sizeof extra ? sizeof extra - o : 0, __VA_ARGS__)
    if (c->family == KT_F_LOCAL) ADD(" w=(%d,%d)", c->wl, c->wr);
    if (c->has_tgt) ADD(" g=%d", c->group);
    if (c->family == KT_F_FUNC) ADD(" nf=%d pad=%d", c->n_func, c->func_pad);
    if (c->rab_heads)
        ADD(" rab=%d/%d%s%s", c->rab_heads, c->H, c->rab_exact ? "" : "(padded)",
            bwd && c->drab ? (c->drab_own ? " drab(own strides)" : " drab") : "");
    if (c->delta_q) ADD(" delta_q");
    if (bwd) ADD(" %s", c->det ? "det" : "atomic");
    ADD(" %s", c->i64 ? "i64" : "i32");
    if (c->layout != KT_L_CONTIG) ADD(" %s", kt_layout_name[c->layout]);
    if (c->extra_rows) ADD(" +%drows", c->extra_rows);
    if (c->msq_extra || c->msq_set || (bwd && c->msk_extra)) ADD(" maxlen+");
    if (c->scaling > 0) ADD(" scale=%.1f", (double)c->scaling);
    ADD(" a=%.2f", (double)c->alpha);
#undef ADD
    snprintf(buf, n, "%s %s %s d%d H=%d B=%d [%s]%s", c->label, kt_family_name[c->family],
             c->dtype == KILN_DTYPE_FP16 ? "fp16" : "bf16", c->D, c->H, c->B, lens, extra);
}

kt_case kt_grid_case_begin(int f, int dtype, int D, int n, uint64_t seed, kt_rng *r) {
    kt_rng_seed(r, seed ^ ((uint64_t)(n + 1) * 0x9e3779b97f4a7c15ull));
    int lens[KT_MAXB] = {0};
    int H = kt_rng_int(r, 1, 4), B = kt_rng_int(r, 3, 6);
    kt_draw_lengths(r, B, lens);
    kt_case c = kt_base_case("grid", f, dtype, D, H, B, lens);
    c.seed = kt_rng_u64(r);
    return c;
}

void kt_grid_case_finish(kt_case *c, int f, int n, kt_rng *r) {
    const int dq_ok = f == KT_F_NONE || f == KT_F_CAUSAL || f == KT_F_LOCAL || f == KT_F_FUNC;
    c->delta_q = dq_ok && n % 2 == 1;
    if (c->delta_q && c->layout == KT_L_PACKED) c->layout = KT_L_CONTIG;
    c->i64 = kt_rng_uniform(r) < 0.5;
    c->alpha = (float)kt_rng_range(r, 0.5, 2.0);
    if (kt_rng_uniform(r) < 0.25) c->extra_rows = kt_rng_int(r, 1, 9);
    if (kt_rng_uniform(r) < 0.3) c->msq_extra = kt_rng_int(r, 1, 40);
    if (kt_rng_uniform(r) < 0.5) c->scaling = (float)kt_rng_range(r, 1, 2 * 256 + 1);
    if (f == KT_F_LOCAL) {
        switch (kt_rng_int(r, 0, 4)) {
        case 0: c->wl = kt_rng_int(r, 0, 64); c->wr = 0; break; /* causal + local */
        case 1: c->wl = kt_rng_int(r, 0, 64); c->wr = kt_rng_int(r, 1, 64); break;
        case 2: c->wl = -1; c->wr = kt_rng_int(r, 1, 64); break;
        case 3: c->wl = kt_rng_int(r, 0, 64); c->wr = -1; break;
        default: c->wl = kt_rng_int(r, 0, 8); c->wr = kt_rng_int(r, 1, 8); break;
        }
    }
    if (c->has_tgt) {
        static const int groups[] = {1, 2, 7};
        c->group = groups[(n / 2) % 3];
    }
    for (int b = 0; b < c->B; b++) {
        int L = c->len_q[b];
        if (c->delta_q) {
            c->len_k[b] = L;
            int pick = kt_rng_int(r, 0, 2);
            c->len_q[b] = pick == 0 ? L : pick == 1 ? (L < 1 ? L : 1) : kt_rng_int(r, 0, L);
        }
        if (f == KT_F_CONTEXT) c->ctx[b] = kt_rng_int(r, 0, L);
        if (f == KT_F_TARGET) c->tgt[b] = kt_rng_int(r, 0, L);
        if (f == KT_F_CTX_TGT) {
            c->ctx[b] = kt_rng_int(r, 0, L / 2);
            c->tgt[b] = kt_rng_int(r, 0, L - c->ctx[b]);
        }
    }
    if (c->delta_q && kt_rng_uniform(r) < 0.3) c->msk_extra = kt_rng_int(r, 1, 40);
    if (f == KT_F_FUNC) { /* drawn last: the other families' draws stay as they were */
        static const int nfs[] = {1, 3, 5};
        c->n_func = nfs[(n / 2) % 3];
        c->func_pad = kt_rng_uniform(r) < 0.5 ? 256 : kt_rng_int(r, 0, 9);
    }
}

kt_case *kt_make_sweep(uint64_t default_seed, kt_grid_fn grid, int (*edges)(kt_case *out),
                       int bwd, int *count, int *reps_out, uint64_t *seed_out) {
    const int reps = kt_env_int("KILN_TEST_REPS", 2);
    const uint64_t seed = (uint64_t)kt_env_int("KILN_TEST_SEED", (int)default_seed);
    const char *filter = getenv("KILN_TEST_FILTER");
    static const int dtypes[] = {KILN_DTYPE_FP16, KILN_DTYPE_BF16};
    static const int dims[] = {32, 64, 128, 256};
    int cap = KT_F_COUNT * 2 * 4 * (reps > 0 ? reps : 0) + KT_MAX_EDGE, n = 0, idx = 0;
    kt_case *all = kt_xmalloc((size_t)cap * sizeof *all);
    for (int f = 0; f < KT_F_COUNT; f++)
        for (int t = 0; t < 2; t++)
            for (int di = 0; di < 4; di++)
                for (int rep = 0; rep < reps; rep++, idx++)
                    all[n++] = grid(f, dtypes[t], dims[di], idx, seed);
    n += edges(all + n);
    if (filter && *filter) { /* keep the matching ones */
        int m = 0;
        for (int i = 0; i < n; i++) {
            char desc[400];
            kt_describe(&all[i], bwd, desc, sizeof desc);
            if (strstr(desc, filter)) all[m++] = all[i];
        }
        n = m;
    }
    *count = n;
    *reps_out = reps;
    *seed_out = seed;
    return all;
}

kt_case kt_neg_case(int dtype) {
    kt_case c = kt_base_case("negative-control", KT_F_CTX_TGT, dtype, 128, 2, 3,
                             (const int[]){63, 129, 200});
    memcpy(c.ctx, (const int[]){5, 10, 0}, 3 * sizeof(int));
    memcpy(c.tgt, (const int[]){9, 20, 33}, 3 * sizeof(int));
    c.group = 2;
    c.rab_heads = 1;
    return c;
}

kt_case kt_neg_func_case(int dtype) {
    kt_case c = kt_base_case("negative-control-func", KT_F_FUNC, dtype, 128, 2, 3,
                             (const int[]){63, 129, 200});
    c.rab_heads = 1;
    return c;
}

const int64_t kt_invalid_offsets[6] = {0, 10, 4, 40, 50, 66};

kt_case kt_invalid_offsets_case(void) {
    kt_case c = kt_base_case("invalid-offsets", KT_F_NONE, KILN_DTYPE_BF16, 64, 2, 5,
                             (const int[]){10, 30, 0, 10, 10});
    c.msq_set = 16;
    return c;
}

kt_case kt_after_invalid_case(void) {
    return kt_base_case("after-invalid", KT_F_CAUSAL, KILN_DTYPE_BF16, 64, 2, 3,
                        (const int[]){5, 33, 16});
}

kt_case kt_nan_next_case(const char *label, int family, int dtype, int D, int H,
                         const int *lens_q, const int *lens_k) {
    kt_case c = kt_base_case(label, family, dtype, D, H, 3, lens_q);
    memcpy(c.len_k, lens_k, 3 * sizeof(int));
    c.delta_q = 1;
    c.nan_v = 2;
    return c;
}

kt_case kt_layouts_case(void) {
    kt_case c = kt_base_case("layouts", KT_F_CTX_TGT, KILN_DTYPE_BF16, 32, 4, 3,
                             (const int[]){9, 0, 21});
    memcpy(c.ctx, (const int[]){2, 0, 3}, 3 * sizeof(int));
    memcpy(c.tgt, (const int[]){3, 0, 5}, 3 * sizeof(int));
    c.group = 2;
    c.extra_rows = 2;
    return c;
}

/* ------------------------------------------------------------------ inputs */

void kt_case_shape(const kt_case *c, const int64_t *custom_off, kt_inputs *in, kt_shape *s) {
    const int B = c->B, H = c->H, D = c->D;
    int maxq = 0, maxk = 0;
    in->offq[0] = in->offk[0] = 0;
    for (int b = 0; b < B; b++) {
        int lk = c->delta_q ? c->len_k[b] : c->len_q[b];
        in->offq[b + 1] = in->offq[b] + c->len_q[b];
        in->offk[b + 1] = in->offk[b] + lk;
        if (c->len_q[b] > maxq) maxq = c->len_q[b];
        if (lk > maxk) maxk = lk;
    }
    s->total_q = in->offq[B] + c->extra_rows;
    s->total_k = c->delta_q ? in->offk[B] + c->extra_rows : s->total_q;
    if (custom_off)
        for (int b = 0; b <= B; b++) in->offq[b] = in->offk[b] = custom_off[b];
    for (int b = 0; b <= B; b++) {
        in->offq32[b] = (int32_t)in->offq[b];
        in->offk32[b] = (int32_t)in->offk[b];
    }
    s->msq = c->msq_set > 0 ? c->msq_set : maxq + c->msq_extra;
    s->msk = c->msq_set > 0 ? c->msq_set : c->delta_q ? maxk + c->msk_extra : s->msq;
    for (int b = 0; b < B; b++) {
        in->ctx[b] = c->ctx[b];
        in->tgt[b] = c->tgt[b];
    }
    s->sep_k = c->delta_q || c->sep_k_offsets;
    s->func_stride = 0;
    if (c->n_func > 0) {
        s->func_stride = s->total_q + c->func_pad;
        if (s->func_stride < 1) s->func_stride = 1;
    }

    switch (c->layout) {
    case KT_L_PACKED:
        s->qrs = s->krs = 3 * (int64_t)H * D;
        s->qhs = s->khs = D;
        break;
    case KT_L_PADDED:
        s->qhs = s->khs = D + 8;
        s->qrs = s->krs = (int64_t)H * (D + 8) + 8;
        break;
    case KT_L_HEADMAJOR:
        s->qrs = s->krs = D;
        s->qhs = (s->total_q > 0 ? s->total_q : 1) * D;
        s->khs = (s->total_k > 0 ? s->total_k : 1) * D;
        break;
    default:
        s->qrs = s->krs = (int64_t)H * D;
        s->qhs = s->khs = D;
        break;
    }
}

void kt_case_fwd_params(const kt_case *c, const kt_shape *s, kiln_hstu_fwd_params *p) {
    p->dtype = c->dtype;
    p->head_dim = c->D;
    p->num_heads = c->H;
    p->batch = c->B;
    p->total_q = s->total_q;
    p->total_k = s->total_k;
    p->q_row_stride = s->qrs;
    p->q_head_stride = s->qhs;
    p->k_row_stride = p->v_row_stride = s->krs;
    p->k_head_stride = p->v_head_stride = s->khs;
    p->offsets_type = c->i64 ? KILN_INDEX_INT64 : KILN_INDEX_INT32;
    p->max_seqlen_q = s->msq;
    p->max_seqlen_k = s->msk;
    p->window_left = c->wl;
    p->window_right = c->wr;
    p->target_group_size = c->group > 0 ? c->group : 1;
    p->alpha = c->alpha;
    p->scaling_seqlen = c->scaling;
    p->rab_heads = c->rab_heads > 0 ? c->rab_heads : 1;
    p->is_delta_q = c->delta_q;
    p->n_func = c->n_func;
    p->func_stride = s->func_stride;
    const int msk1 = s->msk > 0 ? s->msk : 1;
    if (c->rab_heads > 0) {
        p->rab_row_stride = c->rab_exact ? msk1 : (msk1 + 7) / 8 * 8; /* 16 bytes */
        p->rab_head_stride = (int64_t)msk1 * p->rab_row_stride;
        p->rab_batch_stride = c->rab_bcast ? 0 : c->rab_heads * p->rab_head_stride;
    }
}

void kt_fake_input_ptrs(const kt_case *c, const kt_shape *s, kiln_hstu_fwd_params *p) {
    const uint64_t base = 0x7f0000000000ull;
    p->q = base + 0x100000;
    p->k = base + 0x200000;
    p->v = base + 0x300000;
    p->seq_offsets_q = base + 0x500000;
    p->seq_offsets_k = s->sep_k ? base + 0x600000 : 0;
    p->num_contexts = c->has_ctx ? base + 0x700000 : 0;
    p->num_targets = c->has_tgt ? base + 0x800000 : 0;
    p->rab = c->rab_heads > 0 ? base + 0x900000 : 0;
    p->func = c->n_func > 0 ? base + 0x1000000 : 0;
}

void kt_fake_fwd_params(kiln_hstu_fwd_params *p) {
    const uint64_t base = 0x7f0000000000ull;
    p->dtype = KILN_DTYPE_BF16;
    p->head_dim = 128;
    p->num_heads = 4;
    p->batch = 2;
    p->total_q = p->total_k = 64;
    p->q = base + 0x100000;
    p->k = base + 0x200000;
    p->v = base + 0x300000;
    p->q_row_stride = p->k_row_stride = p->v_row_stride = p->out_row_stride = 4 * 128;
    p->q_head_stride = p->k_head_stride = p->v_head_stride = p->out_head_stride = 128;
    p->seq_offsets_q = base + 0x500000;
    p->offsets_type = KILN_INDEX_INT32;
    p->max_seqlen_q = p->max_seqlen_k = 32;
    p->window_left = -1;
    p->window_right = 0;
}

void kt_fill_qkv(const kt_case *c, const kt_shape *s, kt_rng *r, kt_inputs *in) {
    const int H = c->H, D = c->D, dt = c->dtype, grid = c->grid_values;
    const double amp_qk = pow(9.0 / D, 0.25); /* q.k has variance ~1 */
    if (c->layout == KT_L_PACKED) {
        in->nq = in->nk = in->nv = (size_t)s->total_q * 3 * H * D + KT_GUARD;
        in->bq = in->bk = in->bv = kt_alloc_poison(in->nq);
        in->q_at = 0;
        in->k_at = (size_t)H * D;
        in->v_at = 2 * (size_t)H * D;
    } else {
        in->nq = kt_span(s->total_q, s->qrs, s->qhs, H, D) + KT_GUARD;
        in->nk = in->nv = kt_span(s->total_k, s->krs, s->khs, H, D) + KT_GUARD;
        in->bq = kt_alloc_poison(in->nq);
        in->bk = kt_alloc_poison(in->nk);
        in->bv = kt_alloc_poison(in->nv);
    }
    kt_fill_rows(r, dt, in->bq + in->q_at, s->total_q, s->qrs, s->qhs, H, D, amp_qk, grid);
    kt_fill_rows(r, dt, in->bk + in->k_at, s->total_k, s->krs, s->khs, H, D, amp_qk, grid);
    kt_fill_rows(r, dt, in->bv + in->v_at, s->total_k, s->krs, s->khs, H, D, 1.0, grid);
    if (c->nan_v)
        for (int64_t j = in->offk[c->nan_v - 1]; j < in->offk[c->nan_v]; j++)
            for (int h = 0; h < H; h++)
                for (int e = 0; e < D; e++) in->bv[in->v_at + j * s->krs + h * s->khs + e] = 0x7fff;
}

void kt_fill_rab(const kt_case *c, const kiln_hstu_fwd_params *p, kt_rng *r, kt_inputs *in) {
    if (c->rab_heads <= 0) return;
    const int planes = c->rab_bcast ? 1 : c->B;
    const size_t plane = (size_t)c->rab_heads * (size_t)p->rab_head_stride;
    in->nrab = (size_t)planes * plane + KT_GUARD;
    in->brab = kt_xmalloc(in->nrab * sizeof(uint16_t));
    for (size_t i = 0; i < in->nrab; i++)
        in->brab[i] = kt_draw_half(r, c->dtype, 1.0, c->grid_values);
    if (!c->rab_nan_pad) return;
    /* (i, j) with i or j past the sequence: no output reads them, so a
     * kernel that multiplies by a mask rather than selecting turns them
     * into NaN outputs (0 * NaN) */
    for (int b = 0; b < planes; b++) {
        int len = 0;
        for (int bb = c->rab_bcast ? 0 : b; bb < (c->rab_bcast ? c->B : b + 1); bb++) {
            const int lb = c->delta_q ? c->len_k[bb] : c->len_q[bb];
            if (lb > len) len = lb;
        }
        for (int h = 0; h < c->rab_heads; h++)
            for (int64_t i = 0; i < p->max_seqlen_k; i++)
                for (int64_t j = 0; j < p->max_seqlen_k; j++)
                    if (i >= len || j >= len)
                        in->brab[(size_t)b * plane + (size_t)h * (size_t)p->rab_head_stride +
                                 (size_t)(i * p->rab_row_stride + j)] = 0x7fff;
    }
}

void kt_fill_func(const kt_case *c, const kt_shape *s, kt_inputs *in) {
    if (c->n_func <= 0) return;
    if (c->n_func > KT_MAX_NFUNC) abort();
    const int64_t st = s->func_stride;
    const int nf = c->n_func;
    kt_rng r;
    kt_rng_seed(&r, c->seed ^ 0x66756e63u); /* "func" */
    in->nfunc = (size_t)(nf * st) + KT_GUARD;
    in->func = kt_xmalloc(in->nfunc * sizeof(int32_t));
    for (size_t i = 0; i < in->nfunc; i++) /* garbage outside the rows */
        in->func[i] = (int32_t)(kt_rng_u64(&r) >> 33) - (1 << 29);
    for (int b = 0; b < c->B; b++) {
        const int lq = c->len_q[b], lk = c->delta_q ? c->len_k[b] : c->len_q[b];
        const int off = lk - lq;
        for (int row = 0; row < lq; row++) {
            int32_t v[KT_MAX_NFUNC];
            const int i = row + off; /* the query's position among the keys */
            const int style = row == 0 ? 0 : kt_rng_int(&r, 0, 4);
            switch (style) {
            case 0: /* a window around the diagonal, and a short prefix */
                v[0] = kt_rng_int(&r, 0, i / 2 + 1);
                for (int k = 1; k + 1 < nf; k += 2) {
                    v[k] = i - kt_rng_int(&r, 0, 20);
                    v[k + 1] = i + 1 + kt_rng_int(&r, 0, 20);
                }
                if (nf == 1) v[0] = i + 1 + kt_rng_int(&r, 0, 3); /* causal-like */
                break;
            case 1: { /* sorted: disjoint intervals, NVIDIA's test's shape */
                for (int k = 0; k < nf; k++) v[k] = kt_rng_int(&r, 0, lk);
                for (int a = 1; a < nf; a++) /* insertion sort */
                    for (int bb = a; bb > 0 && v[bb - 1] > v[bb]; bb--) {
                        int32_t t = v[bb];
                        v[bb] = v[bb - 1];
                        v[bb - 1] = t;
                    }
                break;
            }
            case 2: /* anything: empty, overlapping, past the ends */
            case 3:
                for (int k = 0; k < nf; k++) v[k] = kt_rng_int(&r, -3, lk + 5);
                break;
            default: /* sees nothing, or the extremes */
                for (int k = 0; k < nf; k++) {
                    double u = kt_rng_uniform(&r);
                    v[k] = u < 0.25 ? INT32_MIN : u < 0.5 ? INT32_MAX : u < 0.75 ? 0 : -1;
                }
                if (kt_rng_uniform(&r) < 0.5) v[0] = 0;
                break;
            }
            const int64_t g = in->offq[b] + row;
            if (g < 0 || g >= st) continue; /* custom (invalid) offsets */
            for (int k = 0; k < nf; k++) in->func[k * st + g] = v[k];
        }
    }
}

void kt_host_view(const kt_case *c, const kt_shape *s, const kt_inputs *in, kt_hstu_host *h) {
    h->q = in->bq + in->q_at;
    h->k = in->bk + in->k_at;
    h->v = in->bv + in->v_at;
    h->rab = in->brab;
    h->seq_offsets_q = c->i64 ? (const void *)in->offq : (const void *)in->offq32;
    h->seq_offsets_k = !s->sep_k ? NULL : c->i64 ? (const void *)in->offk : (const void *)in->offk32;
    h->num_contexts = c->has_ctx ? in->ctx : NULL;
    h->num_targets = c->has_tgt ? in->tgt : NULL;
    h->func = in->func;
}

void kt_inputs_free(kt_inputs *in) {
    if (in->bk != in->bq) {
        free(in->bk);
        free(in->bv);
    }
    free(in->bq);
    free(in->brab);
    free(in->func);
    memset(in, 0, sizeof *in);
}

/* ------------------------------------------------------------------ misc */

int kt_env_int(const char *name, int def) {
    const char *s = getenv(name);
    return s && *s ? atoi(s) : def;
}

int kt_names_field(const char *msg, const char *field) {
    size_t n = strlen(field);
    for (const char *s = msg; (s = strstr(s, field)) != NULL; s++) {
        int pre = s == msg || !(isalnum((unsigned char)s[-1]) || s[-1] == '_');
        int post = !(isalnum((unsigned char)s[n]) || s[n] == '_');
        if (pre && post) return 1;
    }
    return 0;
}

int kt_key_add(char (*keys)[KT_KEYLEN], int *nk, const char *key) {
    for (int k = 0; k < *nk; k++)
        if (!strcmp(keys[k], key)) return 0;
    snprintf(keys[(*nk)++], KT_KEYLEN, "%s", key);
    return 1;
}

typedef struct prewarm_job {
    kiln_engine *e;
    char (*keys)[KT_KEYLEN];
    int n, next, failed;
    pthread_mutex_t mu;
} prewarm_job;

static void *prewarm_worker(void *arg) {
    prewarm_job *j = arg;
    for (;;) {
        pthread_mutex_lock(&j->mu);
        int i = j->next++;
        pthread_mutex_unlock(&j->mu);
        if (i >= j->n) return NULL;
        kiln_status st = kiln_prewarm(j->e, j->keys[i], NULL);
        if (st != KILN_OK) {
            pthread_mutex_lock(&j->mu);
            j->failed++;
            printf("  prewarm %s: %s: %.300s\n", j->keys[i], kiln_status_name(st),
                   kiln_last_error());
            pthread_mutex_unlock(&j->mu);
        }
    }
}

int kt_prewarm_keys(kiln_engine *e, char (*keys)[KT_KEYLEN], int nk, int nthreads, int *threads) {
    prewarm_job j = {.e = e, .keys = keys, .n = nk};
    pthread_mutex_init(&j.mu, NULL);
    pthread_t th[32];
    int started = 0;
    if (nthreads > 32) nthreads = 32;
    for (int t = 0; t < nthreads; t++)
        if (pthread_create(&th[started], NULL, prewarm_worker, &j) == 0) started++;
    if (!started) prewarm_worker(&j);
    for (int t = 0; t < started; t++) pthread_join(th[t], NULL);
    pthread_mutex_destroy(&j.mu);
    *threads = started ? started : 1;
    return j.failed;
}

int kt_dry_sweep_wanted(int gpu_ok) {
    if (kt_env_int("KILN_TEST_DRY_SWEEP", !gpu_ok)) return 1;
    printf("skipped: %s (KILN_TEST_DRY_SWEEP=1 runs it)\n",
           gpu_ok ? "test_gpu_sweep checks the same with the kernel" : "turned off");
    return 0;
}

int kt_open_engines(int *gpu_ok, char *why, size_t n, kiln_engine **engine,
                    kiln_engine **nolaunch) {
    if (kt_gpu_init(why, n) == 0) *gpu_ok = 1;
    kiln_engine_options o;
    if (kiln_engine_options_init(&o) != KILN_OK) return -1;
    o.flags = KILN_ENGINE_NO_DISK_CACHE | KILN_ENGINE_NO_COMPILE;
    o.log_level = KILN_LOG_ERROR;
    if (kiln_engine_create(&o, nolaunch) != KILN_OK) {
        fprintf(stderr, "kiln_engine_create: %s\n", kiln_last_error());
        return -1;
    }
    if (*gpu_ok && kiln_engine_create(NULL, engine) != KILN_OK) {
        fprintf(stderr, "kiln_engine_create: %s\n", kiln_last_error());
        return -1;
    }
    return 0;
}
