/* hstu_tiles.h -- tile choices and resource needs of the HSTU kernels.
 * Owned by whoever owns templates/hstu_fwd.cu: these numbers must agree with
 * the kernel.  Internal. */
#ifndef KILN_HSTU_TILES_H
#define KILN_HSTU_TILES_H

#include <stddef.h>

typedef struct kiln_hstu_tiles {
    int block_m, block_n, warps;
} kiln_hstu_tiles;

/* Default tiles for HSTU forward.  arch: 80, 86, 89, 90, 100, 120 ...
 * dtype: KILN_DTYPE_FP16 / BF16.  head_dim: 32, 64, 128, 256. */
void kiln__hstu_fwd_default_tiles(int arch, int dtype, int head_dim,
                                  kiln_hstu_tiles *t);

/* NULL if the forward kernel supports these tiles with head_dim, else a
 * static message saying which value is wrong and what is allowed. */
const char *kiln__hstu_fwd_tiles_check(int head_dim, int block_m, int block_n,
                                       int warps);

/* Dynamic shared memory (bytes) the forward kernel needs. */
size_t kiln__hstu_fwd_smem(int dtype, int head_dim, int block_m, int block_n,
                           int warps);

/* Largest dynamic shared memory a block may opt into on arch (bytes). */
size_t kiln__arch_max_smem(int arch);

#endif
