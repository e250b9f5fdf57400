/* hstu_bwd.c -- kiln_hstu_bwd: plan, find the kernels, launch the sequence
 * (zero the scratch, main, [dq], [convert]) on one stream.  Like the forward,
 * the hit path allocates nothing and touches no database. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "dispatch/hstu_bwd.h"
#include "runtime/engine.h"
#include "runtime/hstu_tma.h"

kiln_status kiln_hstu_bwd_params_init(kiln_hstu_bwd_params *p)
{
    KILN_FAIL_IF(!p, KILN_EBADARG, "params is NULL");
    memset(p, 0, sizeof *p);
    p->struct_size = sizeof *p;
    return kiln_hstu_fwd_params_init(&p->fwd);
}

kiln_status kiln_hstu_bwd_workspace_size(const kiln_hstu_bwd_params *p, uint64_t *bytes)
{
    return kiln__hstu_bwd_workspace(p, bytes);
}

static kiln_status check_sm80(const void *params, int *empty)
{
    kiln_bwd_plan plan;
    plan.empty = 0;
    kiln_status s = kiln__hstu_bwd_plan(params, 80, 0, &plan);
    *empty = plan.empty;
    return s;
}

static kiln_status zero_scratch(const kiln_cu_api *cu, const kiln_bwd_plan *plan, CUstream st)
{
    if (plan->zero_dq_bytes)
        KILN_CU_TRY(cu, cu->MemsetD32Async(plan->kp.dq_accum, 0, plan->zero_dq_bytes / 4, st),
                    "cuMemsetD32Async(dq scratch)");
    if (plan->zero_drab_bytes)
        KILN_CU_TRY(cu,
                    cu->MemsetD32Async(plan->kp.drab_accum, 0, plan->zero_drab_bytes / 4, st),
                    "cuMemsetD32Async(drab scratch)");
    return KILN_OK;
}

kiln_status kiln_hstu_bwd(kiln_engine *e, const kiln_hstu_bwd_params *params, void *stream)
{
    KILN_FAIL_IF(!e, KILN_EBADARG, "engine is NULL");
    kiln_bwd_plan plan;
    const kiln_cu_api *cu;
    CUdevice dev;
    kiln_devinfo *di;
    int nothing;
    KILN_TRY(kiln__acquire(e, check_sm80, params, &cu, &dev, &di, &nothing));
    if (nothing) return KILN_OK;
    KILN_TRY(kiln__hstu_bwd_plan_impl(params, di->arch, di->arch_a, e->bwd_impl, &plan));
    if (plan.empty) return KILN_OK;
    if (e->flags & KILN_ENGINE_DEBUG_CHECKS)
        KILN_TRY(kiln__debug_counter(e, cu, di, &plan.kp.f.debug_counter));

    /* The Hopper kernel's main entry takes TMA descriptors after the common
     * block; tensors they cannot describe are copied with cp.async
     * (ta.tma = 0).  At head dim 128 it runs only with its fused dq pass
     * (fuse_dq: it turns dq_accum into dq itself; only its sync words are
     * zeroed and no convert pass runs), which needs descriptors of
     * everything: other calls go to the portable kernel, as do those of
     * 2^30 work items or more and 2^31 dq tiles or more (the kernel
     * numbers work items and sync words in 32 bits). */
    kiln_hstu_bwd_tma_kparams ta;
    const uint64_t items =
        (uint64_t)plan.main.grid[0] * plan.main.grid[1] * plan.main.grid[2];
    if (plan.key.impl == 1) {
        if (kiln__hstu_bwd_tma_fill(cu, params, &plan.key, plan.kp.dq_accum, &ta) != 0)
            memset(&ta, 0, sizeof ta);
        if (plan.key.head_dim == 128 &&
            (!(ta.tma && ta.tma_dq && plan.dq_sync) || items >= (1u << 30) ||
             plan.dq_sync_bytes > 16 + 8 * (uint64_t)INT32_MAX)) {
            uint64_t dbg = plan.kp.f.debug_counter;
            KILN_TRY(kiln__hstu_bwd_plan_impl(params, di->arch, di->arch_a, 0, &plan));
            plan.kp.f.debug_counter = dbg;
        }
    }
    kiln_slot *s;
    KILN_TRY(kiln__kernel_get(e, &plan.key, 1, &s));
    atomic_fetch_add_explicit(&e->mem_hits, 1, memory_order_relaxed);
    CUstream st = (CUstream)stream;
    if (plan.key.impl == 1) {
        const int fuse_dq = plan.key.head_dim == 128;
        ta.b = plan.kp;
        ta.dq_sync = fuse_dq ? plan.dq_sync : 0;
        ta.persist = ta.pad_ = 0;
        unsigned grid[3] = {plan.main.grid[0], plan.main.grid[1], plan.main.grid[2]};
        if (fuse_dq) {
            plan.zero_dq_bytes = 0;
            plan.run_convert = 0;
            KILN_CU_TRY(cu, cu->MemsetD32Async(plan.dq_sync, 0, plan.dq_sync_bytes / 4, st),
                        "cuMemsetD32Async(dq sync words)");
            /* A CTA per SM taking (sequence, head, key block) items in the
             * one-item grid's order: each item's K/V loads and dK/dV
             * stores overlap its neighbours' work instead of each block
             * paying them alone (the kernel's "work items"). */
            unsigned sms = di->sm_count > 0 ? (unsigned)di->sm_count : 132;
            if (!e->bwd_blocks) {
                ta.persist = 1;
                grid[0] = items < sms ? (unsigned)items : sms;
                grid[1] = grid[2] = 1;
            }
        }
        KILN_TRY(zero_scratch(cu, &plan, st));
        KILN_TRY(kiln__launch(cu, s, 0, dev, grid, plan.main.block, plan.main.smem, stream,
                              &ta));
    } else {
        KILN_TRY(zero_scratch(cu, &plan, st));
        KILN_TRY(kiln__launch(cu, s, 0, dev, plan.main.grid, plan.main.block, plan.main.smem,
                              stream, &plan.kp));
    }
    if (plan.run_dq)
        KILN_TRY(kiln__launch(cu, s, 1, dev, plan.dq.grid, plan.dq.block, plan.dq.smem,
                              stream, &plan.kp));
    if (plan.run_convert)
        KILN_TRY(kiln__launch(cu, s, 2, dev, plan.convert.grid, plan.convert.block, 0,
                              stream, &plan.kp));
    return KILN_OK;
}

kiln_status kiln_hstu_bwd_key(const kiln_hstu_bwd_params *params, const char *arch,
                              char *buf, size_t n)
{
    KILN_FAIL_IF(!buf || n == 0, KILN_EBADARG, "buf is NULL or empty");
    int a = 0, aa = 0;
    KILN_TRY(kiln__arch_or_current(arch, &a, &aa));
    kiln_bwd_plan plan;
    KILN_TRY(kiln__hstu_bwd_plan(params, a, aa, &plan));
    KILN_FAIL_IF(kiln__key_format(&plan.key, buf, n) < 0, KILN_EBADARG,
                 "buf of %zu bytes is too small for the key", n);
    return KILN_OK;
}
