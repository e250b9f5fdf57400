/* key.c -- the dispatch key: encoding, text form, validation. */
#include "dispatch/key.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dispatch/hstu_bwd_sm90_tiles.h"
#include "dispatch/hstu_bwd_tiles.h"
#include "dispatch/hstu_fwd_sm90_tiles.h"
#include "dispatch/hstu_tiles.h"
#include "runtime/error.h"

/* ------------------------------------------------------------------ names */

static const char *const mask_names[] = {"causal", "local", "context",
                                         "target", "deltaq", "func"};
#define NMASK ((int)(sizeof mask_names / sizeof mask_names[0]))

const char *kiln__dtype_name(int dtype)
{
    switch (dtype) {
    case KILN_DTYPE_FP16: return "fp16";
    case KILN_DTYPE_BF16: return "bf16";
    case KILN_DTYPE_E4M3: return "e4m3";
    default: return "?";
    }
}

const char *kiln__family_name(int family)
{
    switch (family) {
    case KILN_FAM_HSTU_FWD: return "hstu_fwd";
    case KILN_FAM_HSTU_BWD: return "hstu_bwd";
    default: return "?";
    }
}

int kiln__mask_format(unsigned mask, char *buf, size_t n)
{
    size_t len = 0;
    buf[0] = '\0';
    if (mask == 0) return snprintf(buf, n, "none") < (int)n ? 4 : -1;
    for (int i = 0; i < NMASK; i++) {
        if (!(mask & (1u << i))) continue;
        int w = snprintf(buf + len, n - len, "%s%s", len ? "+" : "", mask_names[i]);
        if (w < 0 || (size_t)w >= n - len) return -1;
        len += (size_t)w;
    }
    return (int)len;
}

int kiln__arch_parse(const char *s, int *arch, int *arch_a)
{
    if (strncmp(s, "sm_", 3) != 0 || !isdigit((unsigned char)s[3])) return -1;
    char *end;
    errno = 0;
    long v = strtol(s + 3, &end, 10);
    if (errno || v < 10 || v > 999) return -1;
    int a = 0;
    if (*end == 'a') { a = 1; end++; }
    if (*end != '\0') return -1;
    /* "sm_90" means cc 9.0; three digits ("sm_100") mean 10.0. */
    *arch = (int)v;
    *arch_a = a;
    return 0;
}

void kiln__arch_format(int arch, int arch_a, char *buf, size_t n)
{
    snprintf(buf, n, "sm_%d%s", arch, arch_a ? "a" : "");
}

void kiln__arch_for_device(int major, int minor, int *arch, int *arch_a)
{
    *arch = major * 10 + minor;
    /* The a-target unlocks Hopper/Blackwell-only instructions; its cubin runs
     * only on exactly that major.minor, which is what we compile for anyway. */
    *arch_a = (major == 9 || major == 10) && minor == 0;
}

/* --------------------------------------------------------------- encoding */

static uint8_t *put8(uint8_t *p, uint8_t tag, unsigned v)
{
    *p++ = tag;
    *p++ = (uint8_t)v;
    return p;
}

static uint8_t *put16(uint8_t *p, uint8_t tag, unsigned v)
{
    *p++ = tag;
    *p++ = (uint8_t)(v & 0xff);
    *p++ = (uint8_t)((v >> 8) & 0xff);
    return p;
}

void kiln__key_encode(const kiln_key *k, uint8_t out[KILN_KEY_BYTES])
{
    uint8_t *p = out;
    *p++ = KILN_KEY_VERSION;
    p = put8(p, 'F', (unsigned)k->family);
    p = put16(p, 'A', (unsigned)k->arch);
    *p++ = (uint8_t)(k->arch_a ? 1 : 0);
    /* e4m3's out dtype rides in the high nibble: 16-bit keys (out_dtype 0)
     * keep the bytes, and so the cache rows, they always had. */
    p = put8(p, 'T', (unsigned)k->dtype | (unsigned)k->out_dtype << 4);
    p = put16(p, 'D', (unsigned)k->head_dim);
    p = put8(p, 'M', k->mask);
    p = put8(p, 'R', k->rab ? 1u : 0u);
    p = put8(p, 'r', k->drab ? 1u : 0u);
    p = put8(p, 'x', k->det ? 1u : 0u);
    p = put8(p, 'i', (unsigned)k->impl);
    p = put16(p, 'm', (unsigned)k->block_m);
    p = put16(p, 'n', (unsigned)k->block_n);
    p = put8(p, 'w', (unsigned)k->warps);
    p = put8(p, 'p', k->persist ? 1u : 0u);
    /* 32 bytes: a change here is a KILN_KEY_VERSION change. */
    (void)p;
}

/* ------------------------------------------------------------- validation */

int kiln__key_default_impl(const kiln_key *k)
{
    /* func masks exist in the portable kernels only (hstu_fwd.cu,
     * hstu_bwd.cu); e4m3 + func is refused by validation. */
    if ((k->mask & KILN_MASK_FUNC) && k->dtype != KILN_DTYPE_E4M3) return 0;
    /* The Hopper backward wherever it serves the key (hstu_bwd_sm90_tiles.h). */
    if (k->family == KILN_FAM_HSTU_BWD)
        return KILN_SM90_BWD_DEFAULT && !kiln__hstu_bwd_sm90_serves(k->arch, k->arch_a,
                                                                    k->head_dim, k->rab,
                                                                    k->drab, k->det);
    /* e4m3: the Hopper kernel (templates/hstu_fwd_sm90_fp8.cu, fp8 wgmma)
     * on sm_90a; elsewhere the portable one, which widens e4m3 to 16 bits
     * as it loads (hstu_fwd.cu with KILN_DTYPE e4m3). */
    if (k->dtype == KILN_DTYPE_E4M3)
        return k->family == KILN_FAM_HSTU_FWD && k->arch == 90 && k->arch_a;
    /* The Hopper forward, rab included (its tiles by TMA; a rab TMA cannot
     * describe sends the call to the portable kernel at run time). */
    return KILN_SM90_FWD_DEFAULT && k->family == KILN_FAM_HSTU_FWD && k->arch == 90 &&
           k->arch_a;
}

void kiln__key_default_tiles(kiln_key *k)
{
    kiln_hstu_tiles t;
    if (k->impl == 1 && k->family == KILN_FAM_HSTU_BWD)
        kiln__hstu_bwd_sm90_default_tiles(k->dtype, k->head_dim, &t);
    else if (k->impl == 1)
        kiln__hstu_fwd_sm90_default_tiles(k->dtype, k->head_dim, &t);
    else if (k->family == KILN_FAM_HSTU_BWD)
        kiln__hstu_bwd_default_tiles(k->arch, k->dtype, k->head_dim, &t);
    else
        kiln__hstu_fwd_default_tiles(k->arch, k->dtype, k->head_dim, &t);
    k->block_m = t.block_m;
    k->block_n = t.block_n;
    k->warps = t.warps;
}

kiln_status kiln__key_validate(const kiln_key *k)
{
    char a[16];
    kiln__arch_format(k->arch, k->arch_a, a, sizeof a);
    int bwd = k->family == KILN_FAM_HSTU_BWD;
    KILN_FAIL_IF(k->family != KILN_FAM_HSTU_FWD && !bwd, KILN_EBADARG,
                 "family %d is not a kernel family (hstu_fwd, hstu_bwd)", k->family);
    KILN_FAIL_IF(k->drab && !bwd, KILN_EBADARG, "drab is an option of hstu_bwd only");
    KILN_FAIL_IF(k->det && !bwd, KILN_EBADARG, "det is an option of hstu_bwd only");
    KILN_FAIL_IF(k->drab && !k->rab, KILN_EBADARG, "drab needs rab");
    KILN_FAIL_IF(k->impl != 0 && k->impl != 1, KILN_EBADARG, "impl %d is not 0 or 1",
                 k->impl);
    KILN_FAIL_IF(k->mask & ~(unsigned)KILN_MASK_ALL, KILN_EBADARG,
                 "mask bits 0x%x are not defined", k->mask);
    if (k->mask & KILN_MASK_FUNC) {
        KILN_FAIL_IF(k->dtype == KILN_DTYPE_E4M3, KILN_EUNSUPPORTED,
                     "mask func: the fp8 (e4m3) kernel has no arbitrary func mask");
        KILN_FAIL_IF(k->impl == 1, KILN_EUNSUPPORTED,
                     "mask func: only the portable kernels (mma) serve func masks, "
                     "not wgmma");
        KILN_FAIL_IF(k->mask & (KILN_MASK_CAUSAL | KILN_MASK_LOCAL | KILN_MASK_CONTEXT |
                                KILN_MASK_TARGET),
                     KILN_EBADARG,
                     "mask func does not combine with causal, local, context or target "
                     "(only with deltaq)");
    }
    if (k->dtype == KILN_DTYPE_E4M3) {
        KILN_FAIL_IF(k->out_dtype != KILN_DTYPE_FP16 && k->out_dtype != KILN_DTYPE_BF16,
                     KILN_EBADARG, "dtype e4m3: out dtype %d is not fp16 (1) or bf16 (2)",
                     k->out_dtype);
        KILN_FAIL_IF(bwd, KILN_EUNSUPPORTED,
                     "dtype e4m3: fp8 HSTU is forward only (no hstu_bwd)");
        KILN_FAIL_IF(k->head_dim != 64 && k->head_dim != 128 && k->head_dim != 256,
                     KILN_EUNSUPPORTED,
                     "dtype e4m3: head_dim %d is not one of 64, 128, 256", k->head_dim);
    } else {
        KILN_FAIL_IF(k->out_dtype != 0, KILN_EBADARG,
                     "out dtype %d: only e4m3 keys name an out dtype", k->out_dtype);
    }
    KILN_FAIL_IF(k->impl == 1 && !bwd && (k->arch != 90 || !k->arch_a), KILN_EUNSUPPORTED,
                 "wgmma: the Hopper kernel exists for hstu_fwd on sm_90a only (not %s %s)",
                 kiln__family_name(k->family), a);
    KILN_FAIL_IF(k->persist != 0 && k->persist != 1, KILN_EBADARG,
                 "persist %d is not 0 or 1", k->persist);
    if (k->persist) {
        KILN_FAIL_IF(bwd, KILN_EBADARG, "persist is an option of hstu_fwd only");
        KILN_FAIL_IF(k->dtype == KILN_DTYPE_E4M3, KILN_EUNSUPPORTED,
                     "persist: the fp8 (e4m3) kernel has one grid (a CTA per m-block)");
        /* its consumers would spill rab's row pointers */
        KILN_FAIL_IF(k->rab, KILN_EUNSUPPORTED,
                     "persist: keys with rab run a CTA per m-block only");
        KILN_FAIL_IF(k->impl != 1, KILN_EUNSUPPORTED,
                     "persist: only the Hopper kernel (wgmma, sm_90a) has a persistent "
                     "grid, not mma on %s", a);
    }
    if (k->impl == 1 && bwd) {
        const char *no = kiln__hstu_bwd_sm90_serves(k->arch, k->arch_a, k->head_dim, k->rab,
                                                    k->drab, k->det);
        KILN_FAIL_IF(no, KILN_EUNSUPPORTED, "wgmma: %s (not %s d%d%s%s%s)", no, a,
                     k->head_dim, k->rab ? " rab" : "", k->drab ? " drab" : "",
                     k->det ? " det" : "");
    }
    KILN_FAIL_IF(k->arch < 80, KILN_EUNSUPPORTED,
                 "arch %s: kiln needs sm_80 or newer (tensor-core mma.sync)", a);
    KILN_FAIL_IF(k->arch_a && k->arch != 90 && k->arch != 100, KILN_EBADARG,
                 "arch %s: only sm_90a and sm_100a have an 'a' target", a);
    KILN_FAIL_IF(k->dtype != KILN_DTYPE_FP16 && k->dtype != KILN_DTYPE_BF16 &&
                     k->dtype != KILN_DTYPE_E4M3,
                 KILN_EBADARG, "dtype %d is not fp16, bf16 or e4m3", k->dtype);
    KILN_FAIL_IF(k->head_dim != 32 && k->head_dim != 64 && k->head_dim != 128 &&
                     k->head_dim != 256,
                 KILN_EBADARG, "head_dim %d is not one of 32, 64, 128, 256",
                 k->head_dim);
    unsigned m = k->mask;
    KILN_FAIL_IF((m & KILN_MASK_CONTEXT) && !(m & KILN_MASK_CAUSAL), KILN_EBADARG,
                 "mask context needs causal (window_right 0)");
    KILN_FAIL_IF((m & KILN_MASK_TARGET) && !(m & KILN_MASK_CAUSAL), KILN_EBADARG,
                 "mask target needs causal (window_right 0)");
    KILN_FAIL_IF((m & (KILN_MASK_CONTEXT | KILN_MASK_TARGET)) && (m & KILN_MASK_LOCAL),
                 KILN_EBADARG, "mask local does not combine with context or target");
    KILN_FAIL_IF((m & (KILN_MASK_CONTEXT | KILN_MASK_TARGET)) &&
                     (m & KILN_MASK_DELTA_Q),
                 KILN_EBADARG, "mask deltaq does not combine with context or target");
    const char *why =
        k->impl && bwd ? kiln__hstu_bwd_sm90_tiles_check(k->head_dim, k->block_m, k->block_n,
                                                         k->warps)
        : k->impl ? kiln__hstu_fwd_sm90_tiles_check(k->head_dim, k->block_m, k->block_n,
                                                    k->warps)
        : bwd ? kiln__hstu_bwd_tiles_check(k->head_dim, k->block_m, k->block_n, k->warps)
              : kiln__hstu_fwd_tiles_check(k->head_dim, k->block_m, k->block_n, k->warps);
    KILN_FAIL_IF(why, KILN_EBADARG, "tiles bm%d/bn%d/w%d: %s", k->block_m,
                 k->block_n, k->warps, why);
    size_t smem = kiln__key_smem(k, 0);
    if (bwd && k->det) {
        size_t s2 = kiln__key_smem(k, 1);
        if (s2 > smem) smem = s2;
    }
    size_t cap = kiln__arch_max_smem(k->arch);
    KILN_FAIL_IF(smem > cap, KILN_EUNSUPPORTED,
                 "tiles bm%d/bn%d for head_dim %d need %zu bytes of shared memory; "
                 "%s has %zu",
                 k->block_m, k->block_n, k->head_dim, smem, a, cap);
    return KILN_OK;
}

/* ------------------------------------------------------------- text form */

int kiln__key_format(const kiln_key *k, char *buf, size_t n)
{
    char a[16], m[64];
    kiln__arch_format(k->arch, k->arch_a, a, sizeof a);
    if (kiln__mask_format(k->mask, m, sizeof m) < 0) return -1;
    const char *impl = k->impl == kiln__key_default_impl(k) ? ""
                       : k->impl ? "/wgmma" : "/mma";
    char dt[24];
    snprintf(dt, sizeof dt, "%s%s%s", kiln__dtype_name(k->dtype), k->out_dtype ? "-" : "",
             k->out_dtype ? kiln__dtype_name(k->out_dtype) : "");
    int len = snprintf(buf, n, "%s/%s/%s/d%d/%s%s%s%s%s%s", kiln__family_name(k->family),
                       a, dt, k->head_dim, m,
                       k->rab ? "/rab" : "", k->drab ? "/drab" : "",
                       k->det ? "/det" : "", impl, k->persist ? "/persist" : "");
    if (len < 0 || (size_t)len >= n) return -1;
    kiln_key d = *k;
    kiln__key_default_tiles(&d);
    if (d.block_m != k->block_m || d.block_n != k->block_n || d.warps != k->warps) {
        int w = snprintf(buf + len, n - (size_t)len, "/bm%d/bn%d/w%d", k->block_m,
                         k->block_n, k->warps);
        if (w < 0 || (size_t)w >= n - (size_t)len) return -1;
        len += w;
    }
    return len;
}

/* "d128" / "bm64" style: prefix then a positive decimal that fits an int. */
static int parse_num(const char *seg, const char *prefix, int *out)
{
    size_t pl = strlen(prefix);
    if (strncmp(seg, prefix, pl) != 0 || !isdigit((unsigned char)seg[pl])) return -1;
    char *end;
    errno = 0;
    long v = strtol(seg + pl, &end, 10);
    if (errno || *end || v < 0 || v > 1 << 20) return -1;
    *out = (int)v;
    return 0;
}

static kiln_status parse_mask(const char *text, const char *seg, unsigned *out)
{
    *out = 0;
    if (strcmp(seg, "none") == 0) return KILN_OK;
    const char *p = seg;
    while (*p) {
        const char *e = strchr(p, '+');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        int found = -1;
        for (int i = 0; i < NMASK; i++)
            if (strlen(mask_names[i]) == len && strncmp(p, mask_names[i], len) == 0)
                found = i;
        if (found < 0 && len == 7 && strncmp(p, "delta_q", 7) == 0) found = 4;
        KILN_FAIL_IF(found < 0, KILN_EBADARG,
                     "key '%s': mask '%.*s' is not one of none, causal, local, "
                     "context, target, deltaq, func",
                     text, (int)len, p);
        *out |= 1u << found;
        p += len;
        if (*p == '+') p++;
    }
    return KILN_OK;
}

kiln_status kiln__key_parse(const char *text, const char *arch_override,
                            kiln_key *out)
{
    KILN_FAIL_IF(!text, KILN_EBADARG, "key is NULL");
    KILN_FAIL_IF(!out, KILN_EBADARG, "out is NULL");
    char buf[256];
    KILN_FAIL_IF(strlen(text) >= sizeof buf, KILN_EBADARG,
                 "key '%.40s...' is longer than %zu characters", text, sizeof buf - 1);
    strcpy(buf, text);
    char *seg[16];
    int nseg = 0;
    for (char *s = buf, *save = NULL, *t; (t = strtok_r(s, "/", &save)); s = NULL) {
        KILN_FAIL_IF(nseg == 16, KILN_EBADARG, "key '%s': too many fields", text);
        seg[nseg++] = t;
    }
    kiln_key k;
    memset(&k, 0, sizeof k);
    int i = 0;
    if (nseg >= 1 && strcmp(seg[0], "hstu_fwd") == 0) k.family = KILN_FAM_HSTU_FWD;
    else if (nseg >= 1 && strcmp(seg[0], "hstu_bwd") == 0) k.family = KILN_FAM_HSTU_BWD;
    else
        return kiln__fail(KILN_EBADARG,
                          "key '%s': family '%s' is not one of hstu_fwd, hstu_bwd",
                          text, nseg ? seg[0] : "");
    i = 1;
    int have_arch = i < nseg && strncmp(seg[i], "sm_", 3) == 0;
    if (have_arch) {
        KILN_FAIL_IF(kiln__arch_parse(seg[i], &k.arch, &k.arch_a), KILN_EBADARG,
                     "key '%s': arch '%s' is not of the form sm_80, sm_90a", text,
                     seg[i]);
        i++;
    }
    if (arch_override && *arch_override) {
        KILN_FAIL_IF(kiln__arch_parse(arch_override, &k.arch, &k.arch_a),
                     KILN_EBADARG, "arch '%s' is not of the form sm_80, sm_90a",
                     arch_override);
    } else {
        KILN_FAIL_IF(!have_arch, KILN_EBADARG,
                     "key '%s': arch missing (add e.g. sm_90a, or pass --arch)", text);
    }
    KILN_FAIL_IF(i >= nseg, KILN_EBADARG, "key '%s': dtype missing", text);
    if (strcmp(seg[i], "fp16") == 0) k.dtype = KILN_DTYPE_FP16;
    else if (strcmp(seg[i], "bf16") == 0) k.dtype = KILN_DTYPE_BF16;
    else if (strncmp(seg[i], "e4m3", 4) == 0 || strncmp(seg[i], "fp8", 3) == 0) {
        /* e4m3[-bf16|-fp16]: the out dtype, bf16 unless named */
        const char *o = seg[i] + (seg[i][1] == '4' ? 4 : 3);
        k.dtype = KILN_DTYPE_E4M3;
        if (*o == '\0' || strcmp(o, "-bf16") == 0) k.out_dtype = KILN_DTYPE_BF16;
        else if (strcmp(o, "-fp16") == 0) k.out_dtype = KILN_DTYPE_FP16;
        else
            return kiln__fail(KILN_EBADARG,
                              "key '%s': dtype '%s' is not one of e4m3, e4m3-bf16, "
                              "e4m3-fp16 (out dtype after the dash)",
                              text, seg[i]);
    } else
        return kiln__fail(KILN_EBADARG,
                          "key '%s': dtype '%s' is not one of fp16, bf16, e4m3",
                          text, seg[i]);
    i++;
    KILN_FAIL_IF(i >= nseg, KILN_EBADARG, "key '%s': head_dim missing (e.g. d128)",
                 text);
    KILN_FAIL_IF(parse_num(seg[i], "d", &k.head_dim), KILN_EBADARG,
                 "key '%s': head_dim '%s' is not of the form d128", text, seg[i]);
    i++;
    KILN_FAIL_IF(i >= nseg, KILN_EBADARG,
                 "key '%s': mask missing (none, or causal+target etc.)", text);
    KILN_TRY(parse_mask(text, seg[i], &k.mask));
    i++;
    int bm = -1, bn = -1, w = -1, impl = -1;
    for (; i < nseg; i++) {
        int v;
        if (strcmp(seg[i], "rab") == 0) k.rab = 1;
        else if (strcmp(seg[i], "norab") == 0) k.rab = 0;
        else if (strcmp(seg[i], "drab") == 0) k.drab = 1;
        else if (strcmp(seg[i], "det") == 0) k.det = 1;
        else if (strcmp(seg[i], "mma") == 0) impl = 0;
        else if (strcmp(seg[i], "wgmma") == 0) impl = 1;
        else if (strcmp(seg[i], "persist") == 0) k.persist = 1;
        else if (parse_num(seg[i], "bm", &v) == 0) bm = v;
        else if (parse_num(seg[i], "bn", &v) == 0) bn = v;
        else if (parse_num(seg[i], "w", &v) == 0) w = v;
        else
            return kiln__fail(KILN_EBADARG,
                              "key '%s': option '%s' is not one of rab, drab, det, "
                              "mma, wgmma, persist, bm<N>, bn<N>, w<N>",
                              text, seg[i]);
    }
    k.impl = impl >= 0 ? impl : kiln__key_default_impl(&k);
    kiln__key_default_tiles(&k);
    if (bm >= 0) k.block_m = bm;
    if (bn >= 0) k.block_n = bn;
    if (w >= 0) k.warps = w;
    kiln_status s = kiln__key_validate(&k);
    if (s != KILN_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", kiln_last_error());
        return kiln__fail(s, "key '%s': %s", text, msg);
    }
    *out = k;
    return KILN_OK;
}

/* ------------------------------------------------------- specialization */

int kiln__key_prelude(const kiln_key *k, char *buf, size_t n)
{
    char text[160];
    kiln__key_format(k, text, sizeof text);
    int len = snprintf(
        buf, n,
        "/* kiln specialization of %s */\n"
        "#define KILN_ARCH %d\n#define KILN_DTYPE %d\n#define KILN_HEAD_DIM %d\n"
        "#define KILN_BLOCK_M %d\n#define KILN_BLOCK_N %d\n#define KILN_WARPS %d\n"
        "#define KILN_CAUSAL %d\n#define KILN_LOCAL %d\n#define KILN_CONTEXT %d\n"
        "#define KILN_TARGET %d\n#define KILN_DELTA_Q %d\n#define KILN_RAB %d\n"
        "%s%s%s%s"
        "#include \"%s\"\n",
        text, k->arch * 10, k->dtype, k->head_dim, k->block_m, k->block_n, k->warps,
        !!(k->mask & KILN_MASK_CAUSAL), !!(k->mask & KILN_MASK_LOCAL),
        !!(k->mask & KILN_MASK_CONTEXT), !!(k->mask & KILN_MASK_TARGET),
        !!(k->mask & KILN_MASK_DELTA_Q), k->rab ? 1 : 0,
        k->family != KILN_FAM_HSTU_BWD ? ""
        : k->drab ? (k->det ? "#define KILN_DRAB 1\n#define KILN_DETERMINISTIC 1\n"
                            : "#define KILN_DRAB 1\n#define KILN_DETERMINISTIC 0\n")
                  : (k->det ? "#define KILN_DRAB 0\n#define KILN_DETERMINISTIC 1\n"
                            : "#define KILN_DRAB 0\n#define KILN_DETERMINISTIC 0\n"),
        k->out_dtype == KILN_DTYPE_FP16   ? "#define KILN_OUT_DTYPE 1\n"
        : k->out_dtype == KILN_DTYPE_BF16 ? "#define KILN_OUT_DTYPE 2\n"
                                          : "",
        /* only func keys name it: the other preludes stay as they were */
        (k->mask & KILN_MASK_FUNC) ? "#define KILN_FUNC 1\n" : "",
        /* hstu_fwd_sm90.cu's grid; the other templates have one */
        k->family != KILN_FAM_HSTU_FWD || k->impl != 1 || k->dtype == KILN_DTYPE_E4M3 ? ""
        : k->persist ? "#define KILN_PERSIST 1\n"
                     : "#define KILN_PERSIST 0\n",
        k->family == KILN_FAM_HSTU_BWD ? (k->impl == 1 ? "hstu_bwd_sm90.cu" : "hstu_bwd.cu")
        : k->impl != 1                 ? "hstu_fwd.cu" /* e4m3 too: widened as loaded */
        : k->dtype == KILN_DTYPE_E4M3  ? "hstu_fwd_sm90_fp8.cu"
                                       : "hstu_fwd_sm90.cu");
    return len < 0 || (size_t)len >= n ? -1 : len;
}

int kiln__key_options(const kiln_key *k, char *buf, size_t n)
{
    char a[16];
    kiln__arch_format(k->arch, k->arch_a, a, sizeof a);
    /* Sorted, space-separated; part of every cache identity.  --no-cache:
     * kiln is the cache; NVRTC's own would also drop the ptxas report. */
    int len = snprintf(buf, n, "--gpu-architecture=%s --no-cache -DKILN_NVRTC=1 "
                               "-Xptxas=-v -std=c++17", a);
    return len < 0 || (size_t)len >= n ? -1 : len;
}

int kiln__key_entries(const kiln_key *k, const char *names[KILN_MAX_ENTRIES])
{
    if (k->family == KILN_FAM_HSTU_BWD) {
        names[0] = "kiln_hstu_bwd_main";
        names[1] = "kiln_hstu_bwd_dq";
        names[2] = "kiln_hstu_bwd_convert";
        return 3;
    }
    names[0] = "kiln_hstu_fwd";
    return 1;
}

size_t kiln__key_smem(const kiln_key *k, int which)
{
    if (k->family == KILN_FAM_HSTU_BWD && k->impl == 1)
        return kiln__hstu_bwd_sm90_smem(which, k->dtype, k->head_dim, k->block_m,
                                        k->block_n, k->warps);
    if (k->family == KILN_FAM_HSTU_BWD)
        return kiln__hstu_bwd_smem(which, k->dtype, k->head_dim, k->block_m, k->block_n,
                                   k->warps);
    if (k->impl == 1)
        return kiln__hstu_fwd_sm90_smem(k->dtype, k->head_dim, k->block_m, k->block_n,
                                        k->warps, k->rab);
    return kiln__hstu_fwd_smem(k->dtype, k->head_dim, k->block_m, k->block_n, k->warps);
}
