/* f_rt_oom.c -- issue 5 item 14: out of memory.
 *
 * Two failing allocators, one allocation counter: SQLite's (a wrapper over
 * its default sqlite3_mem_methods, installed with SQLITE_CONFIG_MALLOC) and
 * kiln's own (kiln__set_allocator).  For N = 1, 2, ... the N-th allocation
 * made by either fails (or every one from the N-th on) during one workload:
 *
 *   engine create on a cache directory that already holds two kernels,
 *   kiln_prewarm of one of them (hstu_fwd/sm_80/bf16/d32/none),
 *   kiln_cache_list, kiln_cache_stats_get, kiln_cache_verify,
 *   kiln_hstu_fwd through the fake driver of util_rt.c (its kernel is the
 *   other cached one), engine destroy.
 *
 * Each N passes only if every call returns a kiln_status (OK, a bypass such
 * as memory-only mode, or an error with a message; OK for every call made
 * before the injected failure), nothing crashes, no block of either heap is
 * left live (after destroy kiln's count is back to its value before create;
 * SQLite's is back to zero after sqlite3_shutdown, which frees its own
 * process-lifetime blocks), and a following run without failures succeeds
 * completely with compiling off -- so an allocation failure never cost the
 * cache a row.  N runs until a workload completes with no failure injected.
 * Three passes: every N failing once, every N failing from N on (both with
 * KILN_ENGINE_NO_COMPILE in the failing runs: a miss caused by a failure
 * answers KILN_ENOTFOUND at once), and N by a stride failing once with
 * compiling on (a miss compiles with the real NVRTC and stores; about 40 N,
 * 400 with --long).  The two kernels are compiled once, at the start.
 * The plain build then builds this file under ASan + LeakSanitizer with
 * tests/faults/build_fuzz.sh (when clang is installed) and runs that binary
 * (the first two passes) on the same cache directory; LSan must be clean.
 *
 * Options: --long, --dir DIR (a populated cache directory, kept), --n N
 * (one N only), --stride S, --sticky / --compile (that pass only).
 * RT_VERBOSE=1 prints kiln's log. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "runtime/error.h"
#include "util_rt.h"

#if defined(__SANITIZE_ADDRESS__)
#define OOM_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define OOM_ASAN 1
#endif
#endif
#ifndef OOM_ASAN
#define OOM_ASAN 0
#endif

#define KEY_PREWARM "hstu_fwd/sm_80/bf16/d32/none"

/* ---------------------------------------------------------------- heaps */

static struct {
    int armed;        /* count (and maybe fail) allocations */
    long count;       /* allocations seen while armed */
    long fail_at;     /* the allocation to fail, 0: none */
    int sticky;       /* fail every allocation from fail_at on */
    int compile;      /* the failing run may compile (real NVRTC) */
    long injected;    /* failures returned */
    long live_sq;     /* SQLite blocks live (through the wrapper) */
    long live_k;      /* kiln blocks live */
} H;

static sqlite3_mem_methods sq_orig;

static int should_fail(void)
{
    if (!H.armed) return 0;
    long n = ++H.count;
    if (H.fail_at && (n == H.fail_at || (H.sticky && n > H.fail_at))) {
        H.injected++;
        return 1;
    }
    return 0;
}

static void *sq_malloc(int n)
{
    if (should_fail()) return NULL;
    void *p = sq_orig.xMalloc(n);
    if (p) H.live_sq++;
    return p;
}
static void sq_free(void *p)
{
    if (p) H.live_sq--;
    sq_orig.xFree(p);
}
static void *sq_realloc(void *p, int n)
{
    if (should_fail()) return NULL;
    void *q = sq_orig.xRealloc(p, n);
    if (q && !p) H.live_sq++;
    return q;
}
static int sq_size(void *p) { return sq_orig.xSize(p); }
static int sq_roundup(int n) { return sq_orig.xRoundup(n); }
static int sq_init(void *a) { return sq_orig.xInit(a); }
static void sq_shutdown(void *a) { sq_orig.xShutdown(a); }

static sqlite3_mem_methods sq_methods = {sq_malloc, sq_free, sq_realloc, sq_size,
                                         sq_roundup, sq_init, sq_shutdown, NULL};

static void *k_malloc(size_t n)
{
    if (should_fail()) return NULL;
    void *p = malloc(n);
    if (p) H.live_k++;
    return p;
}
static void *k_calloc(size_t n, size_t s)
{
    if (should_fail()) return NULL;
    void *p = calloc(n, s);
    if (p) H.live_k++;
    return p;
}
static void *k_realloc(void *p, size_t n)
{
    if (should_fail()) return NULL;
    void *q = realloc(p, n);
    if (q && !p) H.live_k++;
    return q;
}
static void k_free(void *p)
{
    if (p) H.live_k--;
    free(p);
}
static const kiln_allocator k_methods = {k_malloc, k_calloc, k_realloc, k_free};

/* SQLite shut down (freeing its process-lifetime blocks) and set up again
 * with the wrapper. */
static int sqlite_rewrap(void)
{
    sqlite3_shutdown();
    if (!sq_orig.xMalloc) {
        /* the default methods are only known once SQLite was initialized */
        if (sqlite3_initialize() != SQLITE_OK) return -1;
        sqlite3_shutdown();
        if (sqlite3_config(SQLITE_CONFIG_GETMALLOC, &sq_orig) != SQLITE_OK ||
            !sq_orig.xMalloc)
            return -1;
    }
    if (sqlite3_config(SQLITE_CONFIG_MALLOC, &sq_methods) != SQLITE_OK) return -1;
    return sqlite3_initialize() == SQLITE_OK ? 0 : -1;
}

/* ---------------------------------------------------------------- workload */

static char dir[512];
static char key_launch[160];
static int failures;
static long n_now;

#define BAD(...)                                                               \
    do {                                                                       \
        fprintf(stderr, "f_rt_oom: N=%ld%s%s%s: ", n_now, H.sticky ? " sticky" : "", \
                H.compile ? " compiling" : "",                                  \
                H.fail_at ? "" : ", the normal run after it");                  \
        fprintf(stderr, __VA_ARGS__);                                          \
        fprintf(stderr, "\n");                                                 \
        failures++;                                                            \
    } while (0)

/* One call's status: a known one; OK while nothing was injected; a message
 * with an error. */
static int check(const char *what, kiln_status s)
{
    if ((int)s < 0 || (int)s > KILN_EINTERNAL) {
        BAD("%s returned %d, not a kiln_status", what, (int)s);
        return 0;
    }
    if (s != KILN_OK && H.injected == 0) {
        BAD("%s failed with no allocation failed: %s: %s", what, kiln_status_name(s),
            kiln_last_error());
        return 0;
    }
    if (s != KILN_OK && !kiln_last_error()[0]) {
        BAD("%s returned %s without a message", what, kiln_status_name(s));
        return 0;
    }
    return s == KILN_OK;
}

static int count_entry(const kiln_cache_entry *en, void *user)
{
    (void)en;
    ++*(int *)user;
    return 0;
}

typedef struct run_result {
    int ok;          /* every call returned KILN_OK */
    int entries;     /* rows kiln_cache_list saw */
    int64_t stat_entries, compiles;
    kiln_cache_verify_report vr;
    long launches;
} run_result;

/* The workload; fail_at 0: no failure.  Returns 0 when the checks held. */
static int workload(long fail_at, int sticky, int compile, run_result *res)
{
    int before = failures;
    memset(res, 0, sizeof *res);
    if (sqlite_rewrap() != 0) {
        BAD("cannot install the SQLite allocator");
        return -1;
    }
    kiln__set_allocator(&k_methods);
    long live_k0 = H.live_k;
    H.count = 0;
    H.injected = 0;
    H.fail_at = fail_at;
    H.sticky = sticky;
    H.compile = compile;
    rt_log log = {{0}, ""};
    long launches0 = rt_driver_counts_get().launches;
    int ok = 1;

    H.armed = 1;
    kiln_engine *e = NULL;
    kiln_engine_options o;
    kiln_engine_options_init(&o);
    o.cache_dir = dir;
    o.ro_layers = "";
    o.flags = compile ? 0 : KILN_ENGINE_NO_COMPILE;
    o.log_fn = rt_log_fn;
    o.log_user = &log;
    o.log_level = KILN_LOG_WARN;
    kiln_status s = kiln_engine_create(&o, &e);
    ok &= check("kiln_engine_create", s);
    if (s == KILN_OK && !e) BAD("kiln_engine_create: OK without an engine");
    if (s == KILN_OK && e) {
        ok &= check("kiln_prewarm", kiln_prewarm(e, KEY_PREWARM, NULL));
        int n = 0;
        ok &= check("kiln_cache_list", kiln_cache_list(e, NULL, count_entry, &n));
        res->entries = n;
        kiln_cache_stats st;
        if (check("kiln_cache_stats_get", kiln_cache_stats_get(e, &st))) {
            res->stat_entries = st.entries;
            res->compiles = st.compiles;
        } else {
            ok = 0;
        }
        ok &= check("kiln_cache_verify", kiln_cache_verify(e, 1, &res->vr, NULL, NULL));
        kiln_hstu_fwd_params p = rt_fwd_params(32, 0);
        ok &= check("kiln_hstu_fwd", kiln_hstu_fwd(e, &p, NULL));
        if (kiln_cache_stats_get(e, &st) == KILN_OK) res->compiles = st.compiles;
        ok &= check("kiln_engine_destroy", kiln_engine_destroy(e));
    }
    H.armed = 0;
    res->launches = rt_driver_counts_get().launches - launches0;
    res->ok = ok;

    if (H.live_k != live_k0)
        BAD("kiln heap: %ld block(s) leaked", H.live_k - live_k0);
    kiln__set_allocator(NULL);
    sqlite3_shutdown(); /* frees SQLite's own blocks; connections stay live */
    if (H.live_sq != 0) BAD("SQLite heap: %ld block(s) leaked", H.live_sq);
    H.live_sq = 0;
    H.live_k = live_k0;
    if (res->compiles && !compile) BAD("%lld compile(s) with compiling off", (long long)res->compiles);
    return failures == before ? 0 : -1;
}

/* A run without failures that must succeed completely on an intact cache. */
static int normal_run(const char *after)
{
    run_result r;
    long keep = n_now;
    int rc = workload(0, 0, 0, &r);
    n_now = keep;
    if (rc == 0 && (!r.ok || r.entries != 2 || r.stat_entries != 2 || r.vr.checked != 2 ||
                    r.vr.bad != 0 || !r.vr.integrity_ok || r.launches != 1)) {
        BAD("the normal run after %s: ok %d, entries %d/%lld, verify checked %lld bad "
            "%lld integrity %d, launches %ld",
            after, r.ok, r.entries, (long long)r.stat_entries, (long long)r.vr.checked,
            (long long)r.vr.bad, r.vr.integrity_ok, r.launches);
        rc = -1;
    }
    return rc;
}

static double mono(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* N = from, from+stride, ... until a workload completes with no failure
 * injected.  Returns the last N. */
static long sweep(long from, long stride, int sticky, int compile, long *tried)
{
    long n = from;
    for (;; n += stride) {
        n_now = n;
        run_result r;
        workload(n, sticky, compile, &r);
        long injected = H.injected;
        ++*tried;
        char what[64];
        snprintf(what, sizeof what, "failing allocation %ld", n);
        normal_run(what);
        if (injected == 0) break;
        if (failures > 20) {
            fprintf(stderr, "f_rt_oom: too many failures, stopping\n");
            break;
        }
    }
    return n;
}

/* ---------------------------------------------------------------- setup */

static int populate(void)
{
    kiln_engine *e = rt_engine(dir, 0, NULL);
    if (!e) return -1;
    kiln_hstu_fwd_params p = rt_fwd_params(32, 0);
    int ok = kiln_prewarm(e, KEY_PREWARM, NULL) == KILN_OK &&
             kiln_hstu_fwd_key(&p, NULL, key_launch, sizeof key_launch) == KILN_OK &&
             kiln_prewarm(e, key_launch, NULL) == KILN_OK &&
             kiln_hstu_fwd(e, &p, NULL) == KILN_OK;
    if (!ok) fprintf(stderr, "f_rt_oom: populating failed: %s\n", kiln_last_error());
    kiln_engine_destroy(e);
    return ok ? 0 : -1;
}

#if !OOM_ASAN
/* Build this file under ASan + LSan and run it on dir. */
static int run_asan(int lng)
{
    if (system("command -v clang >/dev/null 2>&1") != 0) {
        printf("ASan pass skipped: clang not installed\n");
        return 0;
    }
    const char *b = getenv("KILN_BUILD");
    char build[256], cmd[2048];
    snprintf(build, sizeof build, "%s", b && *b ? b : "build");
    snprintf(cmd, sizeof cmd, "sh tests/faults/build_fuzz.sh '%s' >/dev/null", build);
    if (system(cmd) != 0) {
        fprintf(stderr, "f_rt_oom: build_fuzz.sh failed\n");
        return -1;
    }
    snprintf(cmd, sizeof cmd,
             "ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 '%s/faults/asan_rt_oom' "
             "--dir '%s'%s",
             build, dir, lng ? " --long" : "");
    int rc = system(cmd);
    printf("asan_rt_oom: %s\n", rc == 0 ? "clean (ASan, LeakSanitizer)" : "FAILED");
    return rc == 0 ? 0 : -1;
}
#endif

int main(int argc, char **argv)
{
    int lng = 0, sticky_only = 0, compile_only = 0;
    long one = 0, stride = 0;
    const char *given = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--long")) lng = 1;
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc) given = argv[++i];
        else if (!strcmp(argv[i], "--n") && i + 1 < argc) one = atol(argv[++i]);
        else if (!strcmp(argv[i], "--stride") && i + 1 < argc) stride = atol(argv[++i]);
        else if (!strcmp(argv[i], "--sticky")) sticky_only = 1;
        else if (!strcmp(argv[i], "--compile")) compile_only = 1;
        else {
            fprintf(stderr, "usage: f_rt_oom [--long] [--dir DIR] [--n N] [--stride S] "
                            "[--sticky] [--compile]\n");
            return 2;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    kiln__cu_override(rt_driver());
    if (given) {
        snprintf(dir, sizeof dir, "%s", given);
        kiln_hstu_fwd_params p = rt_fwd_params(32, 0);
        if (kiln_hstu_fwd_key(&p, NULL, key_launch, sizeof key_launch) != KILN_OK) return 1;
    } else {
        if (!rt_have_nvrtc()) {
            printf("skipped: no NVRTC on this machine to build the cached kernels\n");
            return 0;
        }
        rt_tmpdir(dir, sizeof dir, "oom");
        if (!dir[0] || populate() != 0) {
            rt_rmrf(dir);
            return 1;
        }
    }

    /* A clean run first: it passes, and says how many allocations there are. */
    run_result r;
    n_now = 0;
    H.armed = 0;
    if (normal_run("setup") != 0) {
        if (!given) rt_rmrf(dir);
        return 1;
    }
    workload(0, 0, 0, &r);
    long total = H.count;
    double t0 = mono();
    long tried[3] = {0, 0, 0}, last[3] = {0, 0, 0}, step[3] = {1, 1, 1};
    if (one) {
        n_now = one;
        workload(one, sticky_only, compile_only, &r);
        tried[0] = 1;
        last[0] = one;
        normal_run("the single N");
    } else {
        /* Every N, once failing (0) and failing from N on (1); then (2) with
         * compiling on: a miss caused by a failure compiles for real, so that
         * pass steps N by a stride (about 40 runs, 400 with --long; never under ASan,
         * where NVRTC would be slow). */
        int all = !sticky_only && !compile_only;
        if (stride) step[0] = step[1] = step[2] = stride;
        else step[2] = total / (lng ? 400 : 40) > 1 ? total / (lng ? 400 : 40) : 1;
        if (all) last[0] = sweep(1, step[0], 0, 0, &tried[0]);
        if (all || sticky_only) last[1] = sweep(1, step[1], 1, 0, &tried[1]);
        if ((all && !OOM_ASAN) || compile_only)
            last[2] = sweep(1, step[2], 0, 1, &tried[2]);
    }
    static const char *const what[3] = {"failing allocation N", "failing from N on",
                                         "failing N, compiling on"};
    printf("f_rt_oom%s: %ld allocations in a clean workload", OOM_ASAN ? " (ASan)" : "",
           total);
    for (int i = 0; i < 3; i++)
        if (tried[i])
            printf("; %s = 1..%ld step %ld: %ld runs", what[i], last[i], step[i], tried[i]);
    printf("; %.1f s; %d failure(s)\n", mono() - t0, failures);

#if !OOM_ASAN
    if (!failures && !one && run_asan(lng) != 0) failures++;
#endif
    if (!given) rt_rmrf(dir);
    return failures ? 1 : 0;
}
