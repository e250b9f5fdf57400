/* layer.c -- opening the cache's databases, and keeping them usable.
 *
 * The writable layer: the directory is created 0700 if missing and refused
 * if it is a symlink, another user's or group/world-writable; kiln.db is
 * refused if it is a symlink, not a regular file or hard-linked.  The
 * connection gets WAL, synchronous=NORMAL, no mmap, a bounded busy timeout and
 * the schema.  A file SQLite calls corrupt (or that is no kiln cache) is
 * renamed aside -- never unlinked: other processes may have it open -- and a
 * fresh one created.  A location that cannot be written is read if that can
 * be done safely, and puts become no-ops.  Every refusal is one warning that
 * names the path and the reason.
 *
 * Read-only layers are opened as file:PATH?mode=ro&immutable=1 URIs and
 * never written. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <fnmatch.h>
#include <unistd.h>

#include "cache/cache_int.h"

#ifndef SQLITE_OPEN_NOFOLLOW /* SQLite < 3.31: the lstat checks still apply */
#define SQLITE_OPEN_NOFOLLOW 0
#endif

/* ---------------------------------------------------------------- schema */

static const char SCHEMA_SQL[] =
    "CREATE TABLE IF NOT EXISTS kernels ("
    " hash BLOB PRIMARY KEY NOT NULL,"
    " key TEXT NOT NULL,"
    " family TEXT, arch TEXT, dtype TEXT, head_dim INTEGER, mask TEXT,"
    " rab INTEGER, block_m INTEGER, block_n INTEGER, warps INTEGER,"
    " template_digest TEXT, nvrtc TEXT, options TEXT,"
    " bytes INTEGER NOT NULL,"
    " regs INTEGER, smem INTEGER, spills INTEGER, compile_ms REAL,"
    " created INTEGER, last_used INTEGER, hits INTEGER NOT NULL DEFAULT 0,"
    " digest BLOB NOT NULL,"
    " ident BLOB NOT NULL,"
    " prelude TEXT, log TEXT,"
    " cubin BLOB NOT NULL);"
    "CREATE INDEX IF NOT EXISTS kernels_key ON kernels(key);"
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY NOT NULL,"
    " value TEXT);";

/* Outcome of setting a connection up. */
enum { S_OK, S_CORRUPT, S_READONLY, S_NEWER, S_BUSY, S_FAIL };

static int classify(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK: return S_OK;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB: return S_CORRUPT;
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return S_BUSY;
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_AUTH:
    case SQLITE_FULL:
    case SQLITE_IOERR: return S_READONLY;
    default: return S_FAIL;
    }
}

int kiln__cache_is_busy(int rc)
{
    return (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED;
}

static void set_why(char *why, size_t n, sqlite3 *db, int rc)
{
    snprintf(why, n, "%s", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
}

/* One integer from a one-row statement (0 if no row). */
static int query_int(sqlite3 *db, const char *sql, int64_t *out)
{
    sqlite3_stmt *st = NULL;
    *out = 0;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) return rc;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int64(st, 0);
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

/* fnmatch(3) for SQL: kiln_match(pattern, key). */
static void sql_match(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    const char *pat = (const char *)sqlite3_value_text(argv[0]);
    const char *key = (const char *)sqlite3_value_text(argv[1]);
    sqlite3_result_int(ctx, pat && key && fnmatch(pat, key, 0) == 0);
}

static void conn_common(sqlite3 *db)
{
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, CACHE_BUSY_MS);
    sqlite3_create_function(db, "kiln_match", 2,
                            SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL,
                            sql_match, NULL, NULL);
}

/* Is this connection's database a kiln cache of our schema?  For read-only
 * connections (nothing is changed). */
static int check_schema_ro(sqlite3 *db, char *why, size_t n)
{
    int64_t v, t;
    int rc = query_int(db, "PRAGMA user_version", &v);
    if (rc == SQLITE_OK)
        rc = query_int(db,
                       "SELECT count(*) FROM sqlite_master WHERE type='table'"
                       " AND name='kernels'",
                       &t);
    if (rc != SQLITE_OK) {
        set_why(why, n, db, rc);
        return classify(rc);
    }
    if (v > KILN_CACHE_SCHEMA) {
        snprintf(why, n, "schema version %lld is newer than this kiln's (%d)",
                 (long long)v, KILN_CACHE_SCHEMA);
        return S_NEWER;
    }
    if (v != KILN_CACHE_SCHEMA || t != 1) {
        snprintf(why, n, "not a kiln cache (schema version %lld)",
                 (long long)v);
        return S_CORRUPT;
    }
    return S_OK;
}

static int create_schema(sqlite3 *db, void *ctx)
{
    (void)ctx;
    int64_t v, t;
    int rc = query_int(db, "PRAGMA user_version", &v);
    if (rc == SQLITE_OK)
        rc = query_int(db,
                       "SELECT count(*) FROM sqlite_master WHERE type='table'"
                       " AND name NOT IN ('kernels','meta')",
                       &t);
    if (rc != SQLITE_OK) return rc;
    if (v > KILN_CACHE_SCHEMA || (v == 0 && t > 0)) return SQLITE_OK; /* re-checked */
    rc = sqlite3_exec(db, SCHEMA_SQL, NULL, NULL, NULL);
    if (rc != SQLITE_OK) return rc;
    char sql[256];
    snprintf(sql, sizeof sql,
             "INSERT OR IGNORE INTO meta(name, value) VALUES"
             " ('created', '%lld'), ('kiln_version', '%d.%d.%d');"
             "PRAGMA user_version = %d;",
             (long long)time(NULL), KILN_VERSION_MAJOR, KILN_VERSION_MINOR,
             KILN_VERSION_PATCH, KILN_CACHE_SCHEMA);
    return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void jitter_sleep(void)
{
    static _Thread_local unsigned seed;
    if (!seed) seed = (unsigned)getpid() ^ (unsigned)now_ms() ^ (unsigned)(uintptr_t)&seed;
    seed = seed * 1103515245u + 12345u;
    struct timespec ts = {0, (long)(10 + (seed >> 16) % 50) * 1000000L};
    nanosleep(&ts, NULL);
}

/* PRAGMA journal_mode = WAL.  Switching a new file out of rollback mode takes
 * an exclusive lock, and SQLite answers SQLITE_BUSY at once, without the busy
 * handler, while another process holds any lock on it -- which is the normal
 * case when several processes open a fresh cache together -- so the busy
 * answer is retried here, for as long as the busy timeout would wait. */
static int set_wal(kiln_cache *c, sqlite3 *db)
{
    int64_t t0 = now_ms();
    for (;;) {
        sqlite3_stmt *st = NULL;
        int rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode = WAL", -1, &st,
                                    NULL);
        if (rc == SQLITE_OK) {
            rc = sqlite3_step(st);
            if (rc == SQLITE_ROW) {
                const char *mode = (const char *)sqlite3_column_text(st, 0);
                if (!mode || strcmp(mode, "wal") != 0)
                    KILN_LOGD(c->log, "cache %s: journal_mode is %s, not wal",
                              c->db_path, mode ? mode : "?");
                rc = SQLITE_OK;
            }
        }
        sqlite3_finalize(st);
        if (!kiln__cache_is_busy(rc) || now_ms() - t0 >= CACHE_BUSY_MS)
            return rc;
        jitter_sleep();
    }
}

/* Set up a read-write connection: pragmas and schema. */
static int setup_rw(kiln_cache *c, sqlite3 *db, char *why, size_t n)
{
    int64_t v = 0, pages = 0, foreign = 0, ours = 0;
    int rc = query_int(db, "PRAGMA user_version", &v); /* reads the header */
    if (rc == SQLITE_OK) rc = query_int(db, "PRAGMA page_count", &pages);
    if (rc != SQLITE_OK) goto fail;
    if (v > KILN_CACHE_SCHEMA) {
        snprintf(why, n,
                 "its schema version %lld is newer than this kiln's (%d); "
                 "leaving it as it is",
                 (long long)v, KILN_CACHE_SCHEMA);
        return S_NEWER;
    }
    if (pages == 0) /* a new file: only now can auto_vacuum be chosen */
        sqlite3_exec(db, "PRAGMA auto_vacuum = INCREMENTAL", NULL, NULL, NULL);

    rc = set_wal(c, db);
    if (rc != SQLITE_OK) goto fail;
    char sql[160];
    snprintf(sql, sizeof sql,
             "PRAGMA synchronous = NORMAL; PRAGMA mmap_size = 0;"
             " PRAGMA journal_size_limit = %d;",
             CACHE_WAL_LIMIT);
    rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) goto fail;

    rc = query_int(db,
                   "SELECT count(*) FROM sqlite_master WHERE type='table'"
                   " AND name NOT IN ('kernels','meta')",
                   &foreign);
    if (rc == SQLITE_OK)
        rc = query_int(db,
                       "SELECT count(*) FROM sqlite_master WHERE type='table'"
                       " AND name IN ('kernels','meta')",
                       &ours);
    if (rc != SQLITE_OK) goto fail;
    if (v == 0 && foreign > 0) {
        snprintf(why, n, "not a kiln cache (schema version 0, other tables)");
        return S_CORRUPT;
    }
    if (v != KILN_CACHE_SCHEMA || ours != 2) {
        /* New, or tables missing: create in one transaction (re-checked
         * inside it, so two processes creating at once is harmless). */
        char err[200];
        rc = kiln__cache_write(c, create_schema, NULL, err, sizeof err);
        if (rc != SQLITE_OK) {
            snprintf(why, n, "%s", err);
            return classify(rc);
        }
        rc = query_int(db, "PRAGMA user_version", &v);
        if (rc != SQLITE_OK) goto fail;
        if (v != KILN_CACHE_SCHEMA) {
            snprintf(why, n, "schema version %lld after creating the schema",
                     (long long)v);
            return v > KILN_CACHE_SCHEMA ? S_NEWER : S_CORRUPT;
        }
    }
    return S_OK;
fail:
    set_why(why, n, db, rc);
    return classify(rc);
}

/* ---------------------------------------------------------------- paths */

static char *join(const char *a, const char *b)
{
    size_t an = strlen(a), bn = strlen(b);
    char *s = kiln__malloc(an + bn + 2);
    if (!s) return NULL;
    memcpy(s, a, an);
    s[an] = '/';
    memcpy(s + an + 1, b, bn + 1);
    return s;
}

/* "file:" URI for path with query q; every byte outside [A-Za-z0-9/._~-]
 * percent-encoded (so '%', '?', '#' and spaces survive).  An absolute path
 * gets an empty authority ("file:///..."), so "//x" is not read as a host. */
static char *make_uri(const char *path, const char *q)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(path);
    char *u = kiln__malloc(3 * n + strlen(q) + 16);
    if (!u) return NULL;
    char *o = u;
    memcpy(o, path[0] == '/' ? "file://" : "file:", path[0] == '/' ? 7 : 5);
    o += path[0] == '/' ? 7 : 5;
    for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
            (*p >= '0' && *p <= '9') || strchr("/._~-", *p)) {
            *o++ = (char)*p;
        } else {
            *o++ = '%';
            *o++ = hex[*p >> 4];
            *o++ = hex[*p & 15];
        }
    }
    *o++ = '?';
    strcpy(o, q);
    return u;
}

/* mkdir -p, each directory created 0700 whatever the umask.  0 or errno. */
static int make_dirs(const char *dir)
{
    char *p = kiln__strdup(dir);
    if (!p) return ENOMEM;
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = '\0';
        if (mkdir(p, 0700) == 0) chmod(p, 0700);
        *s = '/';
    }
    int err = 0;
    if (mkdir(p, 0700) == 0) {
        chmod(p, 0700); /* a umask may have taken the owner's bits too */
    } else if (errno != EEXIST) {
        err = errno;
    }
    kiln__free(p);
    return err;
}

/* Why the directory may not hold the cache, or NULL. */
static const char *check_dir(const char *dir, char *buf, size_t n)
{
    int err = make_dirs(dir);
    struct stat st;
    if (lstat(dir, &st) != 0) {
        snprintf(buf, n, "cannot create it: %s", strerror(err ? err : errno));
        return buf;
    }
    if (S_ISLNK(st.st_mode)) return "it is a symbolic link";
    if (!S_ISDIR(st.st_mode)) return "it is not a directory";
    if (st.st_uid != geteuid()) {
        snprintf(buf, n, "it is owned by uid %u, not by the effective uid %u",
                 (unsigned)st.st_uid, (unsigned)geteuid());
        return buf;
    }
    if (st.st_mode & 022) {
        snprintf(buf, n, "it is group- or world-writable (mode %04o)",
                 (unsigned)(st.st_mode & 07777));
        return buf;
    }
    return NULL;
}

/* Why one file of the database may not be used, or NULL (also if missing). */
static const char *check_one_file(const char *path, const char *what,
                                  char *buf, size_t n)
{
    struct stat st;
    if (lstat(path, &st) != 0) return NULL;
    if (S_ISLNK(st.st_mode))
        snprintf(buf, n, "%s is a symbolic link", what);
    else if (!S_ISREG(st.st_mode))
        snprintf(buf, n, "%s is not a regular file", what);
    else if (st.st_nlink > 1)
        snprintf(buf, n, "%s has %lu hard links", what,
                 (unsigned long)st.st_nlink);
    else if (st.st_uid != geteuid())
        snprintf(buf, n, "%s is owned by uid %u, not by the effective uid %u",
                 what, (unsigned)st.st_uid, (unsigned)geteuid());
    else
        return NULL;
    return buf;
}

/* Why the database may not be used, or NULL (also if it is missing): the
 * file itself and any -wal / -shm beside it (planted ones could feed SQLite
 * pages that never went through kiln). */
static const char *check_db_file(const char *path, char *buf, size_t n)
{
    static const char *const sfx[] = {"", "-wal", "-shm"};
    static const char *const what[] = {"it", "its -wal", "its -shm"};
    char side[4096];
    for (int i = 0; i < 3; i++) {
        snprintf(side, sizeof side, "%s%s", path, sfx[i]);
        const char *bad = check_one_file(side, what[i], buf, n);
        if (bad) return bad;
    }
    return NULL;
}

/* Rename path+suffix to aside+suffix; 0 or errno (ENOENT is fine). */
static int move_one(const char *path, const char *aside, const char *suffix)
{
    char from[4096], to[4096];
    snprintf(from, sizeof from, "%s%s", path, suffix);
    snprintf(to, sizeof to, "%s%s", aside, suffix);
    if (rename(from, to) != 0 && errno != ENOENT) return errno;
    return 0;
}

/* Move the writable database (and its -wal/-shm) aside, if the file at the
 * path is still the one we opened.  0 or errno; *moved says whether it was. */
static int move_aside(kiln_cache *c, char *aside, size_t n, int *moved)
{
    struct stat st;
    *moved = 0;
    if (lstat(c->db_path, &st) != 0) return errno == ENOENT ? 0 : errno;
    if (c->w.ino && (st.st_dev != c->w.dev || st.st_ino != c->w.ino))
        return 0; /* another process already replaced it */
    /* rename(2) replaces a file: never reuse a name (same second, same pid) */
    for (int i = 0; i < 1000; i++) {
        if (i == 0)
            snprintf(aside, n, "%s.corrupt-%lld-%ld", c->db_path,
                     (long long)time(NULL), (long)getpid());
        else
            snprintf(aside, n, "%s.corrupt-%lld-%ld.%d", c->db_path,
                     (long long)time(NULL), (long)getpid(), i);
        if (lstat(aside, &st) != 0 && errno == ENOENT) break;
    }
    int err = move_one(c->db_path, aside, "");
    if (err) return err;
    *moved = 1;
    move_one(c->db_path, aside, "-wal");
    move_one(c->db_path, aside, "-shm");
    return 0;
}

/* ---------------------------------------------------------------- writable */

static void warn(kiln_cache *c, const char *fmt, const char *a,
                 const char *b)
{
    kiln__log(c->log, c->quiet ? KILN_LOG_DEBUG : KILN_LOG_WARN, fmt, a, b);
}

static void record_identity(cache_layer *L)
{
    struct stat st;
    if (stat(L->path, &st) == 0) {
        L->dev = st.st_dev;
        L->ino = st.st_ino;
    }
}

/* Fallback for a location we cannot write: read kiln.db if that is safe. */
static void open_readonly_fallback(kiln_cache *c, const char *reason)
{
    char why[256];
    sqlite3 *db = NULL;
    int r = S_FAIL;
    for (int immutable = 0; immutable < 2 && r != S_OK; immutable++) {
        if (immutable) {
            /* Without -shm SQLite can only read the file as immutable, and
             * that ignores a WAL: only safe if there is none. */
            char wal[4096];
            struct stat st;
            snprintf(wal, sizeof wal, "%s-wal", c->db_path);
            if (stat(wal, &st) == 0 && st.st_size > 0) break;
        }
        char *uri = make_uri(c->db_path,
                             immutable ? "mode=ro&immutable=1" : "mode=ro");
        if (!uri) break;
        int rc = sqlite3_open_v2(uri, &db,
                                 SQLITE_OPEN_READONLY | SQLITE_OPEN_URI |
                                     SQLITE_OPEN_NOMUTEX,
                                 NULL);
        kiln__free(uri);
        if (rc == SQLITE_OK) {
            conn_common(db);
            r = check_schema_ro(db, why, sizeof why);
        }
        if (r != S_OK) {
            sqlite3_close_v2(db);
            db = NULL;
        }
    }
    if (r == S_OK) {
        c->w.db = db;
        c->w.writable = 0;
        record_identity(&c->w);
        warn(c,
             "cache %s is not writable (%s); reading it only, new kernels "
             "are kept in memory",
             c->db_path, reason);
    } else {
        warn(c, "cannot use cache %s (%s); kernels are kept in memory",
             c->db_path, reason);
    }
}

/* Open (or create) dir/kiln.db read-write; on failure fall back as the
 * header says.  Leaves c->w.db NULL in memory mode. */
static void open_writable(kiln_cache *c)
{
    char buf[512], why[512];
    c->w_retry = 0;
    const char *bad = check_dir(c->dir, buf, sizeof buf);
    if (bad) {
        warn(c, "not using cache directory %s: %s; kernels are kept in memory",
             c->dir, bad);
        return;
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        bad = check_db_file(c->db_path, buf, sizeof buf);
        if (bad) {
            warn(c, "not using cache %s: %s; kernels are kept in memory",
                 c->db_path, bad);
            return;
        }
        sqlite3 *db = NULL;
        int rc = sqlite3_open_v2(c->db_path, &db,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                     SQLITE_OPEN_NOMUTEX |
                                     SQLITE_OPEN_NOFOLLOW,
                                 NULL);
        int r;
        if (rc != SQLITE_OK) {
            snprintf(why, sizeof why, "%s (%s)", sqlite3_errmsg(db),
                     strerror(sqlite3_system_errno(db)));
            r = classify(rc);
        } else {
            conn_common(db);
            c->w.db = db;
            c->w.writable = 1;
            c->w.ino = 0;
            record_identity(&c->w);
            if (sqlite3_db_readonly(db, "main") == 1) {
                snprintf(why, sizeof why, "the file is read-only");
                r = S_READONLY;
            } else {
                r = setup_rw(c, db, why, sizeof why);
            }
        }
        c->w_corrupt = 0; /* whatever setup saw is handled here */
        if (r == S_OK) return;
        sqlite3_close_v2(db);
        c->w.db = NULL;
        c->w.writable = 0;
        switch (r) {
        case S_CORRUPT: {
            char aside[4096];
            int moved = 0;
            int err = attempt == 0 ? move_aside(c, aside, sizeof aside, &moved)
                                   : 0;
            if (err || attempt == 1) {
                warn(c, "cache %s is unusable (%s); kernels are kept in memory",
                     c->db_path, err ? strerror(err) : why);
                return;
            }
            if (moved)
                kiln__log(c->log, KILN_LOG_WARN,
                          "cache %s is corrupt (%s); moved aside to %s, "
                          "starting a fresh one",
                          c->db_path, why, aside);
            continue;
        }
        case S_READONLY:
            if (access(c->db_path, F_OK) == 0)
                open_readonly_fallback(c, why);
            else {
                /* no space or no inode may pass: retried at each put */
                c->w_retry = 1;
                warn(c, "cannot create cache %s (%s); kernels are kept in "
                        "memory",
                     c->db_path, why);
            }
            return;
        case S_NEWER:
            warn(c, "not using cache %s: %s; kernels are kept in memory",
                 c->db_path, why);
            return;
        default: /* busy past the timeout, or stranger */
            c->w_retry = 1;
            warn(c, "cannot open cache %s (%s); kernels are kept in memory",
                 c->db_path, why);
            return;
        }
    }
}

void kiln__cache_retry_writable(kiln_cache *c)
{
    if (c->w.db || !c->w_retry || !c->dir) return;
    int quiet = c->quiet;
    c->quiet = 1; /* the incident was reported when it began */
    open_writable(c);
    c->quiet = quiet;
    if (c->w.db && c->w.writable)
        kiln__log(c->log, KILN_LOG_INFO, "cache %s is writable again",
                  c->db_path);
}

void kiln__cache_recover(kiln_cache *c)
{
    c->w_corrupt = 0;
    if (!c->w.db) return;
    sqlite3_close_v2(c->w.db);
    c->w.db = NULL;
    c->w.writable = 0;
    char aside[4096];
    int moved = 0;
    int err = move_aside(c, aside, sizeof aside, &moved);
    if (err) {
        kiln__log(c->log, KILN_LOG_WARN,
                  "cache %s is corrupt (%s) and cannot be moved aside (%s); "
                  "kernels are kept in memory",
                  c->db_path, c->corrupt_why, strerror(err));
        return;
    }
    if (moved)
        kiln__log(c->log, KILN_LOG_WARN,
                  "cache %s is corrupt (%s); moved aside to %s, starting a "
                  "fresh one",
                  c->db_path, c->corrupt_why, aside);
    open_writable(c);
}

int kiln__cache_note_rc(kiln_cache *c, cache_layer *L, int rc)
{
    int prim = rc & 0xff;
    if (prim != SQLITE_CORRUPT && prim != SQLITE_NOTADB) return rc;
    if (L == &c->w) {
        if (!c->w_corrupt)
            snprintf(c->corrupt_why, sizeof c->corrupt_why, "%s",
                     L->db ? sqlite3_errmsg(L->db) : sqlite3_errstr(rc));
        c->w_corrupt = 1;
    } else if (!L->dead) {
        kiln__log(c->log, KILN_LOG_WARN,
                  "read-only cache layer %s is corrupt (%s); no longer used",
                  L->path, L->db ? sqlite3_errmsg(L->db) : sqlite3_errstr(rc));
        L->dead = 1;
    }
    return rc;
}

/* ---------------------------------------------------------------- writes */

int kiln__cache_write(kiln_cache *c, int (*body)(sqlite3 *db, void *ctx),
                      void *ctx, char *err, size_t errn)
{
    sqlite3 *db = c->w.db;
    if (err && errn) err[0] = '\0';
    if (!db) return SQLITE_CANTOPEN;
    int64_t t0 = now_ms();
    for (int attempt = 1;; attempt++) {
        int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        if (rc == SQLITE_OK) {
            rc = body(db, ctx);
            if (rc == SQLITE_OK || rc == SQLITE_DONE)
                rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
        }
        if (rc == SQLITE_OK) return rc;
        if (err && errn) snprintf(err, errn, "%s", sqlite3_errmsg(db));
        if (!sqlite3_get_autocommit(db))
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        kiln__cache_note_rc(c, &c->w, rc);
        if (!kiln__cache_is_busy(rc) || attempt >= CACHE_WRITE_TRIES ||
            now_ms() - t0 >= CACHE_WRITE_DEADLINE_MS)
            return rc;
        jitter_sleep();
    }
}

/* ---------------------------------------------------------------- layers */

static void open_ro_layer(kiln_cache *c, const char *entry)
{
    struct stat st;
    char why[512];
    char *path = (stat(entry, &st) == 0 && S_ISDIR(st.st_mode))
                     ? join(entry, "kiln.db")
                     : kiln__strdup(entry);
    if (!path) return;
    if (stat(path, &st) != 0) {
        KILN_LOGD(c->log, "read-only cache layer %s: %s; skipped", path,
                  strerror(errno));
        goto out;
    }
    if (c->w.db && c->w.ino && st.st_dev == c->w.dev && st.st_ino == c->w.ino) {
        KILN_LOGD(c->log, "read-only cache layer %s is the writable one; "
                  "skipped", path);
        goto out;
    }
    cache_layer *grown = kiln__realloc(c->ro, sizeof *c->ro * (size_t)(c->nro + 1));
    if (!grown) goto out;
    c->ro = grown;
    char *uri = make_uri(path, "mode=ro&immutable=1");
    if (!uri) goto out;
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(uri, &db,
                             SQLITE_OPEN_READONLY | SQLITE_OPEN_URI |
                                 SQLITE_OPEN_NOMUTEX,
                             NULL);
    kiln__free(uri);
    int r = S_FAIL;
    if (rc == SQLITE_OK) {
        conn_common(db);
        r = check_schema_ro(db, why, sizeof why);
    } else {
        set_why(why, sizeof why, db, rc);
    }
    if (r != S_OK) {
        warn(c, "read-only cache layer %s: %s; skipped", path, why);
        sqlite3_close_v2(db);
        goto out;
    }
    cache_layer *L = &c->ro[c->nro++];
    memset(L, 0, sizeof *L);
    L->db = db;
    L->path = path;
    L->dev = st.st_dev;
    L->ino = st.st_ino;
    return;
out:
    kiln__free(path);
}

void kiln__cache_open_layers(kiln_cache *c)
{
    c->w_corrupt = 0;
    if (c->dir) open_writable(c);
    if (c->ro_spec) {
        char *spec = kiln__strdup(c->ro_spec);
        if (!spec) return;
        char *save = NULL;
        for (char *e = strtok_r(spec, ":", &save); e;
             e = strtok_r(NULL, ":", &save))
            if (*e) open_ro_layer(c, e);
        kiln__free(spec);
    }
}

void kiln__cache_drop_layers(kiln_cache *c, int close)
{
    if (close) sqlite3_close_v2(c->w.db);
    c->w.db = NULL;
    c->w.writable = 0;
    for (int i = 0; i < c->nro; i++) {
        if (close) sqlite3_close_v2(c->ro[i].db);
        kiln__free(c->ro[i].path);
    }
    kiln__free(c->ro);
    c->ro = NULL;
    c->nro = 0;
    c->w_corrupt = 0;
}
