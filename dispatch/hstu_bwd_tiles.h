/* hstu_bwd_tiles.h -- tile choices and shared memory of the HSTU backward
 * kernels; must agree with templates/hstu_bwd.cu.  Internal. */
#ifndef KILN_HSTU_BWD_TILES_H
#define KILN_HSTU_BWD_TILES_H

#include <stddef.h>

#include "dispatch/hstu_tiles.h"

void kiln__hstu_bwd_default_tiles(int arch, int dtype, int head_dim,
                                  kiln_hstu_tiles *t);
const char *kiln__hstu_bwd_tiles_check(int head_dim, int block_m, int block_n,
                                       int warps);
/* which: 0 = kiln_hstu_bwd_main, 1 = kiln_hstu_bwd_dq. */
size_t kiln__hstu_bwd_smem(int which, int dtype, int head_dim, int block_m,
                           int block_n, int warps);

#endif
