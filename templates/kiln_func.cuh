/* kiln_func.cuh -- NVIDIA's arbitrary HSTU mask (`func`, kiln.h): query r
 * of a sequence (global row g) sees the keys
 *   [0, F_0) U [F_1, F_2) U ... U [F_(n-2), F_(n-1)),  F_f = func[f * func_stride + g]
 * clamped to [0, L).  Device helpers of the portable kernels (hstu_fwd.cu,
 * hstu_bwd.cu), which a KILN_FUNC 1 prelude turns on.  Include after
 * kiln_common.cuh. */
#ifndef KILN_FUNC_CUH
#define KILN_FUNC_CUH

#include "hstu_params.h"

#ifndef KILN_FUNC
#define KILN_FUNC 0
#endif

KILN_DEV int kiln_func_ld(const int32_t *ptr)
{
    int v;
    asm volatile("ld.global.nc.s32 %0, [%1];\n" : "=r"(v) : "l"(ptr));
    return v;
}

KILN_DEV int kiln_func_clamp(int x, int L) { return x < 0 ? 0 : (x > L ? L : x); }

/* Bits 0 .. c-1 set (c in [0, 32]). */
KILN_DEV uint32_t kiln_func_below(int c) { return c >= 32 ? 0xffffffffu : (1u << c) - 1u; }

/* The values of global query row g start at func + g; value f is f * func_stride
 * further on. */
KILN_DEV const int32_t *kiln_func_row(const kiln_hstu_kparams &p, int64_t g)
{
    return (const int32_t *)p.func + g;
}

/* The smallest and one past the largest key row g sees in [0, L): lo = L,
 * hi = 0 when it sees none. */
KILN_DEV void kiln_func_span(const kiln_hstu_kparams &p, int64_t g, int L, int &lo, int &hi)
{
    const int32_t *fp = kiln_func_row(p, g);
    const int64_t st = p.func_stride;
    const int b0 = kiln_func_clamp(kiln_func_ld(fp), L);
    lo = b0 > 0 ? 0 : L;
    hi = b0;
#pragma unroll 1
    for (int f = 1; f + 1 < p.n_func; f += 2) {
        const int a = kiln_func_clamp(kiln_func_ld(fp + f * st), L);
        const int b = kiln_func_clamp(kiln_func_ld(fp + (f + 1) * st), L);
        if (a < b) {
            lo = kiln_min(lo, a);
            hi = kiln_max(hi, b);
        }
    }
}

/* The mask of row g over a thread's NS key slots of an mma.sync accumulator
 * fragment: slot k is key base + (k / 2) * 8 + k % 2 (an m16n8 tile's
 * columns 2 tq, 2 tq + 1 of n8 tiles k / 2, base = tile start + 2 tq).
 * Bit k set: the key is in [0, L) and seen by the row. */
template <int NS> KILN_DEV int kiln_func_slots_below(int x, int base)
{
    /* how many slots hold a key < x (x in [0, L], base >= 0) */
    const int y = x - base;
    if (y <= 0) return 0;
    const int c = 2 * (y >> 3) + kiln_min(y & 7, 2);
    return c < NS ? c : NS;
}

template <int NS>
KILN_DEV uint32_t kiln_func_bits(const kiln_hstu_kparams &p, int64_t g, int L, int base)
{
    static_assert(NS >= 1 && NS <= 32, "slots");
    const int32_t *fp = kiln_func_row(p, g);
    const int64_t st = p.func_stride;
    uint32_t bits = kiln_func_below(kiln_func_slots_below<NS>(kiln_func_clamp(kiln_func_ld(fp), L), base));
#pragma unroll 1
    for (int f = 1; f + 1 < p.n_func; f += 2) {
        const int a = kiln_func_clamp(kiln_func_ld(fp + f * st), L);
        const int b = kiln_func_clamp(kiln_func_ld(fp + (f + 1) * st), L);
        bits |= kiln_func_below(kiln_func_slots_below<NS>(b, base)) &
                ~kiln_func_below(kiln_func_slots_below<NS>(a, base));
    }
    return bits;
}

/* The keys [n0, n0 + 128) that row g sees, clamped to [n0, kend), as four
 * 32-bit words (bit c of word w: key n0 + 32 w + c). */
KILN_DEV void kiln_func_tile_words(const kiln_hstu_kparams &p, int64_t g, int n0, int kend,
                                   uint32_t (&w)[4])
{
    const int32_t *fp = kiln_func_row(p, g);
    const int64_t st = p.func_stride;
#pragma unroll
    for (int i = 0; i < 4; ++i) w[i] = 0;
#pragma unroll 1
    for (int f = 0; f < p.n_func; f += 2) {
        /* interval f / 2: [0, F_0), then [F_(f-1), F_f) */
        const int a = f == 0 ? 0 : kiln_func_clamp(kiln_func_ld(fp + (f - 1) * st), kend);
        const int b = kiln_func_clamp(kiln_func_ld(fp + f * st), kend);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int o = n0 + 32 * i;
            const int la = kiln_min(kiln_max(a - o, 0), 32), lb = kiln_min(kiln_max(b - o, 0), 32);
            w[i] |= kiln_func_below(lb) & ~kiln_func_below(la);
        }
    }
}

/* __syncthreads() that also returns whether v was non-zero in any thread
 * of the CTA (bar.red.or on barrier 0; every thread must call it). */
KILN_DEV bool kiln_func_sync_or(bool v)
{
    uint32_t r;
    asm volatile("{\n\t.reg .pred p, q;\n\tsetp.ne.u32 p, %1, 0;\n\t"
                 "bar.red.or.pred q, 0, p;\n\tselp.u32 %0, 1, 0, q;\n\t}\n"
                 : "=r"(r) : "r"((uint32_t)v) : "memory");
    return r != 0;
}

/* Block-wide min of lo and max of hi over the CTA's NWARPS warps (a
 * barrier; every thread must call it).  scratch: 8 * NWARPS bytes of shared
 * memory that no one else uses until the caller's next barrier. */
template <int NWARPS> KILN_DEV void kiln_func_block_span(int &lo, int &hi, uint32_t scratch, int tid)
{
    int l, h;
    asm volatile("redux.sync.min.s32 %0, %1, 0xffffffff;\n" : "=r"(l) : "r"(lo));
    asm volatile("redux.sync.max.s32 %0, %1, 0xffffffff;\n" : "=r"(h) : "r"(hi));
    if ((tid & 31) == 0) {
        kiln_st_shared_u32(scratch + (uint32_t)(tid >> 5) * 8, (uint32_t)l);
        kiln_st_shared_u32(scratch + (uint32_t)(tid >> 5) * 8 + 4, (uint32_t)h);
    }
    __syncthreads();
#pragma unroll
    for (int w = 0; w < NWARPS; ++w) {
        l = kiln_min(l, (int)kiln_ld_shared_u32(scratch + (uint32_t)w * 8));
        h = kiln_max(h, (int)kiln_ld_shared_u32(scratch + (uint32_t)w * 8 + 4));
    }
    lo = l;
    hi = h;
}

#endif /* KILN_FUNC_CUH */
