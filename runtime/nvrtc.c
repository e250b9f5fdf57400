/* nvrtc.c -- lazy NVRTC: find, load, compile. */
#include "runtime/nvrtc.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runtime/error.h"
#include "runtime/templates.h"

typedef int nvrtcResult;
typedef struct nvrtc_prog *nvrtcProgram;

static struct {
    nvrtcResult (*Version)(int *, int *);
    nvrtcResult (*Create)(nvrtcProgram *, const char *, const char *, int,
                          const char *const *, const char *const *);
    nvrtcResult (*Compile)(nvrtcProgram, int, const char *const *);
    nvrtcResult (*LogSize)(nvrtcProgram, size_t *);
    nvrtcResult (*Log)(nvrtcProgram, char *);
    nvrtcResult (*CubinSize)(nvrtcProgram, size_t *);
    nvrtcResult (*Cubin)(nvrtcProgram, char *);
    nvrtcResult (*Destroy)(nvrtcProgram *);
    const char *(*ErrorString)(nvrtcResult);
} api;
static int major_, minor_;
/* Loading: a success is final (NVRTC is never unloaded); a failure is
 * remembered and retried at most once per retry_s, so a process whose NVRTC
 * appears later (installed, mounted, KILN_NVRTC_PATH fixed) recovers without a
 * restart, and one without NVRTC pays the probe rarely.  `loaded` is the only
 * thing a caller reads without the lock. */
static pthread_mutex_t load_mu = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int loaded;
static char load_error[1024];
static double last_try = -1; /* monotonic seconds of the last failed load */
static double retry_s = 10;
static void *handle;
static char found_path[640];
static int path_known;

static const char *const sonames[] = {"libnvrtc.so.13", "libnvrtc.so.12"};

static double mono_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Under load_mu. */
static void find_path(void)
{
    path_known = 1;
    found_path[0] = '\0';
    const char *explicit = getenv("KILN_NVRTC_PATH");
    if (explicit && *explicit) {
        snprintf(found_path, sizeof found_path, "%s", explicit);
        return;
    }
    const char *dirs[4] = {NULL, NULL, "/usr/local/cuda/lib64", NULL};
    char home[512] = "", path[512] = "";
    const char *ch = getenv("CUDA_HOME");
    if (ch && *ch) {
        snprintf(home, sizeof home, "%s/lib64", ch);
        dirs[0] = home;
    }
    const char *cp = getenv("CUDA_PATH");
    if (cp && *cp) {
        snprintf(path, sizeof path, "%s/lib64", cp);
        dirs[1] = path;
    }
    for (int d = 0; d < 3; d++) {
        if (!dirs[d]) continue;
        for (size_t s = 0; s < sizeof sonames / sizeof *sonames; s++) {
            char full[600];
            snprintf(full, sizeof full, "%s/%s", dirs[d], sonames[s]);
            if (access(full, R_OK) == 0) {
                snprintf(found_path, sizeof found_path, "%s", full);
                return;
            }
        }
    }
}

void kiln__nvrtc_path(char *buf, size_t n)
{
    pthread_mutex_lock(&load_mu);
    if (!path_known) find_path();
    snprintf(buf, n, "%s", found_path);
    pthread_mutex_unlock(&load_mu);
}

/* Under load_mu: one attempt.  On failure nothing stays open. */
static void load(void)
{
    find_path(); /* the environment may have changed since the last attempt */
    const char *path = found_path;
    void *h = NULL;
    if (*path) h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    /* KILN_NVRTC_PATH is a promise: never fall back to another NVRTC. */
    const char *explicit = getenv("KILN_NVRTC_PATH");
    int pinned = explicit && *explicit;
    for (size_t s = 0; !h && !pinned && s < sizeof sonames / sizeof *sonames; s++)
        h = dlopen(sonames[s], RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *why = dlerror();
        if (pinned)
            snprintf(load_error, sizeof load_error,
                     "NVRTC not found: cannot load $KILN_NVRTC_PATH=%s (%s)", path,
                     why ? why : "?");
        else
            snprintf(load_error, sizeof load_error,
                     "NVRTC not found: tried $KILN_NVRTC_PATH, $CUDA_HOME/lib64, "
                     "$CUDA_PATH/lib64, /usr/local/cuda/lib64 and the loader's search "
                     "for libnvrtc.so.13/.12 (%s)",
                     why ? why : "?");
        return;
    }
#define S(field, name)                                                         \
    if (!(*(void **)&api.field = dlsym(h, name))) {                            \
        snprintf(load_error, sizeof load_error, "NVRTC at %s lacks %s",        \
                 *path ? path : "(loader search)", name);                      \
        goto fail;                                                             \
    }
    S(Version, "nvrtcVersion");
    S(Create, "nvrtcCreateProgram");
    S(Compile, "nvrtcCompileProgram");
    S(LogSize, "nvrtcGetProgramLogSize");
    S(Log, "nvrtcGetProgramLog");
    S(CubinSize, "nvrtcGetCUBINSize");
    S(Cubin, "nvrtcGetCUBIN");
    S(Destroy, "nvrtcDestroyProgram");
    S(ErrorString, "nvrtcGetErrorString");
#undef S
    if (api.Version(&major_, &minor_) != 0) {
        snprintf(load_error, sizeof load_error, "nvrtcVersion failed");
        goto fail;
    }
    handle = h;
    atomic_store_explicit(&loaded, 1, memory_order_release);
    return;
fail:
    memset(&api, 0, sizeof api);
    dlclose(h);
}

static kiln_status ensure_loaded(void)
{
    if (atomic_load_explicit(&loaded, memory_order_acquire)) return KILN_OK;
    char why[sizeof load_error];
    double wait;
    pthread_mutex_lock(&load_mu);
    double now = mono_s();
    if (!atomic_load_explicit(&loaded, memory_order_relaxed) &&
        (last_try < 0 || now - last_try >= retry_s)) {
        load();
        last_try = now;
    }
    int ok = atomic_load_explicit(&loaded, memory_order_relaxed);
    snprintf(why, sizeof why, "%s", load_error);
    wait = last_try + retry_s - now;
    pthread_mutex_unlock(&load_mu);
    if (ok) return KILN_OK;
    return kiln__fail(KILN_ENOTFOUND, "%s; next attempt in %.0f s", why,
                      wait > 0 ? wait : 0);
}

void kiln__nvrtc_retry_after(double seconds)
{
    pthread_mutex_lock(&load_mu);
    retry_s = seconds >= 0 ? seconds : 10;
    last_try = -1;
    pthread_mutex_unlock(&load_mu);
}

kiln_status kiln__nvrtc_version(char *buf, size_t n)
{
    KILN_TRY(ensure_loaded());
    snprintf(buf, n, "%d.%d", major_, minor_);
    return KILN_OK;
}

static int find_int_before(const char *line, const char *end, const char *word)
{
    /* "... 123 word" on one line */
    const char *w = strstr(line, word);
    if (!w || w > end) return -1;
    const char *p = w;
    while (p > line && p[-1] == ' ') p--;
    while (p > line && p[-1] >= '0' && p[-1] <= '9') p--;
    return atoi(p);
}

void kiln__ptxas_report(const char *log, int *regs, int *smem, int *spills)
{
    *regs = *smem = *spills = -1;
    for (const char *line = log; line && *line;) {
        const char *end = strchr(line, '\n');
        if (!end) end = line + strlen(line);
        int v;
        if ((v = find_int_before(line, end, "registers")) >= 0) *regs = v;
        if ((v = find_int_before(line, end, "bytes smem")) >= 0) *smem = v;
        if ((v = find_int_before(line, end, "bytes spill stores")) >= 0) {
            int l = find_int_before(line, end, "bytes spill loads");
            *spills = v + (l > 0 ? l : 0);
        }
        line = *end ? end + 1 : end;
    }
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

kiln_status kiln__nvrtc_compile(const char *source, const char *options,
                                kiln_compiled *out)
{
    char ver[16];
    KILN_TRY(kiln__nvrtc_version(ver, sizeof ver));
    memset(out, 0, sizeof *out);
    /* Split options on spaces into at most 16 arguments. */
    char opts[512];
    const char *argv[16];
    int argc = 0;
    KILN_FAIL_IF(strlen(options) >= sizeof opts, KILN_EINTERNAL, "options too long");
    strcpy(opts, options);
    for (char *s = opts, *save = NULL, *t; argc < 16 && (t = strtok_r(s, " ", &save));
         s = NULL)
        argv[argc++] = t;

    const char *names[64], *texts[64];
    int nh = 0;
    for (const kiln_template *t = kiln__templates; t->name && nh < 64; t++, nh++) {
        names[nh] = t->name;
        texts[nh] = t->text;
    }
    nvrtcProgram prog = NULL;
    nvrtcResult r = api.Create(&prog, source, "kiln_kernel.cu", nh, texts, names);
    KILN_FAIL_IF(r != 0, KILN_ECOMPILE, "nvrtcCreateProgram: %s", api.ErrorString(r));
    double t0 = now_ms();
    nvrtcResult cr = api.Compile(prog, argc, argv);
    out->ms = now_ms() - t0;
    size_t log_len = 0;
    api.LogSize(prog, &log_len);
    out->log = kiln__malloc(log_len + 1);
    if (!out->log) {
        api.Destroy(&prog);
        return kiln__fail(KILN_ENOMEM, "NVRTC log of %zu bytes", log_len);
    }
    out->log[0] = '\0';
    if (log_len) api.Log(prog, out->log);
    out->log[log_len] = '\0';
    if (cr != 0) {
        kiln__fail(KILN_ECOMPILE, "NVRTC %s failed (%s):\n", ver, api.ErrorString(cr));
        kiln__fail_append(out->log);
        api.Destroy(&prog);
        kiln__free(out->log);
        out->log = NULL;
        return KILN_ECOMPILE;
    }
    r = api.CubinSize(prog, &out->len);
    if (r == 0 && out->len) {
        out->cubin = kiln__malloc(out->len);
        if (!out->cubin) r = -1;
        else r = api.Cubin(prog, out->cubin);
    }
    api.Destroy(&prog);
    if (r != 0 || !out->cubin) {
        kiln__compiled_free(out);
        return kiln__fail(KILN_ECOMPILE, "NVRTC produced no cubin");
    }
    kiln__ptxas_report(out->log, &out->regs, &out->smem, &out->spills);
    return KILN_OK;
}

void kiln__compiled_free(kiln_compiled *c)
{
    if (!c) return;
    kiln__free(c->cubin);
    kiln__free(c->log);
    c->cubin = NULL;
    c->log = NULL;
}
