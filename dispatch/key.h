/* key.h -- the dispatch key: everything that selects one compiled kernel.
 * Internal.  One selection path: kiln__key_validate() answers "is this
 * supported?" and the tile fields answer "which tiles?", so they can't drift.
 */
#ifndef KILN_KEY_H
#define KILN_KEY_H

#include <stddef.h>
#include <stdint.h>

#include "kiln.h"

enum kiln_family { KILN_FAM_HSTU_FWD = 1, KILN_FAM_HSTU_BWD = 2 };

enum kiln_mask_bits {
    KILN_MASK_CAUSAL = 1u << 0,
    KILN_MASK_LOCAL = 1u << 1,
    KILN_MASK_CONTEXT = 1u << 2,
    KILN_MASK_TARGET = 1u << 3,
    KILN_MASK_DELTA_Q = 1u << 4,
    /* NVIDIA's arbitrary per-row key intervals (kiln_hstu_fwd_params.func):
     * alone or with deltaq; portable kernels only */
    KILN_MASK_FUNC = 1u << 5,
    KILN_MASK_ALL = (1u << 6) - 1
};

typedef struct kiln_key {
    int family;      /* kiln_family */
    int arch;        /* compute capability * 10: 80, 86, 89, 90, 100 ... */
    int arch_a;      /* 1: arch-specific features ("sm_90a") */
    int dtype;       /* kiln_dtype */
    int out_dtype;   /* e4m3: FP16 or BF16 (out and rab); 0 for 16-bit dtypes */
    int head_dim;
    unsigned mask;   /* kiln_mask_bits */
    int rab;
    int drab;        /* backward: compute d(rab) */
    int det;         /* backward: deterministic (no atomics) */
    int impl;        /* 0: portable mma.sync; 1: Hopper wgmma + TMA (sm_90a) */
    /* Hopper 16-bit forward (impl 1, not e4m3, no rab): 1 compiles the
     * persistent kernel (grid of one CTA per SM), 0 the one of a CTA per
     * m-block.  Two modules rather than one holding both: a cold compile of
     * one takes a third (0) to two thirds (1) of the time.  0, the default
     * of a text key without "/persist", serves every sequence length;
     * planning picks 1 where kiln__hstu_fwd_sm90_persistent() says so.  0
     * for every other key. */
    int persist;
    int block_m, block_n, warps;
} kiln_key;

/* Canonical encoding: a version byte, then tagged little-endian fields of
 * fixed width.  Never a struct image (padding would leak into the hash). */
#define KILN_KEY_VERSION 2
#define KILN_KEY_BYTES 32
void kiln__key_encode(const kiln_key *k, uint8_t out[KILN_KEY_BYTES]);

/* Parse the text form "hstu_fwd/sm_90a/bf16/d128/causal+target/rab" (arch may
 * be omitted when arch_override is given; "persist", and tile overrides
 * "bm128", "bn64", "w8" may follow), fill default tiles, validate.
 * arch_override (NULL: none) replaces the key's arch.  KILN_EBADARG / KILN_EUNSUPPORTED name the field. */
kiln_status kiln__key_parse(const char *text, const char *arch_override,
                            kiln_key *out);
/* Check every field and combination (including tiles vs. the arch's shared
 * memory).  The message names the field and its value. */
kiln_status kiln__key_validate(const kiln_key *k);
/* Fill block_m/block_n/warps with the defaults for the key's arch/dtype/dim
 * and implementation. */
void kiln__key_default_tiles(kiln_key *k);
/* The implementation a key gets unless it names one. */
int kiln__key_default_impl(const kiln_key *k);

/* Canonical text; tiles appear only when not the default.  Returns the
 * length, or -1 if buf is too small. */
int kiln__key_format(const kiln_key *k, char *buf, size_t n);
int kiln__mask_format(unsigned mask, char *buf, size_t n);
const char *kiln__dtype_name(int dtype);
const char *kiln__family_name(int family);

/* "sm_90a" <-> (90, 1).  parse returns 0 on success. */
int kiln__arch_parse(const char *s, int *arch, int *arch_a);
void kiln__arch_format(int arch, int arch_a, char *buf, size_t n);
/* The arch kiln compiles for on a device of compute capability major.minor
 * ("sm_90a" for 9.0: its wgmma/setmaxnreg need the a-target). */
void kiln__arch_for_device(int major, int minor, int *arch, int *arch_a);

/* Expand a pattern (fnmatch wildcards over the text form) into every valid
 * canonical key with default tiles; a pattern without wildcards yields its
 * own canonical form. */
kiln_status kiln__key_expand(const char *pattern, const char *arch_override,
                             int (*fn)(const char *key, void *user),
                             void *user);

/* Specialization: the prelude compiled for k (#defines + #include of the
 * family's template), the NVRTC options, and the kernel's entry name. */
int kiln__key_prelude(const kiln_key *k, char *buf, size_t n);
int kiln__key_options(const kiln_key *k, char *buf, size_t n);
/* The kernel entry points of the key's module, in a fixed order (forward:
 * the kernel; backward: main, dq, convert).  Returns their count. */
#define KILN_MAX_ENTRIES 3
int kiln__key_entries(const kiln_key *k, const char *names[KILN_MAX_ENTRIES]);
/* Dynamic shared memory of entry `which` (0 = the main kernel). */
size_t kiln__key_smem(const kiln_key *k, int which);

/* Full identity of a compiled kernel: key bytes, template digest, NVRTC
 * version, compile options.  The hash (XXH3-128 over ident) indexes caches;
 * the ident bytes are compared on every hit. */
#define KILN_IDENT_BYTES (KILN_KEY_BYTES + 2 + 16 + 24 + 16)
typedef struct kiln_ident {
    uint8_t bytes[KILN_IDENT_BYTES];
    uint8_t hash[16]; /* canonical (big-endian) XXH3-128 */
} kiln_ident;
void kiln__ident_build(const kiln_key *k, const char *nvrtc_version,
                       kiln_ident *out);
void kiln__hex(const uint8_t *b, size_t n, char *out /* 2n+1 */);

#endif
