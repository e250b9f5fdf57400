/* api.c -- the public calls that are not launches: prewarm, keys, cache
 * inspection, environment information. */
#include <stdio.h>
#include <string.h>

#include "runtime/engine.h"
#include "runtime/nvrtc.h"
#include "runtime/templates.h"

kiln_status kiln_prewarm(kiln_engine *e, const char *key_text, const char *arch)
{
    KILN_FAIL_IF(!e, KILN_EBADARG, "engine is NULL");
    kiln_key k;
    KILN_TRY(kiln__key_parse(key_text, arch, &k));
    kiln_slot *s;
    return kiln__kernel_get(e, &k, 0, &s);
}

kiln_status kiln_key_canonical(const char *key_text, const char *arch, char *buf,
                               size_t n)
{
    KILN_FAIL_IF(!buf || n == 0, KILN_EBADARG, "buf is NULL or empty");
    kiln_key k;
    KILN_TRY(kiln__key_parse(key_text, arch, &k));
    KILN_FAIL_IF(kiln__key_format(&k, buf, n) < 0, KILN_EBADARG,
                 "buf of %zu bytes is too small for the key", n);
    return KILN_OK;
}

kiln_status kiln_key_expand(const char *pattern, const char *arch,
                            int (*fn)(const char *key, void *user), void *user)
{
    return kiln__key_expand(pattern, arch, fn, user);
}

kiln_status kiln_key_explain(kiln_engine *e, const char *key_text, const char *arch,
                             char *buf, size_t n)
{
    KILN_FAIL_IF(!e || !buf || n == 0, KILN_EBADARG, "engine or buf is NULL");
    kiln_key k;
    KILN_TRY(kiln__key_parse(key_text, arch, &k));
    char text[160], a[16], mask[64], opts[256], hex[2 * KILN_IDENT_BYTES + 1];
    char hash[33], digest[33];
    uint8_t enc[KILN_KEY_BYTES];
    kiln__key_format(&k, text, sizeof text);
    kiln__arch_format(k.arch, k.arch_a, a, sizeof a);
    kiln__mask_format(k.mask, mask, sizeof mask);
    kiln__key_options(&k, opts, sizeof opts);
    kiln__key_encode(&k, enc);
    kiln_ident id;
    kiln__ident_build(&k, kiln__engine_nvrtc(e), &id);
    kiln__hex(enc, KILN_KEY_BYTES, hex);
    kiln__hex(id.hash, 16, hash);
    kiln__hex(kiln__template_digest, 16, digest);
    int w = snprintf(buf, n,
                     "key         %s\n"
                     "encoding    v%d %s\n"
                     "  F family  %s\n"
                     "  A arch    %s\n"
                     "  T dtype   %s\n"
                     "  D dim     %d\n"
                     "  M mask    %s (0x%02x)\n"
                     "  R rab     %d\n"
                     "  r drab    %d\n"
                     "  x det     %d\n"
                     "  i impl    %d (%s)\n"
                     "  m block_m %d\n"
                     "  n block_n %d\n"
                     "  w warps   %d\n"
                     "  p persist %d\n"
                     "templates   %s\n"
                     "nvrtc       %s\n"
                     "options     %s\n"
                     "hash        %s\n",
                     text, KILN_KEY_VERSION, hex, kiln__family_name(k.family), a,
                     kiln__dtype_name(k.dtype), k.head_dim, mask, k.mask, k.rab, k.drab,
                     k.det, k.impl, k.impl ? "wgmma" : "mma", k.block_m, k.block_n, k.warps,
                     k.persist, digest, kiln__engine_nvrtc(e), opts,
                     hash);
    KILN_FAIL_IF(w < 0 || (size_t)w >= n, KILN_EBADARG,
                 "buf of %zu bytes is too small", n);
    return KILN_OK;
}

/* ------------------------------------------------------------ the cache */

#define NEED_CACHE(e)                                                          \
    do {                                                                       \
        KILN_FAIL_IF(!(e), KILN_EBADARG, "engine is NULL");                    \
    } while (0)

kiln_status kiln_cache_list(kiln_engine *e, const char *pattern,
                            int (*fn)(const kiln_cache_entry *, void *), void *user)
{
    NEED_CACHE(e);
    KILN_FAIL_IF(!fn, KILN_EBADARG, "callback is NULL");
    if (!e->cache) return KILN_OK;
    return kiln__cache_list(e->cache, pattern, fn, user);
}

kiln_status kiln_cache_stats_get(kiln_engine *e, kiln_cache_stats *out)
{
    NEED_CACHE(e);
    KILN_FAIL_IF(!out, KILN_EBADARG, "out is NULL");
    kiln_cache_stats s;
    memset(&s, 0, sizeof s);
    s.path = "";
    if (e->cache) KILN_TRY(kiln__cache_stats(e->cache, &s));
    s.mem_hits = atomic_load(&e->mem_hits);
    s.disk_hits = atomic_load(&e->disk_hits);
    s.compiles = atomic_load(&e->compiles);
    *out = s;
    return KILN_OK;
}

kiln_status kiln_cache_verify(kiln_engine *e, int drop, kiln_cache_verify_report *out,
                              void (*fn)(const char *, const char *, void *), void *user)
{
    NEED_CACHE(e);
    KILN_FAIL_IF(!out, KILN_EBADARG, "out is NULL");
    memset(out, 0, sizeof *out);
    out->integrity_ok = 1;
    if (!e->cache) return KILN_OK;
    return kiln__cache_verify(e->cache, drop, out, fn, user);
}

kiln_status kiln_cache_clear(kiln_engine *e, const char *pattern, int64_t *removed)
{
    NEED_CACHE(e);
    if (removed) *removed = 0;
    if (!e->cache) return KILN_OK;
    return kiln__cache_clear(e->cache, pattern, removed);
}

kiln_status kiln_cache_evict(kiln_engine *e, int64_t max_bytes, int64_t *removed)
{
    NEED_CACHE(e);
    KILN_FAIL_IF(max_bytes < 0, KILN_EBADARG, "max_bytes %lld is negative",
                 (long long)max_bytes);
    if (removed) *removed = 0;
    if (!e->cache) return KILN_OK;
    return kiln__cache_evict(e->cache, max_bytes, removed);
}

kiln_status kiln_cache_export(kiln_engine *e, const char *key_text, const char *path)
{
    NEED_CACHE(e);
    KILN_FAIL_IF(!path, KILN_EBADARG, "path is NULL");
    char text[160];
    KILN_TRY(kiln_key_canonical(key_text, NULL, text, sizeof text));
    KILN_FAIL_IF(!e->cache, KILN_ENOTFOUND, "%s: no cache (memory-only engine)", text);
    void *cubin;
    size_t len;
    KILN_TRY(kiln__cache_find_key(e->cache, text, &cubin, &len));
    FILE *f = fopen(path, "wb");
    if (!f) {
        kiln__free(cubin);
        return kiln__fail(KILN_EIO, "cannot write %s: %m", path);
    }
    size_t w = fwrite(cubin, 1, len, f);
    int bad = fclose(f) != 0 || w != len;
    kiln__free(cubin);
    KILN_FAIL_IF(bad, KILN_EIO, "writing %s failed: %m", path);
    return KILN_OK;
}

/* ------------------------------------------------------------ info */

kiln_status kiln_engine_info(kiln_engine *e, kiln_info *out)
{
    KILN_FAIL_IF(!e || !out, KILN_EBADARG, "engine or out is NULL");
    memset(out, 0, sizeof *out);
    kiln__nvrtc_path(out->nvrtc_path, sizeof out->nvrtc_path);
    if (kiln__nvrtc_version(out->nvrtc_version, sizeof out->nvrtc_version) != KILN_OK)
        out->nvrtc_version[0] = '\0';
    kiln__hex(kiln__template_digest, 16, out->template_digest);
    if (e->cache)
        snprintf(out->cache_path, sizeof out->cache_path, "%s",
                 kiln__cache_path(e->cache));
    const kiln_cu_api *cu;
    if (kiln__cu(&cu) != KILN_OK) {
        snprintf(out->driver_error, sizeof out->driver_error, "%s", kiln_last_error());
        kiln__clear_error();
        return KILN_OK;
    }
    cu->DriverGetVersion(&out->driver_version);
    int n = 0;
    if (cu->DeviceGetCount(&n) != 0 || n == 0) {
        snprintf(out->driver_error, sizeof out->driver_error, "no CUDA device visible");
        return KILN_OK;
    }
    int max = (int)(sizeof out->devices / sizeof out->devices[0]);
    out->device_count = n;
    for (int i = 0; i < n && i < max; i++) {
        CUdevice d;
        if (cu->DeviceGet(&d, i) != 0) continue;
        int major = 0, minor = 0, arch, arch_a;
        size_t mem = 0;
        cu->DeviceGetName(out->devices[i].name, sizeof out->devices[i].name, d);
        cu->DeviceGetAttribute(&major, KILN_CU_ATTR_CC_MAJOR, d);
        cu->DeviceGetAttribute(&minor, KILN_CU_ATTR_CC_MINOR, d);
        cu->DeviceGetAttribute(&out->devices[i].sm_count, KILN_CU_ATTR_SM_COUNT, d);
        cu->DeviceTotalMem(&mem, d);
        out->devices[i].memory_bytes = (int64_t)mem;
        kiln__arch_for_device(major, minor, &arch, &arch_a);
        kiln__arch_format(arch, arch_a, out->devices[i].arch,
                          sizeof out->devices[i].arch);
    }
    return KILN_OK;
}
