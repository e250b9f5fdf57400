/* kiln_prewarm.c -- `kiln prewarm`: expand keys and patterns, then compile
 * them in parallel, with a progress bar or one line per key.
 *
 * Two ways to run compiles in parallel (--workers):
 *   threads    (default) N threads calling kiln_prewarm() on one shared
 *              engine; the engine's single-flight table and cache are shared.
 *   processes  fork() N workers, each with its own engine; the parent hands
 *              out one key at a time over a pipe and reads a result record
 *              back.  The workers share the cache through SQLite.  A crash
 *              inside NVRTC fails only the key that worker held.
 * Measured on a 16-core host with NVRTC 13.0 (32 sm_90a d128 keys,
 * CUDA_CACHE_DISABLE=1 so that the driver's ComputeCache, which NVRTC 13
 * consults, cannot answer): -j1 16.6 s, -j16 2.2 s in threads (7.5x);
 * 18.1 s / 2.3 s in processes (7.9x).  NVRTC does not serialize threads.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kiln.h"
#include "kiln_cli.h"

enum mode { MODE_PROCESSES, MODE_THREADS };
static const enum mode default_mode = MODE_THREADS;
#define MAX_JOBS 1024

/* ===================================================================== */
/* The key set: insertion order, duplicates dropped                       */
/* ===================================================================== */

typedef struct keyset {
    char **v;
    size_t n, cap;
    size_t *slot; /* open addressing: index + 1, 0 empty */
    size_t nslot; /* power of two, > 2n */
    size_t added; /* keys offered by the current pattern (dups included) */
    int oom;
} keyset;

static size_t hash_str(const char *s)
{
    size_t h = 1469598103934665603ull;
    while (*s) h = (h ^ (unsigned char)*s++) * 1099511628211ull;
    return h;
}

static int keyset_grow(keyset *ks)
{
    size_t ns = ks->nslot ? ks->nslot * 2 : 256;
    size_t *slot = calloc(ns, sizeof *slot);
    if (!slot) return -1;
    for (size_t i = 0; i < ks->n; i++) {
        size_t h = hash_str(ks->v[i]) & (ns - 1);
        while (slot[h]) h = (h + 1) & (ns - 1);
        slot[h] = i + 1;
    }
    free(ks->slot);
    ks->slot = slot;
    ks->nslot = ns;
    return 0;
}

/* 0 ok (added or already there), -1 out of memory. */
static int keyset_add(keyset *ks, const char *key)
{
    size_t h;
    ks->added++;
    if ((ks->n + 1) * 2 >= ks->nslot && keyset_grow(ks)) return -1;
    h = hash_str(key) & (ks->nslot - 1);
    while (ks->slot[h]) {
        if (strcmp(ks->v[ks->slot[h] - 1], key) == 0) return 0;
        h = (h + 1) & (ks->nslot - 1);
    }
    if (ks->n == ks->cap) {
        size_t cap = ks->cap ? ks->cap * 2 : 64;
        char **v = realloc(ks->v, cap * sizeof *v);
        if (!v) return -1;
        ks->v = v;
        ks->cap = cap;
    }
    ks->v[ks->n] = strdup(key);
    if (!ks->v[ks->n]) return -1;
    ks->slot[h] = ++ks->n;
    return 0;
}

static void keyset_free(keyset *ks)
{
    for (size_t i = 0; i < ks->n; i++) free(ks->v[i]);
    free(ks->v);
    free(ks->slot);
    memset(ks, 0, sizeof *ks);
}

static int expand_cb(const char *key, void *user)
{
    keyset *ks = user;
    if (!key) return 0;
    if (keyset_add(ks, key)) {
        ks->oom = 1;
        return 1;
    }
    return 0;
}

/* Add one key or pattern.  0, or an exit status (error printed). */
static int add_spec(keyset *ks, const char *text, const char *arch,
                    const char *where)
{
    kiln_status s;
    char canon[CLI_KEY_MAX];
    ks->added = 0;
    if (cli_is_pattern(text)) {
        s = kiln_key_expand(text, arch, expand_cb, ks);
        if (ks->oom) {
            fprintf(stderr, "kiln: prewarm: out of memory\n");
            return EXIT_FAIL;
        }
        if (s != KILN_OK) {
            int rc = cli_key_error(s, text);
            if (where) fprintf(stderr, "kiln: (at %s)\n", where);
            return rc;
        }
        if (ks->added == 0) {
            fprintf(stderr, "kiln: pattern '%s' matches no valid key%s%s\n",
                    text, where ? " at " : "", where ? where : "");
            return EXIT_USAGE;
        }
        return 0;
    }
    s = kiln_key_canonical(text, arch, canon, sizeof canon);
    if (s != KILN_OK) {
        int rc = cli_key_error(s, text);
        if (where) fprintf(stderr, "kiln: (at %s)\n", where);
        return rc;
    }
    if (keyset_add(ks, canon)) {
        fprintf(stderr, "kiln: prewarm: out of memory\n");
        return EXIT_FAIL;
    }
    return 0;
}

static int add_file(keyset *ks, const char *path, const char *arch)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0;
    int rc = 0;
    if (!f) {
        fprintf(stderr, "kiln: prewarm: cannot open '%s': %s\n", path,
                strerror(errno));
        return EXIT_USAGE;
    }
    while (rc == 0 && (len = getline(&line, &cap, f)) >= 0) {
        char *p = line, *end, *hash;
        char where[300];
        lineno++;
        if ((size_t)len != strlen(line)) {
            fprintf(stderr, "kiln: prewarm: %s:%ld: NUL byte in line\n",
                    path, lineno);
            rc = EXIT_USAGE;
            break;
        }
        if ((hash = strchr(p, '#'))) *hash = '\0';
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
        end = p + strlen(p);
        while (end > p && (end[-1] == ' ' || end[-1] == '\t' ||
                           end[-1] == '\r' || end[-1] == '\n'))
            *--end = '\0';
        if (!*p) continue;
        snprintf(where, sizeof where, "%s:%ld", path, lineno);
        rc = add_spec(ks, p, arch, where);
    }
    if (rc == 0 && ferror(f)) {
        fprintf(stderr, "kiln: prewarm: cannot read '%s': %s\n", path,
                strerror(errno));
        rc = EXIT_FAIL;
    }
    free(line);
    if (f != stdin) fclose(f);
    return rc;
}

/* ===================================================================== */
/* Progress and results                                                   */
/* ===================================================================== */

typedef struct run {
    char **keys;
    size_t n;
    int quiet, bar;
    double t0;
    size_t done, nok, nfail, ncompiled, ncached; /* ncompiled: known per key */
    const char *last; /* last key finished */
    int bar_drawn;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} run;

static run *g_run; /* for the log hooks */

static int term_width(void)
{
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20)
        return ws.ws_col;
    return 80;
}

/* Callers hold r->mu. */
static void bar_clear(run *r)
{
    if (r->bar && r->bar_drawn) {
        fputs("\r\033[K", stderr);
        r->bar_drawn = 0;
    }
}

static void bar_draw(run *r)
{
    enum { W = 20 };
    char head[96], tail[32];
    int width, room, klen, filled;
    const char *key = r->last ? r->last : "";
    if (!r->bar) return;
    filled = r->n ? (int)(r->done * W / r->n) : W;
    memset(head, '.', W + 2);
    head[0] = '[';
    memset(head + 1, '#', (size_t)filled);
    head[W + 1] = ']';
    head[W + 2] = '\0';
    snprintf(head + W + 2, sizeof head - (W + 2), " %zu/%zu", r->done, r->n);
    snprintf(tail, sizeof tail, " %.1fs", now_s() - r->t0);
    width = term_width() - 1;
    room = width - (int)strlen(head) - (int)strlen(tail) - 1;
    klen = (int)strlen(key);
    fprintf(stderr, "\r%s", head);
    if (room >= 8 && klen > 0) {
        if (klen <= room)
            fprintf(stderr, " %s", key);
        else
            fprintf(stderr, " ...%s", key + klen - (room - 3));
    }
    fprintf(stderr, "%s\033[K", tail);
    fflush(stderr);
    r->bar_drawn = 1;
}

static void hook_before(void)
{
    if (!g_run) return;
    pthread_mutex_lock(&g_run->mu);
    bar_clear(g_run);
    pthread_mutex_unlock(&g_run->mu);
}

static void hook_after(void)
{
    if (!g_run) return;
    pthread_mutex_lock(&g_run->mu);
    bar_draw(g_run);
    pthread_mutex_unlock(&g_run->mu);
}

/* compiled: 1 compiled, 0 was cached, -1 unknown. */
static void report(run *r, size_t idx, kiln_status s, double ms, int compiled,
                   const char *msg)
{
    const char *key = r->keys[idx];
    pthread_mutex_lock(&r->mu);
    r->done++;
    r->last = key;
    if (s == KILN_OK) {
        r->nok++;
        if (compiled == 1) r->ncompiled++;
        if (compiled == 0) r->ncached++;
        if (!r->bar && !r->quiet)
            fprintf(stderr, "ok %s %.0f ms%s\n", key, ms,
                    compiled == 0 ? " (cached)" : "");
    } else {
        const char *p = msg && *msg ? msg : kiln_status_string(s);
        r->nfail++;
        bar_clear(r);
        fprintf(stderr, "FAIL %s: %s: ", key, kiln_status_name(s));
        /* continuation lines indented */
        while (*p) {
            const char *nl = strchr(p, '\n');
            size_t len = nl ? (size_t)(nl - p) : strlen(p);
            fprintf(stderr, "%.*s\n", (int)len, p);
            p += len + (nl ? 1 : 0);
            if (*p) fputs("    ", stderr);
        }
    }
    if (r->bar) bar_draw(r);
    fflush(stderr);
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* ===================================================================== */
/* Threads                                                                */
/* ===================================================================== */

typedef struct tctx {
    run *r;
    kiln_engine *eng;
    size_t next;      /* under r->mu */
    int nthreads;
    int running;      /* threads still running, under r->mu */
} tctx;

static int64_t compiles_now(kiln_engine *eng)
{
    kiln_cache_stats st;
    memset(&st, 0, sizeof st);
    if (kiln_cache_stats_get(eng, &st) != KILN_OK) return -1;
    return st.compiles;
}

static void *thread_main(void *p)
{
    tctx *t = p;
    run *r = t->r;
    for (;;) {
        size_t idx;
        int64_t c0, c1;
        int compiled = -1;
        double t0, ms;
        kiln_status s;
        char *msg = NULL;
        pthread_mutex_lock(&r->mu);
        idx = t->next++;
        pthread_mutex_unlock(&r->mu);
        if (idx >= r->n) break;
        c0 = compiles_now(t->eng);
        t0 = now_s();
        s = kiln_prewarm(t->eng, r->keys[idx], NULL);
        ms = (now_s() - t0) * 1e3;
        if (s != KILN_OK) msg = strdup(kiln_last_error());
        c1 = compiles_now(t->eng);
        /* No compile finished while this call ran: it was a hit.  Alone, a
         * change is this call's compile; with others it is unknown. */
        if (c0 >= 0 && c1 >= 0) {
            if (c1 == c0) compiled = 0;
            else if (t->nthreads == 1) compiled = 1;
        }
        report(r, idx, s, ms, compiled, msg);
        free(msg);
    }
    pthread_mutex_lock(&r->mu);
    t->running--;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* Returns the engine's compile count delta (or -1), via *compiled. */
static int run_threads(run *r, int jobs, int64_t *compiled)
{
    tctx t;
    pthread_t *tid;
    int started = 0;
    int64_t c0, c1;

    memset(&t, 0, sizeof t);
    t.r = r;
    t.eng = cli_engine();
    if (!t.eng) return EXIT_FAIL;
    tid = calloc((size_t)jobs, sizeof *tid);
    if (!tid) {
        kiln_engine_destroy(t.eng);
        fprintf(stderr, "kiln: prewarm: out of memory\n");
        return EXIT_FAIL;
    }
    c0 = compiles_now(t.eng);
    t.nthreads = jobs;
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < jobs; i++) {
        t.running++;
        if (pthread_create(&tid[i], NULL, thread_main, &t) != 0) {
            t.running--;
            break;
        }
        started++;
    }
    if (started == 0) {
        /* No thread: do the work here. */
        pthread_mutex_unlock(&r->mu);
        t.nthreads = 1;
        t.running = 1;
        thread_main(&t);
        pthread_mutex_lock(&r->mu);
    } else if (started < jobs) {
        t.nthreads = started;
    }
    while (t.running > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 250 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&r->cv, &r->mu, &ts);
        if (r->bar) bar_draw(r);
    }
    pthread_mutex_unlock(&r->mu);
    for (int i = 0; i < started; i++) pthread_join(tid[i], NULL);
    free(tid);
    c1 = compiles_now(t.eng);
    *compiled = (c0 >= 0 && c1 >= 0) ? c1 - c0 : -1;
    kiln_engine_destroy(t.eng);
    return 0;
}

/* ===================================================================== */
/* Processes                                                              */
/* ===================================================================== */

typedef struct rec {
    uint32_t idx;
    int32_t status;
    int32_t compiled;
    uint32_t msglen;
    double ms;
} rec;

static int write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* 1 read, 0 EOF before any byte, -1 error or short. */
static int read_all(int fd, void *buf, size_t n)
{
    char *p = buf;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        if (r == 0) return got == 0 ? 0 : -1;
        got += (size_t)r;
    }
    return 1;
}

static int child_bar; /* the parent draws a bar: clear the line before logs */

static void child_hook_before(void)
{
    if (child_bar) fputs("\r\033[K", stderr);
}

static void child_main(run *r, int task_fd, int res_fd)
{
    kiln_engine *eng;
    uint32_t idx;
    g_run = NULL;
    child_bar = r->bar;
    cli_set_log_hook(child_hook_before, NULL);
    eng = cli_engine();
    if (!eng) _exit(3);
    while (read_all(task_fd, &idx, sizeof idx) == 1) {
        rec rc;
        int64_t c0, c1;
        double t0;
        kiln_status s;
        const char *msg = "";
        if (idx >= r->n) break;
        c0 = compiles_now(eng);
        t0 = now_s();
        s = kiln_prewarm(eng, r->keys[idx], NULL);
        rc.ms = (now_s() - t0) * 1e3;
        if (s != KILN_OK) msg = kiln_last_error();
        {
            /* kiln_last_error() is valid until the next kiln call. */
            size_t ml = strlen(msg);
            char *m = malloc(ml + 1);
            if (m) memcpy(m, msg, ml + 1);
            c1 = compiles_now(eng);
            rc.idx = idx;
            rc.status = (int32_t)s;
            rc.compiled = (c0 >= 0 && c1 >= 0) ? (c1 > c0) : -1;
            rc.msglen = m ? (uint32_t)ml : 0;
            if (write_all(res_fd, &rc, sizeof rc) ||
                (rc.msglen && write_all(res_fd, m, rc.msglen))) {
                free(m);
                break;
            }
            free(m);
        }
    }
    kiln_engine_destroy(eng);
    _exit(0);
}

typedef struct worker {
    pid_t pid;
    int task_fd, res_fd; /* parent's ends; -1 closed */
    long busy;           /* key index in flight, -1 none */
    int alive;
} worker;

static void describe_exit(int wstatus, char *buf, size_t n)
{
    if (WIFSIGNALED(wstatus))
        snprintf(buf, n, "worker process killed by signal %d (%s)",
                 WTERMSIG(wstatus), strsignal(WTERMSIG(wstatus)));
    else if (WIFEXITED(wstatus))
        snprintf(buf, n, "worker process exited with status %d",
                 WEXITSTATUS(wstatus));
    else
        snprintf(buf, n, "worker process ended");
}

static void worker_close(worker *w)
{
    if (w->task_fd >= 0) close(w->task_fd);
    if (w->res_fd >= 0) close(w->res_fd);
    w->task_fd = w->res_fd = -1;
}

static int send_task(worker *w, size_t idx)
{
    uint32_t i = (uint32_t)idx;
    if (write_all(w->task_fd, &i, sizeof i)) return -1;
    w->busy = (long)idx;
    return 0;
}

static int run_processes(run *r, int jobs, int *fell_back)
{
    worker *w = calloc((size_t)jobs, sizeof *w);
    struct pollfd *pfd = calloc((size_t)jobs, sizeof *pfd);
    int nw = 0, alive;
    size_t next = 0;
    char why[160];

    if (!w || !pfd) {
        free(w);
        free(pfd);
        fprintf(stderr, "kiln: prewarm: out of memory\n");
        return EXIT_FAIL;
    }
    signal(SIGPIPE, SIG_IGN);
    fflush(stdout);
    fflush(stderr);
    for (int i = 0; i < jobs; i++) {
        int tp[2], rp[2];
        pid_t pid;
        if (pipe(tp)) break;
        if (pipe(rp)) {
            close(tp[0]);
            close(tp[1]);
            break;
        }
        pid = fork();
        if (pid < 0) {
            close(tp[0]);
            close(tp[1]);
            close(rp[0]);
            close(rp[1]);
            break;
        }
        if (pid == 0) {
            /* Keep no other worker's pipes open, or their EOF never comes. */
            for (int j = 0; j < nw; j++) worker_close(&w[j]);
            close(tp[1]);
            close(rp[0]);
            child_main(r, tp[0], rp[1]);
        }
        close(tp[0]);
        close(rp[1]);
        w[nw].pid = pid;
        w[nw].task_fd = tp[1];
        w[nw].res_fd = rp[0];
        w[nw].busy = -1;
        w[nw].alive = 1;
        nw++;
    }
    if (nw == 0) {
        free(w);
        free(pfd);
        *fell_back = 1;
        return -1; /* caller runs threads */
    }
    for (int i = 0; i < nw && next < r->n; i++)
        if (send_task(&w[i], next) == 0) next++;
    for (int i = 0; i < nw; i++)
        if (w[i].busy < 0) {
            close(w[i].task_fd);
            w[i].task_fd = -1;
        }

    alive = nw;
    while (alive > 0) {
        int np = 0, pr;
        int map[MAX_JOBS];
        for (int i = 0; i < nw; i++) {
            if (!w[i].alive) continue;
            pfd[np].fd = w[i].res_fd;
            pfd[np].events = POLLIN;
            pfd[np].revents = 0;
            map[np++] = i;
        }
        pr = poll(pfd, (nfds_t)np, 250);
        if (pr < 0 && errno != EINTR) break;
        if (pr <= 0) {
            pthread_mutex_lock(&r->mu);
            if (r->bar) bar_draw(r);
            pthread_mutex_unlock(&r->mu);
            continue;
        }
        for (int k = 0; k < np; k++) {
            worker *x = &w[map[k]];
            rec rc;
            int got;
            if (!(pfd[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            got = read_all(x->res_fd, &rc, sizeof rc);
            if (got == 1 && rc.idx < r->n && (long)rc.idx == x->busy) {
                char *msg = calloc(1, (size_t)rc.msglen + 1);
                if (rc.msglen && (!msg || read_all(x->res_fd, msg, rc.msglen) != 1))
                    got = -1;
                if (got == 1) {
                    x->busy = -1;
                    report(r, rc.idx, (kiln_status)rc.status, rc.ms,
                           rc.compiled, msg);
                    free(msg);
                    if (next < r->n && send_task(x, next) == 0) {
                        next++;
                    } else {
                        close(x->task_fd); /* the worker sees EOF and exits */
                        x->task_fd = -1;
                    }
                    continue;
                }
                free(msg);
            }
            /* EOF or garbage: the worker is gone. */
            {
                int wst = 0;
                worker_close(x);
                waitpid(x->pid, &wst, 0);
                x->alive = 0;
                alive--;
                if (x->busy >= 0) {
                    describe_exit(wst, why, sizeof why);
                    report(r, (size_t)x->busy, KILN_EINTERNAL, 0, -1, why);
                    x->busy = -1;
                }
            }
        }
    }
    /* Keys never handed out (every worker died). */
    for (; next < r->n; next++)
        report(r, next, KILN_EINTERNAL, 0, -1, "no worker process left");
    for (int i = 0; i < nw; i++) {
        if (w[i].alive) {
            worker_close(&w[i]);
            waitpid(w[i].pid, NULL, 0);
        }
    }
    free(w);
    free(pfd);
    return 0;
}

/* ===================================================================== */
/* kiln prewarm                                                           */
/* ===================================================================== */

static int online_cpus(void)
{
    cpu_set_t set;
    long n;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int cmd_prewarm(int argc, char **argv)
{
    cli_args a;
    const char *arch = NULL, *v;
    const char **specs = NULL, **files = NULL;
    int nspecs = 0, nfiles = 0, quiet = 0, jobs = 0, rc = 0, fell_back = 0;
    int dry_run = 0;
    enum mode mode = default_mode;
    keyset ks;
    run r;
    int64_t compiled = -1;
    double wall;

    specs = calloc((size_t)argc + 1, sizeof *specs);
    files = calloc((size_t)argc + 1, sizeof *files);
    if (!specs || !files) {
        free(specs);
        free(files);
        fprintf(stderr, "kiln: prewarm: out of memory\n");
        return EXIT_FAIL;
    }
    cli_args_init(&a, "prewarm", argc, argv);
    while (cli_next(&a)) {
        if (cli_flag(&a, "--quiet") || cli_flag(&a, "-q")) {
            quiet = 1;
        } else if (cli_flag(&a, "--dry-run") || cli_flag(&a, "-n")) {
            dry_run = 1;
        } else if (cli_value(&a, "--arch", NULL, &v)) {
            arch = v;
        } else if (cli_value(&a, "--file", NULL, &v)) {
            if (v) files[nfiles++] = v;
        } else if (cli_value(&a, "--jobs", "-j", &v)) {
            char *end;
            long j;
            if (!v) continue;
            errno = 0;
            j = strtol(v, &end, 10);
            if (errno || end == v || *end || j < 1 || j > MAX_JOBS) {
                rc = cli_usage("prewarm", "-j needs a number from 1 to %d, not '%s'",
                               MAX_JOBS, v);
                goto out;
            }
            jobs = (int)j;
        } else if (cli_value(&a, "--workers", NULL, &v)) {
            if (!v) continue;
            if (strcmp(v, "threads") == 0) mode = MODE_THREADS;
            else if (strcmp(v, "processes") == 0) mode = MODE_PROCESSES;
            else {
                rc = cli_usage("prewarm", "--workers is 'threads' or "
                                          "'processes', not '%s'", v);
                goto out;
            }
        } else if (a.positional) {
            specs[nspecs++] = a.arg;
        } else {
            rc = cli_unknown(&a);
            goto out;
        }
    }
    if (a.help) goto out;
    if (a.error) {
        rc = EXIT_USAGE;
        goto out;
    }
    if (nspecs == 0 && nfiles == 0) {
        rc = cli_usage("prewarm", "no KEY given (and no --file)");
        goto out;
    }

    memset(&ks, 0, sizeof ks);
    for (int i = 0; i < nspecs && rc == 0; i++) {
        if (!specs[i][0]) rc = cli_usage("prewarm", "empty KEY");
        else rc = add_spec(&ks, specs[i], arch, NULL);
    }
    for (int i = 0; i < nfiles && rc == 0; i++) rc = add_file(&ks, files[i], arch);
    if (rc) {
        keyset_free(&ks);
        goto out;
    }
    if (ks.n == 0) {
        fprintf(stderr, "kiln: prewarm: no keys to compile\n");
        keyset_free(&ks);
        goto out;
    }

    if (dry_run) {
        for (size_t i = 0; i < ks.n; i++) printf("%s\n", ks.v[i]);
        if (fflush(stdout) != 0) rc = EXIT_FAIL;
        keyset_free(&ks);
        goto out;
    }
    if (jobs == 0) jobs = online_cpus();
    if ((size_t)jobs > ks.n) jobs = (int)ks.n;

    memset(&r, 0, sizeof r);
    r.keys = ks.v;
    r.n = ks.n;
    r.quiet = quiet;
    r.bar = !quiet && isatty(STDERR_FILENO);
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.cv, NULL);
    g_run = &r;
    cli_set_log_hook(hook_before, hook_after);
    r.t0 = now_s();
    pthread_mutex_lock(&r.mu);
    bar_draw(&r);
    pthread_mutex_unlock(&r.mu);

    if (mode == MODE_PROCESSES) {
        rc = run_processes(&r, jobs, &fell_back);
        if (rc < 0) {
            mode = MODE_THREADS;
            rc = 0;
        }
    }
    if (mode == MODE_THREADS) rc = run_threads(&r, jobs, &compiled);
    wall = now_s() - r.t0;

    pthread_mutex_lock(&r.mu);
    bar_clear(&r);
    pthread_mutex_unlock(&r.mu);
    cli_set_log_hook(NULL, NULL);
    g_run = NULL;

    if (rc == 0) {
        int64_t ncomp = r.ncompiled, ncached;
        if (mode == MODE_THREADS && compiled >= 0) ncomp = compiled;
        if (ncomp > (int64_t)r.nok) ncomp = (int64_t)r.nok;
        ncached = (int64_t)r.nok - ncomp;
        if (fell_back && !quiet)
            fprintf(stderr, "kiln: prewarm: cannot fork workers; used threads\n");
        if (!quiet || r.nfail)
            fprintf(stderr,
                    "prewarm: %zu key%s: %lld compiled, %lld already cached, "
                    "%zu failed in %.1f s (%d %s)\n",
                    r.n, r.n == 1 ? "" : "s", (long long)ncomp,
                    (long long)ncached, r.nfail, wall, jobs,
                    mode == MODE_THREADS ? (jobs == 1 ? "thread" : "threads")
                                         : (jobs == 1 ? "process" : "processes"));
        rc = r.nfail ? EXIT_FAIL : EXIT_OK;
    }
    pthread_cond_destroy(&r.cv);
    pthread_mutex_destroy(&r.mu);
    keyset_free(&ks);
out:
    free(specs);
    free(files);
    return rc;
}
