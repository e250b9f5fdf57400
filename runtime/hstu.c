/* hstu.c -- kiln_hstu_fwd: plan, find the kernel, launch.  The hit path
 * allocates nothing, takes no lock and touches no database. */
#include <stdio.h>
#include <string.h>

#include "dispatch/hstu_fwd.h"
#include "dispatch/hstu_fwd_sm90_tiles.h"
#include "runtime/engine.h"
#include "runtime/hstu_tma.h"

kiln_status kiln_hstu_fwd_params_init(kiln_hstu_fwd_params *p)
{
    KILN_FAIL_IF(!p, KILN_EBADARG, "params is NULL");
    memset(p, 0, sizeof *p);
    p->struct_size = sizeof *p;
    p->dtype = KILN_DTYPE_BF16;
    p->window_left = p->window_right = -1;
    p->alpha = 1.0f;
    p->target_group_size = 1;
    p->rab_heads = 1;
    return KILN_OK;
}

kiln_status kiln__debug_counter(kiln_engine *e, const kiln_cu_api *cu,
                                 kiln_devinfo *di, uint64_t *out)
{
    pthread_mutex_lock(&e->mu);
    if (!di->debug_counter) {
        CUdeviceptr p = 0;
        CUresult r = cu->MemAlloc(&p, sizeof(unsigned long long));
        if (r == 0) r = cu->MemsetD8(p, 0, sizeof(unsigned long long));
        if (r != 0) {
            pthread_mutex_unlock(&e->mu);
            return kiln__cu_fail(cu, r, "allocating the debug counter");
        }
        di->debug_counter = p;
    }
    pthread_mutex_unlock(&e->mu);
    *out = di->debug_counter;
    return KILN_OK;
}

static kiln_status check_sm80(const void *params, int *empty)
{
    kiln_key key;
    kiln_hstu_kparams kp;
    kiln_launch l;
    return kiln__hstu_fwd_plan(params, 80, 0, &key, &kp, &l, empty);
}

kiln_status kiln_hstu_fwd(kiln_engine *e, const kiln_hstu_fwd_params *params,
                          void *stream)
{
    KILN_FAIL_IF(!e, KILN_EBADARG, "engine is NULL");
    kiln_key key;
    kiln_hstu_kparams kp;
    kiln_launch l;
    int empty;
    const kiln_cu_api *cu;
    CUdevice dev;
    kiln_devinfo *di;
    KILN_TRY(kiln__acquire(e, check_sm80, params, &cu, &dev, &di, &empty));
    if (empty) return KILN_OK;
    /* Everything the host can see is checked here, before the GPU is. */
    int impl = e->fwd_impl == 1 && !(di->arch == 90 && di->arch_a) ? -1 : e->fwd_impl;
    KILN_TRY(kiln__hstu_fwd_plan_impl(params, di->arch, di->arch_a, impl, &key, &kp, &l,
                                      &empty));
    if (empty) return KILN_OK;
    if (e->flags & KILN_ENGINE_DEBUG_CHECKS)
        KILN_TRY(kiln__debug_counter(e, cu, di, &kp.debug_counter));

    const int fp8 = key.dtype == KILN_DTYPE_E4M3;
    kiln_hstu_tma_kparams ta;     /* the Hopper 16-bit kernel's parameters */
    kiln_hstu_fp8_tma_kparams t8; /* the Hopper fp8 kernel's; t8.f the portable one's */
    void *args = &kp;
    if (key.impl == 1) {
        /* The Hopper kernels load through TMA descriptors of these tensors;
         * tensors they cannot describe go to the portable kernel. */
        if ((fp8 ? kiln__hstu_fp8_tma_fill(cu, params, &key, &t8)
                 : kiln__hstu_tma_fill(cu, params, &key, &ta)) != 0) {
            uint64_t dbg = kp.debug_counter;
            KILN_TRY(kiln__hstu_fwd_plan_impl(params, di->arch, di->arch_a, 0, &key, &kp, &l,
                                              &empty));
            kp.debug_counter = dbg;
        } else if (fp8) {
            args = &t8;
        } else {
            ta.p = kp;
            args = &ta;
            /* persistent (one CTA per SM) or one CTA per m-block: the
             * grid of the kernel the key's module holds */
            kiln__hstu_fwd_sm90_grid(di->sm_count, kp.batch, kp.num_heads, kp.num_m_blocks,
                                     key.persist, l.grid);
        }
    }
    if (fp8) {
        t8.f.base = kp;
        t8.f.descale_q = params->descale_q;
        t8.f.descale_k = params->descale_k;
        t8.f.descale_v = params->descale_v;
        t8.f.ds_batch_stride = (int32_t)params->descale_batch_stride; /* checked: <= INT32_MAX */
        t8.f.ds_head_stride = (int32_t)params->descale_head_stride;
        if (key.impl != 1) args = &t8.f;
    }
    kiln_slot *s;
    KILN_TRY(kiln__kernel_get(e, &key, 1, &s));
    atomic_fetch_add_explicit(&e->mem_hits, 1, memory_order_relaxed);
    return kiln__launch(cu, s, 0, dev, l.grid, l.block, l.smem, stream, args);
}

/* The arch named, or the current device's. */
kiln_status kiln__arch_or_current(const char *arch, int *a, int *aa)
{
    if (arch) {
        KILN_FAIL_IF(kiln__arch_parse(arch, a, aa), KILN_EBADARG,
                     "arch '%s' is not of the form sm_80, sm_90a", arch);
        return KILN_OK;
    }
    const kiln_cu_api *cu;
    KILN_TRY(kiln__cu(&cu));
    CUcontext ctx = NULL;
    CUdevice d = 0;
    KILN_CU_TRY(cu, cu->CtxGetCurrent(&ctx), "cuCtxGetCurrent");
    if (ctx) KILN_CU_TRY(cu, cu->CtxGetDevice(&d), "cuCtxGetDevice");
    int major = 0, minor = 0;
    KILN_CU_TRY(cu, cu->DeviceGetAttribute(&major, KILN_CU_ATTR_CC_MAJOR, d), "major");
    KILN_CU_TRY(cu, cu->DeviceGetAttribute(&minor, KILN_CU_ATTR_CC_MINOR, d), "minor");
    kiln__arch_for_device(major, minor, a, aa);
    return KILN_OK;
}

kiln_status kiln_hstu_fwd_key(const kiln_hstu_fwd_params *params, const char *arch,
                              char *buf, size_t n)
{
    KILN_FAIL_IF(!buf || n == 0, KILN_EBADARG, "buf is NULL or empty");
    int a = 0, aa = 0;
    KILN_TRY(kiln__arch_or_current(arch, &a, &aa));
    kiln_key key;
    kiln_hstu_kparams kp;
    kiln_launch l;
    int empty;
    KILN_TRY(kiln__hstu_fwd_plan(params, a, aa, &key, &kp, &l, &empty));
    KILN_FAIL_IF(kiln__key_format(&key, buf, n) < 0, KILN_EBADARG,
                 "buf of %zu bytes is too small for the key", n);
    return KILN_OK;
}
