/* kiln_common.cuh -- device helpers shared by kiln's kernel templates.
 *
 * Seen only by NVRTC (and by nvcc in standalone tests).  Includes no CUDA
 * toolkit header and no system header: fixed-width integer types are
 * defined here, and every conversion, matrix instruction and asynchronous
 * copy is inline PTX.  16-bit floating-point values (fp16, bf16) are carried
 * as raw 16-bit integers, two to a 32-bit register where packed.
 *
 * Needs sm_80 or newer (cp.async, ldmatrix, mma.sync m16n8k16, bf16). */
#ifndef KILN_COMMON_CUH
#define KILN_COMMON_CUH

/* ------------------------------------------------------------- types */
/* Use the compiler's own spellings where it states them, so that a
 * translation unit that also sees <stdint.h> (nvcc pre-includes the runtime
 * headers in standalone tests) gets identical, legal redefinitions. */
#if defined(__INT64_TYPE__) && defined(__UINT64_TYPE__) && defined(__INT32_TYPE__)
typedef __INT8_TYPE__ int8_t;
typedef __UINT8_TYPE__ uint8_t;
typedef __INT16_TYPE__ int16_t;
typedef __UINT16_TYPE__ uint16_t;
typedef __INT32_TYPE__ int32_t;
typedef __UINT32_TYPE__ uint32_t;
typedef __INT64_TYPE__ int64_t;
typedef __UINT64_TYPE__ uint64_t;
#else
typedef signed char int8_t;
typedef unsigned char uint8_t;
typedef short int16_t;
typedef unsigned short uint16_t;
typedef int int32_t;
typedef unsigned int uint32_t;
typedef long long int64_t;
typedef unsigned long long uint64_t;
#endif

#define KILN_DEV static __device__ __forceinline__

/* kiln dtype codes, as in kiln.h's enum kiln_dtype. */
#define KILN_DT_FP16 1
#define KILN_DT_BF16 2

/* ------------------------------------------------------------- misc */
/* 32-bit shared-memory address of a generic pointer into shared memory. */
KILN_DEV uint32_t kiln_smem_u32(const void *ptr)
{
    uint32_t r;
    asm volatile("{\n\t.reg .u64 t;\n\tcvta.to.shared.u64 t, %1;\n\t"
                 "cvt.u32.u64 %0, t;\n\t}\n"
                 : "=r"(r) : "l"(ptr));
    return r;
}

KILN_DEV float kiln_u32_as_f32(uint32_t v)
{
    float f;
    asm("mov.b32 %0, %1;\n" : "=f"(f) : "r"(v));
    return f;
}

KILN_DEV int kiln_min(int a, int b) { return a < b ? a : b; }
KILN_DEV int kiln_max(int a, int b) { return a > b ? a : b; }

KILN_DEV void kiln_red_add_u64(uint64_t addr, uint64_t v)
{
    asm volatile("red.global.add.u64 [%0], %1;\n" :: "l"(addr), "l"(v) : "memory");
}

/* Offsets (int32 or int64 arrays in global memory) read as 64-bit. */
KILN_DEV int64_t kiln_ld_offset(uint64_t base, int is64, int64_t idx)
{
    if (is64) return ((const int64_t *)base)[idx];
    return (int64_t)((const int32_t *)base)[idx];
}

/* ------------------------------------------------------------- cp.async */
/* 16-byte asynchronous copy global -> shared; bytes past src_bytes (0..16)
 * are zero-filled and not read.  src must be 16-byte aligned. */
KILN_DEV void kiln_cp_async16(uint32_t dst, const void *src, int src_bytes)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
                 :: "r"(dst), "l"(src), "r"(src_bytes) : "memory");
}

KILN_DEV void kiln_cp_async_commit(void)
{
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

template <int N> KILN_DEV void kiln_cp_async_wait(void)
{
    asm volatile("cp.async.wait_group %0;\n" :: "n"(N) : "memory");
}

/* ------------------------------------------------------------- shared */
KILN_DEV void kiln_st_shared_u32(uint32_t addr, uint32_t v)
{
    asm volatile("st.shared.u32 [%0], %1;\n" :: "r"(addr), "r"(v) : "memory");
}

KILN_DEV void kiln_st_shared_u16(uint32_t addr, uint16_t v)
{
    asm volatile("st.shared.u16 [%0], %1;\n" :: "r"(addr), "h"(v) : "memory");
}

KILN_DEV void kiln_st_shared_zero16(uint32_t addr)
{
    asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n" :: "r"(addr), "r"(0) : "memory");
}

KILN_DEV uint32_t kiln_ld_shared_u32(uint32_t addr)
{
    uint32_t v;
    asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(v) : "r"(addr) : "memory");
    return v;
}

KILN_DEV void kiln_ld_shared_v4(uint32_t addr, uint32_t v[4])
{
    asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(v[0]), "=r"(v[1]), "=r"(v[2]), "=r"(v[3])
                 : "r"(addr) : "memory");
}

KILN_DEV void kiln_st_global_v4(void *ptr, const uint32_t v[4])
{
    asm volatile("st.global.v4.u32 [%0], {%1, %2, %3, %4};\n"
                 :: "l"(ptr), "r"(v[0]), "r"(v[1]), "r"(v[2]), "r"(v[3])
                 : "memory");
}

KILN_DEV void kiln_st_global_v2(void *ptr, const uint32_t v[2])
{
    asm volatile("st.global.v2.u32 [%0], {%1, %2};\n" :: "l"(ptr), "r"(v[0]), "r"(v[1]) : "memory");
}

/* Epilogue stores of an mma/wgmma accumulator row, two 8-column chunks at
 * a time.  The quad's thread tq holds the 16-bit column pair 2 tq of each
 * chunk (w0: chunk 2 c, w1: chunk 2 c + 1).  One xor-1 exchange leaves the
 * even threads two neighbouring words of chunk 2 c and the odd ones two of
 * chunk 2 c + 1, so each thread makes one 8-byte store and the quad fills
 * both chunks.  row + kiln_chunk_pair_lane(tq) is the thread's base; pair
 * c goes to base + 16 c.  Every lane of the warp must call it (ok guards
 * only the store). */
KILN_DEV int kiln_chunk_pair_lane(int tq)
{
    return 8 * (tq & 1) + 4 * (tq >> 1);
}

KILN_DEV void kiln_st_chunk_pair(uint16_t *dst, uint32_t w0, uint32_t w1, int tq, bool ok)
{
    const bool odd = (tq & 1) != 0;
    const uint32_t r = __shfl_xor_sync(0xffffffffu, odd ? w0 : w1, 1);
    uint32_t v[2];
    v[0] = odd ? r : w0;
    v[1] = odd ? w1 : r;
    if (ok) kiln_st_global_v2(dst, v);
}

KILN_DEV uint16_t kiln_ld_global_nc_u16(const void *ptr)
{
    uint16_t v;
    asm volatile("ld.global.nc.u16 %0, [%1];\n" : "=h"(v) : "l"(ptr));
    return v;
}

/* ------------------------------------------------------------- ldmatrix */
KILN_DEV void kiln_ldmatrix_x4(uint32_t r[4], uint32_t addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr) : "memory");
}

KILN_DEV void kiln_ldmatrix_x4_trans(uint32_t r[4], uint32_t addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr) : "memory");
}

/* ------------------------------------------------------------- mma */
/* d += a * b, m16n8k16, row.col, fp32 accumulate.  DT: KILN_DT_FP16/BF16. */
template <int DT>
KILN_DEV void kiln_mma16816(float d[4], const uint32_t a[4], uint32_t b0,
                            uint32_t b1)
{
    if constexpr (DT == KILN_DT_BF16) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                     "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                     "{%0, %1, %2, %3};\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]),
                       "r"(b0), "r"(b1));
    } else {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                     "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                     "{%0, %1, %2, %3};\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]),
                       "r"(b0), "r"(b1));
    }
}

/* ------------------------------------------------------------- conversions */
/* Two floats -> packed 16-bit pair, lo in bits 0..15 (round to nearest). */
template <int DT> KILN_DEV uint32_t kiln_pack2(float lo, float hi)
{
    uint32_t r;
    if constexpr (DT == KILN_DT_BF16)
        asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    else
        asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

/* Packed 16-bit pair -> two floats. */
template <int DT> KILN_DEV void kiln_unpack2(uint32_t v, float &lo, float &hi)
{
    if constexpr (DT == KILN_DT_BF16) {
        lo = kiln_u32_as_f32(v << 16);
        hi = kiln_u32_as_f32(v & 0xffff0000u);
    } else {
        asm("{\n\t.reg .f16 l, h;\n\tmov.b32 {l, h}, %2;\n\t"
            "cvt.f32.f16 %0, l;\n\tcvt.f32.f16 %1, h;\n\t}\n"
            : "=f"(lo), "=f"(hi) : "r"(v));
    }
}

template <int DT> KILN_DEV float kiln_to_float(uint16_t v)
{
    if constexpr (DT == KILN_DT_BF16) {
        return kiln_u32_as_f32(((uint32_t)v) << 16);
    } else {
        float f;
        asm("{\n\t.reg .f16 h;\n\tmov.b16 h, %1;\n\tcvt.f32.f16 %0, h;\n\t}\n"
            : "=f"(f) : "h"(v));
        return f;
    }
}

/* ------------------------------------------------------------- math */
KILN_DEV float kiln_tanh_approx(float x)
{
    float y;
    asm("tanh.approx.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

/* silu(x) / 2 evaluated at x = 2h:  h * (1 + tanh(h)) = 2h * sigmoid(2h).
 * So silu(x) == kiln_silu_half(x / 2).  One MUFU op and one FMA. */
KILN_DEV float kiln_silu_half(float h)
{
    float y;
    asm("fma.rn.f32 %0, %1, %2, %1;\n" : "=f"(y) : "f"(h), "f"(kiln_tanh_approx(h)));
    return y;
}

#endif /* KILN_COMMON_CUH */
