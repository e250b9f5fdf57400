/* hstu_bwd.c -- validation and planning of an HSTU backward call. */
#include "dispatch/hstu_bwd.h"

#include <stddef.h>
#include <string.h>

#include "dispatch/hstu_bwd_sm90_tiles.h"
#include "runtime/error.h"

_Static_assert(sizeof(kiln_hstu_bwd_kparams) == 248 + 7 * 8 + 11 * 8 + 8,
               "bwd kparams layout changed");
_Static_assert(offsetof(kiln_hstu_bwd_kparams, dout) == 248, "bwd kparams layout");
_Static_assert(offsetof(kiln_hstu_bwd_kparams, num_n_blocks) == 392, "bwd kparams layout");

#define ALIGN256(x) (((x) + 255) & ~(uint64_t)255)

/* Workspace layout: [dq_accum fp32 (total_q, H, D)] unless deterministic,
 * then [drab_accum fp32 (B, rab_heads, Lk, Lk)] when d(rab) is reduced over
 * heads, then (with dq_accum) the sync words of the Hopper kernel's fused dq
 * pass: 16 bytes for its persistent grid's item counter, then 2 per 64-row
 * dq tile and head, the tiles of sequence b numbered from b + q_beg / 64
 * (at most B + ceil(total_q / 64)).
 * The kernel that fuses the dq pass needs only the sync words zeroed;
 * otherwise dq_accum and drab_accum are zeroed before the main kernel. */
static kiln_status sizes(const kiln_hstu_bwd_params *p, uint64_t *dq, uint64_t *drab,
                         uint64_t *sync)
{
    const kiln_hstu_fwd_params *f = &p->fwd;
    *dq = *drab = *sync = 0;
    if (!p->deterministic) {
        uint64_t n;
        KILN_FAIL_IF(__builtin_mul_overflow((uint64_t)f->total_q,
                                            (uint64_t)f->num_heads * (uint64_t)f->head_dim * 4,
                                            &n),
                     KILN_EBADARG, "total_q %lld: dq scratch overflows",
                     (long long)f->total_q);
        *dq = ALIGN256(n);
        /* batch, total_q < 2^31 and heads < 2^16: no overflow */
        *sync = ALIGN256(16 + ((uint64_t)f->batch + ((uint64_t)f->total_q + 63) / 64) *
                                  (uint64_t)f->num_heads * 8);
    }
    if (p->drab && f->rab_heads < f->num_heads) {
        uint64_t n, lk = (uint64_t)f->max_seqlen_k;
        KILN_FAIL_IF(__builtin_mul_overflow((uint64_t)f->batch * (uint64_t)f->rab_heads,
                                            lk * lk * 4, &n),
                     KILN_EBADARG, "drab scratch overflows (batch %d, max_seqlen_k %d)",
                     f->batch, f->max_seqlen_k);
        *drab = ALIGN256(n);
    }
    return KILN_OK;
}

static kiln_status check_struct(const kiln_hstu_bwd_params *p)
{
    KILN_FAIL_IF(!p, KILN_EBADARG, "params is NULL");
    KILN_FAIL_IF(p->struct_size != sizeof *p, KILN_EBADARG,
                 "params.struct_size %u is not sizeof(kiln_hstu_bwd_params) %zu "
                 "(call kiln_hstu_bwd_params_init)",
                 p->struct_size, sizeof *p);
    KILN_FAIL_IF(p->fwd.batch < 0 || p->fwd.total_q < 0 || p->fwd.num_heads < 1 ||
                     p->fwd.head_dim < 1 || p->fwd.max_seqlen_k < 0,
                 KILN_EBADARG,
                 "fwd: batch %d, total_q %lld, num_heads %d, head_dim %d, max_seqlen_k %d "
                 "must be non-negative (heads and head_dim positive)",
                 p->fwd.batch, (long long)p->fwd.total_q, p->fwd.num_heads,
                 p->fwd.head_dim, p->fwd.max_seqlen_k);
    return KILN_OK;
}

kiln_status kiln__hstu_bwd_workspace(const kiln_hstu_bwd_params *p, uint64_t *bytes)
{
    KILN_TRY(check_struct(p));
    KILN_FAIL_IF(!bytes, KILN_EBADARG, "bytes is NULL");
    uint64_t a, b, c;
    KILN_TRY(sizes(p, &a, &b, &c));
    *bytes = a + b + c;
    return KILN_OK;
}

kiln_status kiln__hstu_bwd_plan(const kiln_hstu_bwd_params *p, int arch, int arch_a,
                                kiln_bwd_plan *plan)
{
    return kiln__hstu_bwd_plan_impl(p, arch, arch_a, -1, plan);
}

kiln_status kiln__hstu_bwd_plan_impl(const kiln_hstu_bwd_params *p, int arch, int arch_a,
                                     int impl, kiln_bwd_plan *plan)
{
    KILN_TRY(check_struct(p));
    const kiln_hstu_fwd_params *f = &p->fwd;
    kiln_key *key = &plan->key;
    memset(key, 0, sizeof *key);
    key->family = KILN_FAM_HSTU_BWD;
    key->drab = p->drab != 0;
    key->det = p->deterministic != 0;
    /* A request for the Hopper kernel falls back to the default where it does
     * not serve the call, so that one setting covers a whole workload. */
    if (impl == 1 && (kiln__hstu_bwd_sm90_serves(arch, arch_a, f->head_dim, f->rab != 0,
                                                  key->drab, key->det) ||
                      f->func))
        impl = -1; /* the Hopper backward serves no func mask either */
    key->impl = impl;
    KILN_FAIL_IF(p->drab && !f->rab, KILN_EBADARG, "drab is set but fwd.rab is NULL");
    KILN_FAIL_IF(p->deterministic != 0 && p->deterministic != 1, KILN_EBADARG,
                 "deterministic %d is not 0 or 1", p->deterministic);
    memset(&plan->kp, 0, sizeof plan->kp);
    KILN_TRY(kiln__hstu_plan_inputs(f, arch, arch_a, 0, key, &plan->kp.f, &plan->empty));
    plan->run_dq = plan->run_convert = 0;
    plan->zero_dq_bytes = plan->zero_drab_bytes = 0;
    plan->dq_sync = plan->dq_sync_bytes = 0;
    if (plan->empty && f->batch == 0) return KILN_OK;
    /* With queries but no keys nothing flows back; with no queries dk, dv
     * (and drab) are still zero-filled by the kernel, so only batch 0 and
     * max_seqlen_k 0 are empty here. */
    plan->empty = f->batch == 0 || f->max_seqlen_k == 0;
    if (plan->empty) return KILN_OK;

    int d = f->head_dim, h = f->num_heads;
    KILN_TRY(kiln__check_view("dout", p->dout, f->total_q, p->dout_row_stride, h,
                              p->dout_head_stride, d, 0));
    KILN_TRY(kiln__check_view("dq", p->dq, f->total_q, p->dq_row_stride, h,
                              p->dq_head_stride, d, 1));
    KILN_TRY(kiln__check_view("dk", p->dk, f->total_k, p->dk_row_stride, h,
                              p->dk_head_stride, d, 1));
    KILN_TRY(kiln__check_view("dv", p->dv, f->total_k, p->dv_row_stride, h,
                              p->dv_head_stride, d, 1));
    if (p->drab)
        KILN_TRY(kiln__check_bias("drab", p->drab, f->batch, f->rab_heads, f->max_seqlen_k,
                                  p->drab_batch_stride, p->drab_head_stride,
                                  p->drab_row_stride));
    uint64_t dq_bytes, drab_bytes, sync_bytes;
    KILN_TRY(sizes(p, &dq_bytes, &drab_bytes, &sync_bytes));
    uint64_t need = dq_bytes + drab_bytes + sync_bytes;
    KILN_FAIL_IF(need && p->workspace_bytes < need, KILN_EBADARG,
                 "workspace_bytes %llu is less than the %llu bytes needed "
                 "(kiln_hstu_bwd_workspace_size)",
                 (unsigned long long)p->workspace_bytes, (unsigned long long)need);
    KILN_FAIL_IF(need && !p->workspace, KILN_EBADARG, "workspace is NULL");
    KILN_FAIL_IF(p->workspace % 16, KILN_EBADARG, "workspace 0x%llx is not 16-byte aligned",
                 (unsigned long long)p->workspace);

    kiln_hstu_bwd_kparams *kp = &plan->kp;
    kp->dout = p->dout;
    kp->dq = p->dq;
    kp->dk = p->dk;
    kp->dv = p->dv;
    kp->drab = p->drab;
    kp->dq_accum = dq_bytes ? p->workspace : 0;
    kp->drab_accum = drab_bytes ? p->workspace + dq_bytes : 0;
    kp->dout_row_stride = p->dout_row_stride;
    kp->dout_head_stride = p->dout_head_stride;
    kp->dq_row_stride = p->dq_row_stride;
    kp->dq_head_stride = p->dq_head_stride;
    kp->dk_row_stride = p->dk_row_stride;
    kp->dk_head_stride = p->dk_head_stride;
    kp->dv_row_stride = p->dv_row_stride;
    kp->dv_head_stride = p->dv_head_stride;
    kp->drab_batch_stride = p->drab_batch_stride;
    kp->drab_head_stride = p->drab_head_stride;
    kp->drab_row_stride = p->drab_row_stride;
    kp->num_n_blocks = (int32_t)(((int64_t)f->max_seqlen_k + key->block_n - 1) / key->block_n);
    plan->zero_dq_bytes = dq_bytes;
    plan->zero_drab_bytes = drab_bytes;
    plan->dq_sync = sync_bytes ? p->workspace + dq_bytes + drab_bytes : 0;
    plan->dq_sync_bytes = sync_bytes;

    unsigned threads = (unsigned)key->warps * 32;
    int reduce_heads = p->drab && f->rab_heads < h;
    plan->main.grid[0] = (unsigned)kp->num_n_blocks;
    plan->main.grid[1] = (unsigned)(reduce_heads ? f->rab_heads : h);
    plan->main.grid[2] = (unsigned)f->batch;
    plan->main.block[0] = threads;
    plan->main.block[1] = plan->main.block[2] = 1;
    plan->main.smem = (unsigned)kiln__key_smem(key, 0);
    plan->run_dq = p->deterministic && kp->f.num_m_blocks > 0;
    plan->dq = plan->main;
    plan->dq.grid[0] = (unsigned)kp->f.num_m_blocks;
    plan->dq.grid[1] = (unsigned)h;
    plan->dq.smem = (unsigned)kiln__key_smem(key, 1);
    plan->run_convert = dq_bytes || drab_bytes;
    /* About 1024 blocks (fewer for small scratch), a sequence per blockIdx.y
     * (mod 65535): with every block walking all sequences, paying each one's
     * offset loads in turn, the convert of (256, 1024, 4, 128) took 0.33 ms
     * on an H100, 0.22 ms this way */
    uint64_t elems = dq_bytes / 4 + drab_bytes / 4, blocks = (elems + 255) / 256;
    uint64_t gy = (uint64_t)f->batch < 65535 ? (uint64_t)f->batch : 65535;
    uint64_t gx = (1024 + gy - 1) / gy, gx_need = (blocks + gy - 1) / gy;
    if (gx > gx_need) gx = gx_need ? gx_need : 1;
    plan->convert.grid[0] = (unsigned)gx;
    plan->convert.grid[1] = (unsigned)gy;
    plan->convert.grid[2] = 1;
    plan->convert.block[0] = 256;
    plan->convert.block[1] = plan->convert.block[2] = 1;
    plan->convert.smem = 0;
    return KILN_OK;
}
