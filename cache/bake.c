/* bake.c -- kiln_cache_bake: write a database fit for a read-only layer.
 *
 * A read-only layer is opened mode=ro&immutable=1, which ignores any -wal and
 * takes no locks, so the file must hold every row itself: the source is read
 * through SQLite (its -wal included), copied with VACUUM INTO a temporary
 * file beside the output, rows that fail the checks of "When a row is
 * served" (cache/SCHEMA.md) are deleted, the copy is switched to
 * journal_mode=DELETE, checked with integrity_check, closed, and only then
 * renamed over the output.  It refuses to finish while a -wal remains. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/cache_int.h"

static int exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static int open_src(const char *src, sqlite3 **db)
{
    char wal[4096];
    snprintf(wal, sizeof wal, "%s-wal", src);
    /* mode=ro reads the -wal too (it needs -shm); immutable only if none. */
    const char *qs[2] = {"mode=ro", "mode=ro&immutable=1"};
    int rc = SQLITE_CANTOPEN;
    for (int i = 0; i < 2; i++) {
        if (i == 1 && exists(wal)) break;
        char *uri = sqlite3_mprintf("file:%s?%s", src, qs[i]);
        if (!uri) return SQLITE_NOMEM;
        rc = sqlite3_open_v2(uri, db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI,
                             NULL);
        sqlite3_free(uri);
        if (rc == SQLITE_OK) {
            sqlite3_busy_timeout(*db, CACHE_BUSY_MS);
            rc = sqlite3_exec(*db, "SELECT count(*) FROM kernels", NULL, NULL,
                              NULL);
            if (rc == SQLITE_OK) return rc;
        }
        sqlite3_close_v2(*db);
        *db = NULL;
    }
    return rc;
}

/* Delete rows that would not be served; *kept receives the rest. */
static int drop_bad(sqlite3 *db, int64_t *kept)
{
    sqlite3_stmt *st = NULL, *del = NULL;
    int rc = sqlite3_prepare_v2(db,
                                "SELECT rowid, hash, ident, bytes, digest,"
                                " cubin FROM kernels",
                                -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, "DELETE FROM kernels WHERE rowid = ?1",
                                -1, &del, NULL);
    if (rc != SQLITE_OK) goto out;
    sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    *kept = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *why = kiln__cache_row_check(
            sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1),
            NULL, 0, sqlite3_column_blob(st, 2),
            (size_t)sqlite3_column_bytes(st, 2), sqlite3_column_int64(st, 3),
            sqlite3_column_blob(st, 4), (size_t)sqlite3_column_bytes(st, 4),
            sqlite3_column_blob(st, 5), (size_t)sqlite3_column_bytes(st, 5));
        if (!why) {
            (*kept)++;
            continue;
        }
        sqlite3_bind_int64(del, 1, sqlite3_column_int64(st, 0));
        int r = sqlite3_step(del);
        sqlite3_reset(del);
        if (r != SQLITE_DONE) {
            rc = r;
            break;
        }
    }
    if (rc == SQLITE_DONE) rc = SQLITE_OK;
    sqlite3_finalize(st);
    st = NULL;
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    else sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
out:
    sqlite3_finalize(st);
    sqlite3_finalize(del);
    return rc;
}

KILN_API kiln_status kiln_cache_bake(const char *src, const char *out,
                                     int64_t *rows)
{
    KILN_FAIL_IF(!src || !*src || !out || !*out, KILN_EBADARG,
                 "kiln_cache_bake: empty or NULL path");
    char tmp[4096], twal[4200], owal[4200];
    snprintf(tmp, sizeof tmp, "%s.bake-%ld", out, (long)getpid());
    snprintf(twal, sizeof twal, "%s-wal", tmp);
    snprintf(owal, sizeof owal, "%s-wal", out);
    KILN_FAIL_IF(exists(owal), KILN_ECACHE,
                 "cannot bake into %s: %s exists (a reader would pair it with "
                 "the new file); remove it first",
                 out, owal);
    struct stat sst, ost;
    KILN_FAIL_IF(stat(src, &sst) != 0, KILN_ECACHE, "cannot bake %s: %s", src,
                 strerror(errno));
    KILN_FAIL_IF(stat(out, &ost) == 0 && ost.st_dev == sst.st_dev &&
                     ost.st_ino == sst.st_ino,
                 KILN_EBADARG, "cannot bake %s onto itself", src);

    sqlite3 *s = NULL, *d = NULL;
    char err[512] = "";
    kiln_status status = KILN_ECACHE;
    int64_t kept = 0;
    unlink(tmp);
    unlink(twal);
    int rc = open_src(src, &s);
    if (rc != SQLITE_OK) {
        snprintf(err, sizeof err, "cannot read %s: %s", src, sqlite3_errstr(rc));
        goto done;
    }
    sqlite3_stmt *st = NULL;
    rc = sqlite3_prepare_v2(s, "VACUUM INTO ?1", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, tmp, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE) rc = SQLITE_OK;
    }
    if (rc != SQLITE_OK)
        snprintf(err, sizeof err, "copying %s: %s", src, sqlite3_errmsg(s));
    sqlite3_finalize(st);
    sqlite3_close_v2(s);
    if (rc != SQLITE_OK) goto done;

    rc = sqlite3_open_v2(tmp, &d, SQLITE_OPEN_READWRITE, NULL);
    if (rc == SQLITE_OK) rc = drop_bad(d, &kept);
    if (rc == SQLITE_OK) {
        sqlite3_stmt *jm = NULL;
        rc = sqlite3_prepare_v2(d, "PRAGMA journal_mode = DELETE", -1, &jm, NULL);
        if (rc == SQLITE_OK && sqlite3_step(jm) == SQLITE_ROW) {
            const char *m = (const char *)sqlite3_column_text(jm, 0);
            if (!m || strcmp(m, "delete") != 0) {
                snprintf(err, sizeof err, "journal_mode stayed %s", m ? m : "?");
                rc = SQLITE_ERROR;
            }
        }
        sqlite3_finalize(jm);
    }
    if (rc == SQLITE_OK) {
        sqlite3_stmt *ic = NULL;
        rc = sqlite3_prepare_v2(d, "PRAGMA integrity_check", -1, &ic, NULL);
        if (rc == SQLITE_OK && sqlite3_step(ic) == SQLITE_ROW) {
            const char *m = (const char *)sqlite3_column_text(ic, 0);
            if (!m || strcmp(m, "ok") != 0) {
                snprintf(err, sizeof err, "integrity_check: %s", m ? m : "?");
                rc = SQLITE_CORRUPT;
            }
        }
        sqlite3_finalize(ic);
    }
    if (rc != SQLITE_OK && !err[0])
        snprintf(err, sizeof err, "%s", d ? sqlite3_errmsg(d) : sqlite3_errstr(rc));
    if (d && sqlite3_close(d) != SQLITE_OK && rc == SQLITE_OK) {
        snprintf(err, sizeof err, "closing the copy failed");
        rc = SQLITE_ERROR;
    }
    d = NULL;
    if (rc != SQLITE_OK) goto done;
    if (exists(twal)) {
        snprintf(err, sizeof err, "%.400s remains after closing the copy", twal);
        goto done;
    }
    int fd = open(tmp, O_RDONLY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    chmod(tmp, 0444);
    if (rename(tmp, out) != 0) {
        snprintf(err, sizeof err, "rename to %s: %s", out, strerror(errno));
        goto done;
    }
    status = KILN_OK;
done:
    if (d) sqlite3_close_v2(d);
    if (status != KILN_OK) {
        unlink(tmp);
        unlink(twal);
        return kiln__fail(status, "cannot bake %s into %s: %s", src, out, err);
    }
    if (rows) *rows = kept;
    return KILN_OK;
}
