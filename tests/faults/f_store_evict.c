/* f_store_evict.c -- issue 5 item 12: KILN_CACHE_MAX_BYTES, LRU by last_used.
 *
 * Cases: the cap holds at every commit (insert and eviction are one
 * transaction); LRU order follows last_used; last_used/hits written at most
 * once a minute per key (and at close); a reader whose row was evicted gets a
 * miss, never an error or other bytes; 8 writer + 8 reader processes under a
 * tiny cap: size within cap plus slack, no deadlock (alarm), integrity ok. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util_store_synth.h"

static kiln_logger LOG = {KILN_LOG_WARN, NULL, NULL};

static kiln_cache *open_cache(const char *dir)
{
    kiln_cache *c;
    CHECK(kiln__cache_open(dir, NULL, &LOG, &c) == KILN_OK, "open");
    CHECK(*kiln__cache_path(c), "not writable");
    return c;
}

static int64_t total(const char *dir)
{
    char db[700];
    snprintf(db, sizeof db, "%s/kiln.db", dir);
    return st_sql_int(db, "SELECT coalesce(sum(bytes), 0) FROM kernels");
}

int main(int argc, char **argv)
{
    st_init(argc, argv, "evict");
    st_ref *R = st_refs(1);
    int64_t cub = (int64_t)R[0].len;
    char cap[32];
    snprintf(cap, sizeof cap, "%lld", (long long)(cub * 3 + cub / 2)); /* 3 rows fit */
    setenv("KILN_CACHE_MAX_BYTES", cap, 1);

    /* ---- the cap, and LRU */
    st_case("cap after each insert; LRU", 30);
    const char *dir = st_dir("lru");
    char db[700];
    snprintf(db, sizeof db, "%s/kiln.db", dir);
    kiln_cache *c = open_cache(dir);
    st_syn s[6];
    for (int i = 0; i < 6; i++) st_syn_make(&s[i], "lru", i);
    for (int i = 0; i < 3; i++) CHECK(st_syn_put(c, &s[i], &R[0]) == KILN_OK, "put");
    CHECK(total(dir) == 3 * cub, "3 rows expected");
    /* make row 0 the most recently used, row 1 the least */
    st_sql_exec(db, "UPDATE kernels SET last_used = strftime('%s','now') - 1000 WHERE key = 'synthetic/lru/1'");
    st_sql_exec(db, "UPDATE kernels SET last_used = strftime('%s','now') - 500 WHERE key = 'synthetic/lru/2'");
    st_sql_exec(db, "UPDATE kernels SET last_used = strftime('%s','now') - 10 WHERE key = 'synthetic/lru/0'");
    CHECK(st_syn_put(c, &s[3], &R[0]) == KILN_OK, "put");
    CHECK(total(dir) <= 3 * cub, "cap exceeded: %lld", (long long)total(dir));
    CHECK(st_syn_get(c, &s[1], &R[0]) == KILN_ENOTFOUND, "LRU row 1 should be gone");
    CHECK(st_syn_get(c, &s[0], &R[0]) == KILN_OK, "recently used row 0 evicted");
    CHECK(st_syn_get(c, &s[3], &R[0]) == KILN_OK, "the new row evicted");
    kiln__cache_close(c);
    st_case_ok("total %lld <= cap %s", (long long)total(dir), cap);

    /* ---- last_used written at most once a minute per key */
    st_case("last_used at most once a minute", 30);
    dir = st_dir("stamp");
    snprintf(db, sizeof db, "%s/kiln.db", dir);
    c = open_cache(dir);
    CHECK(st_syn_put(c, &s[0], &R[0]) == KILN_OK, "put");
    st_sql_exec(db, "UPDATE kernels SET last_used = 1");
    for (int i = 0; i < 50; i++) CHECK(st_syn_get(c, &s[0], &R[0]) == KILN_OK, "get");
    CHECK(st_sql_int(db, "SELECT hits FROM kernels") == 1, "hits written more than once");
    CHECK(st_sql_int(db, "SELECT last_used FROM kernels") > 1000, "first hit not stamped");
    kiln__cache_close(c);
    CHECK(st_sql_int(db, "SELECT hits FROM kernels") == 50, "hits not flushed at close");
    st_case_ok("1 write for 50 hits, flushed at close");

    /* ---- a reader whose entry vanishes gets a miss */
    st_case("reader's entry evicted", 30);
    dir = st_dir("vanish");
    kiln_cache *a = open_cache(dir), *b = open_cache(dir);
    CHECK(st_syn_put(a, &s[0], &R[0]) == KILN_OK, "put");
    CHECK(st_syn_get(b, &s[0], &R[0]) == KILN_OK, "hit");
    CHECK(kiln__cache_evict(a, 0, NULL) == KILN_OK, "evict");
    CHECK(st_syn_get(b, &s[0], &R[0]) == KILN_ENOTFOUND, "a vanished row must be a miss");
    kiln__cache_close(a);
    kiln__cache_close(b);
    st_case_ok("miss");

    /* ---- 8 writers + 8 readers, tiny cap */
    int per = st_long ? 400 : 60;
    st_case("8 writers + 8 readers, tiny cap", 120);
    dir = st_dir("storm");
    kiln__cache_close(open_cache(dir));
    pid_t pids[16];
    for (int p = 0; p < 16; p++) {
        pids[p] = fork();
        CHECK(pids[p] >= 0, "fork");
        if (pids[p]) continue;
        alarm(100);
        kiln_cache *k;
        if (kiln__cache_open(dir, NULL, &LOG, &k) != KILN_OK) _exit(2);
        unsigned seed = (unsigned)p * 7919u;
        for (int i = 0; i < per; i++) {
            st_syn x;
            seed = seed * 1103515245u + 12345u;
            if (p < 8) {
                st_syn_make(&x, "storm", p * 100000 + i);
                if (st_syn_put(k, &x, &R[0]) != KILN_OK) _exit(3);
            } else {
                st_syn_make(&x, "storm", (seed >> 8) % 8 * 100000 + (seed >> 4) % (i + 1));
                kiln_status g = st_syn_get(k, &x, &R[0]); /* exits on other bytes */
                if (g != KILN_OK && g != KILN_ENOTFOUND) _exit(4);
            }
        }
        kiln__cache_close(k);
        _exit(0);
    }
    int64_t worst = 0;
    for (int p = 0; p < 16; p++) {
        int64_t t = total(dir);
        if (t > worst) worst = t;
        int status;
        waitpid(pids[p], &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "worker %d: status %d", p, status);
    }
    snprintf(db, sizeof db, "%s/kiln.db", dir);
    int64_t t = total(dir);
    CHECK(t <= cub * 3 + cub / 2, "size %lld past the cap %s", (long long)t, cap);
    CHECK(worst <= cub * 3 + cub / 2, "size %lld seen past the cap", (long long)worst);
    CHECK(st_integrity_ok(db), "integrity");
    st_case_ok("%d puts, final %lld bytes, worst seen %lld, cap %s", 8 * per,
               (long long)t, (long long)worst, cap);
    unsetenv("KILN_CACHE_MAX_BYTES");
    return 0;
}
