/* f_store_kill.c -- issue 5 item 2: SIGKILL of a writer inside a transaction,
 * a checkpoint and an eviction.
 *
 * Each round forks a writer that inserts synthetic rows (real cubin bytes),
 * evicts, deletes and checkpoints in a loop, and kills it with SIGKILL after
 * a random 2-40 ms.  Then, with no manual action: a new cache opens within
 * the deadline, every committed row verifies (kiln__cache_verify: no bad row,
 * integrity ok), no torn blob is served, and a write (BEGIN IMMEDIATE from a
 * plain SQLite connection, then a kiln put/get) succeeds at once -- no lock
 * left behind.  Quick: 25 rounds; --long: 120. */
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util_store_synth.h"

static const kiln_logger LOG = {KILN_LOG_WARN, NULL, NULL};

static void writer(const char *dir, const st_ref *r, int round)
{
    kiln_cache *c;
    if (kiln__cache_open(dir, NULL, &LOG, &c) != KILN_OK) _exit(2);
    sqlite3 *h = NULL;
    char db[700];
    snprintf(db, sizeof db, "%s/kiln.db", dir);
    sqlite3_open(db, &h);
    sqlite3_busy_timeout(h, 2000);
    for (long i = 0;; i++) {
        st_syn s;
        st_syn_make(&s, "k", round * 100000L + i);
        st_syn_put(c, &s, r);
        if (i % 7 == 3) kiln__cache_evict(c, (int64_t)r->len * 12, NULL);
        if (i % 5 == 1) sqlite3_exec(h, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
        if (i % 11 == 2) {
            /* a long transaction to be killed inside */
            sqlite3_exec(h, "BEGIN IMMEDIATE; UPDATE kernels SET hits = hits + 1;"
                            " DELETE FROM kernels WHERE rowid IN (SELECT rowid FROM kernels"
                            " ORDER BY random() LIMIT 2);", NULL, NULL, NULL);
            usleep(1000);
            sqlite3_exec(h, "COMMIT", NULL, NULL, NULL);
        }
    }
}

int main(int argc, char **argv)
{
    st_init(argc, argv, "kill");
    st_ref *R = st_refs(1);
    int rounds = st_long ? 120 : 25;
    const char *dir = st_dir("kill");
    char db[700];
    snprintf(db, sizeof db, "%s/kiln.db", dir);
    unsigned seed = (unsigned)getpid();
    int64_t max_rows = 0;
    st_case("kill -9 rounds", 30 + rounds * 6);
    for (int round = 0; round < rounds; round++) {
        pid_t p = fork();
        CHECK(p >= 0, "fork");
        if (p == 0) writer(dir, &R[0], round);
        seed = seed * 1103515245u + 12345u;
        usleep(2000 + (seed >> 16) % 38000);
        kill(p, SIGKILL);
        int status;
        waitpid(p, &status, 0);

        /* No lock left behind: a plain write transaction starts at once. */
        sqlite3 *h;
        CHECK(sqlite3_open(db, &h) == SQLITE_OK, "open");
        double t0 = st_now();
        int rc = sqlite3_exec(h, "BEGIN IMMEDIATE; COMMIT;", NULL, NULL, NULL);
        CHECK(rc == SQLITE_OK, "round %d: BEGIN IMMEDIATE after the kill: %s", round, sqlite3_errmsg(h));
        CHECK(st_now() - t0 < 1, "round %d: a lock was held", round);
        sqlite3_close(h);

        kiln_cache *c;
        kiln_logger lg = {KILN_LOG_WARN, NULL, NULL};
        t0 = st_now();
        CHECK(kiln__cache_open(dir, NULL, &lg, &c) == KILN_OK, "open");
        CHECK(st_now() - t0 < 5, "open took %.1fs", st_now() - t0);
        CHECK(*kiln__cache_path(c), "round %d: not writable after the kill", round);
        kiln_cache_verify_report v;
        memset(&v, 0, sizeof v);
        v.integrity_ok = 1;
        CHECK(kiln__cache_verify(c, 0, &v, NULL, NULL) == KILN_OK, "verify");
        CHECK(v.bad == 0 && v.integrity_ok, "round %d: %lld bad rows, integrity %d",
              round, (long long)v.bad, v.integrity_ok);
        if (v.checked > max_rows) max_rows = v.checked;
        /* every committed row is served intact (st_syn_get compares bytes) */
        for (long i = 0; i < 64; i++) {
            st_syn s;
            st_syn_make(&s, "k", round * 100000L + i);
            st_syn_get(c, &s, &R[0]);
        }
        st_syn s;
        st_syn_make(&s, "after", round);
        CHECK(st_syn_put(c, &s, &R[0]) == KILN_OK, "put");
        CHECK(st_syn_get(c, &s, &R[0]) == KILN_OK, "round %d: the next write was lost", round);
        kiln__cache_close(c);
        CHECK(st_count_prefix(dir, "kiln.db.corrupt") == 0, "round %d: file called corrupt", round);
    }
    st_case_ok("%d rounds, up to %lld rows, 0 bad", rounds, (long long)max_rows);
    return 0;
}
