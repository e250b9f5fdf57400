/* kiln_sm90_rab.cuh -- rab tiles of the Hopper forwards (hstu_fwd_sm90.cu,
 * hstu_fwd_sm90_fp8.cu): the producer's TMA of a tile and the consumers'
 * read of it into the f32 S accumulator's layout.
 *
 * rab's map (runtime/hstu_tma.c) is 4-D over (columns, rows, rab heads,
 * batch), boxes of 64 columns by BM rows with the 128-byte swizzle; a tile
 * of BN columns lands as BN / 64 column blocks of [BM][64] 16-bit values,
 * 16-byte chunk c of row r at chunk c ^ (r & 7).  ldmatrix.x4 of such a
 * tile hands a thread exactly its S fragment's pairs: matrices (rows 0-7 |
 * 8-15 of its warp's 16) x (n8 blocks 2 jj | 2 jj + 1). */
#ifndef KILN_SM90_RAB_CUH
#define KILN_SM90_RAB_CUH

#include "hstu_params.h"
#include "kiln_common.cuh"
#include "kiln_sm90.cuh"

/* Head h of sequence b: its coordinates in rab's heads and batch, 0 in a
 * broadcast dimension (stride 0), which the map gives extent 1. */
KILN_DEV void kiln_rab_coords(const kiln_hstu_kparams &p, int h, int b, int &rh, int &rb)
{
    rh = p.rab_head_stride != 0 && p.rab_heads > 1 ? h % p.rab_heads : 0;
    rb = p.rab_batch_stride != 0 ? b : 0;
}

/* Producer leader: the tile of rows row.. (query positions) and columns
 * col.. (keys) into dst, completing on bar.  Past the tensor TMA writes
 * zeros; the kernels mask columns past the sequence by select. */
template <int BM, int BN>
KILN_DEV void kiln_rab_tma(uint32_t dst, const void *tmap, int col, int row, int rh, int rb, uint32_t bar)
{
#pragma unroll
    for (int cb = 0; cb < BN / 64; ++cb)
        kiln_tma_load_4d(dst + (uint32_t)(cb * BM * 128), tmap, col + cb * 64, row, rh, rb, bar);
}

/* A lane's ldmatrix address in a tile (bytes from its start, bar the
 * chunk) and its swizzle: lanes 8-15 and 24-31 address rows 8-15 of the
 * warp's 16, lanes 16-31 the odd chunk of a pair. */
struct kiln_rab_lane {
    uint32_t off, x;
};

/* warp_row: the first of the warp's 16 rows in the tile */
KILN_DEV kiln_rab_lane kiln_rab_lane_of(int warp_row, int lane)
{
    const int r = warp_row + (lane & 7) + ((lane >> 3) & 1) * 8;
    kiln_rab_lane l;
    l.off = (uint32_t)r * 128u;
    l.x = (uint32_t)((lane >> 4) ^ (r & 7));
    return l;
}

/* The rab values of S's n8 blocks 2 jj and 2 jj + 1 (DT: fp16 or bf16):
 * f[i] goes with s[8 jj + i]. */
template <int DT, int BM>
KILN_DEV void kiln_rab_pair(uint32_t tile, kiln_rab_lane l, int jj, float (&f)[8])
{
    uint32_t r[4];
    kiln_ldmatrix_x4(r, tile + l.off + (uint32_t)((jj >> 2) * (BM * 128)) +
                            ((((uint32_t)(2 * (jj & 3))) ^ l.x) << 4));
#pragma unroll
    for (int m = 0; m < 4; ++m) {
        f[2 * m] = kiln_to_float<DT>((uint16_t)(r[m] & 0xffffu));
        f[2 * m + 1] = kiln_to_float<DT>((uint16_t)(r[m] >> 16));
    }
}

#endif
