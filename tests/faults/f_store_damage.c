/* f_store_damage.c -- issue 5 items 3 (damaged database) and 4 (damaged blob)
 * at the engine level, through the fake driver.
 *
 * Each case damages a copy of a warm cache (two reference kernels), creates
 * an engine on it and launches both kernels.  Passes only if: no crash and
 * no hang (per-case alarm), every launch succeeds and loads bytes equal to a
 * fresh compile of its key, no load of unverified bytes, at most one warning
 * per incident, a damaged file moved aside (never unlinked) when it is a
 * regular file, and a second engine afterwards works without warnings. */
#include <fcntl.h>
#include <sqlite3.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util_store.h"

static st_ref *R;

static void write_bytes(const char *path, const void *b, size_t n, off_t at)
{
    int fd = open(path, O_WRONLY | O_CREAT, 0600);
    CHECK(fd >= 0, "open %s", path);
    CHECK(pwrite(fd, b, n, at) == (ssize_t)n, "pwrite %s", path);
    close(fd);
}

/* Launch both refs on an engine over dir (and ro), then again on a second
 * engine; returns the warnings of the first engine. */
static int run_engines(const char *dir, const char *ro, int max_warn)
{
    kiln_engine *e = st_engine(dir, ro, 0);
    st_launch(e, &R[0]);
    st_launch(e, &R[1]);
    st_launch(e, &R[0]); /* a hit in memory */
    kiln_engine_destroy(e);
    int w = st_log_warnings();
    CHECK(w <= max_warn, "%d warnings for one incident (max %d)", w, max_warn);
    st_log_reset();
    e = st_engine(dir, ro, 0);
    st_launch(e, &R[0]);
    st_launch(e, &R[1]);
    kiln_engine_destroy(e);
    return w;
}

typedef void (*damage_fn)(const char *db, const char *dir);

static void d_zero(const char *db, const char *dir) { (void)dir; truncate(db, 0); }
static void d_trunc_mid(const char *db, const char *dir) { (void)dir; truncate(db, 4096 + 1234); }
static void d_trunc_page(const char *db, const char *dir) { (void)dir; truncate(db, 2 * 4096); }
static void d_random(const char *db, const char *dir)
{
    (void)dir;
    unlink(db);
    unsigned char b[3 * 4096];
    unsigned s = 12345;
    for (size_t i = 0; i < sizeof b; i++) b[i] = (unsigned char)((s = s * 1103515245u + 12345u) >> 16);
    write_bytes(db, b, sizeof b, 0);
}
static void d_header(const char *db, const char *dir)
{
    (void)dir;
    unsigned char c = 'X';
    write_bytes(db, &c, 1, 3); /* "SQLite format 3" -> "SQLXte ..." */
}
static void d_btree(const char *db, const char *dir)
{
    (void)dir;
    unsigned char b[4096];
    memset(b, 0xA5, sizeof b);
    write_bytes(db, b, sizeof b, 4096); /* page 2: a table's root or interior */
}
static void d_foreign(const char *db, const char *dir)
{
    (void)dir;
    unlink(db);
    sqlite3 *h;
    sqlite3_open(db, &h);
    sqlite3_exec(h, "CREATE TABLE accounts(id INTEGER PRIMARY KEY, name TEXT); INSERT INTO accounts VALUES (1,'a');", NULL, NULL, NULL);
    sqlite3_close(h);
}
static void d_newer(const char *db, const char *dir) { (void)dir; st_sql_exec(db, "PRAGMA user_version = 99"); }
static void d_directory(const char *db, const char *dir) { (void)dir; unlink(db); mkdir(db, 0700); }
static void d_fifo(const char *db, const char *dir) { (void)dir; unlink(db); mkfifo(db, 0600); }
static void d_devzero(const char *db, const char *dir) { (void)dir; unlink(db); symlink("/dev/zero", db); }
static void d_wal_mispaired(const char *db, const char *dir)
{
    /* A -wal written for another database, left beside ours. */
    char other[700], wal[700], owal[720];
    snprintf(other, sizeof other, "%s/other.db", dir);
    snprintf(wal, sizeof wal, "%s-wal", db);
    snprintf(owal, sizeof owal, "%s-wal", other);
    sqlite3 *h;
    sqlite3_open(other, &h);
    sqlite3_exec(h, "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;"
                    " CREATE TABLE kernels(x); CREATE TABLE z(y);"
                    " INSERT INTO z VALUES (randomblob(20000));", NULL, NULL, NULL);
    st_copy(owal, wal);
    sqlite3_close(h);
}

static const struct {
    const char *name;
    damage_fn fn;
    int moved;  /* a corrupt-* copy must appear */
    int warn;   /* warnings allowed (one incident) */
} DB_CASES[] = {
    {"db zero length", d_zero, 0, 0},
    {"db truncated mid-page", d_trunc_mid, 1, 1},
    {"db truncated at a page", d_trunc_page, 1, 1},
    {"db random bytes", d_random, 1, 1},
    {"db flipped header byte", d_header, 1, 1},
    {"db trashed b-tree page", d_btree, 1, 1},
    {"db another application's", d_foreign, 1, 1},
    {"db newer schema", d_newer, 0, 1},
    {"db a directory", d_directory, 0, 1},
    {"db a FIFO", d_fifo, 0, 1},
    {"db symlink to /dev/zero", d_devzero, 0, 1},
    {"db mispaired -wal", d_wal_mispaired, -1, 1},
};

static void db_cases(void)
{
    int n = (int)(sizeof DB_CASES / sizeof DB_CASES[0]);
    for (int i = 0; i < n; i++) {
        st_case(DB_CASES[i].name, 60);
        char name[32];
        snprintf(name, sizeof name, "db%d", i);
        const char *dir = st_dir(name);
        char db[700];
        snprintf(db, sizeof db, "%s/kiln.db", dir);
        st_copy(st_ref_db(), db);
        DB_CASES[i].fn(db, dir);
        double t0 = st_now();
        kiln_engine *e = st_engine(dir, "", 0);
        double open_s = st_now() - t0;
        CHECK(open_s < 10, "opening took %.1fs", open_s);
        kiln_engine_destroy(e);
        st_log_reset();
        int w = run_engines(dir, "", DB_CASES[i].warn);
        (void)w;
        int moved = st_count_prefix(dir, "kiln.db.corrupt-");
        if (DB_CASES[i].moved == 1) CHECK(moved >= 1, "damaged file not moved aside");
        if (DB_CASES[i].moved == 0) CHECK(moved == 0, "a file was moved aside needlessly");
        st_case_ok("moved aside: %d, loads %d, unverified loads %d", moved, st_loads(), st_bad_loads());
    }
}

/* ---------------------------------------------------------------- blobs */

static const struct {
    const char *name;
    const char *sql; /* ?1 stands for R[0]'s key, ?2 for R[1]'s */
} BLOB_CASES[] = {
    {"blob flipped bit", NULL /* flip_bit() */},
    {"blob truncated", "UPDATE kernels SET cubin = substr(cubin, 1, length(cubin) / 2) WHERE key = ?1"},
    {"blob truncated, bytes updated",
     "UPDATE kernels SET cubin = substr(cubin, 1, length(cubin) / 2), bytes = length(cubin) / 2"
     " WHERE key = ?1"},
    {"blobs of two rows swapped", NULL /* swap() */},
    {"blob another kernel's valid cubin",
     "UPDATE kernels SET cubin = (SELECT cubin FROM kernels WHERE key = ?2),"
     " bytes = (SELECT bytes FROM kernels WHERE key = ?2) WHERE key = ?1"},
};

static void flip_bit(const char *db)
{
    /* A real single-bit flip, through the blob API. */
    sqlite3 *h;
    sqlite3_open(db, &h);
    sqlite3_stmt *st;
    sqlite3_prepare_v2(h, "SELECT rowid FROM kernels WHERE key = ?1", -1, &st, NULL);
    sqlite3_bind_text(st, 1, R[0].key, -1, SQLITE_STATIC);
    CHECK(sqlite3_step(st) == SQLITE_ROW, "no row for %s", R[0].key);
    sqlite3_int64 rowid = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_blob *b;
    CHECK(sqlite3_blob_open(h, "main", "kernels", "cubin", rowid, 1, &b) == SQLITE_OK, "blob_open");
    unsigned char c;
    int at = sqlite3_blob_bytes(b) / 3;
    sqlite3_blob_read(b, &c, 1, at);
    c ^= 0x10;
    sqlite3_blob_write(b, &c, 1, at);
    sqlite3_blob_close(b);
    sqlite3_close(h);
}

static void damage_blob(const char *db, int i)
{
    if (i == 0) {
        flip_bit(db);
        return;
    }
    if (i == 3) { /* UPDATE's subqueries would see the first row's new blob */
        char *sql = sqlite3_mprintf(
            "CREATE TEMP TABLE s AS SELECT key, cubin FROM kernels WHERE key IN (%Q, %Q);"
            "UPDATE kernels SET cubin = (SELECT cubin FROM s WHERE s.key = CASE kernels.key"
            " WHEN %Q THEN %Q ELSE %Q END) WHERE key IN (%Q, %Q);",
            R[0].key, R[1].key, R[0].key, R[1].key, R[0].key, R[0].key, R[1].key);
        CHECK(st_sql_exec(db, sql) == SQLITE_OK, "swap");
        sqlite3_free(sql);
        CHECK(st_sql_int(db, "SELECT count(DISTINCT digest) FROM kernels") == 2, "x");
        return;
    }
    sqlite3 *h;
    sqlite3_open(db, &h);
    sqlite3_stmt *st;
    CHECK(sqlite3_prepare_v2(h, BLOB_CASES[i].sql, -1, &st, NULL) == SQLITE_OK, "%s", sqlite3_errmsg(h));
    sqlite3_bind_text(st, 1, R[0].key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, R[1].key, -1, SQLITE_STATIC);
    CHECK(sqlite3_step(st) == SQLITE_DONE, "%s", sqlite3_errmsg(h));
    CHECK(sqlite3_changes(h) >= 1, "no row changed");
    sqlite3_finalize(st);
    sqlite3_close(h);
}

static void blob_cases(void)
{
    int n = (int)(sizeof BLOB_CASES / sizeof BLOB_CASES[0]);
    for (int ro = 0; ro < 2; ro++) {
        for (int i = 0; i < n; i++) {
            char cname[96];
            snprintf(cname, sizeof cname, "%s%s", BLOB_CASES[i].name, ro ? " (ro layer)" : "");
            st_case(cname, 60);
            char name[32];
            snprintf(name, sizeof name, "blob%d-%d", ro, i);
            const char *dir = st_dir(name);
            char db[700], layer[700], src[700];
            snprintf(src, sizeof src, "%s/src.db", dir);
            st_copy(st_ref_db(), src);
            damage_blob(src, i);
            int swapped = i == 3;
            if (ro) {
                /* The damaged database as a read-only layer, baked. */
                snprintf(layer, sizeof layer, "%s/layer.db", dir);
                /* bake drops bad rows: copy instead, switched to DELETE mode */
                st_sql_exec(src, "PRAGMA journal_mode = DELETE");
                st_copy(src, layer);
                snprintf(db, sizeof db, "%s/w", dir);
                mkdir(db, 0700);
            } else {
                snprintf(db, sizeof db, "%s/kiln.db", dir);
                rename(src, db);
            }
            const char *wdir = ro ? db : dir;
            int w = run_engines(wdir, ro ? layer : "", swapped ? 2 : 1);
            CHECK(w == (swapped ? 2 : 1), "%d warnings (want one per bad row)", w);
            char wdb[800];
            snprintf(wdb, sizeof wdb, "%s/kiln.db", wdir);
            if (!ro) {
                CHECK(st_sql_int(wdb, "SELECT count(*) FROM kernels") == 2, "rows not rebuilt");
                CHECK(st_integrity_ok(wdb), "integrity_check");
            } else {
                /* the layer is never changed */
                CHECK(st_sql_int(layer, "SELECT count(*) FROM kernels") == 2, "layer changed");
            }
            st_case_ok("warnings %d, unverified loads %d", w, st_bad_loads());
        }
    }
}

int main(int argc, char **argv)
{
    st_init(argc, argv, "damage");
    R = st_refs(2);
    /* A fresh compile equals the reference (NVRTC is deterministic), so a
     * rebuilt kernel can be compared byte for byte. */
    db_cases();
    blob_cases();
    CHECK(st_bad_loads() == 0, "unverified loads");
    printf("f_store_damage: %d loads, 0 unverified\n", st_loads());
    return 0;
}
