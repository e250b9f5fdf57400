/* hstu_fwd.h -- from kiln_hstu_fwd_params to a key, kernel parameters and a
 * launch geometry.  Internal; allocates nothing. */
#ifndef KILN_DISPATCH_HSTU_FWD_H
#define KILN_DISPATCH_HSTU_FWD_H

#include <stdint.h>

#include "dispatch/key.h"
#include "kiln.h"
#include "templates/hstu_fp8_params.h"
#include "templates/hstu_params.h"

typedef struct kiln_launch {
    unsigned grid[3], block[3];
    unsigned smem; /* dynamic shared memory bytes */
} kiln_launch;

/* Validate every host-visible field of p (KILN_EBADARG naming the field and
 * its value), then derive the key for (arch, arch_a), the kernel's parameter
 * block and the launch geometry.  *empty is set when there is nothing to
 * launch (batch 0 or max_seqlen_q 0); key is still filled. */
kiln_status kiln__hstu_fwd_plan(const kiln_hstu_fwd_params *p, int arch,
                                int arch_a, kiln_key *key, kiln_hstu_kparams *kp,
                                kiln_launch *launch, int *empty);
/* The same with the implementation forced (0 mma, 1 wgmma; -1 the default). */
kiln_status kiln__hstu_fwd_plan_impl(const kiln_hstu_fwd_params *p, int arch, int arch_a,
                                     int impl, kiln_key *key, kiln_hstu_kparams *kp,
                                     kiln_launch *launch, int *empty);

/* Shared by forward and backward: validate the forward inputs (and p->out if
 * check_out), fill key (the caller sets family, drab, det and impl (-1: the
 * default) first) and kp. */
kiln_status kiln__hstu_plan_inputs(const kiln_hstu_fwd_params *p, int arch, int arch_a,
                                   int check_out, kiln_key *key, kiln_hstu_kparams *kp,
                                   int *empty);

/* Exported for the backward's own output checks. */
kiln_status kiln__check_view(const char *name, uint64_t ptr, int64_t rows,
                             int64_t row_stride, int64_t heads, int64_t head_stride,
                             int dim, int is_output);

/* The same for elements of elem_bytes (1: e4m3, 2: fp16/bf16). */
kiln_status kiln__check_view_es(const char *name, uint64_t ptr, int64_t rows,
                                int64_t row_stride, int64_t heads, int64_t head_stride,
                                int dim, int is_output, int elem_bytes);

/* A (batch, heads, len, len) bias view such as rab or drab. */
kiln_status kiln__check_bias(const char *name, uint64_t ptr, int batch, int heads,
                             int len, int64_t batch_stride, int64_t head_stride,
                             int64_t row_stride);

#endif
