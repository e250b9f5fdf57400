/* f_store2_upgrade.c -- issue 5 item 10: upgrades never produce a stale hit.
 *
 * A change of NVRTC version (the engine learns it from the meta memo
 * "nvrtc:<path>:<size>:<mtime>", which we plant), of kiln schema (a newer
 * user_version), of compile options, template text or NVRTC version inside a
 * row's ident (rows crafted with the SQLite API: the same `hash` and a
 * different `ident`, digest recomputed so only the identity differs, holding
 * another kernel's valid cubin; and a self-consistent row under another
 * hash), in the writable layer and in a read-only one, and sm_90 vs sm_90a.
 * Each time: the launch compiles (engine stats), the fake driver loads only
 * the reference bytes of this key (fresh compile), zero unverified loads. */
#include <sqlite3.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include "cache/cache_int.h"
#include "dispatch/key.h"
#include "runtime/nvrtc.h"
#include "util_store.h"

static kiln_cache_stats stats(kiln_engine *e)
{
    kiln_cache_stats s;
    CHECK(kiln_cache_stats_get(e, &s) == KILN_OK, "stats");
    return s;
}

typedef struct {
    uint8_t hash[16], ident[KILN_IDENT_BYTES];
    int ident_len;
} row_id;

static row_id read_row(const char *db, const char *key)
{
    row_id r;
    memset(&r, 0, sizeof r);
    sqlite3 *h;
    CHECK(sqlite3_open(db, &h) == SQLITE_OK, "open %s", db);
    sqlite3_stmt *st;
    CHECK(sqlite3_prepare_v2(h, "SELECT hash, ident FROM kernels WHERE key = ?", -1, &st,
                             NULL) == SQLITE_OK, "prepare");
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    CHECK(sqlite3_step(st) == SQLITE_ROW, "no row for %s", key);
    CHECK(sqlite3_column_bytes(st, 0) == 16, "hash size");
    r.ident_len = sqlite3_column_bytes(st, 1);
    CHECK(r.ident_len == KILN_IDENT_BYTES, "ident size %d", r.ident_len);
    memcpy(r.hash, sqlite3_column_blob(st, 0), 16);
    memcpy(r.ident, sqlite3_column_blob(st, 1), (size_t)r.ident_len);
    sqlite3_finalize(st);
    sqlite3_close(h);
    return r;
}

/* Replace r0's row (by key) with: hash, ident, cubin (digest consistent). */
static void plant(const char *db, const char *key, const uint8_t hash[16],
                  const uint8_t *ident, const st_ref *cub, int delete_first)
{
    sqlite3 *h;
    CHECK(sqlite3_open(db, &h) == SQLITE_OK, "open");
    if (delete_first) {
        sqlite3_stmt *d;
        sqlite3_prepare_v2(h, "DELETE FROM kernels WHERE key = ?", -1, &d, NULL);
        sqlite3_bind_text(d, 1, key, -1, SQLITE_STATIC);
        CHECK(sqlite3_step(d) == SQLITE_DONE, "delete: %s", sqlite3_errmsg(h));
        sqlite3_finalize(d);
    }
    uint8_t dig[16];
    kiln__cache_digest(ident, KILN_IDENT_BYTES, cub->cubin, cub->len, dig);
    sqlite3_stmt *st;
    CHECK(sqlite3_prepare_v2(h,
                             "INSERT OR REPLACE INTO kernels (hash, key, nvrtc, bytes, "
                             "created, last_used, digest, ident, cubin) VALUES "
                             "(?, ?, 'x', ?, strftime('%s','now'), strftime('%s','now'), "
                             "?, ?, ?)",
                             -1, &st, NULL) == SQLITE_OK,
          "prepare: %s", sqlite3_errmsg(h));
    sqlite3_bind_blob(st, 1, hash, 16, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)cub->len);
    sqlite3_bind_blob(st, 4, dig, 16, SQLITE_STATIC);
    sqlite3_bind_blob(st, 5, ident, KILN_IDENT_BYTES, SQLITE_STATIC);
    sqlite3_bind_blob(st, 6, cub->cubin, (int)cub->len, SQLITE_STATIC);
    CHECK(sqlite3_step(st) == SQLITE_DONE, "insert: %s", sqlite3_errmsg(h));
    sqlite3_finalize(st);
    sqlite3_close(h);
}

/* Launch r on an engine over (dir, ro); it must compile exactly once and
 * load only r's reference bytes; then a second engine on dir must hit. */
static void expect_recompile(const char *dir, const char *ro, const st_ref *r,
                             int then_hit)
{
    kiln_engine *e = st_engine(dir, ro, 0);
    int b0 = st_bad_loads();
    CHECK(st_launch(e, r) == 1, "no load");
    kiln_cache_stats s = stats(e);
    CHECK(s.compiles == 1, "stale hit: %lld compiles, %lld disk hits",
          (long long)s.compiles, (long long)s.disk_hits);
    CHECK(st_bad_loads() == b0, "unverified load");
    kiln_engine_destroy(e);
    if (!then_hit) return;
    e = st_engine(dir, ro, 0);
    CHECK(st_launch(e, r) == 1, "no load");
    s = stats(e);
    CHECK(s.compiles == 0 && s.disk_hits == 1, "the fresh row is not served: %lld compiles",
          (long long)s.compiles);
    kiln_engine_destroy(e);
}

/* Prewarm key in a fresh process (fork+exec); it must compile `want` times. */
static void child_prewarm(const char *dir, const char *key, int want)
{
    pid_t p = fork();
    CHECK(p >= 0, "fork");
    if (p == 0) {
        char w[8];
        snprintf(w, sizeof w, "%d", want);
        execl("/proc/self/exe", "f_store2_upgrade", "--prewarm-child", dir, key, w,
              (char *)NULL);
        _exit(99);
    }
    int status;
    waitpid(p, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child prewarm (want %d "
          "compiles): status %#x", want, status);
}

static int prewarm_child(const char *dir, const char *key, int want)
{
    st_case_name = "prewarm child";
    alarm(60);
    kiln_engine *e = st_engine(dir, "", 0);
    CHECK(kiln_prewarm(e, key, NULL) == KILN_OK, "prewarm: %s", kiln_last_error());
    CHECK(stats(e).compiles == want, "%lld compiles, want %d", (long long)stats(e).compiles,
          want);
    CHECK(st_log_warnings() == 0, "warnings");
    kiln_engine_destroy(e);
    return 0;
}

static char g_db[700];
static const char *warm_dir(const char *name)
{
    const char *d = st_dir(name);
    snprintf(g_db, sizeof g_db, "%s/kiln.db", d);
    st_copy(st_ref_db(), g_db);
    return d;
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "--prewarm-child") == 0)
        return prewarm_child(argv[2], argv[3], atoi(argv[4]));
    st_init(argc, argv, "upgrade");
    st_ref *R = st_refs(2);
    const char *dir;

    /* sanity: the copied reference db is served */
    st_case("baseline: copy of the reference db hits", 30);
    dir = warm_dir("base");
    {
        kiln_engine *e = st_engine(dir, "", 0);
        st_launch(e, &R[0]);
        CHECK(stats(e).compiles == 0 && stats(e).disk_hits == 1, "baseline not a hit");
        kiln_engine_destroy(e);
    }
    st_case_ok("hit");

    /* ---- NVRTC version change, learned through the memo */
    st_case("NVRTC version change (memo)", 60);
    {
        char path[640], memo[800];
        kiln__nvrtc_path(path, sizeof path);
        struct stat sb;
        CHECK(*path && stat(path, &sb) == 0, "no NVRTC file found (%s)", path);
        snprintf(memo, sizeof memo, "nvrtc:%s:%lld:%lld.%09ld", path, (long long)sb.st_size,
                 (long long)sb.st_mtim.tv_sec, sb.st_mtim.tv_nsec);
        dir = warm_dir("nvrtc");
        char sql[1200];
        /* this NVRTC file is "12.0" now: the 13.x rows must not be served */
        snprintf(sql, sizeof sql,
                 "INSERT OR REPLACE INTO meta(name, value) VALUES ('%s', '12.0')", memo);
        CHECK(st_sql_exec(g_db, sql) == SQLITE_OK, "plant memo");
        expect_recompile(dir, "", &R[0], 1);
        CHECK(st_sql_int(g_db, "SELECT count(*) FROM kernels WHERE nvrtc = '12.0'") == 1,
              "the 12.0 compile is not stored under 12.0");
        /* back to the real version: its own row, not the 12.0 one */
        snprintf(sql, sizeof sql, "DELETE FROM meta WHERE name = '%s'", memo);
        CHECK(st_sql_exec(g_db, sql) == SQLITE_OK, "drop memo");
        kiln_engine *e = st_engine(dir, "", 0);
        st_launch(e, &R[0]);
        CHECK(stats(e).compiles == 0 && stats(e).disk_hits == 1, "real-version row lost");
        kiln_engine_destroy(e);
        CHECK(st_sql_int(g_db, "SELECT count(*) FROM kernels") == 3, "rows");
        /* A copy of the NVRTC library (another mtime), in a new process (NVRTC
         * loads once per process): re-identified by loading it, same version,
         * same rows; then a different version claimed for the copy misses. */
        char copy[700];
        snprintf(copy, sizeof copy, "%s/libnvrtc-copy.so", st_root());
        st_copy(path, copy);
        setenv("KILN_NVRTC_PATH", copy, 1);
        child_prewarm(dir, R[0].key, 0);
        char like[800];
        snprintf(like, sizeof like, "SELECT count(*) FROM meta WHERE name LIKE 'nvrtc:%s:%%'",
                 copy);
        CHECK(st_sql_int(g_db, like) == 1, "copy not memoized");
        snprintf(sql, sizeof sql, "UPDATE meta SET value = '13.9' WHERE name LIKE 'nvrtc:%s:%%'",
                 copy);
        CHECK(st_sql_exec(g_db, sql) == SQLITE_OK, "memo");
        child_prewarm(dir, R[0].key, 1);
        child_prewarm(dir, R[0].key, 0);
        CHECK(st_sql_int(g_db, "SELECT count(*) FROM kernels WHERE nvrtc = '13.9'") == 1,
              "the 13.9 compile is not stored under 13.9");
        unsetenv("KILN_NVRTC_PATH");
        unlink(copy);
    }
    st_case_ok("12.0 and 13.9 each compiled once; real version kept its row; a copied file re-identified");

    /* ---- a newer kiln schema */
    st_case("newer schema (user_version 2)", 60);
    dir = warm_dir("schema");
    CHECK(st_sql_exec(g_db, "PRAGMA user_version = 2") == SQLITE_OK, "set");
    int64_t rows = st_sql_int(g_db, "SELECT count(*) FROM kernels");
    expect_recompile(dir, "", &R[0], 0);
    CHECK(st_sql_int(g_db, "PRAGMA user_version") == 2, "newer db rewritten");
    CHECK(st_sql_int(g_db, "SELECT count(*) FROM kernels") == rows, "newer db written to");
    {
        /* as a read-only layer */
        char ro[700];
        snprintf(ro, sizeof ro, "%s/ro.db", st_dir("schema-ro"));
        st_copy(st_ref_db(), ro);
        CHECK(st_sql_exec(ro, "PRAGMA journal_mode = DELETE; PRAGMA user_version = 2") ==
                  SQLITE_OK, "set");
        expect_recompile(st_dir("schema-rw"), ro, &R[0], 0);
    }
    st_case_ok("not used, left as it was");

    /* ---- crafted rows: same hash, other ident; other hash */
    static const struct {
        const char *what;
        int off, n; /* where in the ident, from the end */
    } parts[] = {
        {"compile options", 16, 16},
        {"NVRTC version", 40, 24},
        {"template text", 56, 16},
    };
    for (int layer = 0; layer < 2; layer++) {
        for (int i = 0; i < 4; i++) {
            char name[96];
            snprintf(name, sizeof name, "%s %s%s", i < 3 ? "same hash, other" : "other hash,",
                     i < 3 ? parts[i].what : "same key text", layer ? " (ro layer)" : "");
            st_case(name, 60);
            dir = warm_dir(layer ? "craft-ro" : "craft");
            row_id id = read_row(g_db, R[0].key);
            CHECK(id.ident[KILN_IDENT_BYTES - 58] == 'S' && id.ident[KILN_IDENT_BYTES - 57] == 16,
                  "ident layout changed");
            uint8_t other[KILN_IDENT_BYTES];
            memcpy(other, id.ident, sizeof other);
            if (i < 3) {
                other[KILN_IDENT_BYTES - parts[i].off] ^= 0x5a;
                if (i == 1) memcpy(other + KILN_IDENT_BYTES - 40, "12.0", 4);
                plant(g_db, R[0].key, id.hash, other, &R[1], 0);
            } else {
                /* a valid row of another identity (another NVRTC) for this key text */
                memset(other + KILN_IDENT_BYTES - 40, 0, 24);
                memcpy(other + KILN_IDENT_BYTES - 40, "11.8", 4);
                XXH128_canonical_t c;
                XXH128_canonicalFromHash(&c, XXH3_128bits(other, sizeof other));
                plant(g_db, R[0].key, c.digest, other, &R[1], 1);
            }
            if (layer == 0) {
                expect_recompile(dir, "", &R[0], 1);
            } else {
                char ro[700];
                snprintf(ro, sizeof ro, "%s/ro.db", dir);
                CHECK(st_sql_exec(g_db, "PRAGMA journal_mode = DELETE") == SQLITE_OK, "mode");
                CHECK(rename(g_db, ro) == 0, "rename");
                expect_recompile(st_dir("craft-rw"), ro, &R[0], 1);
            }
            st_case_ok("recompiled; %d unverified loads", st_bad_loads());
        }
    }

    /* ---- sm_90 vs sm_90a */
    st_case("sm_90 vs sm_90a", 60);
    dir = st_dir("arch");
    {
        kiln_engine *e = st_engine(dir, "", 0);
        const char *k[2] = {"hstu_fwd/sm_90/bf16/d32/none", "hstu_fwd/sm_90a/bf16/d32/none"};
        void *b[2];
        size_t n[2];
        for (int j = 0; j < 2; j++)
            CHECK(kiln_prewarm(e, k[j], NULL) == KILN_OK, "prewarm %s: %s", k[j],
                  kiln_last_error());
        CHECK(stats(e).compiles == 2, "%lld compiles for 2 arches", (long long)stats(e).compiles);
        for (int j = 0; j < 2; j++) {
            char f[700];
            snprintf(f, sizeof f, "%s/%d.cubin", dir, j);
            CHECK(kiln_cache_export(e, k[j], f) == KILN_OK, "export %s", k[j]);
            FILE *fp = fopen(f, "rb");
            CHECK(fp, "open");
            fseek(fp, 0, SEEK_END);
            n[j] = (size_t)ftell(fp);
            rewind(fp);
            b[j] = malloc(n[j]);
            CHECK(fread(b[j], 1, n[j], fp) == n[j], "read");
            fclose(fp);
        }
        kiln_engine_destroy(e);
        snprintf(g_db, sizeof g_db, "%s/kiln.db", dir);
        CHECK(st_sql_int(g_db, "SELECT count(DISTINCT hash) FROM kernels") == 2, "two rows");
        CHECK(st_sql_int(g_db, "SELECT count(DISTINCT arch) FROM kernels") == 2, "two arches");
        CHECK(n[0] != n[1] || memcmp(b[0], b[1], n[0]) != 0, "sm_90 and sm_90a cubins equal");
        /* a second engine hits each, compiling neither */
        e = st_engine(dir, "", 0);
        for (int j = 0; j < 2; j++) CHECK(kiln_prewarm(e, k[j], NULL) == KILN_OK, "prewarm");
        CHECK(stats(e).compiles == 0, "recompiled");
        kiln_engine_destroy(e);
        free(b[0]);
        free(b[1]);
    }
    st_case_ok("two rows, two distinct cubins");
    printf("f_store2_upgrade: %d loads, %d unverified\n", st_loads(), st_bad_loads());
    CHECK(st_bad_loads() == 0, "unverified loads");
    return 0;
}
