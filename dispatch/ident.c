/* ident.c -- the full identity of a compiled kernel and its hash. */
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
    char opts[256];
    kiln__key_options(k, opts, sizeof opts);
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(opts, strlen(opts)));
    memcpy(p, c.digest, 16);
    XXH128_canonicalFromHash(&c, XXH3_128bits(out->bytes, KILN_IDENT_BYTES));
    memcpy(out->hash, c.digest, 16);
}
