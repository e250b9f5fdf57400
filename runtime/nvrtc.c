/* nvrtc.c -- lazy NVRTC: find, load, compile. */
#include "runtime/nvrtc.h"

#include <dlfcn.h>
#include <pthread.h>
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
static kiln_status load_status = KILN_ENOTFOUND;
static char load_error[1024];
static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static char found_path[640];
static pthread_once_t path_once = PTHREAD_ONCE_INIT;

static const char *const sonames[] = {"libnvrtc.so.13", "libnvrtc.so.12"};

static void find_path(void)
{
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

const char *kiln__nvrtc_path(void)
{
    pthread_once(&path_once, find_path);
    return found_path;
}

static void load(void)
{
    const char *path = kiln__nvrtc_path();
    void *h = NULL;
    if (*path) h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    for (size_t s = 0; !h && s < sizeof sonames / sizeof *sonames; s++)
        h = dlopen(sonames[s], RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(load_error, sizeof load_error,
                 "NVRTC not found: tried $KILN_NVRTC_PATH, $CUDA_HOME/lib64, "
                 "$CUDA_PATH/lib64, /usr/local/cuda/lib64 and the loader's search "
                 "for libnvrtc.so.13/.12 (%s)",
                 dlerror());
        return;
    }
#define S(field, name)                                                         \
    if (!(*(void **)&api.field = dlsym(h, name))) {                            \
        snprintf(load_error, sizeof load_error, "NVRTC lacks %s", name);       \
        return;                                                                \
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
        return;
    }
    load_status = KILN_OK;
}

kiln_status kiln__nvrtc_version(char *buf, size_t n)
{
    pthread_once(&load_once, load);
    if (load_status != KILN_OK) return kiln__fail(load_status, "%s", load_error);
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
