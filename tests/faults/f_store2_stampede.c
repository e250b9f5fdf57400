/* f_store2_stampede.c -- issue 5 item 1: a stampede on one cache.
 *
 * N processes (even ones made by fork, odd ones by fork+exec of this program
 * with --stampede-worker) x T threads each, all released at once (a pipe:
 * each worker reports ready on one pipe, then blocks reading another whose
 * write end the parent closes), prewarm a key set: S keys shared by every
 * process and P private to each.  Each thread prewarms all its process's
 * keys, starting at a different offset.  Per process: every call KILN_OK, at
 * most one "compiling KEY" per key (engine stats `compiles` <= keys), zero
 * compiles on a warm database, no warning line (so no SQLITE_BUSY/LOCKED).
 * Afterwards: each key present exactly once (kiln_cache_list), no other row,
 * every row verifies (kiln_cache_verify), integrity_check ok.
 *
 * Quick: 2x8 and 8x1, fresh then warm, 2 shared + 2 private keys.
 * --long: {2,8,32} x {1,8}, fresh then warm, 4 shared + up to 4 private. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util_store.h"

#define MAXK 64
static char g_keys[MAXK][96];
static int g_nkeys;

static int collect(const char *key, void *user)
{
    (void)user;
    if (g_nkeys < MAXK) snprintf(g_keys[g_nkeys++], sizeof g_keys[0], "%s", key);
    return 0;
}

static void load_keys(void)
{
    g_nkeys = 0;
    CHECK(kiln_key_expand("hstu_fwd/sm_80/*/d32/*", NULL, collect, NULL) == KILN_OK,
          "expand: %s", kiln_last_error());
    CHECK(g_nkeys >= 36, "only %d d32 keys", g_nkeys);
}

/* Keys of process p: shared 0..S-1, then private S + p*P .. S + p*P + P-1. */
static int proc_keys(int p, int S, int P, int *idx)
{
    int n = 0;
    for (int i = 0; i < S; i++) idx[n++] = i;
    for (int i = 0; i < P; i++) idx[n++] = S + p * P + i;
    return n;
}

typedef struct {
    kiln_engine *e;
    int t, n, *idx;
} thr_arg;

static void *thr(void *v)
{
    thr_arg *a = v;
    for (int j = 0; j < a->n; j++) {
        const char *k = g_keys[a->idx[(j + a->t) % a->n]];
        kiln_status s = kiln_prewarm(a->e, k, NULL);
        CHECK(s == KILN_OK, "thread %d prewarm %s: %s: %s", a->t, k, kiln_status_name(s),
              kiln_last_error());
    }
    return NULL;
}

/* The body of one worker process; returns its exit status. */
static int worker(const char *dir, int p, int T, int S, int P, int warm, int go_fd,
                  int ready_fd)
{
    static char name[64];
    snprintf(name, sizeof name, "worker %d", p);
    st_case_name = name;
    alarm(120);
    load_keys();
    st_log_reset();
    kiln_engine *e = st_engine(dir, "", 0);
    int idx[MAXK];
    int n = proc_keys(p, S, P, idx);
    char c = 'r';
    CHECK(write(ready_fd, &c, 1) == 1, "ready: %s", strerror(errno));
    close(ready_fd);
    ssize_t r;
    do r = read(go_fd, &c, 1); while (r < 0 && errno == EINTR);
    CHECK(r == 0, "barrier: %zd", r);
    close(go_fd);

    pthread_t th[8];
    thr_arg ta[8];
    for (int t = 0; t < T; t++) {
        ta[t] = (thr_arg){e, t, n, idx};
        CHECK(pthread_create(&th[t], NULL, thr, &ta[t]) == 0, "pthread_create");
    }
    for (int t = 0; t < T; t++) pthread_join(th[t], NULL);

    kiln_cache_stats cs;
    CHECK(kiln_cache_stats_get(e, &cs) == KILN_OK, "stats");
    CHECK(cs.writable, "writable layer lost");
    for (int j = 0; j < n; j++) {
        char needle[160];
        snprintf(needle, sizeof needle, "compiling %s\n", g_keys[idx[j]]);
        int k = st_log_count(needle);
        CHECK(k <= 1, "%s compiled %d times in one process", g_keys[idx[j]], k);
    }
    CHECK(cs.compiles <= n, "%lld compiles for %d keys", (long long)cs.compiles, n);
    if (warm) CHECK(cs.compiles == 0, "%lld compiles on a warm db", (long long)cs.compiles);
    CHECK(st_log_warnings() == 0, "warning lines");
    CHECK(st_log_count("busy") + st_log_count("locked") + st_log_count("BUSY") +
              st_log_count("LOCKED") == 0,
          "busy/locked in the log");
    kiln_engine_destroy(e);
    return 0;
}

typedef struct {
    int want, seen;
} list_ctx;
static int g_count[MAXK];

static int on_entry(const kiln_cache_entry *en, void *user)
{
    list_ctx *l = user;
    l->seen++;
    for (int i = 0; i < g_nkeys; i++)
        if (strcmp(en->key, g_keys[i]) == 0) {
            g_count[i]++;
            return 0;
        }
    CHECK(0, "unexpected row %s", en->key);
    return 0;
}

static void stampede(const char *dir, int N, int T, int S, int P, int warm)
{
    char name[96];
    snprintf(name, sizeof name, "stampede %dx%d %s", N, T, warm ? "warm" : "fresh");
    st_case(name, 240);
    int go[2], ready[2];
    CHECK(pipe2(go, O_CLOEXEC) == 0 && pipe2(ready, O_CLOEXEC) == 0, "pipe");
    pid_t pids[32];
    for (int p = 0; p < N; p++) {
        pids[p] = fork();
        CHECK(pids[p] >= 0, "fork");
        if (pids[p]) continue;
        close(go[1]);
        close(ready[0]);
        if (p % 2 == 0) _exit(worker(dir, p, T, S, P, warm, go[0], ready[1]));
        /* exec'd worker: keep the two pipe ends across exec */
        fcntl(go[0], F_SETFD, 0);
        fcntl(ready[1], F_SETFD, 0);
        char a[8][32];
        snprintf(a[0], 32, "%d", p);
        snprintf(a[1], 32, "%d", T);
        snprintf(a[2], 32, "%d", S);
        snprintf(a[3], 32, "%d", P);
        snprintf(a[4], 32, "%d", warm);
        snprintf(a[5], 32, "%d", go[0]);
        snprintf(a[6], 32, "%d", ready[1]);
        execl("/proc/self/exe", "f_store2_stampede", "--stampede-worker", dir, a[0], a[1],
              a[2], a[3], a[4], a[5], a[6], (char *)NULL);
        _exit(99);
    }
    close(go[0]);
    close(ready[1]);
    char c;
    int got = 0;
    while (got < N) {
        ssize_t r = read(ready[0], &c, 1);
        if (r < 0 && errno == EINTR) continue;
        CHECK(r == 1, "only %d of %d workers ready", got, N);
        got++;
    }
    close(ready[0]);
    double t0 = st_now();
    close(go[1]); /* release them all */
    int failed = 0;
    for (int p = 0; p < N; p++) {
        int status;
        waitpid(pids[p], &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "worker %d (%s): status %#x\n", p, p % 2 ? "exec" : "fork", status);
            failed++;
        }
    }
    CHECK(failed == 0, "%d workers failed", failed);
    double secs = st_now() - t0;

    /* each key exactly once, verified, integrity ok */
    kiln_engine *e = st_engine(dir, "", 0);
    memset(g_count, 0, sizeof g_count);
    list_ctx l = {0, 0};
    CHECK(kiln_cache_list(e, NULL, on_entry, &l) == KILN_OK, "list");
    int want = S + N * P;
    for (int i = 0; i < want; i++)
        CHECK(g_count[i] == 1, "%s present %d times", g_keys[i], g_count[i]);
    CHECK(l.seen == want, "%d rows, want %d", l.seen, want);
    kiln_cache_verify_report v;
    memset(&v, 0, sizeof v);
    CHECK(kiln_cache_verify(e, 0, &v, NULL, NULL) == KILN_OK, "verify");
    CHECK(v.bad == 0 && v.integrity_ok && v.checked == want,
          "verify: %lld checked, %lld bad, integrity %d", (long long)v.checked,
          (long long)v.bad, v.integrity_ok);
    kiln_engine_destroy(e);
    char db[700];
    snprintf(db, sizeof db, "%s/kiln.db", dir);
    CHECK(st_integrity_ok(db), "integrity_check");
    CHECK(st_log_warnings() == 0, "warnings in the checking engine");
    st_case_ok("%d keys, %d procs (%d exec'd), %.1fs", want, N, N / 2, secs);
}

int main(int argc, char **argv)
{
    if (argc == 10 && strcmp(argv[1], "--stampede-worker") == 0) {
        signal(SIGPIPE, SIG_IGN);
        return worker(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), atoi(argv[6]),
                      atoi(argv[7]), atoi(argv[8]), atoi(argv[9]));
    }
    st_init(argc, argv, "stampede"); /* its alarm handler: forked workers too */
    load_keys();
    static const int quick[][2] = {{2, 8}, {8, 1}};
    static const int full[][2] = {{2, 1}, {2, 8}, {8, 1}, {8, 8}, {32, 1}, {32, 8}};
    const int(*m)[2] = st_long ? full : quick;
    int nm = st_long ? 6 : 2;
    int S = st_long ? 4 : 2;
    for (int i = 0; i < nm; i++) {
        int N = m[i][0], T = m[i][1];
        int P = (g_nkeys - S) / N;
        if (P > (st_long ? 4 : 2)) P = st_long ? 4 : 2;
        char sub[32];
        snprintf(sub, sizeof sub, "s%dx%d", N, T);
        const char *dir = st_dir(sub);
        stampede(dir, N, T, S, P, 0);
        stampede(dir, N, T, S, P, 1);
    }
    return 0;
}
