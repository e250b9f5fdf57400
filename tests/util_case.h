/* util_case.h -- the HSTU test cases shared by test_hstu_gpu.c (forward)
 * and test_hstu_bwd_gpu.c (backward): the case description, the random
 * sweep's generator, the host input tensors a case is built from, and the
 * small helpers both sweeps run on (keys, prewarming, engines).
 *
 * Both tests must draw the same logical inputs from the same seed (the
 * backward is checked on the data the forward was), so the generator and the
 * input builder live here once; what only one of them needs (outputs,
 * gradients, their strides and comparisons) stays in the test.
 *
 * Linked into every test program and into the bench and the demo (the
 * Makefile links every tests/util_*.c), so: no main(), no cmocka tables, no
 * cmocka calls (the bench and the demo do not link cmocka), no globals.
 */
#ifndef KILN_TESTS_UTIL_CASE_H
#define KILN_TESTS_UTIL_CASE_H

#include <stddef.h>
#include <stdint.h>

#include "kiln.h"
#include "ref_hstu.h"
#include "util_gpu.h"

#define KT_MAXB 8       /* sequences per case at most */
#define KT_KEYLEN 256   /* a kernel key */
#define KT_GUARD 64     /* poisoned elements after every tensor buffer */
#define KT_MAX_EDGE 40  /* edge cases of a sweep at most */
#define KT_MAX_NFUNC 9  /* n_func of a case at most */

/* ------------------------------------------------------------------ cases */

/* KT_F_FUNC: NVIDIA's arbitrary mask (kiln.h's func), random intervals per
 * query row (kt_fill_func) */
enum kt_family { KT_F_NONE, KT_F_CAUSAL, KT_F_LOCAL, KT_F_CONTEXT, KT_F_TARGET, KT_F_CTX_TGT,
                 KT_F_FUNC, KT_F_COUNT };
extern const char *const kt_family_name[KT_F_COUNT];

enum kt_layout { KT_L_CONTIG, KT_L_PACKED, KT_L_PADDED, KT_L_HEADMAJOR, KT_L_COUNT };
extern const char *const kt_layout_name[KT_L_COUNT];

/* One case.  The backward's fields (drab .. grid_values) stay 0 in the
 * forward's cases. */
typedef struct kt_case {
    char label[48]; /* "grid" or the edge case's name; seeds the data */
    int family, dtype, D, H, B;
    int len_q[KT_MAXB], len_k[KT_MAXB]; /* len_k used only with delta_q */
    int has_ctx, has_tgt;
    int ctx[KT_MAXB], tgt[KT_MAXB]; /* raw values given to the kernel */
    int group, wl, wr;
    int rab_heads; /* 0: no rab */
    int rab_exact; /* rab rows exactly max_seqlen_k apart (NVIDIA's layout),
                    * else padded to a multiple of 8 elements */
    int rab_bcast; /* forward: one rab for the whole batch (batch stride 0) */
    int rab_nan_pad; /* forward: rab NaN at every (i, j) past its sequence */
    int drab;      /* backward: compute d(rab) (needs rab) */
    int drab_own;  /* backward: drab with its own (wider) strides, else rab's */
    int det;       /* backward: deterministic */
    int delta_q, i64, layout, extra_rows, sep_k_offsets;
    int msq_extra, msk_extra; /* max_seqlen above the longest sequence */
    int msq_set;              /* > 0: max_seqlen_q (and _k) exactly this */
    int grid_values; /* inputs are multiples of 2^-10 in [-1, 1] (finite differences) */
    int n_func;      /* KT_F_FUNC: values per query row (odd) */
    int func_pad;    /* KT_F_FUNC: func_stride = total_q + func_pad (at least 1) */
    int nan_v;       /* 1 + a sequence whose V rows are all NaN (give it no query rows):
                      * key tiles of the one before that run past its end must not carry
                      * them into P V (as 0 * NaN); 0: none */
    float alpha, scaling;     /* scaling 0: default (max_seqlen_q) */
    uint64_t seed;
    char key[KT_KEYLEN];
} kt_case;

/* The case of a mask family with these lengths and everything else at its
 * default; the seed is a hash of label, so an edge case keeps its data when
 * cases are added or filtered around it. */
kt_case kt_base_case(const char *label, int family, int dtype, int D, int H, int B,
                     const int *lens);

/* One line for the log and for KILN_TEST_FILTER.  bwd: with the backward's
 * fields (drab, det/atomic), and "maxlen+" also for max_seqlen_k alone --
 * the forward's lines leave those out, and the filter matches on them, so
 * each test keeps its own wording. */
void kt_describe(const kt_case *c, int bwd, char *buf, size_t n);

/* A random sweep case is drawn in three steps so that both tests consume
 * the RNG in the same order around the features only one of them cycles:
 * kt_grid_case_begin (heads, batch, lengths, the data seed), then the test
 * sets rab / layout / its own fields from n, then kt_grid_case_finish (the
 * draws common to both: offsets type, alpha, padding rows, max_seqlen,
 * scaling, windows, target groups, delta_q lengths, contexts and targets).
 * finish also sets delta_q from n (where the mask allows it) and moves a
 * delta_q case off the packed layout, which has one offsets array. */
kt_case kt_grid_case_begin(int f, int dtype, int D, int n, uint64_t seed, kt_rng *r);
void kt_grid_case_finish(kt_case *c, int f, int n, kt_rng *r);

/* The sweep: the product mask family x dtype x head_dim, KILN_TEST_REPS
 * (default 2) random cases each from grid(), then the edge cases edges()
 * writes (at most KT_MAX_EDGE); KILN_TEST_SEED (default default_seed) and
 * KILN_TEST_FILTER (on kt_describe(.., bwd, ..)) applied.  Caller frees. */
typedef kt_case (*kt_grid_fn)(int f, int dtype, int D, int n, uint64_t seed);
kt_case *kt_make_sweep(uint64_t default_seed, kt_grid_fn grid, int (*edges)(kt_case *out),
                       int bwd, int *count, int *reps_out, uint64_t *seed_out);

/* The negative controls' case: every mask feature at once (contexts,
 * targets in groups of 2, one rab head), so that each mutated reference
 * changes something, and sequences long enough that it changes a lot. */
kt_case kt_neg_case(int dtype);
/* The same for the func mask: n_func 3, one rab head, the same lengths. */
kt_case kt_neg_func_case(int dtype);

/* The invalid-offsets test: offsets kt_invalid_offsets = [0, 10, 4, 40, 50,
 * 66] over 60 rows with max_seqlen 16, so sequence 1 decreases, 2 is
 * longer than max_seqlen, 4 ends past total; 0 and 3 are valid.  And the
 * valid case run after it on the same engine. */
extern const int64_t kt_invalid_offsets[6];
kt_case kt_invalid_offsets_case(void);
kt_case kt_after_invalid_case(void);

/* The layout tests' case: contexts, targets in groups of 2, an empty
 * sequence and trailing rows, so that every layout's padding and every
 * clamp is crossed by the same logical tensors. */
kt_case kt_layouts_case(void);

/* The NaN-neighbour case: delta_q, three sequences of lens_q queries over
 * lens_k keys, the second with no queries and its V all NaN (nan_v), so
 * that the key tiles of the first, which run past its end, read it. */
kt_case kt_nan_next_case(const char *label, int family, int dtype, int D, int H,
                         const int *lens_q, const int *lens_k);

/* ------------------------------------------------------------------ inputs */

/* The host side of a case's inputs: offsets, contexts, targets, q, k, v and
 * rab.  Poisoned (0xFFFF) everywhere but in the logical elements, so that a
 * kernel reading padding produces NaN. */
typedef struct kt_inputs {
    int64_t offq[KT_MAXB + 1], offk[KT_MAXB + 1];
    int32_t offq32[KT_MAXB + 1], offk32[KT_MAXB + 1];
    int32_t ctx[KT_MAXB], tgt[KT_MAXB];
    uint16_t *bq, *bk, *bv, *brab; /* bk = bv = bq when packed */
    int32_t *func;                 /* KT_F_FUNC: n_func x func_stride values, or NULL */
    size_t nfunc;                  /* its elements */
    size_t nq, nk, nv, nrab;       /* elements, guard included */
    size_t q_at, k_at, v_at;       /* where each tensor starts in its buffer */
} kt_inputs;

/* What the lengths of a case make of the params. */
typedef struct kt_shape {
    int64_t total_q, total_k;
    int msq, msk;  /* max_seqlen_q, max_seqlen_k */
    int sep_k;     /* seq_offsets_k given */
    int64_t qrs, qhs, krs, khs; /* q and k/v strides of the case's layout */
    int64_t func_stride;        /* KT_F_FUNC, else 0 */
} kt_shape;

/* Offsets (custom_off, if not NULL, replaces both arrays, B+1 entries, after
 * the totals are taken from the lengths -- so invalid offsets can be tried
 * on buffers of a known size), contexts, targets, totals, max_seqlen and the
 * input strides of case c. */
void kt_case_shape(const kt_case *c, const int64_t *custom_off, kt_inputs *in, kt_shape *s);

/* The forward params both tests share (all but pointers and the output
 * strides) from c and s.  p was initialized by the caller. */
void kt_case_fwd_params(const kt_case *c, const kt_shape *s, kiln_hstu_fwd_params *p);

/* Fake, aligned input pointers that are never dereferenced (for computing
 * keys without buffers). */
void kt_fake_input_ptrs(const kt_case *c, const kt_shape *s, kiln_hstu_fwd_params *p);

/* The forward fields of the argument tests' valid params, with fake,
 * aligned pointers (never dereferenced): bf16, d128, 4 heads, 2 sequences
 * over 64 rows, max_seqlen 32, causal.  out is the caller's: the forward
 * needs one, the backward must not get one. */
void kt_fake_fwd_params(kiln_hstu_fwd_params *p);

/* Allocate q, k, v poisoned and fill their logical elements from r, in the
 * same order for every layout (same seed -> same logical tensors). */
void kt_fill_qkv(const kt_case *c, const kt_shape *s, kt_rng *r, kt_inputs *in);
/* Allocate and fill rab (all of it, padding included: the kernel may read
 * a padded row's tail) if the case has one. */
void kt_fill_rab(const kt_case *c, const kiln_hstu_fwd_params *p, kt_rng *r, kt_inputs *in);
/* KT_F_FUNC: allocate and fill func (from its own stream, seeded by the
 * case's seed, so the other inputs' data stay what they were): per query
 * row, row 0 of every sequence a window around the diagonal, the others
 * drawn among windows, sorted disjoint intervals, random values in
 * [-3, len_k + 5] (empty and overlapping intervals, ends past len_k) and
 * rows that see nothing or hold INT32_MIN / INT32_MAX.  Values outside the
 * sequences' rows are garbage the kernels must not use. */
void kt_fill_func(const kt_case *c, const kt_shape *s, kt_inputs *in);
/* The reference's view of the inputs. */
void kt_host_view(const kt_case *c, const kt_shape *s, const kt_inputs *in, kt_hstu_host *h);
void kt_inputs_free(kt_inputs *in);

/* ------------------------------------------------------------------ memory, data */

/* malloc that aborts: a test that runs out of host memory has nothing to
 * report but that. */
void *kt_xmalloc(size_t n);
/* n 16-bit elements of 0xFFFF (NaN in both types). */
uint16_t *kt_alloc_poison(size_t n);
/* Elements from the first to one past the last of total rows of H heads of
 * D elements at these strides (0 for no rows). */
size_t kt_span(int64_t total, int64_t rs, int64_t hs, int H, int D);
/* A random 16-bit value in [-amp, amp), or with grid a multiple of 2^-10 in
 * [-1, 1] (exact in both types, so x +- 2^-9 is too). */
uint16_t kt_draw_half(kt_rng *r, int dtype, double amp, int grid);
void kt_fill_rows(kt_rng *r, int dtype, uint16_t *buf, int64_t total, int64_t rs, int64_t hs,
                  int H, int D, double amp, int grid);
/* Batch lengths for a random case: sequence 0 of length 0 or 1, the rest
 * mostly from the tile-edge pool, shuffled; at least 2 rows in all. */
void kt_draw_lengths(kt_rng *r, int B, int *len);
/* FNV-1a. */
uint64_t kt_hash_str(const char *s);

/* ------------------------------------------------------------------ misc */

/* getenv as an int; def when unset or empty. */
int kt_env_int(const char *name, int def);

/* Whether msg names field as a whole identifier ("q" in "q is misaligned",
 * not in "seq_offsets_q"). */
int kt_names_field(const char *msg, const char *field);

/* Add key to the set keys[0..*nk) unless there; 1 if added. */
int kt_key_add(char (*keys)[KT_KEYLEN], int *nk, const char *key);

/* kiln_prewarm every key on up to nthreads threads (at least 1, the caller's
 * own if none starts); failures are printed.  Returns the failures;
 * *threads receives the threads used. */
int kt_prewarm_keys(kiln_engine *e, char (*keys)[KT_KEYLEN], int nk, int nthreads, int *threads);

/* Whether the CPU dry run of a sweep runs: KILN_TEST_DRY_SWEEP, default only
 * without a GPU.  When not, prints why (the caller then calls skip()). */
int kt_dry_sweep_wanted(int gpu_ok);

/* The tests' engines: nolaunch (no disk cache, no compiling: it can never
 * launch, so argument checks run anywhere) always, engine (the default
 * cache) only when kt_gpu_init succeeds.  0, or -1 with the error printed. */
int kt_open_engines(int *gpu_ok, char *why, size_t n, kiln_engine **engine,
                    kiln_engine **nolaunch);

#endif
