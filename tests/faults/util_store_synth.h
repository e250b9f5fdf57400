/* util_store_synth.h -- synthetic cache entries for the store fault programs:
 * a reference cubin (real bytes, so kiln__elf_check passes) stored under a
 * made-up identity, so thousands of rows cost no compile. */
#ifndef KILN_FAULTS_UTIL_STORE_SYNTH_H
#define KILN_FAULTS_UTIL_STORE_SYNTH_H

#include <stdint.h>
#include <string.h>
#include <xxhash.h>

#include "cache/cache.h"
#include "util_store.h"

typedef struct st_syn {
    uint8_t ident[64];
    uint8_t hash[16];
    char key[64];
} st_syn;

static inline void st_syn_make(st_syn *s, const char *tag, long i)
{
    memset(s, 0, sizeof *s);
    snprintf(s->key, sizeof s->key, "synthetic/%s/%ld", tag, i);
    memcpy(s->ident, s->key, strlen(s->key));
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(s->ident, sizeof s->ident));
    memcpy(s->hash, c.digest, 16);
}

static inline kiln_status st_syn_put(kiln_cache *c, const st_syn *s, const st_ref *r)
{
    kiln_cache_put_args a;
    memset(&a, 0, sizeof a);
    memcpy(a.hash, s->hash, 16);
    a.ident = s->ident;
    a.ident_len = sizeof s->ident;
    a.f.key = s->key;
    a.f.family = "synthetic";
    a.cubin = r->cubin;
    a.cubin_len = r->len;
    a.prelude = "";
    a.log = "";
    return kiln__cache_put(c, &a);
}

/* KILN_OK only with the exact reference bytes; ENOTFOUND on a miss. */
static inline kiln_status st_syn_get(kiln_cache *c, const st_syn *s, const st_ref *r)
{
    void *b = NULL;
    size_t n = 0;
    kiln_status st = kiln__cache_get(c, s->hash, s->ident, sizeof s->ident, &b, &n);
    if (st == KILN_OK) {
        CHECK(n == r->len && memcmp(b, r->cubin, n) == 0, "a hit returned other bytes");
        kiln__free(b);
    }
    return st;
}

#endif
