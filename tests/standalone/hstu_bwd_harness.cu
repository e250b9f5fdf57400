// hstu_bwd_harness.cu -- standalone check and timing of templates/hstu_bwd.cu.
// Not part of the product build.  Loads a cubin built from a prelude (see
// hstu_bwd_compile.sh), launches its three entries through the driver API in
// the order the runtime uses, and compares dq, dk, dv and drab with a
// double-precision CPU reference of kiln.h's formulas.
//
//   nvcc -O2 -std=c++17 -I. -Iinclude hstu_bwd_harness.cu -lcuda -o bwd_harness
//   bwd_harness CUBIN DTYPE D BM BN WARPS CAUSAL LOCAL CONTEXT TARGET DELTA RAB DRAB DET [bench]
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
#include "templates/hstu_bwd_tma_params.h"
// the tile and shared-memory rules under test (C, compiled here as C++)
#include "dispatch/hstu_tiles.c"
#include "dispatch/hstu_bwd_tiles.c"
#include "dispatch/hstu_bwd_sm90_tiles.c"

// HARNESS_SM90=1: the cubin is templates/hstu_bwd_sm90.cu (its smem rule,
// no smem-size global).
static bool sm90() { return getenv("HARNESS_SM90") != nullptr; }
static size_t bwd_smem(int which, int dt, int d, int bm, int bn, int w)
{
    return sm90() ? kiln__hstu_bwd_sm90_smem(which, dt, d, bm, bn, w) : kiln__hstu_bwd_smem(which, dt, d, bm, bn, w);
}

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
    int dtype, d, bm, bn, warps, causal, local, context, target, delta, rab, drab, det;
};

static uint16_t f2h(float f, int dt)
{
    uint16_t u;
    if (dt == 2) {
        __nv_bfloat16 b = __float2bfloat16(f);
        memcpy(&u, &b, 2);
    } else {
        __half h = __float2half(f);
        memcpy(&u, &h, 2);
    }
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

static const uint16_t POISON = 0xffff; /* NaN in fp16 and bf16 */

struct Problem {
    int B, H, D, RH;
    int max_q, max_k;
    std::vector<int64_t> oq, ok;
    std::vector<int> nctx, ntgt;
    int wl, wr, group;
    float alpha, inv_scaling;
    int64_t q_rs, k_rs, v_rs, do_rs, dq_rs, dk_rs, dv_rs;  // head stride D everywhere
    int64_t rab_rs, rab_hs, rab_bs, drab_rs, drab_hs, drab_bs;
    int64_t total_q, total_k;
    int offsets_i64, same_offsets;
    int expect_bad;
    std::vector<uint16_t> q, k, v, dout, rab;
};

struct Grads {
    std::vector<uint16_t> dq, dk, dv, drab;
    uint64_t dbg;
};

struct SeqI {
    int64_t q0, k0;
    int lq, L, off, c, hist_end;
};

static bool seq_info(const Problem &P, const Variant &V, int b, SeqI &s)
{
    int64_t qb = P.oq[b], qe = P.oq[b + 1], kb = P.ok[b], ke = P.ok[b + 1];
    if (qb < 0 || kb < 0 || qe < qb || ke < kb || qe > P.total_q || ke > P.total_k) return false;
    if (qe - qb > P.max_q || ke - kb > P.max_k) return false;
    if (V.delta ? qe - qb > ke - kb : qe - qb != ke - kb) return false;
    s.q0 = qb;
    s.k0 = kb;
    s.lq = (int)(qe - qb);
    s.L = (int)(ke - kb);
    s.off = V.delta ? s.L - s.lq : 0;
    int L = s.L;
    int c = V.context ? P.nctx[b] : 0;
    c = c < 0 ? 0 : (c > L ? L : c);
    int t = V.target ? P.ntgt[b] : 0;
    t = t < 0 ? 0 : (t > L - c ? L - c : t);
    s.c = c;
    s.hist_end = L - t;
    return true;
}

// Validity of (position i, key j): SPEC.md section 1, with the forward
// kernel's reading of the window (the test masks never combine local with
// context or targets).
static bool pair_valid(const Variant &V, const Problem &P, const SeqI &s, int i, int j)
{
    if (j < 0 || j >= s.L) return false;
    int wl = V.local ? P.wl : -1, wr = V.local ? P.wr : -1;
    if (V.target && i >= s.hist_end && j >= s.hist_end) {
        int g = P.group < 1 ? 1 : P.group;
        return (j - s.hist_end) / g == (i - s.hist_end) / g && j <= i;
    }
    if (V.target && j >= s.hist_end) return false;
    if (V.context && i < s.c && j < s.hist_end) return (wl < 0 || j >= i - wl);
    bool ok = true;
    if (V.causal) ok = ok && j <= i;
    if (wl >= 0) ok = ok && j >= i - wl;
    if (wr >= 0) ok = ok && j <= i + wr;
    return ok;
}

struct Ref {
    std::vector<double> dq, dk, dv, drab;
};

// Full double-precision reference of the gradients.
static void reference(const Problem &P, const Variant &V, Ref &R)
{
    const int D = P.D, H = P.H, dt = V.dtype;
    R.dq.assign((size_t)P.total_q * H * D, 0);
    R.dk.assign((size_t)P.total_k * H * D, 0);
    R.dv.assign((size_t)P.total_k * H * D, 0);
    R.drab.assign((size_t)P.B * P.RH * P.max_k * P.max_k, 0);
    std::vector<double> kd, vd, qr(D), dor(D);
    for (int b = 0; b < P.B; b++) {
        SeqI s;
        if (!seq_info(P, V, b, s)) continue;
        kd.resize((size_t)s.L * D);
        vd.resize((size_t)s.L * D);
        for (int h = 0; h < H; h++) {
            int hr = h % P.RH;
            for (int j = 0; j < s.L; j++)
                for (int d = 0; d < D; d++) {
                    kd[(size_t)j * D + d] = h2d(P.k[(s.k0 + j) * P.k_rs + (int64_t)h * D + d], dt);
                    vd[(size_t)j * D + d] = h2d(P.v[(s.k0 + j) * P.v_rs + (int64_t)h * D + d], dt);
                }
            for (int r = 0; r < s.lq; r++) {
                int i = r + s.off;
                for (int d = 0; d < D; d++) {
                    qr[d] = h2d(P.q[(s.q0 + r) * P.q_rs + (int64_t)h * D + d], dt);
                    dor[d] = h2d(P.dout[(s.q0 + r) * P.do_rs + (int64_t)h * D + d], dt);
                }
                double *dqr = &R.dq[((s.q0 + r) * H + h) * (size_t)D];
                for (int j = 0; j < s.L; j++) {
                    if (!pair_valid(V, P, s, i, j)) continue;
                    const double *kj = &kd[(size_t)j * D], *vj = &vd[(size_t)j * D];
                    double x = 0, dp = 0;
                    for (int d = 0; d < D; d++) {
                        x += qr[d] * kj[d];
                        dp += dor[d] * vj[d];
                    }
                    if (V.rab)
                        x += h2d(P.rab[(int64_t)b * P.rab_bs + (int64_t)hr * P.rab_hs + (int64_t)i * P.rab_rs + j], dt);
                    double sv = P.alpha * x;
                    double sig = 1.0 / (1.0 + std::exp(-sv));
                    double pr = sv * sig * P.inv_scaling;
                    double ds = dp * sig * (1.0 + sv * (1.0 - sig)) * P.alpha * P.inv_scaling;
                    double *dkj = &R.dk[((s.k0 + j) * H + h) * (size_t)D];
                    double *dvj = &R.dv[((s.k0 + j) * H + h) * (size_t)D];
                    for (int d = 0; d < D; d++) {
                        dvj[d] += pr * dor[d];
                        dkj[d] += ds * qr[d];
                        dqr[d] += ds * kj[d];
                    }
                    R.drab[(((size_t)b * P.RH + hr) * P.max_k + i) * P.max_k + j] += ds;
                }
            }
        }
    }
}

struct Mods {
    CUmodule mod;
    CUfunction main_fn, dq_fn, conv_fn;
    int sms;
};

struct Bufs {
    CUdeviceptr q, k, v, dout, rab, oq, ok, ctx, tgt, dbg, dq, dk, dv, drab, dq_acc, drab_acc;
    size_t dq_acc_bytes, drab_acc_bytes;
    kiln_hstu_bwd_kparams kp;
    unsigned main_grid[3], dq_grid[3], conv_grid;
    size_t smem0, smem1;
};

static CUdeviceptr up(const void *h, size_t n)
{
    CUdeviceptr p = 0;
    CK(cuMemAlloc(&p, n ? n : 16));
    if (n) CK(cuMemcpyHtoD(p, h, n));
    return p;
}

static CUdeviceptr poisoned(size_t elems)
{
    CUdeviceptr p = 0;
    CK(cuMemAlloc(&p, elems * 2 + 16));
    CK(cuMemsetD16(p, POISON, elems + 8));
    return p;
}

static size_t dq_elems(const Problem &P) { return (size_t)(P.total_q + 1) * P.dq_rs; }
static size_t dk_elems(const Problem &P) { return (size_t)(P.total_k + 1) * P.dk_rs; }
static size_t dv_elems(const Problem &P) { return (size_t)(P.total_k + 1) * P.dv_rs; }
static size_t drab_elems(const Problem &P) { return (size_t)P.drab_bs * P.B; }

static void setup(const Mods &M, const Variant &V, const Problem &P, Bufs &Bf)
{
    memset(&Bf, 0, sizeof Bf);
    Bf.q = up(P.q.data(), P.q.size() * 2);
    Bf.k = up(P.k.data(), P.k.size() * 2);
    Bf.v = up(P.v.data(), P.v.size() * 2);
    Bf.dout = up(P.dout.data(), P.dout.size() * 2);
    Bf.rab = V.rab ? up(P.rab.data(), P.rab.size() * 2) : 0;
    std::vector<int32_t> o32q(P.oq.begin(), P.oq.end()), o32k(P.ok.begin(), P.ok.end());
    Bf.oq = P.offsets_i64 ? up(P.oq.data(), P.oq.size() * 8) : up(o32q.data(), o32q.size() * 4);
    Bf.ok = P.same_offsets ? 0 : (P.offsets_i64 ? up(P.ok.data(), P.ok.size() * 8) : up(o32k.data(), o32k.size() * 4));
    Bf.ctx = up(P.nctx.data(), P.nctx.size() * 4);
    Bf.tgt = up(P.ntgt.data(), P.ntgt.size() * 4);
    uint64_t zero = 0;
    Bf.dbg = up(&zero, 8);
    Bf.dq = poisoned(dq_elems(P));
    Bf.dk = poisoned(dk_elems(P));
    Bf.dv = poisoned(dv_elems(P));
    Bf.drab = V.drab ? poisoned(drab_elems(P)) : 0;
    bool reduce = V.drab && P.RH < P.H;
    Bf.dq_acc_bytes = V.det ? 0 : (size_t)P.total_q * P.H * P.D * 4;
    Bf.drab_acc_bytes = reduce ? (size_t)P.B * P.RH * P.max_k * P.max_k * 4 : 0;
    if (Bf.dq_acc_bytes) CK(cuMemAlloc(&Bf.dq_acc, Bf.dq_acc_bytes));
    if (Bf.drab_acc_bytes) CK(cuMemAlloc(&Bf.drab_acc, Bf.drab_acc_bytes));

    kiln_hstu_bwd_kparams &kp = Bf.kp;
    memset(&kp, 0, sizeof kp);
    kiln_hstu_kparams &k = kp.f;
    k.q = Bf.q; k.k = Bf.k; k.v = Bf.v; k.out = 0;
    k.seq_offsets_q = Bf.oq; k.seq_offsets_k = Bf.ok;
    k.num_contexts = V.context ? Bf.ctx : 0;
    k.num_targets = V.target ? Bf.tgt : 0;
    k.rab = Bf.rab;
    k.debug_counter = Bf.dbg;
    k.q_row_stride = P.q_rs; k.q_head_stride = P.D;
    k.k_row_stride = P.k_rs; k.k_head_stride = P.D;
    k.v_row_stride = P.v_rs; k.v_head_stride = P.D;
    k.rab_batch_stride = P.rab_bs; k.rab_head_stride = P.rab_hs; k.rab_row_stride = P.rab_rs;
    k.total_q = P.total_q; k.total_k = P.total_k;
    k.batch = P.B; k.num_heads = P.H; k.rab_heads = P.RH;
    k.max_seqlen_q = P.max_q; k.max_seqlen_k = P.max_k;
    k.window_left = V.local ? P.wl : -1; k.window_right = V.local ? P.wr : -1;
    if (V.causal && !V.local) k.window_right = 0;
    k.target_group_size = P.group;
    k.offsets_i64 = P.offsets_i64;
    k.num_m_blocks = (P.max_q + V.bm - 1) / V.bm;
    k.alpha = P.alpha; k.inv_scaling = P.inv_scaling;
    kp.dout = Bf.dout; kp.dq = Bf.dq; kp.dk = Bf.dk; kp.dv = Bf.dv; kp.drab = Bf.drab;
    kp.dq_accum = Bf.dq_acc; kp.drab_accum = Bf.drab_acc;
    kp.dout_row_stride = P.do_rs; kp.dout_head_stride = P.D;
    kp.dq_row_stride = P.dq_rs; kp.dq_head_stride = P.D;
    kp.dk_row_stride = P.dk_rs; kp.dk_head_stride = P.D;
    kp.dv_row_stride = P.dv_rs; kp.dv_head_stride = P.D;
    kp.drab_batch_stride = P.drab_bs; kp.drab_head_stride = P.drab_hs; kp.drab_row_stride = P.drab_rs;
    kp.num_n_blocks = (P.max_k + V.bn - 1) / V.bn;

    Bf.main_grid[0] = kp.num_n_blocks;
    Bf.main_grid[1] = reduce ? P.RH : P.H;
    Bf.main_grid[2] = P.B;
    Bf.dq_grid[0] = k.num_m_blocks;
    Bf.dq_grid[1] = P.H;
    Bf.dq_grid[2] = P.B;
    size_t items = Bf.dq_acc_bytes / 16 + Bf.drab_acc_bytes / 32;
    size_t blocks = (items + 255) / 256;
    size_t cap = 4 * (size_t)M.sms;
    Bf.conv_grid = (unsigned)(blocks < 1 ? 1 : (blocks > cap ? cap : blocks));
    Bf.smem0 = bwd_smem(0, V.dtype, V.d, V.bm, V.bn, V.warps);
    Bf.smem1 = bwd_smem(1, V.dtype, V.d, V.bm, V.bn, V.warps);
    CK(cuFuncSetAttribute(M.main_fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)Bf.smem0));
    if (Bf.smem1) CK(cuFuncSetAttribute(M.dq_fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)Bf.smem1));
}

// The runtime's launch sequence.  main_only: time the main kernel alone.
static void launch(const Mods &M, const Variant &V, Bufs &Bf, bool main_only = false)
{
    void *args[] = {&Bf.kp};
    // the Hopper kernel's main entry takes TMA descriptors after the common
    // block; tma = 0 makes it copy every tile with cp.async
    static kiln_hstu_bwd_tma_kparams ta;
    ta.b = Bf.kp;
    ta.tma = 0;
    void *targs[] = {&ta};
    if (!main_only) {
        if (Bf.dq_acc) CK(cuMemsetD32Async(Bf.dq_acc, 0, Bf.dq_acc_bytes / 4, 0));
        if (Bf.drab_acc) CK(cuMemsetD32Async(Bf.drab_acc, 0, Bf.drab_acc_bytes / 4, 0));
    }
    if (Bf.main_grid[0] && Bf.main_grid[2])
        CK(cuLaunchKernel(M.main_fn, Bf.main_grid[0], Bf.main_grid[1], Bf.main_grid[2], V.warps * 32, 1, 1,
                          (unsigned)Bf.smem0, 0, sm90() ? targs : args, 0));
    if (main_only) return;
    if (V.det && Bf.dq_grid[0] && Bf.dq_grid[2])
        CK(cuLaunchKernel(M.dq_fn, Bf.dq_grid[0], Bf.dq_grid[1], Bf.dq_grid[2], V.warps * 32, 1, 1,
                          (unsigned)Bf.smem1, 0, args, 0));
    if (Bf.dq_acc || Bf.drab_acc)
        CK(cuLaunchKernel(M.conv_fn, Bf.conv_grid, 1, 1, 256, 1, 1, 0, 0, args, 0));
}

static void fetch(const Variant &V, const Problem &P, const Bufs &Bf, Grads &G)
{
    G.dq.resize(dq_elems(P));
    G.dk.resize(dk_elems(P));
    G.dv.resize(dv_elems(P));
    CK(cuMemcpyDtoH(G.dq.data(), Bf.dq, G.dq.size() * 2));
    CK(cuMemcpyDtoH(G.dk.data(), Bf.dk, G.dk.size() * 2));
    CK(cuMemcpyDtoH(G.dv.data(), Bf.dv, G.dv.size() * 2));
    if (V.drab) {
        G.drab.resize(drab_elems(P));
        CK(cuMemcpyDtoH(G.drab.data(), Bf.drab, G.drab.size() * 2));
    }
    CK(cuMemcpyDtoH(&G.dbg, Bf.dbg, 8));
}

static void release(Bufs &Bf)
{
    CUdeviceptr all[] = {Bf.q, Bf.k, Bf.v, Bf.dout, Bf.rab, Bf.oq, Bf.ok, Bf.ctx, Bf.tgt, Bf.dbg,
                         Bf.dq, Bf.dk, Bf.dv, Bf.drab, Bf.dq_acc, Bf.drab_acc};
    for (CUdeviceptr p : all)
        if (p) CK(cuMemFree(p));
}

struct Err {
    double err = 0, ref = 1e-30;
    long nan = 0, touched = 0;
    double rel() const { return err / ref; }
    void add(uint16_t g, double r, int dt)
    {
        double x = h2d(g, dt);
        if (!std::isfinite(x)) {
            nan++;
            return;
        }
        err = std::fmax(err, std::fabs(x - r));
        ref = std::fmax(ref, std::fabs(r));
    }
};

// rows (dq: query rows, dk/dv: key rows) of a [rows][rs] tensor with H*D used columns
static void check_rows(const Problem &P, const Variant &V, const std::vector<uint16_t> &g, const std::vector<double> &r,
                       int64_t rs, bool is_q, Err &E)
{
    const int HD = P.H * P.D;
    std::vector<char> row_valid(is_q ? P.total_q : P.total_k, 0);
    for (int b = 0; b < P.B; b++) {
        SeqI s;
        if (!seq_info(P, V, b, s)) continue;
        int64_t r0 = is_q ? s.q0 : s.k0, n = is_q ? s.lq : s.L;
        for (int64_t x = r0; x < r0 + n; x++) row_valid[x] = 1;
    }
    for (int64_t x = 0; x < (int64_t)row_valid.size(); x++)
        for (int64_t e = 0; e < rs; e++) {
            uint16_t v = g[x * rs + e];
            if (row_valid[x] && e < HD)
                E.add(v, r[x * HD + e], V.dtype);
            else if (v != POISON)
                E.touched++;
        }
}

static void check_drab(const Problem &P, const Variant &V, const std::vector<uint16_t> &g, const std::vector<double> &r,
                       Err &E)
{
    for (int b = 0; b < P.B; b++) {
        SeqI s;
        bool ok = seq_info(P, V, b, s);
        for (int hr = 0; hr < P.RH; hr++)
            for (int i = 0; i < P.max_k; i++)
                for (int j = 0; j < P.max_k; j++) {
                    uint16_t v = g[(int64_t)b * P.drab_bs + (int64_t)hr * P.drab_hs + (int64_t)i * P.drab_rs + j];
                    if (ok && i < s.L && j < s.L)
                        E.add(v, r[(((size_t)b * P.RH + hr) * P.max_k + i) * P.max_k + j], V.dtype);
                    else if (v != POISON)
                        E.touched++;
                }
    }
}

static void fill(std::vector<uint16_t> &x, size_t n, std::mt19937 &rng, int dt, float scale)
{
    std::uniform_real_distribution<float> u(-scale, scale);
    x.resize(n);
    for (size_t i = 0; i < n; i++) x[i] = f2h(u(rng), dt);
}

// Small ragged problems.  set 0: H 2, rab_heads 2 (drab written directly),
// int32 offsets, aligned rab and drab, one sequence longer than max_seqlen.
// set 1: H 4, rab_heads 1 (drab reduced over heads), int64 offsets, separate
// q/k offsets with one len_q != len_k sequence (invalid unless delta_q),
// unaligned rab and drab rows.
static Problem make_small(const Variant &V, int set, std::mt19937 &rng)
{
    Problem P;
    P.D = V.d;
    P.H = set == 0 ? 2 : 4;
    P.RH = set == 0 ? 2 : 1;
    P.max_q = P.max_k = 260;
    std::vector<int> lk, lq;
    if (!V.delta) {
        if (set == 0) {
            lk = {0, 1, 77, 200, 300, 130, 17, 260};  // seq 4: > max_seqlen
            lq = lk;
        } else {
            lk = {130, 1, 0, 199, 60, 64, 33};
            lq = {130, 1, 0, 199, 50, 64, 33};  // seq 4: len_q != len_k
        }
    } else {
        if (set == 0) {
            lk = {0, 5, 77, 200, 130, 150, 100, 260};
            lq = {0, 1, 30, 200, 0, 65, 120, 3};  // seq 6: len_q > len_k
        } else {
            lk = {130, 1, 0, 199, 60, 64, 33};
            lq = {129, 0, 0, 71, 70, 64, 1};  // seq 4: len_q > len_k
        }
    }
    P.B = (int)lk.size();
    P.expect_bad = 1;
    P.oq.assign(P.B + 1, 0);
    P.ok.assign(P.B + 1, 0);
    for (int b = 0; b < P.B; b++) {
        P.oq[b + 1] = P.oq[b] + lq[b];
        P.ok[b + 1] = P.ok[b] + lk[b];
    }
    P.total_q = P.oq[P.B];
    P.total_k = P.ok[P.B];
    P.same_offsets = lq == lk;
    P.offsets_i64 = set;
    P.nctx.resize(P.B);
    P.ntgt.resize(P.B);
    std::uniform_int_distribution<int> u(0, 1 << 20);
    for (int b = 0; b < P.B; b++) {
        int L = lk[b];
        P.nctx[b] = L ? u(rng) % (L / 3 + 1) : 0;
        P.ntgt[b] = L ? u(rng) % (L / 3 + 1) : 0;
    }
    P.nctx[1] = 5;  // clamped to L
    P.ntgt[2] = 9;
    P.nctx[3] = 70;
    P.ntgt[3] = 45;
    P.group = set == 0 ? 7 : 1;
    if (V.causal && V.local) {
        P.wl = set == 0 ? 40 : 100;
        P.wr = 0;
    } else if (V.local) {
        P.wl = set == 0 ? 30 : -1;
        P.wr = set == 0 ? 20 : 7;
    } else {
        P.wl = -1;
        P.wr = V.causal ? 0 : -1;
    }
    P.alpha = 1.5f / std::sqrt((float)V.d);
    P.inv_scaling = 1.0f / P.max_q;
    const int64_t HD = (int64_t)P.H * P.D;
    P.q_rs = HD + 8;
    P.k_rs = HD;
    P.v_rs = HD + 16;
    P.do_rs = HD + 8;
    P.dq_rs = HD + 8;
    P.dk_rs = HD + 16;
    P.dv_rs = HD;
    P.rab_rs = set == 0 ? P.max_k + 4 : P.max_k + 1;
    P.rab_hs = P.rab_rs * P.max_k;
    P.rab_bs = P.rab_hs * P.RH;
    P.drab_rs = set == 0 ? P.max_k + 4 : P.max_k + 3;
    P.drab_hs = P.drab_rs * P.max_k + (set == 0 ? 0 : 5);
    P.drab_bs = P.drab_hs * P.RH;
    fill(P.q, (size_t)(P.total_q + 1) * P.q_rs, rng, V.dtype, 1.0f);
    fill(P.k, (size_t)(P.total_k + 1) * P.k_rs, rng, V.dtype, 1.0f);
    fill(P.v, (size_t)(P.total_k + 1) * P.v_rs, rng, V.dtype, 1.0f);
    fill(P.dout, (size_t)(P.total_q + 1) * P.do_rs, rng, V.dtype, 1.0f);
    if (V.rab) fill(P.rab, (size_t)P.rab_bs * P.B, rng, V.dtype, 1.0f);
    return P;
}

// The benchmark shape: B 32, lengths uniform in [2048, 4096], H 4.
static Problem make_big(const Variant &V, std::mt19937 &rng)
{
    Problem P;
    P.B = 32;
    P.H = 4;
    P.D = V.d;
    P.RH = 1;
    P.max_q = P.max_k = 4096;
    std::uniform_int_distribution<int> ul(2048, 4096);
    P.oq.assign(P.B + 1, 0);
    for (int b = 0; b < P.B; b++) P.oq[b + 1] = P.oq[b] + ul(rng);
    P.ok = P.oq;
    P.total_q = P.total_k = P.oq[P.B];
    P.same_offsets = 1;
    P.offsets_i64 = 0;
    P.expect_bad = 0;
    P.nctx.assign(P.B, 64);
    P.ntgt.assign(P.B, 256);
    P.wl = -1;
    P.wr = V.causal ? 0 : -1;
    P.group = 16;
    P.alpha = 1.0f / std::sqrt((float)V.d);
    P.inv_scaling = 1.0f / P.max_q;
    P.q_rs = P.k_rs = P.v_rs = P.do_rs = P.dq_rs = P.dk_rs = P.dv_rs = (int64_t)P.H * P.D;
    P.rab_rs = P.drab_rs = P.max_k;
    P.rab_hs = P.drab_hs = (int64_t)P.max_k * P.max_k;
    P.rab_bs = P.drab_bs = P.rab_hs * P.RH;
    fill(P.q, (size_t)(P.total_q + 1) * P.q_rs, rng, V.dtype, 1.0f);
    fill(P.k, (size_t)(P.total_k + 1) * P.k_rs, rng, V.dtype, 1.0f);
    fill(P.v, (size_t)(P.total_k + 1) * P.v_rs, rng, V.dtype, 1.0f);
    fill(P.dout, (size_t)(P.total_q + 1) * P.do_rs, rng, V.dtype, 1.0f);
    if (V.rab) fill(P.rab, (size_t)P.rab_bs * P.B, rng, V.dtype, 0.5f);
    return P;
}

// Sampled reference for the big problem: dq of query row r, dk and dv of key
// row j, of sequence b, head h.
static void ref_sample(const Problem &P, const Variant &V, int b, int h, int r, int j, std::vector<double> &dq,
                       std::vector<double> &dk, std::vector<double> &dv)
{
    SeqI s;
    seq_info(P, V, b, s);
    const int D = P.D, dt = V.dtype;
    dq.assign(D, 0);
    dk.assign(D, 0);
    dv.assign(D, 0);
    auto q = [&](int rr, int d) { return h2d(P.q[(s.q0 + rr) * P.q_rs + (int64_t)h * D + d], dt); };
    auto o = [&](int rr, int d) { return h2d(P.dout[(s.q0 + rr) * P.do_rs + (int64_t)h * D + d], dt); };
    auto k = [&](int jj, int d) { return h2d(P.k[(s.k0 + jj) * P.k_rs + (int64_t)h * D + d], dt); };
    auto v = [&](int jj, int d) { return h2d(P.v[(s.k0 + jj) * P.v_rs + (int64_t)h * D + d], dt); };
    auto pair = [&](int rr, int jj, double &pr, double &ds) {
        int i = rr + s.off;
        pr = ds = 0;
        if (!pair_valid(V, P, s, i, jj)) return;
        double x = 0, dp = 0;
        for (int d = 0; d < D; d++) {
            x += q(rr, d) * k(jj, d);
            dp += o(rr, d) * v(jj, d);
        }
        if (V.rab) x += h2d(P.rab[(int64_t)b * P.rab_bs + (int64_t)(h % P.RH) * P.rab_hs + (int64_t)i * P.rab_rs + jj], dt);
        double sv = P.alpha * x, sig = 1.0 / (1.0 + std::exp(-sv));
        pr = sv * sig * P.inv_scaling;
        ds = dp * sig * (1.0 + sv * (1.0 - sig)) * P.alpha * P.inv_scaling;
    };
    for (int jj = 0; jj < s.L; jj++) {
        double pr, ds;
        pair(r, jj, pr, ds);
        if (ds != 0)
            for (int d = 0; d < D; d++) dq[d] += ds * k(jj, d);
    }
    for (int rr = 0; rr < s.lq; rr++) {
        double pr, ds;
        pair(rr, j, pr, ds);
        if (pr != 0 || ds != 0)
            for (int d = 0; d < D; d++) {
                dk[d] += ds * q(rr, d);
                dv[d] += pr * o(rr, d);
            }
    }
}

int main(int argc, char **argv)
{
    if (argc < 15) {
        fprintf(stderr, "usage: %s CUBIN DTYPE D BM BN WARPS CAUSAL LOCAL CONTEXT TARGET DELTA RAB DRAB DET [bench]\n",
                argv[0]);
        return 2;
    }
    Variant V;
    int *fp[] = {&V.dtype, &V.d, &V.bm, &V.bn, &V.warps, &V.causal, &V.local, &V.context, &V.target, &V.delta,
                 &V.rab, &V.drab, &V.det};
    for (int i = 0; i < 13; i++) *fp[i] = atoi(argv[2 + i]);
    bool bench = argc > 15 && !strcmp(argv[15], "bench");
    const char *name = strrchr(argv[1], '/') ? strrchr(argv[1], '/') + 1 : argv[1];
    const char *tc = sm90() ? kiln__hstu_bwd_sm90_tiles_check(V.d, V.bm, V.bn, V.warps)
                            : kiln__hstu_bwd_tiles_check(V.d, V.bm, V.bn, V.warps);
    if (tc) {
        printf("FAIL %s tiles_check: %s\n", name, tc);
        return 1;
    }
    CK(cuInit(0));
    CUdevice dev;
    CK(cuDeviceGet(&dev, 0));
    CUcontext ctx;
    CK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CK(cuCtxSetCurrent(ctx));
    Mods M;
    CK(cuModuleLoad(&M.mod, argv[1]));
    CK(cuModuleGetFunction(&M.main_fn, M.mod, "kiln_hstu_bwd_main"));
    CK(cuModuleGetFunction(&M.dq_fn, M.mod, "kiln_hstu_bwd_dq"));
    CK(cuModuleGetFunction(&M.conv_fn, M.mod, "kiln_hstu_bwd_convert"));
    CK(cuDeviceGetAttribute(&M.sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev));
    if (!sm90()) {
        /* the kernels' own smem sizes must equal dispatch/hstu_bwd_tiles.c's */
        CUdeviceptr g;
        size_t gsz;
        uint32_t kb[2];
        CK(cuModuleGetGlobal(&g, &gsz, M.mod, "kiln_hstu_bwd_smem_bytes"));
        CK(cuMemcpyDtoH(kb, g, sizeof kb));
        size_t c0 = kiln__hstu_bwd_smem(0, V.dtype, V.d, V.bm, V.bn, V.warps);
        size_t c1 = kiln__hstu_bwd_smem(1, V.dtype, V.d, V.bm, V.bn, V.warps);
        if (kb[0] != c0 || kb[1] != c1) {
            printf("FAIL %s smem: kernel %u/%u, kiln__hstu_bwd_smem %zu/%zu\n", name, kb[0], kb[1], c0, c1);
            return 1;
        }
    }
    double tol = V.dtype == 2 ? 2e-2 : 5e-3;
    std::mt19937 rng(4321 + V.d + 7 * V.causal + 13 * V.local + 29 * V.rab + 31 * V.context + 37 * V.target +
                     41 * V.delta + 43 * V.det + 47 * V.drab);
    int fails = 0;
    if (!bench) {
        for (int set = 0; set < 2; set++) {
            Problem P = make_small(V, set, rng);
            Bufs Bf;
            setup(M, V, P, Bf);
            launch(M, V, Bf);
            CK(cuCtxSynchronize());
            Grads G;
            fetch(V, P, Bf, G);
            Ref R;
            reference(P, V, R);
            Err eq, ek, ev, er;
            check_rows(P, V, G.dq, R.dq, P.dq_rs, true, eq);
            check_rows(P, V, G.dk, R.dk, P.dk_rs, false, ek);
            check_rows(P, V, G.dv, R.dv, P.dv_rs, false, ev);
            if (V.drab) check_drab(P, V, G.drab, R.drab, er);
            bool ok = eq.rel() <= tol && ek.rel() <= tol && ev.rel() <= tol && er.rel() <= tol;
            long nan = eq.nan + ek.nan + ev.nan + er.nan, touched = eq.touched + ek.touched + ev.touched + er.touched;
            ok = ok && nan == 0 && touched == 0 && G.dbg == (uint64_t)P.expect_bad;
            printf("%s %s set%d dq %.2e dk %.2e dv %.2e drab %.2e nan %ld touched %ld dbg %llu\n", ok ? "PASS" : "FAIL",
                   name, set, eq.rel(), ek.rel(), ev.rel(), er.rel(), nan, touched, (unsigned long long)G.dbg);
            fails += !ok;
            release(Bf);
        }
    } else {
        Problem P = make_big(V, rng);
        Bufs Bf;
        setup(M, V, P, Bf);
        launch(M, V, Bf);
        CK(cuCtxSynchronize());
        Grads G;
        fetch(V, P, Bf, G);
        // timing: the whole sequence, and the main kernel alone
        CUevent e0, e1;
        CK(cuEventCreate(&e0, 0));
        CK(cuEventCreate(&e1, 0));
        const int iters = 10;
        float ms_all = 0, ms_main = 0;
        for (int pass = 0; pass < 2; pass++) {
            bool main_only = pass == 1;
            launch(M, V, Bf, main_only);
            CK(cuEventRecord(e0, 0));
            for (int it = 0; it < iters; it++) launch(M, V, Bf, main_only);
            CK(cuEventRecord(e1, 0));
            CK(cuEventSynchronize(e1));
            float ms = 0;
            CK(cuEventElapsedTime(&ms, e0, e1));
            (main_only ? ms_main : ms_all) = ms / iters;
        }
        // determinism (deterministic mode) and a sampled reference
        Grads G2;
        launch(M, V, Bf);
        CK(cuCtxSynchronize());
        fetch(V, P, Bf, G2);
        bool same = G.dq == G2.dq && G.dk == G2.dk && G.dv == G2.dv;
        Err eq, ek, ev;
        std::vector<double> rq, rk, rv;
        const int HD = P.H * P.D;
        for (int smp = 0; smp < 6; smp++) {
            int b = smp % P.B, h = smp % P.H;
            SeqI s;
            seq_info(P, V, b, s);
            int r = smp == 0 ? 0 : (smp == 1 ? s.lq - 1 : (int)((uint64_t)(smp * 7919) % s.lq));
            int j = smp == 0 ? s.L - 1 : (smp == 1 ? 0 : (int)((uint64_t)(smp * 104729) % s.L));
            ref_sample(P, V, b, h, r, j, rq, rk, rv);
            for (int d = 0; d < P.D; d++) {
                eq.add(G.dq[(s.q0 + r) * P.dq_rs + (int64_t)h * P.D + d], rq[d], V.dtype);
                ek.add(G.dk[(s.k0 + j) * P.dk_rs + (int64_t)h * P.D + d], rk[d], V.dtype);
                ev.add(G.dv[(s.k0 + j) * P.dv_rs + (int64_t)h * P.D + d], rv[d], V.dtype);
            }
        }
        (void)HD;
        double flops = 0;
        for (int b = 0; b < P.B; b++) {
            double L = (double)(P.oq[b + 1] - P.oq[b]);
            flops += (V.causal ? 5.0 : 10.0) * P.H * P.D * L * L;
        }
        bool ok = eq.rel() <= tol && ek.rel() <= tol && ev.rel() <= tol && eq.nan + ek.nan + ev.nan == 0 &&
                  (!V.det || same);
        printf("%s BENCH %s %s: all %.3f ms %.1f TFLOP/s | main %.3f ms %.1f TFLOP/s | sampled rel dq %.2e dk %.2e "
               "dv %.2e | rerun %s\n",
               ok ? "PASS" : "FAIL", name, V.det ? "deterministic" : "atomic", ms_all, flops / ms_all / 1e9, ms_main,
               flops / ms_main / 1e9, eq.rel(), ek.rel(), ev.rel(), same ? "bit-identical" : "differs");
        fails += !ok;
        release(Bf);
    }
    CK(cuModuleUnload(M.mod));
    return fails ? 1 : 0;
}
