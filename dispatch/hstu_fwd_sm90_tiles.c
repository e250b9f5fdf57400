/* hstu_fwd_sm90_tiles.c -- tiles, shared memory and grid of the Hopper HSTU
 * forward (templates/hstu_fwd_sm90.cu).  These numbers must agree with the
 * kernel: 128 query rows, 12 warps (one producer and two consumer
 * warpgroups), Q in kiln__sm90_q_stages() buffers, BLOCK_N keys per tile in
 * K and V rings of kiln__sm90_ring_tiles() tiles, a persistent grid or, for
 * long sequences, a CTA per m-block (the key's persist chooses the module;
 * the per-m-block kernel's own layout fits in this one, which both get). */
#include "dispatch/hstu_fwd_sm90_tiles.h"

#include "kiln.h"

/* Q buffers; the kernel's QSTAGES.  Two let the next item's first S go out
 * beside this item's last P V (its Q is loaded while this one runs); head
 * dim 256 has no room for a second. */
static int kiln__sm90_q_stages(int head_dim)
{
    return head_dim <= 128 ? 2 : 1;
}

/* Tiles in the K and V rings together; the kernel's KSTAGES + VSTAGES.
 * Three K and three V stages at head dim 128 took (32, 4096, 4, 128)
 * causal from 392 to 508 TFLOP/s on an H100 (cp.async loads; 568 with TMA):
 * with two, the consumers waited on the loads.  Head dim 256 has room for
 * two K and three V stages (a V tile is held one step longer): 432 -> 640.
 * Head dim 128 gives its third K stage to the second Q buffer. */
static int kiln__sm90_ring_tiles(int head_dim)
{
    return head_dim <= 64 ? 6 : 5;
}

void kiln__hstu_fwd_sm90_default_tiles(int dtype, int head_dim, kiln_hstu_tiles *t)
{
    (void)dtype;
    t->block_m = 128;
    t->block_n = head_dim > 128 ? 64 : 128;
    t->warps = 12;
}

const char *kiln__hstu_fwd_sm90_tiles_check(int head_dim, int block_m, int block_n,
                                            int warps)
{
    if (head_dim != 32 && head_dim != 64 && head_dim != 128 && head_dim != 256)
        return "head_dim must be 32, 64, 128 or 256";
    if (block_m != 128) return "block_m must be 128";
    if (block_n != 64 && block_n != 128) return "block_n must be 64 or 128";
    if (head_dim == 256 && block_n != 64) return "block_n must be 64 with head_dim 256";
    if (warps != 12) return "warps must be 12";
    return NULL;
}

size_t kiln__hstu_fwd_sm90_smem(int dtype, int head_dim, int block_m, int block_n,
                                int warps, int rab)
{
    (void)warps;
    size_t d = (size_t)head_dim;
    if (rab && dtype != KILN_DTYPE_E4M3) {
        /* a CTA per m-block (rab never runs persistent): alignment slack |
         * Q | K ring with a rab tile [block_m x block_n] beside each K tile |
         * V ring | 640; rings of 3 and 3 up to head dim 64, else 2 and 2 */
        size_t ks = head_dim <= 64 ? 3 : 2, vs = head_dim <= 64 ? 3 : 2;
        return 1024 + 2 * (size_t)block_m * d + ks * 2 * (size_t)block_n * (d + (size_t)block_m) +
               vs * 2 * (size_t)block_n * d + 640;
    }
    if (dtype == KILN_DTYPE_E4M3) {
        /* templates/hstu_fwd_sm90_fp8.cu: alignment slack | 2 x Q | 4
         * stages (3 at head dim 256) x (K | V^T) | 3 V staging tiles |
         * mbarriers and the output scale (128); with rab each stage holds
         * a 16-bit rab tile [block_m x block_n] too, in 3 stages at head
         * dim 64, else 2 */
        size_t st = rab ? (d <= 64 ? 3 : 2) : (d <= 128 ? 4 : 3);
        size_t rt = rab ? 2 * (size_t)block_m * (size_t)block_n : 0;
        return 1024 + 2 * (size_t)block_m * d + st * (2 * (size_t)block_n * d + rt) +
               3 * (size_t)block_n * d + 128;
    }
    /* alignment slack | Q buffers | K ring | V ring | mbarriers (256) | item
     * queue (128) | producer warp slots (256) */
    return 1024 + (size_t)kiln__sm90_q_stages(head_dim) * 2 * (size_t)block_m * d +
           (size_t)kiln__sm90_ring_tiles(head_dim) * 2 * (size_t)block_n * d + 640;
}

int kiln__hstu_units(int num_m_blocks)
{
    return (num_m_blocks + 1) / 2;
}

int kiln__hstu_fwd_sm90_persistent(int num_m_blocks, int rab)
{
    return !rab && num_m_blocks <= KILN_SM90_PERSIST_MAX_MBLOCKS;
}

void kiln__hstu_fwd_sm90_grid(int sm_count, int batch, int num_heads, int num_m_blocks,
                              int persist, unsigned grid[3])
{
    if (!persist) {
        /* blocks mode: a CTA per m-block, scheduled by the hardware */
        grid[0] = (unsigned)num_m_blocks;
        grid[1] = (unsigned)num_heads;
        grid[2] = (unsigned)batch;
        return;
    }
    /* persistent: at most one CTA per unit (a pair of m-blocks of one
     * (batch, head)) */
    long long units = (long long)batch * num_heads * kiln__hstu_units(num_m_blocks);
    long long g = sm_count > 0 ? sm_count : 132;
    if (units < g) g = units;
    grid[0] = g < 1 ? 1u : (unsigned)g;
    grid[1] = grid[2] = 1;
}
