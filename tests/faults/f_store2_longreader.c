/* f_store2_longreader.c -- issue 5 item 13: a long reader.
 *
 * 1. A plain SQLite connection holds a read transaction (BEGIN; SELECT ...)
 *    for seconds (quick: 3 s; --long: 120 s) while 2 writer processes insert
 *    64 MB (--long: 1 GB) of fake-but-valid cubins through kiln__cache_put.
 *    Every put lands (no warning), the -wal grows past the limit while the
 *    reader pins it, and after the reader ends, kiln's own next writes
 *    (autocheckpoint, then WAL restart) bring the -wal back within
 *    journal_size_limit; integrity ok, every row verifies.
 * 2. kiln never holds a read transaction across a compile: while a compile
 *    runs in another thread (its "compiling" log line seen, "compiled" not
 *    yet), a plain connection commits and runs wal_checkpoint(TRUNCATE) with
 *    no busy wait -- it must succeed in full (which needs no reader on the
 *    -wal), and the cache's own connection reports SQLITE_TXN_NONE. */
#include <pthread.h>
#include <sqlite3.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cache/cache_int.h"
#include "runtime/engine.h"
#include "util_store_synth.h"

#define BLOB (1u << 20)

static int64_t fsize(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 ? (int64_t)sb.st_size : 0;
}

static int g_child_warn;
static void child_log(int level, const char *line, void *user)
{
    (void)user;
    if (level <= KILN_LOG_WARN) g_child_warn++;
    fprintf(stderr, "writer: %s\n", line);
}
static const kiln_logger CHILD_LOG = {KILN_LOG_WARN, child_log, NULL};

static kiln_status put_blob(kiln_cache *c, const st_syn *s, void *blob, size_t len)
{
    kiln_cache_put_args a;
    memset(&a, 0, sizeof a);
    memcpy(a.hash, s->hash, 16);
    a.ident = s->ident;
    a.ident_len = sizeof s->ident;
    a.f.key = s->key;
    a.f.family = "synthetic";
    a.cubin = blob;
    a.cubin_len = len;
    a.prelude = "";
    a.log = "";
    return kiln__cache_put(c, &a);
}

static void writer(const char *dir, int p, int n)
{
    alarm(st_long ? 580 : 60);
    kiln_cache *c;
    if (kiln__cache_open(dir, NULL, &CHILD_LOG, &c) != KILN_OK) _exit(2);
    if (!*kiln__cache_path(c)) _exit(3);
    size_t len;
    uint8_t *b = st_fake_elf(BLOB - 192, (unsigned)p + 1, &len);
    for (int i = 0; i < n; i++) {
        st_syn s;
        st_syn_make(&s, "lr", p * 100000L + i);
        memcpy(b + 64, &i, sizeof i); /* each blob different */
        if (put_blob(c, &s, b, len) != KILN_OK) _exit(4);
    }
    kiln__cache_close(c);
    free(b);
    _exit(g_child_warn ? 5 : 0);
}

/* ---- case 2 */
typedef struct {
    kiln_engine *e;
    const char *key;
    kiln_status st;
} comp_arg;

static void *compile_thr(void *v)
{
    comp_arg *a = v;
    a->st = kiln_prewarm(a->e, a->key, NULL);
    return NULL;
}

int main(int argc, char **argv)
{
    st_init(argc, argv, "longreader");
    st_ref *R = st_refs(1);
    int hold = st_long ? 120 : 3;
    int per = st_long ? 512 : 32; /* per writer, 1 MB each, 2 writers */

    st_case("read txn held while 2 processes insert", st_long ? 600 : 90);
    const char *dir = st_dir("lr");
    char db[700], wal[720];
    snprintf(db, sizeof db, "%s/kiln.db", dir);
    snprintf(wal, sizeof wal, "%s-wal", db);
    kiln_cache *c;
    kiln_logger lg = {KILN_LOG_WARN, NULL, NULL};
    CHECK(kiln__cache_open(dir, NULL, &lg, &c) == KILN_OK, "open");
    st_syn s0;
    st_syn_make(&s0, "lr-first", 0);
    CHECK(st_syn_put(c, &s0, &R[0]) == KILN_OK, "put");

    sqlite3 *rd;
    CHECK(sqlite3_open_v2(db, &rd, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK, "open reader");
    CHECK(sqlite3_exec(rd, "BEGIN; SELECT count(*) FROM kernels;", NULL, NULL, NULL) ==
              SQLITE_OK, "begin: %s", sqlite3_errmsg(rd));
    CHECK(sqlite3_txn_state(rd, NULL) == SQLITE_TXN_READ, "no read txn");
    double t0 = st_now();
    pid_t w[2];
    for (int p = 0; p < 2; p++) {
        w[p] = fork();
        CHECK(w[p] >= 0, "fork");
        if (w[p] == 0) writer(dir, p, per);
    }
    int64_t wal_max = 0;
    int done = 0;
    while (done < 2 || st_now() - t0 < hold) {
        int64_t sz = fsize(wal);
        if (sz > wal_max) wal_max = sz;
        for (int p = 0; p < 2; p++) {
            int status;
            if (w[p] && waitpid(w[p], &status, WNOHANG) == w[p]) {
                CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "writer %d: status %#x",
                      p, status);
                w[p] = 0;
                done++;
            }
        }
        usleep(20000);
    }
    double held = st_now() - t0;
    int64_t sz = fsize(wal);
    if (sz > wal_max) wal_max = sz;
    CHECK(sqlite3_exec(rd, "SELECT count(*) FROM kernels; COMMIT;", NULL, NULL, NULL) ==
              SQLITE_OK, "end reader");
    sqlite3_close(rd);
    CHECK(wal_max > CACHE_WAL_LIMIT, "the reader did not pin the -wal (max %lld)",
          (long long)wal_max);
    CHECK(st_sql_int(db, "SELECT count(*) FROM kernels") == 1 + 2 * per,
          "rows: %lld, want %d (a put was dropped)",
          (long long)st_sql_int(db, "SELECT count(*) FROM kernels"), 1 + 2 * per);
    /* kiln's own next writes: commit (autocheckpoint, nobody pins the wal
     * now), then a write that restarts the wal and truncates it to the limit */
    int64_t after = 0;
    for (int i = 1; i <= 4; i++) {
        st_syn s;
        st_syn_make(&s, "lr-after", i);
        CHECK(st_syn_put(c, &s, &R[0]) == KILN_OK, "put");
        after = fsize(wal);
    }
    CHECK(after <= CACHE_WAL_LIMIT + 64 * 1024,
          "-wal %lld bytes after the reader ended and 4 commits (limit %d)", (long long)after,
          CACHE_WAL_LIMIT);
    kiln_cache_verify_report v;
    memset(&v, 0, sizeof v);
    CHECK(kiln__cache_verify(c, 0, &v, NULL, NULL) == KILN_OK, "verify");
    CHECK(v.bad == 0 && v.integrity_ok && v.checked == 5 + 2 * per,
          "verify: %lld checked, %lld bad, integrity %d", (long long)v.checked,
          (long long)v.bad, v.integrity_ok);
    kiln__cache_close(c);
    st_case_ok("held %.1fs over %d MB; -wal peak %.1f MB, after %.1f MB (limit %d MB)", held,
               2 * per, wal_max / 1048576.0, after / 1048576.0, CACHE_WAL_LIMIT >> 20);

    /* ---- no read transaction across a compile */
    st_case("no read txn across a compile", 120);
    dir = st_dir("compile");
    snprintf(db, sizeof db, "%s/kiln.db", dir);
    snprintf(wal, sizeof wal, "%s-wal", db);
    kiln_engine *e = st_engine(dir, "", 0);
    /* make the cache connection do real reads first: a hit, and a miss */
    CHECK(kiln_prewarm(e, R[0].key, NULL) == KILN_OK, "prewarm");
    sqlite3 *h;
    CHECK(sqlite3_open(db, &h) == SQLITE_OK, "open");
    sqlite3_busy_timeout(h, 0);
    CHECK(sqlite3_exec(h, "CREATE TABLE IF NOT EXISTS other(x)", NULL, NULL, NULL) ==
              SQLITE_OK, "create: %s", sqlite3_errmsg(h));
    int rounds = st_long ? 6 : 2, tries = 0, full = 0, txn_seen = 0;
    static const char *keys[] = {"hstu_fwd/sm_80/bf16/d128/causal/rab",
                                 "hstu_fwd/sm_80/fp16/d128/causal+local/rab",
                                 "hstu_fwd/sm_80/bf16/d64/causal+deltaq/rab",
                                 "hstu_fwd/sm_80/fp16/d64/none/rab",
                                 "hstu_fwd/sm_80/bf16/d256/none",
                                 "hstu_fwd/sm_80/fp16/d256/causal"};
    for (int r = 0; r < rounds; r++) {
        st_log_reset();
        comp_arg a = {e, keys[r], KILN_OK};
        pthread_t th;
        CHECK(pthread_create(&th, NULL, compile_thr, &a) == 0, "thread");
        while (!st_log_count("compiling ")) usleep(1000);
        while (!st_log_count("compiled ")) {
            if (sqlite3_txn_state(e->cache->w.db, NULL) != SQLITE_TXN_NONE &&
                !st_log_count("compiled "))
                txn_seen++;
            int rc = sqlite3_exec(h, "INSERT INTO other VALUES (randomblob(4096))", NULL,
                                  NULL, NULL);
            CHECK(rc == SQLITE_OK, "insert beside a compile: %s", sqlite3_errmsg(h));
            int logn = -1, ckpt = -1;
            rc = sqlite3_wal_checkpoint_v2(h, NULL, SQLITE_CHECKPOINT_TRUNCATE, &logn, &ckpt);
            if (st_log_count("compiled ")) break; /* the compile ended meanwhile */
            tries++;
            CHECK(rc == SQLITE_OK, "checkpoint beside a compile: %s (a read txn is held)",
                  sqlite3_errmsg(h));
            if (logn == ckpt && fsize(wal) == 0) full++;
            usleep(2000);
        }
        pthread_join(th, NULL);
        CHECK(a.st == KILN_OK, "compile %s: %s", keys[r], kiln_last_error());
    }
    sqlite3_close(h);
    CHECK(tries > 0, "no checkpoint fell inside a compile");
    CHECK(full == tries, "%d of %d checkpoints were partial", tries - full, tries);
    CHECK(txn_seen == 0, "the cache connection was in a transaction %d times", txn_seen);
    kiln_cache_stats cs;
    CHECK(kiln_cache_stats_get(e, &cs) == KILN_OK && cs.compiles == rounds + 1, "compiles");
    kiln_engine_destroy(e);
    CHECK(st_integrity_ok(db), "integrity");
    st_case_ok("%d compiles, %d full TRUNCATE checkpoints inside them", rounds, full);
    return 0;
}
