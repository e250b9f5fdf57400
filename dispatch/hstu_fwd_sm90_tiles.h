/* hstu_fwd_sm90_tiles.h -- tiles, shared memory and grid of the Hopper HSTU forward
 * (templates/hstu_fwd_sm90.cu: wgmma, TMA, warp specialization).  Must agree
 * with the kernel.  Internal. */
#ifndef KILN_HSTU_FWD_SM90_TILES_H
#define KILN_HSTU_FWD_SM90_TILES_H

#include <stddef.h>

#include "dispatch/hstu_tiles.h"

/* 1: the Hopper kernel is the default on sm_90a for 16-bit keys (it passed
 * the GPU tests; see kiln__key_default_impl); 0 keeps the portable mma.sync
 * kernel everywhere. */
#define KILN_SM90_FWD_DEFAULT 1

void kiln__hstu_fwd_sm90_default_tiles(int dtype, int head_dim, kiln_hstu_tiles *t);
const char *kiln__hstu_fwd_sm90_tiles_check(int head_dim, int block_m, int block_n,
                                            int warps);
size_t kiln__hstu_fwd_sm90_smem(int dtype, int head_dim, int block_m, int block_n,
                                int warps, int rab);
/* Longest sequences (in m-blocks of 128 rows) the 16-bit kernel runs with a
 * persistent grid; longer ones run a CTA per m-block.  On an H100, causal
 * bf16, lengths uniform in [max_len / 2, max_len]: persistent 372 against
 * 329 TFLOP/s at (256, 1024, 4, 128) and 332 against 288 at (64, 2048, 8,
 * 64) (16 m-blocks), but 552 against 564 at (32, 4096, 4, 128) and 553
 * against 589 at (32, 4099, 4, 256) with 3 context tokens: with few units
 * per CTA the static schedule leaves the CTAs a unit apart, where the
 * hardware's block scheduler balances them. */
#define KILN_SM90_PERSIST_MAX_MBLOCKS 16

/* 1: a call of the 16-bit kernel with sequences of up to num_m_blocks
 * m-blocks runs the persistent kernel (the key's persist; its module holds
 * no other); 0: a CTA per m-block, always so with rab, whose persistent
 * consumers would spill. */
int kiln__hstu_fwd_sm90_persistent(int num_m_blocks, int rab);

/* Units of a sequence of num_m_blocks m-blocks: its m-blocks paired by
 * cost (kiln_units_of / kiln_unit_mblock in templates/kiln_hstu_seq.cuh),
 * the work item of the persistent 16-bit kernel and a CTA of the fp8 one. */
int kiln__hstu_units(int num_m_blocks);

/* Grid of the 16-bit kernel for a key of that persist: 1, (G, 1, 1) with G =
 * one CTA per SM (sm_count; <= 0: unknown, 132 assumed) or fewer when there
 * are fewer units of work; 0, (m-blocks, heads, batch).  The fp8 kernel
 * keeps the grid of kiln__hstu_fwd_plan: (units, heads, batch), a CTA per
 * unit whatever the length. */
void kiln__hstu_fwd_sm90_grid(int sm_count, int batch, int num_heads, int num_m_blocks,
                              int persist, unsigned grid[3]);

#endif
