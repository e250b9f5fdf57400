/* bench_engine.c -- what the engine itself costs, beside the kernels.
 *
 *   1. cold compile: kiln_prewarm of a few HSTU keys for this device's arch
 *      into a fresh cache (NVRTC + store), with the cache's record of NVRTC
 *      time, registers, shared memory, spills and cubin size;
 *   2. warm process, first call: a NEW process (this program re-executed)
 *      whose cache holds the key; the time of its first kiln_hstu_fwd
 *      (SQLite lookup + module load + launch), with the engine opened with
 *      KILN_ENGINE_NO_COMPILE so that a miss fails instead of compiling;
 *   3. steady state: host time per kiln_hstu_fwd of a tiny problem over N
 *      back-to-back calls, beside a raw cuLaunchKernel of an empty kernel
 *      with a parameter block of the same size.
 *
 * usage: bench-engine [--json FILE] [--calls N] [--cache-dir DIR]
 *   --json FILE      append one JSON object per measurement (default:
 *                    bench-engine.jsonl in the current directory)
 *   --calls N        calls for (3) (default 10000)
 *   --cache-dir DIR  use DIR as the cache (cleared first, kept afterwards:
 *                    a later run can reuse the kernels); default: a fresh
 *                    temporary folder, removed at the end
 * Exit status: 0 when every measurement ran, 1 otherwise.
 *
 * Uses only kiln.h and its own dlopen'd driver calls (no CUDA headers).
 */
#include <dlfcn.h>
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kiln.h"

/* ===================================================================== */
/* Driver API, opened with dlopen                                         */
/* ===================================================================== */

typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;
typedef void *CUmodule;
typedef void *CUfunction;
typedef void *CUstream;
typedef unsigned long long CUdeviceptr;

static struct {
    void *h;
    CUresult (*Init)(unsigned);
    CUresult (*DeviceGet)(CUdevice *, int);
    CUresult (*DeviceGetCount)(int *);
    CUresult (*DevicePrimaryCtxRetain)(CUcontext *, CUdevice);
    CUresult (*CtxSetCurrent)(CUcontext);
    CUresult (*CtxSynchronize)(void);
    CUresult (*MemAlloc)(CUdeviceptr *, size_t);
    CUresult (*MemFree)(CUdeviceptr);
    CUresult (*MemcpyHtoD)(CUdeviceptr, const void *, size_t);
    CUresult (*StreamCreate)(CUstream *, unsigned);
    CUresult (*StreamDestroy)(CUstream);
    CUresult (*StreamSynchronize)(CUstream);
    CUresult (*ModuleLoadData)(CUmodule *, const void *);
    CUresult (*ModuleGetFunction)(CUfunction *, CUmodule, const char *);
    CUresult (*LaunchKernel)(CUfunction, unsigned, unsigned, unsigned,
                             unsigned, unsigned, unsigned, unsigned, CUstream,
                             void **, void **);
    CUresult (*GetErrorName)(CUresult, const char **);
} cu;

static char cu_why[256];

/* Load the driver and make device 0's primary context current.  0 on
 * success; -1 with cu_why set. */
static int cu_open(void)
{
    static int state; /* 0 not tried, 1 ok, -1 failed */
    if (state) return state > 0 ? 0 : -1;
    state = -1;
    cu.h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!cu.h) {
        snprintf(cu_why, sizeof cu_why, "libcuda.so.1 not found: %s", dlerror());
        return -1;
    }
#define LOAD(field, name)                                                      \
    do {                                                                       \
        void *p_ = dlsym(cu.h, name);                                          \
        if (!p_) {                                                             \
            snprintf(cu_why, sizeof cu_why, "libcuda.so.1 lacks %s", name);    \
            return -1;                                                         \
        }                                                                      \
        memcpy(&cu.field, &p_, sizeof p_);                                     \
    } while (0)
    LOAD(Init, "cuInit");
    LOAD(DeviceGet, "cuDeviceGet");
    LOAD(DeviceGetCount, "cuDeviceGetCount");
    LOAD(DevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
    LOAD(CtxSetCurrent, "cuCtxSetCurrent");
    LOAD(CtxSynchronize, "cuCtxSynchronize");
    LOAD(MemAlloc, "cuMemAlloc_v2");
    LOAD(MemFree, "cuMemFree_v2");
    LOAD(MemcpyHtoD, "cuMemcpyHtoD_v2");
    LOAD(StreamCreate, "cuStreamCreate");
    LOAD(StreamDestroy, "cuStreamDestroy_v2");
    LOAD(StreamSynchronize, "cuStreamSynchronize");
    LOAD(ModuleLoadData, "cuModuleLoadData");
    LOAD(ModuleGetFunction, "cuModuleGetFunction");
    LOAD(LaunchKernel, "cuLaunchKernel");
    LOAD(GetErrorName, "cuGetErrorName");
#undef LOAD
    CUresult r;
    int n = 0;
    CUdevice dev;
    CUcontext ctx;
    if ((r = cu.Init(0)) || (r = cu.DeviceGetCount(&n))) {
        const char *nm = "?";
        cu.GetErrorName(r, &nm);
        snprintf(cu_why, sizeof cu_why, "cuInit/cuDeviceGetCount: %s", nm);
        return -1;
    }
    if (n < 1) {
        snprintf(cu_why, sizeof cu_why, "no CUDA device");
        return -1;
    }
    if ((r = cu.DeviceGet(&dev, 0)) || (r = cu.DevicePrimaryCtxRetain(&ctx, dev)) ||
        (r = cu.CtxSetCurrent(ctx))) {
        const char *nm = "?";
        cu.GetErrorName(r, &nm);
        snprintf(cu_why, sizeof cu_why, "primary context of device 0: %s", nm);
        return -1;
    }
    state = 1;
    return 0;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench-engine: FATAL: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

#define CU(call)                                                               \
    do {                                                                       \
        CUresult r_ = (call);                                                  \
        if (r_) {                                                              \
            const char *nm_ = "?";                                             \
            cu.GetErrorName(r_, &nm_);                                         \
            die("%s failed: %s (%d) at line %d", #call, nm_, r_, __LINE__);    \
        }                                                                      \
    } while (0)

/* ===================================================================== */
/* Helpers                                                                */
/* ===================================================================== */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The detail of the last kiln failure, copied before any other kiln call. */
static char kerr[4096];
static const char *kfail(kiln_status s)
{
    char detail[3800];
    snprintf(detail, sizeof detail, "%s", kiln_last_error());
    snprintf(kerr, sizeof kerr, "%s: %s", kiln_status_name(s), detail);
    return kerr;
}

/* JSON string escaping into a static ring of buffers (several per printf). */
static const char *js(const char *s)
{
    static char ring[16][1024];
    static int at;
    char *o = ring[at = (at + 1) % 16];
    size_t n = 0;
    for (; s && *s && n + 8 < sizeof ring[0]; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            o[n++] = '\\';
            o[n++] = (char)c;
        } else if (c < 0x20) {
            n += (size_t)snprintf(o + n, 8, "\\u%04x", c);
        } else {
            o[n++] = (char)c;
        }
    }
    o[n] = 0;
    return o;
}

static FILE *jsonl;
static void jline(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void jline(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(jsonl, fmt, ap);
    va_end(ap);
    fputc('\n', jsonl);
    fflush(jsonl);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static float frand(void) /* [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) * (1.0 / 8388608.0)) - 1.0f;
}
static uint16_t bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7FFF + ((u >> 16) & 1); /* round to nearest even (no NaN here) */
    return (uint16_t)(u >> 16);
}

static int rm_entry(const char *path, const struct stat *sb, int flag,
                    struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

/* ===================================================================== */
/* Problems                                                               */
/* ===================================================================== */

/* The HSTU configurations of bench/bench_hstu.py (one key each). */
typedef struct cfg {
    const char *name;
    int head_dim, heads, target;
} cfg;
static const cfg CFGS[] = {
    {"d128 causal", 128, 4, 0},
    {"d64 causal", 64, 8, 0},
    {"d256 causal", 256, 2, 0},
    {"d128 causal+target", 128, 4, 1},
};
#define NCFG (int)(sizeof CFGS / sizeof CFGS[0])

/* Device buffers of one jagged problem. */
typedef struct problem {
    int batch, max_len, heads, dim, target;
    int64_t total;
    CUdeviceptr q, k, v, out, offsets, targets;
} problem;

static void fill_params(kiln_hstu_fwd_params *p, const problem *pr)
{
    if (kiln_hstu_fwd_params_init(p) != KILN_OK)
        die("kiln_hstu_fwd_params_init: %s", kiln_last_error());
    int64_t rs = (int64_t)pr->heads * pr->dim;
    p->dtype = KILN_DTYPE_BF16;
    p->head_dim = pr->dim;
    p->num_heads = pr->heads;
    p->batch = pr->batch;
    p->total_q = p->total_k = pr->total;
    p->q = pr->q;
    p->k = pr->k;
    p->v = pr->v;
    p->out = pr->out;
    p->q_row_stride = p->k_row_stride = p->v_row_stride = p->out_row_stride = rs;
    p->q_head_stride = p->k_head_stride = p->v_head_stride = p->out_head_stride =
        pr->dim;
    p->seq_offsets_q = pr->offsets;
    p->offsets_type = KILN_INDEX_INT64;
    p->max_seqlen_q = p->max_seqlen_k = pr->max_len;
    p->window_left = -1;
    p->window_right = 0; /* causal */
    if (pr->target) {
        p->num_targets = pr->targets;
        p->target_group_size = 1;
    }
    p->alpha = 1.0f / sqrtf((float)pr->dim);
    p->scaling_seqlen = (float)pr->max_len;
}

/* Problem with fake (aligned, never dereferenced) pointers: enough for
 * kiln_hstu_fwd_key, which validates the views but touches no memory. */
static problem fake_problem(const cfg *c)
{
    problem pr = {4, 1024, c->heads, c->head_dim, c->target, 4 * 1024,
                  0x10000000ull, 0x20000000ull, 0x30000000ull, 0x40000000ull,
                  0x50000000ull, 0x60000000ull};
    return pr;
}

/* Allocate and fill a jagged problem on the current device: lengths in
 * [max_len/2, max_len], random bf16 q/k/v in [-1, 1), int64 offsets,
 * num_targets in [0, 64] when target. */
static problem alloc_problem(int batch, int max_len, int heads, int dim,
                             int target)
{
    problem pr = {batch, max_len, heads, dim, target, 0, 0, 0, 0, 0, 0, 0};
    int64_t *off = calloc((size_t)batch + 1, sizeof *off);
    int32_t *tg = calloc((size_t)batch + 1, sizeof *tg);
    if (!off || !tg) die("out of host memory");
    for (int b = 0; b < batch; b++) {
        int half = max_len / 2;
        int len = half + (int)((frand() + 1.0f) * 0.5f * (float)(max_len - half));
        if (len > max_len) len = max_len;
        if (len < 1) len = 1;
        off[b + 1] = off[b] + len;
        int t = (int)((frand() + 1.0f) * 32.5f);
        tg[b] = t > len ? len : t;
    }
    pr.total = off[batch];
    size_t n = (size_t)pr.total * (size_t)heads * (size_t)dim;
    uint16_t *h = malloc(n * sizeof *h);
    if (!h) die("out of host memory");
    CUdeviceptr *bufs[3] = {&pr.q, &pr.k, &pr.v};
    for (int i = 0; i < 3; i++) {
        for (size_t j = 0; j < n; j++) h[j] = bf16(frand());
        CU(cu.MemAlloc(bufs[i], n * 2));
        CU(cu.MemcpyHtoD(*bufs[i], h, n * 2));
    }
    CU(cu.MemAlloc(&pr.out, n * 2));
    CU(cu.MemAlloc(&pr.offsets, ((size_t)batch + 1) * sizeof *off));
    CU(cu.MemcpyHtoD(pr.offsets, off, ((size_t)batch + 1) * sizeof *off));
    CU(cu.MemAlloc(&pr.targets, ((size_t)batch + 1) * sizeof *tg));
    CU(cu.MemcpyHtoD(pr.targets, tg, ((size_t)batch + 1) * sizeof *tg));
    free(h);
    free(off);
    free(tg);
    return pr;
}

static void free_problem(problem *pr)
{
    CUdeviceptr *bufs[] = {&pr->q, &pr->k, &pr->v, &pr->out, &pr->offsets,
                           &pr->targets};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (*bufs[i]) cu.MemFree(*bufs[i]), *bufs[i] = 0;
}

/* ===================================================================== */
/* 2. the child: first call in a fresh process                            */
/* ===================================================================== */

#define CHILD_TAG "CHILDJSON "

static int child_main(int idx)
{
    const cfg *c = &CFGS[idx];
    double t_start = now_s();
    if (cu_open() != 0) {
        printf(CHILD_TAG "{\"ok\":false,\"error\":\"%s\"}\n", js(cu_why));
        return 1;
    }
    double t_cuda = now_s();
    problem pr = alloc_problem(4, 1024, c->heads, c->head_dim, c->target);
    CUstream stream;
    CU(cu.StreamCreate(&stream, 0));

    kiln_engine_options o;
    if (kiln_engine_options_init(&o) != KILN_OK) die("options_init");
    o.flags = KILN_ENGINE_NO_COMPILE; /* a miss must fail, not compile */
    kiln_engine *eng = NULL;
    double t0 = now_s();
    kiln_status st = kiln_engine_create(&o, &eng);
    double t1 = now_s();
    if (st != KILN_OK) {
        printf(CHILD_TAG "{\"ok\":false,\"error\":\"engine_create: %s\"}\n",
               js(kfail(st)));
        return 1;
    }
    kiln_hstu_fwd_params p;
    fill_params(&p, &pr);
    char key[256] = "";

    double t2 = now_s();
    st = kiln_hstu_fwd(eng, &p, stream);
    double t3 = now_s();
    const char *why = st != KILN_OK ? kfail(st) : ""; /* before the next call */
    kiln_hstu_fwd_key(&p, NULL, key, sizeof key);    /* after: not timed */
    if (st != KILN_OK) {
        printf(CHILD_TAG "{\"ok\":false,\"key\":\"%s\",\"error\":\"first "
               "kiln_hstu_fwd: %s\"}\n", js(key), js(why));
        return 1;
    }
    CU(cu.StreamSynchronize(stream));
    double t4 = now_s();
    st = kiln_hstu_fwd(eng, &p, stream);
    double t5 = now_s();
    if (st != KILN_OK) die("second kiln_hstu_fwd: %s", kfail(st));
    CU(cu.StreamSynchronize(stream));

    kiln_cache_stats cs;
    memset(&cs, 0, sizeof cs);
    kiln_status sst = kiln_cache_stats_get(eng, &cs);
    printf(CHILD_TAG "{\"ok\":true,\"key\":\"%s\",\"cuda_init_ms\":%.3f,"
           "\"engine_create_ms\":%.3f,\"first_call_ms\":%.3f,"
           "\"first_call_sync_ms\":%.3f,\"second_call_us\":%.2f,"
           "\"disk_hits\":%lld,\"mem_hits\":%lld,\"compiles\":%lld,"
           "\"stats_ok\":%d}\n",
           js(key), (t_cuda - t_start) * 1e3, (t1 - t0) * 1e3, (t3 - t2) * 1e3,
           (t4 - t2) * 1e3, (t5 - t4) * 1e6, (long long)cs.disk_hits,
           (long long)cs.mem_hits, (long long)cs.compiles, sst == KILN_OK);
    fflush(stdout);
    kiln_engine_destroy(eng);
    cu.StreamDestroy(stream);
    free_problem(&pr);
    return 0;
}

/* Run this program again as a child for configuration idx; fill out (a JSON
 * object, "" if none came back).  Returns the child's exit status. */
static int spawn_child(const char *self, int idx, char *out, size_t out_n)
{
    int fd[2];
    out[0] = 0;
    if (pipe(fd) != 0) die("pipe: %s", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) die("fork: %s", strerror(errno));
    if (pid == 0) {
        close(fd[0]);
        dup2(fd[1], 1);
        close(fd[1]);
        char arg[16];
        snprintf(arg, sizeof arg, "%d", idx);
        execl(self, self, "--child", arg, (char *)NULL);
        fprintf(stderr, "bench-engine: exec %s: %s\n", self, strerror(errno));
        _exit(127);
    }
    close(fd[1]);
    FILE *f = fdopen(fd[0], "r");
    char line[8192];
    while (f && fgets(line, sizeof line, f)) {
        if (!strncmp(line, CHILD_TAG, strlen(CHILD_TAG))) {
            const char *src = line + strlen(CHILD_TAG);
            size_t n = strlen(src);
            if (n > out_n - 1) n = out_n - 1;
            memcpy(out, src, n);
            out[n] = 0;
            while (n && (out[n - 1] == '\n' || out[n - 1] == '\r')) out[--n] = 0;
        } else {
            printf("  [child] %s", line);
        }
    }
    if (f) fclose(f);
    int status = 0;
    waitpid(pid, &status, 0);
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return -1;
}

/* Pull a number out of a flat JSON object (good enough for the child's). */
static double jnum(const char *obj, const char *name)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", name);
    const char *p = strstr(obj, pat);
    return p ? strtod(p + strlen(pat), NULL) : NAN;
}

/* ===================================================================== */
/* 1. cold compile                                                        */
/* ===================================================================== */

typedef struct entry_info {
    int found;
    double compile_ms;
    int regs, smem, spills;
    uint64_t bytes;
} entry_info;

static int entry_cb(const kiln_cache_entry *e, void *user)
{
    entry_info *ei = user;
    ei->found = 1;
    ei->compile_ms = e->compile_ms;
    ei->regs = e->regs;
    ei->smem = e->smem;
    ei->spills = e->spills;
    ei->bytes = e->bytes;
    return 1;
}

typedef struct result_row {
    char key[256];
    int cold_ok;
    double prewarm_ms, prewarm_again_ms;
    entry_info ei;
    char cold_err[512];
    int child_rc;
    char child_json[2048];
} result_row;

/* ===================================================================== */
/* 3. steady state                                                        */
/* ===================================================================== */

/* An empty kernel taking a parameter block as large as kiln's HSTU kernel
 * parameters (kiln_hstu_kparams, 248 bytes when this was written), as PTX so
 * the driver JIT-compiles it for whatever GPU is there. */
#define RAW_PARAM_BYTES 248
static const char EMPTY_PTX[] =
    ".version 7.0\n"
    ".target sm_52\n"
    ".address_size 64\n"
    ".visible .entry kiln_bench_empty(.param .align 8 .b8 p[248])\n"
    "{\n"
    "\tret;\n"
    "}\n";

typedef struct loop_stats {
    double host_us_mean, host_us_best_batch, wall_us_mean;
} loop_stats;

#define BATCH 250

/* Time calls in batches of BATCH (host time of the launches only; the stream
 * is drained between batches so the launch queue never fills). */
static loop_stats time_loop(int calls, CUstream stream,
                            kiln_engine *eng, const kiln_hstu_fwd_params *p,
                            CUfunction raw, void **raw_args)
{
    loop_stats s = {0, 1e30, 0};
    double host = 0;
    int done = 0;
    double w0 = now_s();
    while (done < calls) {
        int n = calls - done < BATCH ? calls - done : BATCH;
        double t0 = now_s();
        if (eng) {
            for (int i = 0; i < n; i++) {
                kiln_status st = kiln_hstu_fwd(eng, p, stream);
                if (st != KILN_OK) die("kiln_hstu_fwd in loop: %s", kfail(st));
            }
        } else {
            for (int i = 0; i < n; i++)
                CU(cu.LaunchKernel(raw, 1, 1, 1, 32, 1, 1, 0, stream, raw_args,
                                   NULL));
        }
        double t1 = now_s();
        CU(cu.StreamSynchronize(stream));
        host += t1 - t0;
        double per = (t1 - t0) / n * 1e6;
        if (per < s.host_us_best_batch) s.host_us_best_batch = per;
        done += n;
    }
    s.wall_us_mean = (now_s() - w0) / calls * 1e6;
    s.host_us_mean = host / calls * 1e6;
    return s;
}

/* ===================================================================== */
/* main                                                                   */
/* ===================================================================== */

int main(int argc, char **argv)
{
    const char *json_path = "bench-engine.jsonl";
    const char *cache_arg = NULL;
    int calls = 10000;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--child") && i + 1 < argc) {
            int idx = atoi(argv[i + 1]);
            if (idx < 0 || idx >= NCFG) die("--child %s: no such config", argv[i + 1]);
            return child_main(idx);
        } else if (!strcmp(argv[i], "--json") && i + 1 < argc) {
            json_path = argv[++i];
        } else if (!strcmp(argv[i], "--calls") && i + 1 < argc) {
            calls = atoi(argv[++i]);
            if (calls < 1) die("--calls must be >= 1");
        } else if (!strcmp(argv[i], "--cache-dir") && i + 1 < argc) {
            cache_arg = argv[++i];
        } else {
            fprintf(stderr,
                    "usage: %s [--json FILE] [--calls N] [--cache-dir DIR]\n",
                    argv[0]);
            return 2;
        }
    }
    jsonl = fopen(json_path, "a");
    if (!jsonl) die("cannot open %s: %s", json_path, strerror(errno));

    char self[4096];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl <= 0) snprintf(self, sizeof self, "%s", argv[0]);
    else self[sl] = 0;

    char tmpdir[] = "/tmp/kiln-bench-engine-XXXXXX";
    const char *dir = cache_arg;
    if (!dir) {
        if (!mkdtemp(tmpdir)) die("mkdtemp: %s", strerror(errno));
        dir = tmpdir;
    } else if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        die("mkdir %s: %s", dir, strerror(errno));
    }
    /* The children find the cache through the environment, as a user's
     * process would. */
    setenv("KILN_CACHE_DIR", dir, 1);

    int failures = 0;
    time_t now = time(NULL);
    char date[64];
    strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S UTC", gmtime(&now));

    /* ------------------------------------------------ environment */
    kiln_engine_options o;
    if (kiln_engine_options_init(&o) != KILN_OK) die("options_init");
    o.cache_dir = dir;
    kiln_engine *eng = NULL;
    kiln_status st = kiln_engine_create(&o, &eng);
    if (st != KILN_OK) die("kiln_engine_create: %s", kfail(st));
    static kiln_info info;
    st = kiln_engine_info(eng, &info);
    if (st != KILN_OK) die("kiln_engine_info: %s", kfail(st));
    int have_gpu = info.device_count > 0;
    char arch[16];
    snprintf(arch, sizeof arch, "%s", have_gpu ? info.devices[0].arch : "sm_90a");
    const char *devname = have_gpu ? info.devices[0].name : "none";
    printf("== bench-engine %s  %s\n", kiln_version_string(), date);
    printf("device: %s (%s)  driver %d  NVRTC %s (%s)\n", devname, arch,
           info.driver_version, info.nvrtc_version[0] ? info.nvrtc_version : "-",
           info.nvrtc_path);
    if (!have_gpu) printf("no GPU: %s\n", info.driver_error);
    printf("cache: %s\n\n", dir);
    jline("{\"bench\":\"env\",\"date\":\"%s\",\"device\":\"%s\",\"arch\":\"%s\","
          "\"driver\":%d,\"nvrtc\":\"%s\",\"kiln\":\"%s\",\"cache_dir\":\"%s\"}",
          js(date), js(devname), js(arch), info.driver_version,
          js(info.nvrtc_version), js(kiln_version_string()), js(dir));

    int64_t removed = 0;
    st = kiln_cache_clear(eng, NULL, &removed);
    if (st != KILN_OK)
        printf("warning: kiln_cache_clear: %s (cache may not be cold)\n", kfail(st));
    else if (removed)
        printf("cleared %lld cached kernels: the compiles below are cold\n",
               (long long)removed);

    /* ------------------------------------------------ 1. cold compile */
    result_row rows[NCFG];
    memset(rows, 0, sizeof rows);
    printf("1. cold compile (kiln_prewarm into an empty cache; the first key "
           "also pays for loading NVRTC)\n");
    for (int i = 0; i < NCFG; i++) {
        result_row *r = &rows[i];
        problem fp = fake_problem(&CFGS[i]);
        kiln_hstu_fwd_params p;
        fill_params(&p, &fp);
        st = kiln_hstu_fwd_key(&p, arch, r->key, sizeof r->key);
        if (st != KILN_OK) {
            snprintf(r->cold_err, sizeof r->cold_err, "kiln_hstu_fwd_key: %s",
                     kfail(st));
        } else {
            double t0 = now_s();
            st = kiln_prewarm(eng, r->key, NULL);
            double t1 = now_s();
            r->prewarm_ms = (t1 - t0) * 1e3;
            if (st != KILN_OK) {
                snprintf(r->cold_err, sizeof r->cold_err, "kiln_prewarm: %s",
                         kfail(st));
            } else {
                r->cold_ok = 1;
                t0 = now_s();
                st = kiln_prewarm(eng, r->key, NULL);
                r->prewarm_again_ms = (now_s() - t0) * 1e3;
                if (st != KILN_OK) r->prewarm_again_ms = NAN;
                kiln_cache_list(eng, r->key, entry_cb, &r->ei);
            }
        }
        if (!r->cold_ok) failures++;
        printf("   %-20s %-44s %s", CFGS[i].name, r->key[0] ? r->key : "-",
               r->cold_ok ? "" : "FAILED: ");
        if (r->cold_ok)
            printf("%9.1f ms  (again %.3f ms)\n", r->prewarm_ms, r->prewarm_again_ms);
        else
            printf("%s\n", r->cold_err);
        if (r->cold_ok)
            jline("{\"bench\":\"cold_compile\",\"config\":\"%s\",\"key\":\"%s\","
                  "\"arch\":\"%s\",\"ok\":true,\"prewarm_ms\":%.3f,"
                  "\"prewarm_again_ms\":%.4f,\"cache_compile_ms\":%.3f,"
                  "\"regs\":%d,\"smem\":%d,\"spills\":%d,\"cubin_bytes\":%llu,"
                  "\"entry_found\":%s}",
                  js(CFGS[i].name), js(r->key), js(arch), r->prewarm_ms,
                  isnan(r->prewarm_again_ms) ? -1.0 : r->prewarm_again_ms,
                  r->ei.compile_ms, r->ei.regs, r->ei.smem, r->ei.spills,
                  (unsigned long long)r->ei.bytes, r->ei.found ? "true" : "false");
        else
            jline("{\"bench\":\"cold_compile\",\"config\":\"%s\",\"key\":\"%s\","
                  "\"arch\":\"%s\",\"ok\":false,\"error\":\"%s\"}",
                  js(CFGS[i].name), js(r->key), js(arch), js(r->cold_err));
    }
    kiln_engine_destroy(eng);
    eng = NULL;

    /* ------------------------------------------------ 2. warm process */
    printf("\n2. first call in a new process whose cache holds the key "
           "(B=4, max_len=1024; engine opened with NO_COMPILE)\n");
    for (int i = 0; i < NCFG; i++) {
        result_row *r = &rows[i];
        if (!have_gpu) {
            printf("   %-20s SKIP: no GPU\n", CFGS[i].name);
            jline("{\"bench\":\"first_call\",\"config\":\"%s\",\"skipped\":"
                  "\"no GPU: %s\"}", js(CFGS[i].name), js(info.driver_error));
            continue;
        }
        if (!r->cold_ok) {
            printf("   %-20s SKIP: not compiled\n", CFGS[i].name);
            jline("{\"bench\":\"first_call\",\"config\":\"%s\",\"skipped\":"
                  "\"cold compile failed\"}", js(CFGS[i].name));
            continue;
        }
        r->child_rc = spawn_child(self, i, r->child_json, sizeof r->child_json);
        const char *cj = r->child_json;
        int ok = r->child_rc == 0 && strstr(cj, "\"ok\":true");
        if (!ok) {
            failures++;
            printf("   %-20s FAILED (rc %d): %s\n", CFGS[i].name, r->child_rc,
                   cj[0] ? cj : "no result");
            jline("{\"bench\":\"first_call\",\"config\":\"%s\",\"ok\":false,"
                  "\"rc\":%d,\"child\":\"%s\"}",
                  js(CFGS[i].name), r->child_rc, js(cj));
            continue;
        }
        double compiles = jnum(cj, "compiles"), hits = jnum(cj, "disk_hits");
        printf("   %-20s engine_create %7.3f ms  first call %8.3f ms (host), "
               "%8.3f ms (+sync)  2nd call %6.1f us  [disk hits %.0f, compiles "
               "%.0f]%s\n",
               CFGS[i].name, jnum(cj, "engine_create_ms"), jnum(cj, "first_call_ms"),
               jnum(cj, "first_call_sync_ms"), jnum(cj, "second_call_us"), hits,
               compiles, compiles != 0 ? "  WARNING: compiled" : "");
        jline("{\"bench\":\"first_call\",\"config\":\"%s\",\"ok\":true,"
              "\"child\":%s}", js(CFGS[i].name), cj);
    }

    /* ------------------------------------------------ 3. steady state */
    printf("\n3. steady state: host time per call, %d back-to-back calls in "
           "batches of %d (stream drained between batches)\n", calls, BATCH);
    if (!have_gpu) {
        printf("   SKIP: no GPU\n");
        jline("{\"bench\":\"steady_state\",\"skipped\":\"no GPU\"}");
    } else if (cu_open() != 0) {
        failures++;
        printf("   FAILED: %s\n", cu_why);
        jline("{\"bench\":\"steady_state\",\"ok\":false,\"error\":\"%s\"}",
              js(cu_why));
    } else {
        if (kiln_engine_options_init(&o) != KILN_OK) die("options_init");
        o.cache_dir = dir;
        st = kiln_engine_create(&o, &eng);
        if (st != KILN_OK) die("kiln_engine_create: %s", kfail(st));
        /* d64 causal, a key compiled above: B=1, max_len=64, H=1. */
        problem pr = alloc_problem(1, 64, 1, 64, 0);
        kiln_hstu_fwd_params p;
        fill_params(&p, &pr);
        CUstream stream;
        CU(cu.StreamCreate(&stream, 0));
        char key[256] = "";
        kiln_hstu_fwd_key(&p, NULL, key, sizeof key);
        st = kiln_hstu_fwd(eng, &p, stream); /* load + warm */
        if (st != KILN_OK) die("kiln_hstu_fwd (tiny, warm-up): %s", kfail(st));
        CU(cu.StreamSynchronize(stream));
        loop_stats ks = time_loop(calls / 10 + 1, stream, eng, &p, NULL, NULL);
        ks = time_loop(calls, stream, eng, &p, NULL, NULL);

        CUmodule mod;
        CUfunction fn;
        CU(cu.ModuleLoadData(&mod, EMPTY_PTX));
        CU(cu.ModuleGetFunction(&fn, mod, "kiln_bench_empty"));
        static uint64_t blk[RAW_PARAM_BYTES / 8];
        void *args[] = {blk};
        loop_stats rs = time_loop(calls / 10 + 1, stream, NULL, NULL, fn, args);
        rs = time_loop(calls, stream, NULL, NULL, fn, args);

        printf("   kiln_hstu_fwd (%s): %.2f us/call host (best batch %.2f), "
               "%.2f us/call with GPU\n", key, ks.host_us_mean,
               ks.host_us_best_batch, ks.wall_us_mean);
        printf("   raw cuLaunchKernel (empty kernel, %d-byte params): %.2f us/call "
               "host (best batch %.2f), %.2f us/call with GPU\n", RAW_PARAM_BYTES,
               rs.host_us_mean, rs.host_us_best_batch, rs.wall_us_mean);
        printf("   kiln's host cost over a raw launch: %.2f us/call\n",
               ks.host_us_mean - rs.host_us_mean);
        jline("{\"bench\":\"steady_state\",\"ok\":true,\"key\":\"%s\","
              "\"calls\":%d,\"batch\":%d,\"kiln_host_us\":%.4f,"
              "\"kiln_host_us_best_batch\":%.4f,\"kiln_wall_us\":%.4f,"
              "\"raw_host_us\":%.4f,\"raw_host_us_best_batch\":%.4f,"
              "\"raw_wall_us\":%.4f,\"raw_param_bytes\":%d}",
              js(key), calls, BATCH, ks.host_us_mean, ks.host_us_best_batch,
              ks.wall_us_mean, rs.host_us_mean, rs.host_us_best_batch,
              rs.wall_us_mean, RAW_PARAM_BYTES);
        CU(cu.CtxSynchronize());
        kiln_engine_destroy(eng);
        cu.StreamDestroy(stream);
        free_problem(&pr);
    }

    /* ------------------------------------------------ summary */
    printf("\n%-20s %-44s %10s %9s %5s %6s %6s %10s %10s\n", "config", "key",
           "cold ms", "nvrtc ms", "regs", "smem", "spills", "1st-call ms",
           "create ms");
    for (int i = 0; i < NCFG; i++) {
        result_row *r = &rows[i];
        const char *cj = r->child_json;
        double fc = cj[0] ? jnum(cj, "first_call_ms") : NAN;
        double ec = cj[0] ? jnum(cj, "engine_create_ms") : NAN;
        char fcs[32] = "-", ecs[32] = "-";
        if (!isnan(fc)) snprintf(fcs, sizeof fcs, "%.3f", fc);
        if (!isnan(ec)) snprintf(ecs, sizeof ecs, "%.3f", ec);
        if (r->cold_ok)
            printf("%-20s %-44s %10.1f %9.1f %5d %6d %6d %10s %10s\n",
                   CFGS[i].name, r->key, r->prewarm_ms, r->ei.compile_ms,
                   r->ei.regs, r->ei.smem, r->ei.spills, fcs, ecs);
        else
            printf("%-20s %-44s FAILED\n", CFGS[i].name, r->key[0] ? r->key : "-");
    }
    printf("\nJSON lines appended to %s; %d failure(s)\n", json_path, failures);
    fclose(jsonl);
    if (!cache_arg) nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return failures ? 1 : 0;
}
