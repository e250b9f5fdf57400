/* kiln_sm90_bwd.cuh -- device helpers of the Hopper HSTU backward
 * (templates/hstu_bwd_sm90.cu): the wgmma form with both operands MN-major
 * (dQ = dS K reads dS^T and K as they lie in shared memory), the 128-byte
 * swizzled tile layout and the producer's cp.async tile copy.
 *
 * Seen only by NVRTC (and nvcc in standalone tests); inline PTX only.
 * Include after kiln_common.cuh; needs the sm_90a target. */
#ifndef KILN_SM90_BWD_CUH
#define KILN_SM90_BWD_CUH

#include "kiln_common.cuh"
#include "kiln_sm90.cuh"

/* The transpose flags of these forms are both 1: A is read M-major and B
 * N-major (16-bit types allow it for either operand from shared memory). */
/* d (+)= A(smem desc da, MN-major) * B(smem desc db, MN-major); m64n32k16 */
template <int DT>
KILN_DEV void kiln_wgmma_sstt_n32(float (&d)[16], uint64_t da, uint64_t db, int scale_d)
{
    if constexpr (DT == KILN_DT_BF16) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 "
                     "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1, 1, 1;\n}\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
                       "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
                     : "l"(da), "l"(db), "r"(scale_d));
    } else {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 "
                     "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1, 1, 1;\n}\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
                       "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
                     : "l"(da), "l"(db), "r"(scale_d));
    }
}

/* d (+)= A(smem desc da, MN-major) * B(smem desc db, MN-major); m64n64k16 */
template <int DT>
KILN_DEV void kiln_wgmma_sstt_n64(float (&d)[32], uint64_t da, uint64_t db, int scale_d)
{
    if constexpr (DT == KILN_DT_BF16) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
                     "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 1, 1;\n}\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
                       "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
                       "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
                       "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                     : "l"(da), "l"(db), "r"(scale_d));
    } else {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
                     "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 1, 1;\n}\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
                       "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
                       "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
                       "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                     : "l"(da), "l"(db), "r"(scale_d));
    }
}

template <int N, int DT>
KILN_DEV void kiln_wgmma_sstt(float (&d)[N / 2], uint64_t da, uint64_t db, int scale_d)
{
    static_assert(N == 32 || N == 64, "kiln_wgmma_sstt: N");
    if constexpr (N == 32) kiln_wgmma_sstt_n32<DT>(d, da, db, scale_d);
    else kiln_wgmma_sstt_n64<DT>(d, da, db, scale_d);
}

namespace kiln_sm90_bwd {

/* Tiles of 16-bit elements with 64 or 128 columns, as column blocks of
 * [ROWS][64] elements with the 128-byte swizzle: 16-byte chunk c of row r
 * sits at chunk c ^ (r & 7) of the row.  The same layout serves wgmma as a
 * K-major operand (rows along M/N) and as an MN-major one (rows along K). */
template <int ROWS> KILN_DEV uint32_t tile_off(int row, int c)
{
    return (uint32_t)((c >> 3) * (ROWS * 128) + row * 128 + (((c & 7) ^ (row & 7)) << 4));
}

/* K-major descriptor of such a tile: 8-row groups 1024 bytes apart. */
KILN_DEV uint64_t desc_k(uint32_t addr)
{
    return kiln_gmma_desc(addr, 16, 1024, 1);
}

/* MN-major descriptor: K runs down the rows (8-row groups 1024 bytes apart),
 * and the 64-wide MN column blocks are ROWS * 128 bytes apart. */
template <int ROWS> KILN_DEV uint64_t desc_mn(uint32_t addr)
{
    return kiln_gmma_desc(addr, ROWS * 128, 1024, 1);
}

/* Byte offset of k16 step ks in a K-major tile of ROWS rows: four steps per
 * 128-byte row, then the next column block. */
template <int ROWS> KILN_DEV uint32_t kstep(int ks)
{
    return (uint32_t)((ks >> 2) * (ROWS * 128) + (ks & 3) * 32);
}

/* NT threads copy ROWS rows of COLS elements (row r at gbase + r * stride)
 * into a swizzled tile with cp.async; rows >= nvalid are zero-filled, so the
 * tensor cores see exact zeros past a sequence's end. */
template <int ROWS, int COLS, int NT>
KILN_DEV void load_tile(uint32_t sdst, const uint16_t *gbase, int64_t stride, int nvalid, int t)
{
    constexpr int CPR = COLS / 8;
    constexpr int RSTEP = NT / CPR;
    static_assert(NT % CPR == 0 && ROWS % RSTEP == 0, "load_tile: rows per pass");
    const int ch = t % CPR;
    int row = t / CPR;
    const char *src = (const char *)(gbase + (int64_t)row * stride + ch * 8);
    const int64_t step = (int64_t)RSTEP * stride * 2;
#pragma unroll 4
    for (int it = 0; it < ROWS / RSTEP; ++it) {
        const bool ok = row < nvalid;
        kiln_cp_async16(sdst + tile_off<ROWS>(row, ch), ok ? (const void *)src : (const void *)gbase,
                        ok ? 16 : 0);
        row += RSTEP;
        src += step;
    }
}

} /* namespace kiln_sm90_bwd */

#endif /* KILN_SM90_BWD_CUH */
