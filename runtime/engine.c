/* engine.c -- engine life cycle, the NVRTC identity, devices. */
#include "runtime/engine.h"

#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/nvrtc.h"

unsigned kiln_version_number(void)
{
    return KILN_VERSION_NUMBER;
}

const char *kiln_version_string(void)
{
#define KILN_STR2(x) #x
#define KILN_STR(x) KILN_STR2(x)
    return KILN_STR(KILN_VERSION_MAJOR) "." KILN_STR(KILN_VERSION_MINOR) "." KILN_STR(
        KILN_VERSION_PATCH);
}

kiln_status kiln_engine_options_init(kiln_engine_options *o)
{
    KILN_FAIL_IF(!o, KILN_EBADARG, "options is NULL");
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
    o->log_level = -1;
    return KILN_OK;
}

static int env_log_level(void)
{
    const char *v = getenv("KILN_LOG");
    if (!v || !*v) return KILN_LOG_WARN;
    if (!strcasecmp(v, "error")) return KILN_LOG_ERROR;
    if (!strcasecmp(v, "info")) return KILN_LOG_INFO;
    if (!strcasecmp(v, "debug")) return KILN_LOG_DEBUG;
    if (v[0] >= '0' && v[0] <= '3' && !v[1]) return v[0] - '0';
    return KILN_LOG_WARN;
}

/* $KILN_CACHE_DIR, else $XDG_CACHE_HOME/kiln, else ~/.cache/kiln. */
static int default_cache_dir(char *buf, size_t n)
{
    const char *d = getenv("KILN_CACHE_DIR");
    if (d && *d) return snprintf(buf, n, "%s", d) < (int)n ? 0 : -1;
    d = getenv("XDG_CACHE_HOME");
    if (d && *d == '/') return snprintf(buf, n, "%s/kiln", d) < (int)n ? 0 : -1;
    d = getenv("HOME");
    if (!d || !*d) {
        struct passwd *pw = getpwuid(geteuid());
        d = pw ? pw->pw_dir : NULL;
    }
    if (!d || !*d) return -1;
    return snprintf(buf, n, "%s/.cache/kiln", d) < (int)n ? 0 : -1;
}

kiln_status kiln_engine_create(const kiln_engine_options *opts, kiln_engine **out)
{
    kiln_engine_options def;
    kiln_engine_options_init(&def);
    KILN_FAIL_IF(!out, KILN_EBADARG, "out is NULL");
    if (!opts) opts = &def;
    KILN_FAIL_IF(opts->struct_size != sizeof *opts, KILN_EBADARG,
                 "options.struct_size %u is not sizeof(kiln_engine_options) %zu "
                 "(call kiln_engine_options_init)",
                 opts->struct_size, sizeof *opts);
    KILN_FAIL_IF(opts->log_level < -1 || opts->log_level > KILN_LOG_DEBUG, KILN_EBADARG,
                 "log_level %d is not -1 or a kiln_log_level", opts->log_level);
    kiln_engine *e = kiln__calloc(1, sizeof *e);
    KILN_FAIL_IF(!e, KILN_ENOMEM, "engine of %zu bytes", sizeof *e);
    e->slots = kiln__calloc(KILN_SLOTS, sizeof *e->slots);
    if (!e->slots) {
        kiln__free(e);
        return kiln__fail(KILN_ENOMEM, "kernel table of %d slots", KILN_SLOTS);
    }
    e->log.level = opts->log_level >= 0 ? opts->log_level : env_log_level();
    e->log.fn = opts->log_fn;
    e->log.user = opts->log_user;
    e->flags = opts->flags;
    /* For comparing kernels on one machine: KILN_FWD_IMPL, KILN_BWD_IMPL=mma|wgmma. */
    const char *impl = getenv("KILN_FWD_IMPL");
    e->fwd_impl = impl && !strcmp(impl, "mma") ? 0 : impl && !strcmp(impl, "wgmma") ? 1 : -1;
    impl = getenv("KILN_BWD_IMPL");
    e->bwd_impl = impl && !strcmp(impl, "mma") ? 0 : impl && !strcmp(impl, "wgmma") ? 1 : -1;
    /* and KILN_BWD_GRID=blocks for the Hopper backward's grid before its
     * persistent one */
    impl = getenv("KILN_BWD_GRID");
    e->bwd_blocks = impl && !strcmp(impl, "blocks");
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    if (!(e->flags & KILN_ENGINE_NO_DISK_CACHE)) {
        char dir[1024];
        const char *d = opts->cache_dir;
        if (!d && default_cache_dir(dir, sizeof dir) == 0) d = dir;
        if (d && !*d) d = NULL; /* "" asks for no writable layer */
        if (!d) KILN_LOGW(&e->log, "no cache directory (HOME unset): kernels stay in memory");
        const char *ro = opts->ro_layers ? opts->ro_layers : getenv("KILN_CACHE_RO");
        kiln_status s = kiln__cache_open(d, ro, &e->log, &e->cache);
        if (s != KILN_OK) {
            char why[512];
            snprintf(why, sizeof why, "%s", kiln_last_error());
            kiln_engine_destroy(e); /* clears the last error */
            return kiln__fail(s, "%s", why);
        }
    }
    KILN_LOGD(&e->log, "engine created: cache %s",
              e->cache ? kiln__cache_path(e->cache) : "(none)");
    *out = e;
    return KILN_OK;
}

kiln_status kiln_engine_destroy(kiln_engine *e)
{
    if (!e) return KILN_OK;
    const kiln_cu_api *cu = NULL;
    for (int i = 0; i < KILN_SLOTS; i++) {
        kiln_slot *s = &e->slots[i];
        if (s->lib && (cu || kiln__cu(&cu) == KILN_OK)) cu->LibraryUnload(s->lib);
        kiln__free(s->cubin);
    }
    for (int d = 0; d < KILN_MAX_DEVICES; d++)
        if (e->dev[d].debug_counter && (cu || kiln__cu(&cu) == KILN_OK))
            cu->MemFree(e->dev[d].debug_counter);
    if (e->cache) kiln__cache_close(e->cache);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    kiln__free(e->slots);
    kiln__free(e);
    kiln__clear_error();
    return KILN_OK;
}

/* The "nvrtc:<path>:<size>:<mtime>" memo key of the NVRTC file, or "". */
static void nvrtc_memo(char *memo, size_t n)
{
    char path[640];
    struct stat st;
    kiln__nvrtc_path(path, sizeof path);
    memo[0] = '\0';
    if (*path && stat(path, &st) == 0)
        snprintf(memo, n, "nvrtc:%s:%lld:%lld.%09ld", path, (long long)st.st_size,
                 (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
}

/* Under e->mu, NVRTC loaded: publish its version and remember it. */
static void publish_loaded(kiln_engine *e, const char *version)
{
    char memo[700];
    nvrtc_memo(memo, sizeof memo);
    snprintf(e->nvrtc_real, sizeof e->nvrtc_real, "%s", version);
    if (*memo && e->cache) kiln__cache_meta_put(e->cache, memo, e->nvrtc_real);
    if (e->cache) kiln__cache_meta_put(e->cache, "nvrtc:last", e->nvrtc_real);
    atomic_store_explicit(&e->nvrtc_absent, 0, memory_order_relaxed);
    atomic_store_explicit(&e->nvrtc, e->nvrtc_real, memory_order_release);
}

/* Under e->mu.  The NVRTC version, learned without loading NVRTC when the
 * cache remembers this exact file (path, size, mtime); else load it once and
 * remember. */
static void resolve_nvrtc(kiln_engine *e)
{
    char memo[700], *v = NULL, ver[24];
    nvrtc_memo(memo, sizeof memo);
    if (*memo && e->cache && kiln__cache_meta_get(e->cache, memo, &v) == KILN_OK) {
        snprintf(e->nvrtc_real, sizeof e->nvrtc_real, "%s", v);
        kiln__free(v);
        atomic_store_explicit(&e->nvrtc, e->nvrtc_real, memory_order_release);
        return;
    }
    kiln__clear_error();
    if (kiln__nvrtc_version(ver, sizeof ver) == KILN_OK) {
        publish_loaded(e, ver);
        return;
    }
    char why[1024];
    snprintf(why, sizeof why, "%s", kiln_last_error());
    /* No NVRTC here: serve what a cache built elsewhere holds. */
    v = NULL;
    if (e->cache && kiln__cache_meta_get(e->cache, "nvrtc:last", &v) == KILN_OK) {
        snprintf(e->nvrtc_fallback, sizeof e->nvrtc_fallback, "%s", v);
        kiln__free(v);
    } else {
        snprintf(e->nvrtc_fallback, sizeof e->nvrtc_fallback, "none");
    }
    atomic_store_explicit(&e->nvrtc_absent, 1, memory_order_relaxed);
    atomic_store_explicit(&e->nvrtc, e->nvrtc_fallback, memory_order_release);
    if (!atomic_exchange(&e->warned_nvrtc, 1))
        KILN_LOGW(&e->log,
                  "%s; serving cached kernels built by NVRTC %s (misses fail until "
                  "NVRTC can be loaded)",
                  why, e->nvrtc_fallback);
    kiln__clear_error();
}

const char *kiln__engine_nvrtc(kiln_engine *e)
{
    const char *v = atomic_load_explicit(&e->nvrtc, memory_order_acquire);
    if (v) return v;
    pthread_mutex_lock(&e->mu);
    if (!atomic_load_explicit(&e->nvrtc, memory_order_relaxed)) resolve_nvrtc(e);
    v = atomic_load_explicit(&e->nvrtc, memory_order_relaxed);
    pthread_mutex_unlock(&e->mu);
    return v;
}

int kiln__engine_nvrtc_recheck(kiln_engine *e)
{
    if (!atomic_load_explicit(&e->nvrtc_absent, memory_order_acquire)) return 0;
    int changed = 0;
    char ver[24];
    pthread_mutex_lock(&e->mu);
    if (atomic_load_explicit(&e->nvrtc_absent, memory_order_relaxed)) {
        if (kiln__nvrtc_version(ver, sizeof ver) == KILN_OK) {
            changed = strcmp(ver, e->nvrtc_fallback) != 0;
            publish_loaded(e, ver);
            atomic_store(&e->warned_nvrtc, 0);
            KILN_LOGW(&e->log, "NVRTC %s is available again: compiling resumes", ver);
        }
        kiln__clear_error();
    }
    pthread_mutex_unlock(&e->mu);
    return changed;
}

kiln_status kiln__current_device(kiln_engine *e, const kiln_cu_api *cu,
                                 CUdevice *dev, kiln_devinfo **info)
{
    CUcontext ctx = NULL;
    KILN_CU_TRY(cu, cu->CtxGetCurrent(&ctx), "cuCtxGetCurrent");
    if (!ctx) {
        CUdevice d0;
        KILN_CU_TRY(cu, cu->DeviceGet(&d0, 0), "cuDeviceGet(0)");
        KILN_CU_TRY(cu, cu->DevicePrimaryCtxRetain(&ctx, d0),
                    "cuDevicePrimaryCtxRetain(device 0)");
        KILN_CU_TRY(cu, cu->CtxSetCurrent(ctx), "cuCtxSetCurrent");
    }
    CUdevice d;
    KILN_CU_TRY(cu, cu->CtxGetDevice(&d), "cuCtxGetDevice");
    KILN_FAIL_IF(d < 0 || d >= KILN_MAX_DEVICES, KILN_EUNSUPPORTED,
                 "device ordinal %d is beyond the %d kiln supports", d,
                 KILN_MAX_DEVICES);
    kiln_devinfo *di = &e->dev[d];
    if (!atomic_load_explicit(&di->known, memory_order_acquire)) {
        int major = 0, minor = 0;
        KILN_CU_TRY(cu, cu->DeviceGetAttribute(&major, KILN_CU_ATTR_CC_MAJOR, d),
                    "cuDeviceGetAttribute(major)");
        KILN_CU_TRY(cu, cu->DeviceGetAttribute(&minor, KILN_CU_ATTR_CC_MINOR, d),
                    "cuDeviceGetAttribute(minor)");
        int sms = 0;
        if (cu->DeviceGetAttribute(&sms, KILN_CU_ATTR_SM_COUNT, d) != 0) sms = 0;
        pthread_mutex_lock(&e->mu);
        kiln__arch_for_device(major, minor, &di->arch, &di->arch_a);
        di->sm_count = sms;
        atomic_store_explicit(&di->known, 1, memory_order_release);
        pthread_mutex_unlock(&e->mu);
    }
    *dev = d;
    *info = di;
    return KILN_OK;
}

kiln_status kiln__acquire(kiln_engine *e, kiln_status (*check)(const void *, int *),
                          const void *params, const kiln_cu_api **cu, CUdevice *dev,
                          kiln_devinfo **di, int *nothing)
{
    *nothing = 0;
    kiln_status ds = kiln__cu(cu);
    if (ds == KILN_OK) ds = kiln__current_device(e, *cu, dev, di);
    if (ds == KILN_OK) {
        if (atomic_load_explicit(&e->warned_cu, memory_order_relaxed))
            atomic_store_explicit(&e->warned_cu, 0, memory_order_relaxed);
        return KILN_OK;
    }
    char why[512];
    snprintf(why, sizeof why, "%s", kiln_last_error());
    if (!atomic_exchange(&e->warned_cu, 1))
        KILN_LOGW(&e->log, "no usable CUDA driver or device: %s (launches fail with %s "
                  "until it recovers)", why, kiln_status_name(ds));
    KILN_TRY(check(params, nothing));
    if (*nothing) return KILN_OK;
    return kiln__fail(ds, "%s", why);
}

kiln_status kiln_engine_debug_report(kiln_engine *e, int64_t *bad)
{
    KILN_FAIL_IF(!e || !bad, KILN_EBADARG, "engine or bad_sequences is NULL");
    *bad = 0;
    if (!(e->flags & KILN_ENGINE_DEBUG_CHECKS)) return KILN_OK;
    const kiln_cu_api *cu;
    KILN_TRY(kiln__cu(&cu));
    CUdevice d;
    kiln_devinfo *di;
    KILN_TRY(kiln__current_device(e, cu, &d, &di));
    if (!di->debug_counter) return KILN_OK;
    KILN_CU_TRY(cu, cu->CtxSynchronize(), "cuCtxSynchronize");
    unsigned long long n = 0;
    KILN_CU_TRY(cu, cu->MemcpyDtoH(&n, di->debug_counter, sizeof n), "cuMemcpyDtoH");
    KILN_CU_TRY(cu, cu->MemsetD8(di->debug_counter, 0, sizeof n), "cuMemsetD8");
    *bad = (int64_t)n;
    return KILN_OK;
}
