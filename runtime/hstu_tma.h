/* hstu_tma.h -- TMA descriptors of q, k, v (and rab) for the Hopper HSTU
 * forward, and of q, k, v and dout for its backward.
 * Internal; allocates nothing (the descriptors live in the caller's
 * kiln_hstu_tma_kparams, on its stack). */
#ifndef KILN_RUNTIME_HSTU_TMA_H
#define KILN_RUNTIME_HSTU_TMA_H

#include "dispatch/key.h"
#include "kiln.h"
#include "runtime/cuda.h"
#include "templates/hstu_bwd_tma_params.h"
#include "templates/hstu_fp8_params.h"
#include "templates/hstu_tma_params.h"

/* Fill a->tmap for the tensors of p and the tiles of key (a->p is not
 * touched), rab's too for a key with rab.  Returns 0, or -1 when these
 * tensors cannot be described (no cuTensorMapEncodeTiled in the driver,
 * more than 2^31 - 1 rows, heads that overlap or outrun a row, rab rows or
 * strides not multiples of 16 bytes); the caller then uses a kernel without
 * TMA. */
int kiln__hstu_tma_fill(const kiln_cu_api *cu, const kiln_hstu_fwd_params *p,
                        const kiln_key *key, kiln_hstu_tma_kparams *a);

/* The same for the Hopper fp8 forward (q, k and v, all with the byte rows
 * and swizzle of its tiles; rab as above); a->f is not touched. */
int kiln__hstu_fp8_tma_fill(const kiln_cu_api *cu, const kiln_hstu_fwd_params *p,
                            const kiln_key *key, kiln_hstu_fp8_tma_kparams *a);

/* Fill a->tmap, a->tma and a->tma_dq for the backward: q and dout with
 * boxes of key->block_m rows, k and v of key->block_n rows, and dq_accum
 * (fp32 (total_q, H, D), or 0 for none) for bulk reductions (a->b is not
 * touched).  Returns -1, with a->tma = 0, when q, k, v or dout cannot be
 * described; a->tma_dq = 0 alone when dq_accum cannot. */
int kiln__hstu_bwd_tma_fill(const kiln_cu_api *cu, const kiln_hstu_bwd_params *p,
                            const kiln_key *key, uint64_t dq_accum,
                            kiln_hstu_bwd_tma_kparams *a);

#endif
