/* hstu_fwd_sm90_tiles.h -- tiles and shared memory of the Hopper HSTU forward
 * (templates/hstu_fwd_sm90.cu: wgmma, TMA, warp specialization).  Must agree
 * with the kernel.  Internal. */
#ifndef KILN_HSTU_FWD_SM90_TILES_H
#define KILN_HSTU_FWD_SM90_TILES_H

#include <stddef.h>

#include "dispatch/hstu_tiles.h"

/* 1: the Hopper kernel is the default on sm_90a for keys without rab (it
 * passed the GPU tests; see kiln__key_default_impl); 0 keeps the portable
 * mma.sync kernel everywhere. */
#define KILN_SM90_FWD_DEFAULT 1

void kiln__hstu_fwd_sm90_default_tiles(int dtype, int head_dim, kiln_hstu_tiles *t);
const char *kiln__hstu_fwd_sm90_tiles_check(int head_dim, int block_m, int block_n,
                                            int warps);
size_t kiln__hstu_fwd_sm90_smem(int dtype, int head_dim, int block_m, int block_n,
                                int warps);

#endif
