/* hstu_bwd.h -- from kiln_hstu_bwd_params to a key, kernel parameters and
 * the launch sequence of the backward.  Internal; allocates nothing. */
#ifndef KILN_DISPATCH_HSTU_BWD_H
#define KILN_DISPATCH_HSTU_BWD_H

#include "dispatch/hstu_fwd.h"
#include "templates/hstu_bwd_params.h"

typedef struct kiln_bwd_plan {
    kiln_key key;
    kiln_hstu_bwd_kparams kp;
    kiln_launch main, dq, convert;
    int run_dq, run_convert;
    uint64_t zero_dq_bytes;   /* memset of kp.dq_accum before main */
    uint64_t zero_drab_bytes; /* memset of kp.drab_accum before main */
    uint64_t dq_sync;         /* the dq tiles' sync words (in the workspace), or 0 */
    uint64_t dq_sync_bytes;   /* zeroed instead of dq_accum when the Hopper
                                 kernel fuses the dq pass (fuse_dq) */
    int empty;
} kiln_bwd_plan;

/* Scratch bytes for p; validates only what the size depends on. */
kiln_status kiln__hstu_bwd_workspace(const kiln_hstu_bwd_params *p, uint64_t *bytes);

kiln_status kiln__hstu_bwd_plan(const kiln_hstu_bwd_params *p, int arch, int arch_a,
                                kiln_bwd_plan *plan);
/* The same with the implementation asked for: -1 the default, 0 mma, 1 wgmma
 * where the Hopper kernel serves the call (else the default). */
kiln_status kiln__hstu_bwd_plan_impl(const kiln_hstu_bwd_params *p, int arch, int arch_a,
                                     int impl, kiln_bwd_plan *plan);

#endif
