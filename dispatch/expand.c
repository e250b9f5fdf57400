/* expand.c -- wildcard patterns over the key space, for prewarming. */
#include <fnmatch.h>
#include <stdio.h>
#include <string.h>

#include "dispatch/key.h"
#include "runtime/error.h"

static const char *const default_archs[] = {"sm_80", "sm_86", "sm_89", "sm_90a"};

static int has_wildcard(const char *s)
{
    return strpbrk(s, "*?[") != NULL;
}

kiln_status kiln__key_expand(const char *pattern, const char *arch_override,
                             int (*fn)(const char *key, void *user), void *user)
{
    KILN_FAIL_IF(!pattern || !fn, KILN_EBADARG, "pattern or callback is NULL");
    char text[256];
    if (!has_wildcard(pattern)) {
        kiln_key k;
        KILN_TRY(kiln__key_parse(pattern, arch_override, &k));
        kiln__key_format(&k, text, sizeof text);
        fn(text, user);
        return KILN_OK;
    }
    /* Put the arch into a pattern that leaves it out ("hstu_fwd/bf16/..."),
     * and replace the pattern's arch by an override. */
    char pat[256];
    KILN_FAIL_IF(strlen(pattern) >= sizeof pat - 16, KILN_EBADARG,
                 "pattern '%.40s...' is too long", pattern);
    const char *slash = strchr(pattern, '/');
    if (arch_override && *arch_override) {
        int a, aa;
        KILN_FAIL_IF(kiln__arch_parse(arch_override, &a, &aa), KILN_EBADARG,
                     "arch '%s' is not of the form sm_80, sm_90a", arch_override);
        if (slash) {
            const char *rest = slash + 1;
            const char *next = strchr(rest, '/');
            int rest_is_arch = strncmp(rest, "sm_", 3) == 0 || (rest[0] == '*' && (
                                   rest[1] == '/' || rest[1] == '\0'));
            if (rest_is_arch) rest = next ? next + 1 : "";
            snprintf(pat, sizeof pat, "%.*s/%s/%s", (int)(slash - pattern), pattern,
                     arch_override, rest);
            if (!*rest) strcat(pat, "*");
        } else {
            snprintf(pat, sizeof pat, "%s/%s/*", pattern, arch_override);
        }
    } else {
        snprintf(pat, sizeof pat, "%s", pattern);
    }
    int matched = 0;
    /* {dtype, out dtype}: e4m3 once per out type */
    static const int dtypes[][2] = {{KILN_DTYPE_FP16, 0},
                                    {KILN_DTYPE_BF16, 0},
                                    {KILN_DTYPE_E4M3, KILN_DTYPE_BF16},
                                    {KILN_DTYPE_E4M3, KILN_DTYPE_FP16}};
    const int ndt = (int)(sizeof dtypes / sizeof dtypes[0]);
    static const int dims[] = {32, 64, 128, 256};
    static const int families[] = {KILN_FAM_HSTU_FWD, KILN_FAM_HSTU_BWD};
    int narch = arch_override && *arch_override ? 1 : 4;
    for (int fi = 0; fi < 2; fi++)
        for (int ai = 0; ai < narch; ai++)
            for (int ti = 0; ti < ndt; ti++)
                for (int di = 0; di < 4; di++)
                    for (unsigned m = 0; m <= KILN_MASK_ALL; m++)
                        /* o: rab, drab, det, persist (validation keeps
                         * persist to the Hopper forward's keys, which so
                         * come in both grids) */
                        for (int o = 0; o < 16; o++) {
                            kiln_key k;
                            memset(&k, 0, sizeof k);
                            k.family = families[fi];
                            kiln__arch_parse(narch == 1 ? arch_override
                                                        : default_archs[ai],
                                             &k.arch, &k.arch_a);
                            k.dtype = dtypes[ti][0];
                            k.out_dtype = dtypes[ti][1];
                            k.head_dim = dims[di];
                            k.mask = m;
                            k.rab = o & 1;
                            k.drab = (o >> 1) & 1;
                            k.det = (o >> 2) & 1;
                            k.persist = (o >> 3) & 1;
                            k.impl = kiln__key_default_impl(&k);
                            kiln__key_default_tiles(&k);
                            if (kiln__key_validate(&k) != KILN_OK) continue;
                            kiln__key_format(&k, text, sizeof text);
                            if (fnmatch(pat, text, 0) != 0) continue;
                            matched++;
                            if (fn(text, user)) goto done;
                        }
done:
    kiln__clear_error();
    KILN_FAIL_IF(matched == 0, KILN_EBADARG, "pattern '%s' matches no valid key",
                 pattern);
    return KILN_OK;
}
