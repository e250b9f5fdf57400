/* hstu_fwd.h -- from kiln_hstu_fwd_params to a key, kernel parameters and a
 * launch geometry.  Internal; allocates nothing. */
#ifndef KILN_DISPATCH_HSTU_FWD_H
#define KILN_DISPATCH_HSTU_FWD_H

#include <stdint.h>

#include "dispatch/key.h"
#include "kiln.h"
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

#endif
