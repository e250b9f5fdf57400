/* ref_hstu.h -- double-precision CPU reference of HSTU forward
 * (../SPEC.md section 1, NVIDIA HSTU semantics).
 *
 * The reference takes the same kiln_hstu_fwd_params a launch takes (its
 * device pointers are ignored) plus host copies of every tensor, laid out
 * with the same strides as on the device.  Inputs are the exact fp16/bf16
 * values (converted from the 16-bit storage to double); everything else is
 * computed in double.  Not a test: linked into every test program.
 */
#ifndef KILN_TESTS_REF_HSTU_H
#define KILN_TESTS_REF_HSTU_H

#include <stdint.h>

#include "kiln.h"

/* Host copies of the tensors.  Indexing uses the strides in the params. */
typedef struct kt_hstu_host {
    const uint16_t *q, *k, *v; /* fp16/bf16 bits, params' strides */
    const uint16_t *rab;       /* or NULL; params' rab strides */
    const void *seq_offsets_q; /* int32 or int64 (params.offsets_type) */
    const void *seq_offsets_k; /* NULL: same as seq_offsets_q */
    const int32_t *num_contexts, *num_targets; /* or NULL */
    /* NVIDIA's arbitrary mask, or NULL: value f of global query row g at
     * func[f * params.func_stride + g], f < params.n_func (kiln.h) */
    const int32_t *func;
} kt_hstu_host;

/* One sequence as the kernel must see it. */
typedef struct kt_hstu_seq {
    int64_t q_start, k_start; /* first row in q / in k and v */
    int len_q, len_k;
    int offset;               /* position of query row 0 (len_k - len_q with delta_q) */
    int contexts, targets;    /* clamped: c in [0, L], t in [0, L - c] */
} kt_hstu_seq;

/* Deliberate mistakes, for the negative controls: a reference computed with
 * one of these must NOT match a correct kernel. */
enum kt_ref_mutation {
    KT_REF_EXACT = 0,
    KT_REF_DROP_DIAG = 1,      /* pair (i, i) treated as invalid */
    KT_REF_DROP_LAST_KEY = 2,  /* key j = L-1 treated as invalid */
    KT_REF_TARGET_GROUP_PLUS1 = 3, /* target groups of g+1 instead of g */
    KT_REF_FUNC_HI_PLUS1 = 4       /* func: every interval one key longer at its end */
};

/* Read sequence b.  Returns 1 and fills *s if the sequence is valid, 0 if
 * the kernel must treat it as empty and write none of its rows: offsets
 * negative or decreasing, end past total_q/total_k, a length above
 * max_seqlen_q/k, len_q > len_k with delta_q, len_q != len_k without. */
int kt_ref_hstu_seq(const kiln_hstu_fwd_params *p, const kt_hstu_host *h,
                    int b, kt_hstu_seq *s);

/* Whether key j is valid for the query at position i (0 <= i, j) of a
 * sequence of L = len_k keys with c contexts and t targets (already
 * clamped), given window (wl, wr) and target group g.  Pure function. */
int kt_ref_hstu_valid(int i, int j, int L, int c, int t, int wl, int wr,
                      int g, int mutation);

/* Whether query row r (local index) of sequence s sees key j: through
 * h->func when it is set (the intervals of global row s->q_start + r,
 * clamped to [0, len_k); the window, contexts and targets are not looked at),
 * else kt_ref_hstu_valid at the row's position r + s->offset.  The one
 * validity rule of both references. */
int kt_ref_hstu_pair(const kiln_hstu_fwd_params *p, const kt_hstu_host *h,
                     const kt_hstu_seq *s, int r, int j, int mutation);

/* out_i = sum over valid j of silu(alpha * (q.k + rab)) / scaling_seqlen * v_j
 * for every row of every valid sequence and every head, written to out
 * (double, indexed with params' out strides).  Rows of invalid sequences and
 * rows outside every sequence are not touched.  Returns the number of invalid
 * sequences. */
int64_t kt_ref_hstu_fwd(const kiln_hstu_fwd_params *p, const kt_hstu_host *h,
                        double *out);
int64_t kt_ref_hstu_fwd_ex(const kiln_hstu_fwd_params *p,
                           const kt_hstu_host *h, double *out, int mutation);

/* silu(x) = x * sigmoid(x), in double. */
double kt_ref_silu(double x);

#endif
