/* hstu_bwd_sm90_tiles.h -- which backward keys the Hopper kernel
 * (templates/hstu_bwd_sm90.cu: wgmma, warp specialization) serves, its tiles
 * and its shared memory.  Must agree with the kernel.  Internal. */
#ifndef KILN_HSTU_BWD_SM90_TILES_H
#define KILN_HSTU_BWD_SM90_TILES_H

#include <stddef.h>

#include "dispatch/hstu_tiles.h"

/* 1: the Hopper backward is the default on sm_90a for the keys it serves
 * (see kiln__key_default_impl): it passed the GPU sweep and ran 1.56x (d128)
 * and 1.45x (d64) the portable kernel at B=32, max_len 4096, H=4, causal
 * bf16 on an H100 (2026-11-24).  0 keeps the portable kernel the default and
 * the Hopper one selectable by name ("/wgmma", KILN_BWD_IMPL=wgmma). */
#define KILN_SM90_BWD_DEFAULT 1

/* NULL if the Hopper backward serves a key of these fields (sm_90a, head dim
 * 64 or 128, no rab, drab or deterministic mode), else why not. */
const char *kiln__hstu_bwd_sm90_serves(int arch, int arch_a, int head_dim, int rab, int drab,
                                       int det);
void kiln__hstu_bwd_sm90_default_tiles(int dtype, int head_dim, kiln_hstu_tiles *t);
const char *kiln__hstu_bwd_sm90_tiles_check(int head_dim, int block_m, int block_n, int warps);
/* which: 0 = kiln_hstu_bwd_main; the other entries take none. */
size_t kiln__hstu_bwd_sm90_smem(int which, int dtype, int head_dim, int block_m, int block_n,
                                int warps);

#endif
