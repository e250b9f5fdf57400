/* ref_hstu_bwd.h -- double-precision CPU reference of the HSTU backward
 * (../SPEC.md section 1; the math is the comment above kiln_hstu_bwd_params
 * in include/kiln.h).
 *
 * For every valid pair (i, j) of every head h of every valid sequence b,
 * with pos(i) the query's position (r + len_k - len_q under delta_q):
 *   s     = alpha * (q_i . k_j + rab[b, h % rab_heads, pos(i), j])
 *   p     = silu(s) / scaling                     dv_j += p * do_i
 *   dp    = do_i . v_j
 *   ds    = dp * silu'(s) * alpha / scaling       dq_i += ds * k_j
 *   silu'(x) = sig(x) * (1 + x * (1 - sig(x)))    dk_j += ds * q_i
 *   drab[b, h % rab_heads, pos(i), j] += ds
 * Validity of (i, j) and which sequences are valid come from ref_hstu.c
 * (kt_ref_hstu_pair, kt_ref_hstu_seq), so the backward can never disagree
 * with the forward about the mask.
 *
 * Written elements: every row of dq of a valid sequence, every row of dk/dv
 * of a valid sequence (0 for keys no query sees), and every element of
 * drab[b, hr, 0..len_k, 0..len_k] of a valid sequence b, hr < rab_heads (0
 * where no valid pair lands).  Nothing else is touched, so a caller that
 * fills the outputs with NaN first can tell "must be written" from "must
 * stay untouched".  Inputs are the exact fp16/bf16 values; everything is
 * computed in double.  Not a test: linked into every test program.
 */
#ifndef KILN_TESTS_REF_HSTU_BWD_H
#define KILN_TESTS_REF_HSTU_BWD_H

#include <stdint.h>

#include "kiln.h"
#include "ref_hstu.h"

/* Host copies of the backward's inputs: the forward's (strides of p->fwd)
 * and dout (p->dout_row_stride / dout_head_stride). */
typedef struct kt_hstu_bwd_host {
    kt_hstu_host f;
    const uint16_t *dout; /* fp16/bf16 bits */
} kt_hstu_bwd_host;

/* The reference's outputs, in double, indexed with the gradient strides of
 * the params (dq_row_stride, ... drab_row_stride).  drab NULL: not computed
 * (drab needs p->fwd rab data, h->f.rab). */
typedef struct kt_hstu_bwd_out {
    double *dq, *dk, *dv, *drab;
} kt_hstu_bwd_out;

/* Deliberate mistakes, for the negative controls.  The mask mutations of
 * ref_hstu.h (KT_REF_DROP_DIAG, KT_REF_DROP_LAST_KEY,
 * KT_REF_TARGET_GROUP_PLUS1) are accepted as they are; these drop or break
 * one term of the backward. */
enum kt_ref_bwd_mutation {
    KT_BWD_SILU_NO_X_TERM = 16, /* silu'(x) = sig(x): the x (1 - sig) term dropped */
    KT_BWD_NO_ALPHA = 17,       /* ds without the factor alpha */
    KT_BWD_DRAB_ONE_HEAD = 18,  /* drab from head hr only, not summed over the
                                   heads sharing it */
    KT_BWD_DV_NO_SCALING = 19,  /* dv with silu(s), not silu(s) / scaling */
    KT_BWD_DK_FROM_DO = 20      /* dk_j += ds * do_i instead of ds * q_i */
};

/* Flags of kt_ref_hstu_bwd_ex. */
enum kt_ref_bwd_flags {
    /* Emulate a kernel that feeds the GEMMs 16-bit operands: p is rounded to
     * the input type before dv += p do, ds before dq += ds k and dk += ds q
     * (drab keeps ds unrounded).  Sums stay in double.  For the dry run
     * that checks the tolerances against a kernel-like rounding error. */
    KT_BWD_ROUND_OPERANDS = 1
};

/* Compute the gradients.  Returns the number of invalid sequences (whose
 * rows are not touched). */
int64_t kt_ref_hstu_bwd(const kiln_hstu_bwd_params *p, const kt_hstu_bwd_host *h,
                        const kt_hstu_bwd_out *out);
int64_t kt_ref_hstu_bwd_ex(const kiln_hstu_bwd_params *p, const kt_hstu_bwd_host *h,
                           const kt_hstu_bwd_out *out, int mutation, int flags);

/* silu'(x) = sig(x) * (1 + x * (1 - sig(x))), in double. */
double kt_ref_silu_grad(double x);

#endif
