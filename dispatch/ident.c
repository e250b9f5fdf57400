/* ident.c -- the full identity of a compiled kernel and its hash. */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <xxhash.h>

#include "dispatch/key.h"
#include "runtime/templates.h"

void kiln__hex(const uint8_t *b, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

/* The options are a function of the arch alone: hash each arch's once, so a
 * launch does not format and hash them again. */
static _Atomic int opt_ready[2][256];
static uint8_t opt_digest[2][256][16];
static pthread_mutex_t opt_mu = PTHREAD_MUTEX_INITIALIZER;

static const uint8_t *options_digest(const kiln_key *k)
{
    int a = k->arch_a ? 1 : 0, i = k->arch & 255;
    int memo = k->arch >= 0 && k->arch < 256;
    static _Thread_local uint8_t scratch[16];
    uint8_t *out = memo ? opt_digest[a][i] : scratch;
    if (memo && atomic_load_explicit(&opt_ready[a][i], memory_order_acquire)) return out;
    char opts[256];
    kiln__key_options(k, opts, sizeof opts);
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(opts, strlen(opts)));
    if (!memo) {
        memcpy(out, c.digest, 16);
        return out;
    }
    pthread_mutex_lock(&opt_mu);
    if (!atomic_load_explicit(&opt_ready[a][i], memory_order_relaxed)) {
        memcpy(out, c.digest, 16);
        atomic_store_explicit(&opt_ready[a][i], 1, memory_order_release);
    }
    pthread_mutex_unlock(&opt_mu);
    return out;
}

void kiln__ident_build(const kiln_key *k, const char *nvrtc_version,
                       kiln_ident *out)
{
    uint8_t *p = out->bytes;
    memset(out->bytes, 0, sizeof out->bytes);
    kiln__key_encode(k, p);
    p += KILN_KEY_BYTES;
    /* Each part tagged, fixed width: the template text, the compiler version
     * (zero padded), the options (their digest: the text is in the row). */
    *p++ = 'S';
    *p++ = 16;
    memcpy(p, kiln__template_digest, 16);
    p += 16;
    size_t vl = strlen(nvrtc_version ? nvrtc_version : "");
    if (vl > 24) vl = 24;
    memcpy(p, nvrtc_version, vl);
    p += 24;
    memcpy(p, options_digest(k), 16);
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(out->bytes, KILN_IDENT_BYTES));
    memcpy(out->hash, c.digest, 16);
}
