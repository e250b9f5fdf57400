// sm90_harness.cu -- standalone check and timing of templates/hstu_fwd_sm90.cu
// (and, with WARPS != 12, of the portable templates/hstu_fwd.cu for comparison).
// Adapted from hstu_fwd_harness.cu: four small ragged sets (target group sizes
// 3, 1, 7, 2; int32 and int64 offsets; aligned and odd-stride rab) and a bench
// with a configurable shape.
// Not part of the product build.  Loads a cubin built from a prelude (see
// compile_all.sh), runs it through the driver API exactly as the runtime
// would (one kiln_hstu_kparams by value, dynamic smem opt-in), and compares
// with a double-precision CPU reference of SPEC.md section 1.
//
//   nvcc -O2 -std=c++17 hstu_fwd_harness.cu -lcuda -o harness
//   harness CUBIN DTYPE D BM BN WARPS CAUSAL LOCAL CONTEXT TARGET DELTA RAB [bench [B MAXLEN H]]
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>
#include "../../templates/hstu_tma_params.h"

#define CK(x)                                                                   \
    do {                                                                        \
        CUresult r_ = (x);                                                      \
        if (r_ != CUDA_SUCCESS) {                                               \
            const char *s_ = 0;                                                 \
            cuGetErrorName(r_, &s_);                                            \
            fprintf(stderr, "%s:%d %s -> %s\n", __FILE__, __LINE__, #x, s_);    \
            exit(3);                                                            \
        }                                                                       \
    } while (0)

struct Variant {
    int dtype, d, bm, bn, warps, causal, local, context, target, delta, rab;
};

static uint16_t f2h(float f, int dt)
{
    if (dt == 2) {
        __nv_bfloat16 b = __float2bfloat16(f);
        uint16_t u;
        memcpy(&u, &b, 2);
        return u;
    }
    __half h = __float2half(f);
    uint16_t u;
    memcpy(&u, &h, 2);
    return u;
}

static double h2d(uint16_t u, int dt)
{
    if (dt == 2) {
        __nv_bfloat16 b;
        memcpy(&b, &u, 2);
        return (double)__bfloat162float(b);
    }
    __half h;
    memcpy(&h, &u, 2);
    return (double)__half2float(h);
}

static bool is_nan16(uint16_t u, int dt)
{
    if (dt == 2) return (u & 0x7f80) == 0x7f80 && (u & 0x7f);
    return (u & 0x7c00) == 0x7c00 && (u & 0x3ff);
}

struct Problem {
    int B, H, D, rab_heads;
    int max_q, max_k;
    std::vector<int64_t> oq, ok;  // offsets
    std::vector<int> nctx, ntgt;
    int wl, wr, group;
    float alpha, inv_scaling;
    int64_t q_rs, k_rs, v_rs, o_rs;  // row strides (head stride = D)
    int64_t rab_rs, rab_hs, rab_bs;
    int64_t total_q, total_k;
    int offsets_i64, same_offsets;
    std::vector<uint16_t> q, k, v, rab;
};

static bool seq_valid(const Problem &P, const Variant &V, int b)
{
    int64_t qb = P.oq[b], qe = P.oq[b + 1], kb = P.ok[b], ke = P.ok[b + 1];
    if (qb < 0 || kb < 0 || qe < qb || ke < kb || qe > P.total_q || ke > P.total_k) return false;
    if (qe - qb > P.max_q || ke - kb > P.max_k) return false;
    if (V.delta) return qe - qb <= ke - kb;
    return qe - qb == ke - kb;
}

// Validity exactly as SPEC.md section 1 / the brief states it.
static bool pair_valid(const Variant &V, const Problem &P, int b, int i, int j, int L)
{
    if (j >= L) return false;
    int c = V.context ? P.nctx[b] : 0;
    c = c < 0 ? 0 : (c > L ? L : c);
    int t = V.target ? P.ntgt[b] : 0;
    t = t < 0 ? 0 : (t > L - c ? L - c : t);
    int hist_end = L - t;
    if (V.target && j >= hist_end) {
        int g = P.group < 1 ? 1 : P.group;
        return i >= hist_end && (j - hist_end) / g == (i - hist_end) / g && j <= i;
    }
    if (V.context && i < c && j < hist_end) return true;
    bool ok = true;
    if (V.causal) ok = ok && j <= i;
    if (V.local) {
        if (P.wl >= 0) ok = ok && j >= i - P.wl;
        if (P.wr >= 0) ok = ok && j <= i + P.wr;
    }
    return ok;
}

static void ref_row(const Problem &P, const Variant &V, int b, int h, int r, double *out)
{
    int D = P.D, L = (int)(P.ok[b + 1] - P.ok[b]), lq = (int)(P.oq[b + 1] - P.oq[b]);
    int i = r + (V.delta ? L - lq : 0);
    for (int d = 0; d < D; d++) out[d] = 0;
    const uint16_t *qr = &P.q[(P.oq[b] + r) * P.q_rs + (int64_t)h * D];
    for (int j = 0; j < L; j++) {
        if (!pair_valid(V, P, b, i, j, L)) continue;
        const uint16_t *kr = &P.k[(P.ok[b] + j) * P.k_rs + (int64_t)h * D];
        double s = 0;
        for (int d = 0; d < D; d++) s += h2d(qr[d], V.dtype) * h2d(kr[d], V.dtype);
        if (V.rab)
            s += h2d(P.rab[(int64_t)b * P.rab_bs + (int64_t)(h % P.rab_heads) * P.rab_hs + (int64_t)i * P.rab_rs + j],
                     V.dtype);
        s *= P.alpha;
        double w = s / (1.0 + std::exp(-s)) * P.inv_scaling;
        const uint16_t *vr = &P.v[(P.ok[b] + j) * P.v_rs + (int64_t)h * D];
        for (int d = 0; d < D; d++) out[d] += w * h2d(vr[d], V.dtype);
    }
}

struct Gpu {
    CUmodule mod;
    CUfunction fn;
};

static std::vector<uint16_t> run_kernel(const Gpu &G, const Variant &V, const Problem &P, uint64_t *dbg_count,
                                        double *ms_per_iter, int iters)
{
    auto up = [](const void *h, size_t n) {
        CUdeviceptr p = 0;
        CK(cuMemAlloc(&p, n ? n : 16));
        if (n) CK(cuMemcpyHtoD(p, h, n));
        return p;
    };
    int dt = V.dtype;
    CUdeviceptr dq = up(P.q.data(), P.q.size() * 2), dk = up(P.k.data(), P.k.size() * 2),
                dv = up(P.v.data(), P.v.size() * 2);
    size_t on = (size_t)(P.total_q + 1) * P.o_rs;
    std::vector<uint16_t> hout(on, dt == 2 ? 0x7fc1 : 0x7e01);  // NaN poison
    CUdeviceptr dout = up(hout.data(), on * 2);
    CUdeviceptr drab = V.rab ? up(P.rab.data(), P.rab.size() * 2) : 0;
    std::vector<int32_t> o32q(P.oq.begin(), P.oq.end()), o32k(P.ok.begin(), P.ok.end());
    CUdeviceptr doq = P.offsets_i64 ? up(P.oq.data(), P.oq.size() * 8) : up(o32q.data(), o32q.size() * 4);
    CUdeviceptr dok = P.same_offsets ? 0 : (P.offsets_i64 ? up(P.ok.data(), P.ok.size() * 8) : up(o32k.data(), o32k.size() * 4));
    CUdeviceptr dctx = up(P.nctx.data(), P.nctx.size() * 4), dtgt = up(P.ntgt.data(), P.ntgt.size() * 4);
    uint64_t zero = 0;
    CUdeviceptr ddbg = up(&zero, 8);

    kiln_hstu_kparams k;
    memset(&k, 0, sizeof k);
    k.q = dq; k.k = dk; k.v = dv; k.out = dout;
    k.seq_offsets_q = doq; k.seq_offsets_k = dok;
    k.num_contexts = V.context ? dctx : 0;
    k.num_targets = V.target ? dtgt : 0;
    k.rab = drab;
    k.debug_counter = ddbg;
    k.q_row_stride = P.q_rs; k.q_head_stride = P.D;
    k.k_row_stride = P.k_rs; k.k_head_stride = P.D;
    k.v_row_stride = P.v_rs; k.v_head_stride = P.D;
    k.out_row_stride = P.o_rs; k.out_head_stride = P.D;
    k.rab_batch_stride = P.rab_bs; k.rab_head_stride = P.rab_hs; k.rab_row_stride = P.rab_rs;
    k.total_q = P.total_q; k.total_k = P.total_k;
    k.batch = P.B; k.num_heads = P.H; k.rab_heads = P.rab_heads;
    k.max_seqlen_q = P.max_q; k.max_seqlen_k = P.max_k;
    k.window_left = V.local ? P.wl : -1; k.window_right = V.local ? P.wr : -1;
    k.target_group_size = P.group;
    k.offsets_i64 = P.offsets_i64;
    k.num_m_blocks = (P.max_q + V.bm - 1) / V.bm;
    k.alpha = P.alpha; k.inv_scaling = P.inv_scaling;

    // Shared memory as kiln__hstu_fwd_sm90_smem() sizes it: Q buffers, K + V
    // ring tiles, and the bytes past the rings (barriers, work-item queue,
    // producer warp slots).  HARNESS_QST, HARNESS_RING and HARNESS_TAIL
    // describe other builds (KILN_SM90_QSTAGES / KSTAGES / VSTAGES; the kernel
    // before the persistent one: 1, 6 or 5, 128).
    const char *st_env = getenv("HARNESS_RING"), *q_env = getenv("HARNESS_QST");
    const int ring = st_env ? atoi(st_env) : (V.d <= 64 ? 6 : 5);
    const int qst = q_env ? atoi(q_env) : (V.d <= 128 ? 2 : 1);
    const char *tail_env = getenv("HARNESS_TAIL");
    const int tail = tail_env ? atoi(tail_env) : 640;
    int smem = V.warps == 12 ? 1024 + qst * 2 * V.bm * V.d + ring * 2 * V.bn * V.d + tail
                             : 2 * (V.bm * V.d + 4 * V.bn * V.d + 2 * V.bm * V.bn);
    // Grid: the Hopper kernel is persistent (one CTA per SM, at most one per
    // unit of two m-blocks of a (b, h), as kiln__hstu_fwd_sm90_grid() sizes it);
    // HARNESS_GRID=blocks launches (m-blocks, H, B) as the portable kernel
    // (and the Hopper kernel before it) takes; HARNESS_GRID_MAX caps the
    // persistent grid so that each CTA walks through many items.
    unsigned grid[3] = {(unsigned)k.num_m_blocks, (unsigned)P.H, (unsigned)P.B};
    const char *gmode = getenv("HARNESS_GRID");
    // (keys with rab run blocks mode only)
    if (V.warps == 12 && !V.rab && !(gmode && !strcmp(gmode, "blocks"))) {
        int sms = 0;
        CK(cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, 0));
        long long items = (long long)(k.num_m_blocks + 1) / 2 * P.H * P.B;  // units of two m-blocks
        const char *gmax = getenv("HARNESS_GRID_MAX");
        if (gmax && atoi(gmax) > 0 && atoi(gmax) < sms) sms = atoi(gmax);
        grid[0] = (unsigned)(items < sms ? items : sms);
        grid[1] = grid[2] = 1;
    }
    CK(cuFuncSetAttribute(G.fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem));
    // The Hopper kernel takes kiln_hstu_tma_kparams: k, then TMA descriptors
    // of q, k, v (what runtime/hstu_tma.c builds).
    kiln_hstu_tma_kparams ta;
    memset(&ta, 0, sizeof ta);
    ta.p = k;
    if (V.warps == 12) {
        struct { CUdeviceptr p; int64_t rs, rows; int box; } t[3] = {
            {dq, P.q_rs, P.total_q, V.bm}, {dk, P.k_rs, P.total_k, V.bn}, {dv, P.v_rs, P.total_k, V.bn}};
        for (int i = 0; i < 3; i++) {
            cuuint64_t dims[3] = {(cuuint64_t)V.d, (cuuint64_t)P.H, (cuuint64_t)t[i].rows};
            cuuint64_t str[2] = {(cuuint64_t)V.d * 2, (cuuint64_t)t[i].rs * 2};
            cuuint32_t box[3] = {(cuuint32_t)(V.d >= 64 ? 64 : V.d), 1, (cuuint32_t)t[i].box};
            cuuint32_t one[3] = {1, 1, 1};
            CK(cuTensorMapEncodeTiled((CUtensorMap *)ta.tmap[i], dt == 2 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
                                      3, (void *)t[i].p, dims, str, box, one, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                      V.d >= 64 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_64B,
                                      CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE));
        }
    }
    void *args[] = {V.warps == 12 ? (void *)&ta : (void *)&k};
    CK(cuLaunchKernel(G.fn, grid[0], grid[1], grid[2], V.warps * 32, 1, 1, smem, 0, args, 0));
    CK(cuCtxSynchronize());
    CK(cuMemcpyDtoH(&hout[0], dout, on * 2));
    CK(cuMemcpyDtoH(dbg_count, ddbg, 8));
    if (iters > 0) {
        CUevent e0, e1;
        CK(cuEventCreate(&e0, 0));
        CK(cuEventCreate(&e1, 0));
        for (int w = 0; w < 3; w++) CK(cuLaunchKernel(G.fn, grid[0], grid[1], grid[2], V.warps * 32, 1, 1, smem, 0, args, 0));
        CK(cuEventRecord(e0, 0));
        for (int it = 0; it < iters; it++)
            CK(cuLaunchKernel(G.fn, grid[0], grid[1], grid[2], V.warps * 32, 1, 1, smem, 0, args, 0));
        CK(cuEventRecord(e1, 0));
        CK(cuEventSynchronize(e1));
        float ms = 0;
        CK(cuEventElapsedTime(&ms, e0, e1));
        *ms_per_iter = ms / iters;
        CK(cuEventDestroy(e0));
        CK(cuEventDestroy(e1));
    }
    CUdeviceptr all[] = {dq, dk, dv, dout, drab, doq, dok, dctx, dtgt, ddbg};
    for (CUdeviceptr p : all)
        if (p) CK(cuMemFree(p));
    return hout;
}

// Uniform in [-scale, scale): a splitmix64 stream seeded from rng (the
// bench inputs run to hundreds of millions of elements; mt19937 took seconds).
static void fill(std::vector<uint16_t> &x, size_t n, std::mt19937 &rng, int dt, float scale)
{
    uint64_t st = ((uint64_t)rng() << 32) ^ rng();
    x.resize(n);
    for (size_t i = 0; i < n; i++) {
        uint64_t z = (st += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        const float u = (float)(z >> 40) * (1.0f / 16777216.0f);  // [0, 1)
        x[i] = f2h((2.0f * u - 1.0f) * scale, dt);
    }
}

// Small ragged problem.  set 0: int32 offsets, shared q/k offsets where
// possible, aligned rab, window (37, 11), group 3.  set 1: int64 offsets,
// unaligned rab row stride, window (-1, 5) / (20, -1), group 1.
static Problem make_small(const Variant &V, int set, std::mt19937 &rng)
{
    Problem P;
    P.B = 8; P.H = 4; P.D = V.d; P.rab_heads = 2;
    P.max_q = P.max_k = 340;
    std::vector<int> lk = {0, 1, 17, 64, 129, 200, 400, 333};  // seq 6 invalid: > max
    std::vector<int> lq = lk;
    if (V.delta) {
        lk = {0, 5, 40, 128, 200, 333, 250, 300};
        lq = {0, 1, 17, 64, 129, 333, 260, 100};  // seq 6 invalid: len_q > len_k
    }
    P.oq.assign(P.B + 1, 0);
    P.ok.assign(P.B + 1, 0);
    for (int b = 0; b < P.B; b++) {
        P.oq[b + 1] = P.oq[b] + lq[b];
        P.ok[b + 1] = P.ok[b] + lk[b];
    }
    P.total_q = P.oq[P.B];
    P.total_k = P.ok[P.B];
    P.same_offsets = (!V.delta && set == 0);
    P.offsets_i64 = set & 1;
    std::uniform_int_distribution<int> u01(0, 1000000);
    P.nctx.resize(P.B);
    P.ntgt.resize(P.B);
    for (int b = 0; b < P.B; b++) {
        int L = lk[b];
        P.nctx[b] = L ? u01(rng) % (L + 1) : 0;
        P.ntgt[b] = L ? u01(rng) % (L - P.nctx[b] + 1) : 0;
    }
    P.nctx[4] = 1000;  // clamped to L
    P.ntgt[5] = 1000;
    P.ntgt[7] = 70;
    P.nctx[7] = 20;
    if (set == 0) { P.wl = 37; P.wr = 11; P.group = 3; }
    else if (set == 1) { P.wl = (V.causal ? 20 : -1); P.wr = (V.causal ? -1 : 5); P.group = 1; }
    else if (set == 2) { P.wl = 130; P.wr = 0; P.group = 7; }
    else { P.wl = 0; P.wr = 140; P.group = 2; }
    if (V.causal && V.local && set == 0) P.wr = 0;
    P.alpha = 1.0f / std::sqrt((float)V.d);
    P.inv_scaling = 1.0f / P.max_q;
    P.q_rs = (int64_t)P.H * P.D + 8;
    P.k_rs = (int64_t)P.H * P.D;
    P.v_rs = (int64_t)P.H * P.D + 16;
    P.o_rs = (int64_t)P.H * P.D + 8;
    P.rab_rs = (set & 1) == 0 ? ((P.max_k + 7) / 8 * 8) : P.max_k + 1;
    P.rab_hs = P.rab_rs * P.max_k;
    P.rab_bs = P.rab_hs * P.rab_heads;
    fill(P.q, (size_t)(P.total_q + 1) * P.q_rs, rng, V.dtype, 1.0f);
    fill(P.k, (size_t)(P.total_k + 1) * P.k_rs, rng, V.dtype, 1.0f);
    fill(P.v, (size_t)(P.total_k + 1) * P.v_rs, rng, V.dtype, 1.0f);
    if (V.rab) fill(P.rab, (size_t)P.rab_bs * P.B, rng, V.dtype, 1.0f);
    return P;
}

static Problem make_big(const Variant &V, std::mt19937 &rng, int B, int maxlen, int H)
{
    Problem P;
    P.B = B; P.H = H; P.D = V.d; P.rab_heads = 1;
    P.max_q = P.max_k = maxlen;
    std::uniform_int_distribution<int> ul(maxlen / 2, maxlen);
    P.oq.assign(P.B + 1, 0);
    for (int b = 0; b < P.B; b++) P.oq[b + 1] = P.oq[b] + ul(rng);
    P.ok = P.oq;
    P.total_q = P.total_k = P.oq[P.B];
    P.same_offsets = 1;
    P.offsets_i64 = 0;
    P.nctx.assign(P.B, 0);
    P.ntgt.assign(P.B, 0);
    const char *nctx_env = getenv("HARNESS_NCTX"), *ntgt_env = getenv("HARNESS_NTGT");
    for (int b = 0; b < P.B; b++) {
        P.nctx[b] = nctx_env ? atoi(nctx_env) : 64;
        P.ntgt[b] = ntgt_env ? atoi(ntgt_env) : 256;
    }
    P.wl = 1024; P.wr = V.causal ? 0 : 1024; P.group = 16;
    P.alpha = 1.0f / std::sqrt((float)V.d);
    P.inv_scaling = 1.0f / P.max_q;
    P.q_rs = P.k_rs = P.v_rs = P.o_rs = (int64_t)P.H * P.D;
    P.rab_rs = P.max_k;
    P.rab_hs = P.rab_rs * P.max_k;
    P.rab_bs = P.rab_hs * P.rab_heads;
    fill(P.q, (size_t)(P.total_q + 1) * P.q_rs, rng, V.dtype, 1.0f);
    fill(P.k, (size_t)(P.total_k + 1) * P.k_rs, rng, V.dtype, 1.0f);
    fill(P.v, (size_t)(P.total_k + 1) * P.v_rs, rng, V.dtype, 1.0f);
    if (V.rab) fill(P.rab, (size_t)P.rab_bs * P.B, rng, V.dtype, 0.5f);
    return P;
}

// Compare rows (all, or a sample) with the reference; returns max err / max |ref|.
static double compare(const Problem &P, const Variant &V, const std::vector<uint16_t> &out, bool sample,
                      long *bad_nan, long *bad_untouched)
{
    double max_err = 0, max_ref = 1e-30;
    std::vector<double> ref(P.D);
    *bad_nan = *bad_untouched = 0;
    for (int b = 0; b < P.B; b++) {
        int lq = (int)(P.oq[b + 1] - P.oq[b]);
        bool valid = seq_valid(P, V, b);
        for (int r = 0; r < lq; r++) {
            bool pick = !sample || (b < 2 && (r < 2 || r == lq - 1 || r % 997 == 5));
            for (int h = 0; h < P.H; h++) {
                const uint16_t *o = &out[(P.oq[b] + r) * P.o_rs + (int64_t)h * P.D];
                if (!valid) {
                    for (int d = 0; d < P.D; d++)
                        if (!is_nan16(o[d], V.dtype)) (*bad_untouched)++;
                    continue;
                }
                if (!pick) continue;
                ref_row(P, V, b, h, r, ref.data());
                for (int d = 0; d < P.D; d++) {
                    if (is_nan16(o[d], V.dtype) || std::isinf(h2d(o[d], V.dtype))) { (*bad_nan)++; continue; }
                    max_err = std::fmax(max_err, std::fabs(h2d(o[d], V.dtype) - ref[d]));
                    max_ref = std::fmax(max_ref, std::fabs(ref[d]));
                }
            }
        }
        // row padding (between heads' data and the next row) must stay untouched
        if (!sample)
            for (int r = 0; r < lq; r++)
                for (int64_t e = (int64_t)P.H * P.D; e < P.o_rs; e++)
                    if (!is_nan16(out[(P.oq[b] + r) * P.o_rs + e], V.dtype)) (*bad_untouched)++;
    }
    return max_err / max_ref;
}

int main(int argc, char **argv)
{
    if (argc < 13) {
        fprintf(stderr, "usage: %s CUBIN DTYPE D BM BN WARPS CAUSAL LOCAL CONTEXT TARGET DELTA RAB [bench]\n", argv[0]);
        return 2;
    }
    Variant V;
    int *f[] = {&V.dtype, &V.d, &V.bm, &V.bn, &V.warps, &V.causal, &V.local, &V.context, &V.target, &V.delta, &V.rab};
    for (int i = 0; i < 11; i++) *f[i] = atoi(argv[2 + i]);
    bool bench = argc > 13 && !strcmp(argv[13], "bench");
    CK(cuInit(0));
    CUdevice dev;
    CK(cuDeviceGet(&dev, 0));
    CUcontext ctx;
    CK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CK(cuCtxSetCurrent(ctx));
    Gpu G;
    CK(cuModuleLoad(&G.mod, argv[1]));
    CK(cuModuleGetFunction(&G.fn, G.mod, "kiln_hstu_fwd"));
    const char *name = strrchr(argv[1], '/') ? strrchr(argv[1], '/') + 1 : argv[1];
    double tol = V.dtype == 2 ? 2e-2 : 5e-3;
    std::mt19937 rng(1234 + V.d + 7 * V.causal + 13 * V.local + 29 * V.rab);
    int fails = 0;
    if (!bench) {
        for (int set = 0; set < 4; set++) {
            Problem P = make_small(V, set, rng);
            uint64_t dbg = 0;
            double ms = 0;
            std::vector<uint16_t> out = run_kernel(G, V, P, &dbg, &ms, 0);
            long nan_bad, untouched_bad;
            double rel = compare(P, V, out, false, &nan_bad, &untouched_bad);
            bool ok = rel <= tol && nan_bad == 0 && untouched_bad == 0 && dbg == 1;
            printf("%s %s set%d rel_err %.3e nan %ld untouched %ld dbg %llu\n", ok ? "PASS" : "FAIL", name, set, rel,
                   nan_bad, untouched_bad, (unsigned long long)dbg);
            fails += !ok;
        }
    } else {
        int bB = argc > 16 ? atoi(argv[14]) : 32, bL = argc > 16 ? atoi(argv[15]) : 4096,
            bH = argc > 16 ? atoi(argv[16]) : 4;
        Problem P = make_big(V, rng, bB, bL, bH);
        uint64_t dbg = 0;
        double ms = 0;
        std::vector<uint16_t> out = run_kernel(G, V, P, &dbg, &ms, 20);
        long nan_bad, untouched_bad;
        double rel = compare(P, V, out, true, &nan_bad, &untouched_bad);
        double flops = 0;
        for (int b = 0; b < P.B; b++) {
            double L = (double)(P.oq[b + 1] - P.oq[b]);
            flops += (V.causal ? 2.0 : 4.0) * P.H * P.D * L * L;
        }
        bool ok = rel <= tol && nan_bad == 0 && dbg == 0;
        printf("%s BENCH %s B%d L%d H%d %.3f ms %.1f TFLOP/s (sampled rel_err %.3e)\n", ok ? "PASS" : "FAIL",
               name, bB, bL, bH, ms, flops / ms / 1e9, rel);
        fails += !ok;
    }
    CK(cuModuleUnload(G.mod));
    return fails ? 1 : 0;
}
