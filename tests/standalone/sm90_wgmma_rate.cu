/* sm90_wgmma_rate.cu -- how fast one warpgroup's e4m3 wgmmas run on an H100,
 * and how they and the SiLU's instructions on other warps slow each other.
 *
 * The numbers behind the fp8 forward's closing notes: where its step time goes
 * is a question of which units share what, and no profiler counter says so.
 *
 *   nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a \
 *        tests/standalone/sm90_wgmma_rate.cu -o sm90_wgmma_rate && ./sm90_wgmma_rate
 *
 * One CTA of 3 warpgroups per SM, on every SM; times are SM clocks (clock64).
 * Part 1: warpgroup 0 alone streams wgmmas (groups of 4 on one accumulator, at
 *   most 2 groups in flight, or the fp8 step's 2 + 1 groups with a full wait):
 *   clocks per instruction against the 8192 flop/clock/SM of the e4m3 peak.
 * Part 2: warpgroup 0 streams wgmmas while warpgroup 1 runs a loop of one
 *   kind of instruction (32 independent chains, so throughput-bound): the
 *   wgmma rate beside the loop (the loop outlasts the wgmmas), and the loop's
 *   rate alone and beside wgmmas (the wgmmas outlast the loop).
 *
 * Check the SASS (cuobjdump -sass) before trusting a row: ptxas serializes
 * wgmmas (a WARPGROUP.DEPBAR after each) when it cannot prove their registers
 * untouched; the register fences below keep it from doing so here.
 * Operands are arbitrary bytes: only rates are measured. */
#include "../../templates/kiln_common.cuh"
#include "../../templates/kiln_sm90.cuh"
#include "../../templates/kiln_sm90_fp8.cuh"
#include <cstdio>

enum { W_SS128, W_RS128, W_RS64, W_STEP };
enum { X_NONE, X_TANH, X_FFMA, X_FMUL, X_HFMA2, X_LOP3, X_IMAD, X_CVT, X_SILU, X_TANH16, NX };
static const char *const xname[NX] = {"-", "tanh.approx.f32", "fma.f32", "mul.f32", "fma.f16x2",
                                      "lop3", "mad.lo.u32", "cvt e4m3x2.f32", "silu (mul,tanh,fma)",
                                      "tanh.approx.f16x2"};
constexpr int SMEM = 96 * 1024;
constexpr int G_SHORT = 512, G_LONG = 8192;  /* wgmma groups per run */

/* Groups of wgmmas of kind W, G times (a constant: ptxas serializes the
 * wgmmas of a loop it cannot unroll). */
template <int W, int G> __device__ void wgmma_stream(uint32_t base)
{
    const uint64_t da = kiln_gmma_desc(base, 16, 1024, 1);
    const uint64_t db = kiln_gmma_desc(base + 16384, 16, 1024, 1);
    float acc[64], acc2[64];
    uint32_t a[4][4];
    kiln_zero(acc);
    kiln_zero(acc2);
    for (int k = 0; k < 4; ++k)
        for (int e = 0; e < 4; ++e) a[k][e] = 0x38303830u + 0x01010101u * (uint32_t)(k + e);
    float(&a0)[32] = *reinterpret_cast<float(*)[32]>(&acc[0]);
    float(&a1)[32] = *reinterpret_cast<float(*)[32]>(&acc[32]);
    for (int g = 0; g < G; ++g) {
        kiln_reg_fence(a);
        kiln_wgmma_fence();
        if constexpr (W == W_SS128) {
#pragma unroll
            for (int k = 0; k < 4; ++k) kiln_wgmma8_ss_n128(acc, kiln_desc_add(da, k * 32), kiln_desc_add(db, k * 32), 1);
            kiln_wgmma_commit();
            kiln_wgmma_wait<1>();
        } else if constexpr (W == W_RS128) {
#pragma unroll
            for (int k = 0; k < 4; ++k) kiln_wgmma8_rs_n128(acc, a[k], kiln_desc_add(db, k * 32), 1);
            kiln_wgmma_commit();
            kiln_wgmma_wait<1>();
        } else if constexpr (W == W_RS64) {
#pragma unroll
            for (int k = 0; k < 4; ++k) kiln_wgmma8_rs_n64(a0, a[k], kiln_desc_add(db, k * 32), 1);
            kiln_wgmma_commit();
            kiln_wgmma_wait<1>();
        } else {
            /* the fp8 forward's step at head dim 128: S in two n64 halves,
             * P V as one n128 group, then a full wait (all from shared
             * memory: with Q in registers, ptxas lacks the registers at
             * 168 a thread and serializes) */
#pragma unroll
            for (int h = 0; h < 2; ++h) {
#pragma unroll
                for (int k = 0; k < 4; ++k) {
                    const uint64_t b = kiln_desc_add(db, h * 8192 + k * 32);
                    float(&d)[32] = h == 0 ? a0 : a1;
                    kiln_wgmma8_ss_n64(d, kiln_desc_add(da, k * 32), b, 1);
                }
                kiln_wgmma_commit();
            }
#pragma unroll
            for (int k = 0; k < 4; ++k) kiln_wgmma8_ss_n128(acc2, kiln_desc_add(da, 8192 + k * 32), kiln_desc_add(db, 16384 + k * 32), 1);
            kiln_wgmma_commit();
            kiln_wgmma_wait<0>();
        }
    }
    kiln_wgmma_wait<0>();
    float s = 0.f;
    for (int i = 0; i < 64; ++i) s += acc[i] + acc2[i];
    if (s == 1234.5f) *(volatile float *)nullptr = s; /* never: keeps the wgmmas live */
}

/* `iters` passes of 32 independent instructions of kind X. */
template <int X> __device__ void alu_stream(int iters)
{
    float x[32];
    uint32_t u[32], sink = 0;
    for (int i = 0; i < 32; ++i) {
        x[i] = 0.001f * (float)(threadIdx.x + i);
        u[i] = threadIdx.x * 2654435761u + i;
    }
#pragma unroll 1
    for (int it = 0; it < iters; ++it) {
#pragma unroll
        for (int i = 0; i < 32; ++i) {
            if constexpr (X == X_TANH) asm volatile("tanh.approx.f32 %0, %0;" : "+f"(x[i]));
            else if constexpr (X == X_FFMA) x[i] = fmaf(x[i], 1.0001f, 0.5f);
            else if constexpr (X == X_FMUL) x[i] = x[i] * x[(i + 7) & 31];
            else if constexpr (X == X_HFMA2) asm volatile("fma.rn.f16x2 %0, %0, %1, %2;" : "+r"(u[i]) : "r"(0x3c003c00u), "r"(0x00010001u));
            else if constexpr (X == X_LOP3) u[i] = (u[i] ^ 0x5a5a5a5au) & (u[(i + 3) & 31] | 0x01010101u);
            else if constexpr (X == X_IMAD) u[i] = u[i] * 3u + u[(i + 5) & 31];
            else if constexpr (X == X_CVT) {
                uint16_t r;
                asm volatile("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(r) : "f"(x[i]), "f"(x[(i + 1) & 31]));
                sink += r;
                x[i] = x[i] * 1.0001f;
            } else if constexpr (X == X_SILU) {
                const float h = 0.5f * x[i];
                float t;
                asm volatile("tanh.approx.f32 %0, %1;" : "=f"(t) : "f"(h));
                x[i] = fmaf(h, t, h);
            } else if constexpr (X == X_TANH16) {
                asm volatile("tanh.approx.f16x2 %0, %0;" : "+r"(u[i]));
            }
        }
    }
    float s = 0.f;
    for (int i = 0; i < 32; ++i) s += x[i] + (float)u[i];
    if (s == 1234.5f || sink == 77777u) *(volatile float *)nullptr = s; /* never */
}

/* who: bit 0 = warpgroup 0 streams wgmmas, bit 1 = warpgroup 1 runs X.
 * out[3 * cta + wg] = that warpgroup's clocks. */
template <int W, int X>
__global__ void __launch_bounds__(384, 1) rate(unsigned long long *out, int who, int groups, int iters)
{
    extern __shared__ __align__(1024) unsigned char sm[];
    for (int i = threadIdx.x; i < SMEM / 4; i += blockDim.x)
        reinterpret_cast<uint32_t *>(sm)[i] = 0x38383838u ^ ((uint32_t)i * 2654435761u);
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    __syncthreads();
    const int wg = threadIdx.x >> 7;
    const unsigned long long t0 = clock64();
    const uint32_t base = (kiln_smem_u32(sm) + 1023u) & ~1023u;
    if (wg == 0 && (who & 1)) {
        if (groups == G_SHORT) wgmma_stream<W, G_SHORT>(base);
        else wgmma_stream<W, G_LONG>(base);
    }
    else if (wg == 1 && (who & 2)) alu_stream<X>(iters);
    else return;
    const unsigned long long t1 = clock64();
    if ((threadIdx.x & 127) == 0) out[3 * blockIdx.x + wg] = t1 - t0;
}

static int nsm;
static unsigned long long *dout;

/* Largest clock count of warpgroup wg over the CTAs. */
template <int W, int X> static double launch(int who, int groups, int iters, int wg)
{
    cudaFuncSetAttribute(rate<W, X>, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM);
    cudaMemset(dout, 0, sizeof(unsigned long long) * 3 * nsm);
    rate<W, X><<<nsm, 384, SMEM>>>(dout, who, groups, iters);
    const cudaError_t e = cudaDeviceSynchronize();
    if (e != cudaSuccess) {
        fprintf(stderr, "launch: %s\n", cudaGetErrorString(e));
        exit(1);
    }
    unsigned long long h[3 * 1024];
    cudaMemcpy(h, dout, sizeof(unsigned long long) * 3 * nsm, cudaMemcpyDeviceToHost);
    double m = 0;
    for (int i = 0; i < nsm; ++i) m = h[3 * i + wg] > m ? (double)h[3 * i + wg] : m;
    return m;
}

/* instructions per group and flops per instruction (in n64 units) */
static const int w_instr[] = {4, 4, 4, 12};
static const double w_flop[] = {524288, 524288, 262144, 4194304.0 / 12};
static const char *const w_name[] = {"ss m64n128k32", "rs m64n128k32", "rs m64n64k32", "fp8 step (2x4 + 4)"};

template <int W> static void part1()
{
    const int groups = G_LONG;
    const double clk = launch<W, X_NONE>(1, groups, 0, 0);
    const double per = clk / (groups * (double)w_instr[W]);
    printf("  %-20s %7.1f clk/instr  %5.0f flop/clk/SM (%3.0f%% of 8192)\n", w_name[W], per, w_flop[W] / per,
           100.0 * w_flop[W] / per / 8192);
}

template <int W, int X> static void part2()
{
    /* wgmmas beside a loop that outlasts them */
    const int g_short = G_SHORT, i_long = 12 * 1024;
    const double w_clk = launch<W, X>(3, g_short, i_long, 0);
    /* the loop alone, and beside wgmmas that outlast it */
    const int i_short = 512, g_long = G_LONG;
    const double x_alone = launch<W, X>(2, 0, i_short, 1);
    const double x_beside = launch<W, X>(3, g_long, i_short, 1);
    const double wper = w_clk / (g_short * (double)w_instr[W]);
    printf("  %-20s %-20s wgmma %6.1f clk/instr (%3.0f%% of peak)   loop %5.2f -> %5.2f clk/warp-instr\n", w_name[W],
           xname[X], wper, 100.0 * w_flop[W] / wper / 8192, x_alone / (i_short * 32.0), x_beside / (i_short * 32.0));
}

template <int W> static void part2_all()
{
    part2<W, X_TANH>();
    part2<W, X_FFMA>();
    part2<W, X_FMUL>();
    part2<W, X_HFMA2>();
    part2<W, X_LOP3>();
    part2<W, X_IMAD>();
    part2<W, X_CVT>();
    part2<W, X_SILU>();
    part2<W, X_TANH16>();
}

int main()
{
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess || prop.major != 9) {
        fprintf(stderr, "sm90_wgmma_rate: needs an sm_90 GPU\n");
        return 1;
    }
    nsm = prop.multiProcessorCount;
    cudaMalloc(&dout, sizeof(unsigned long long) * 3 * nsm);
    printf("%s, %d SMs; one CTA of 3 warpgroups per SM\n", prop.name, nsm);
    printf("part 1: warpgroup 0 alone\n");
    part1<W_SS128>();
    part1<W_RS128>();
    part1<W_RS64>();
    part1<W_STEP>();
    printf("part 2: warpgroup 0's wgmmas beside warpgroup 1's loop; the loop alone -> beside wgmmas\n");
    part2_all<W_SS128>();
    part2_all<W_RS128>();
    return 0;
}
