/* inspect.c -- the cache as the CLI sees it: list, stats, verify, clear,
 * find_key, evict.
 *
 * Rows are read under the cache's mutex into memory and the caller's
 * callbacks run after it is released, so a callback may call back into the
 * cache (e.g. `kiln ls` printing an entry and exporting it). */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cache/cache_int.h"

/* The layers in search order: read-only ones, then the writable one. */
static cache_layer *layer_at(kiln_cache *c, int i)
{
    cache_layer *L = i < c->nro ? &c->ro[i] : &c->w;
    return L->db && !L->dead ? L : NULL;
}

static const char *col_text(sqlite3_stmt *st, int i)
{
    const unsigned char *s = sqlite3_column_text(st, i);
    return s ? (const char *)s : "";
}

static void hex16(const void *b, size_t n, char out[33])
{
    static const char d[] = "0123456789abcdef";
    const uint8_t *p = b;
    if (n > 16) n = 16;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[p[i] >> 4];
        out[2 * i + 1] = d[p[i] & 15];
    }
    out[2 * n] = '\0';
}

/* ---------------------------------------------------------------- list */

typedef struct list_row {
    kiln_cache_entry e;
    char *mem; /* every string of e, in one allocation */
} list_row;

typedef struct row_vec {
    list_row *v;
    size_t n, cap;
} row_vec;

/* Copy n strings into one allocation; dst[i] point into it. */
static char *pack(const char **src, const char **dst[], int n)
{
    size_t total = 0;
    for (int i = 0; i < n; i++) total += strlen(src[i]) + 1;
    char *mem = kiln__malloc(total);
    if (!mem) return NULL;
    char *p = mem;
    for (int i = 0; i < n; i++) {
        size_t l = strlen(src[i]) + 1;
        memcpy(p, src[i], l);
        *dst[i] = p;
        p += l;
    }
    return mem;
}

static int list_layer(kiln_cache *c, cache_layer *L, const char *pattern,
                      row_vec *rv)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(
        L->db,
        "SELECT key, hash, nvrtc, options, prelude, log, bytes, regs, smem,"
        " spills, compile_ms, created, last_used, hits FROM kernels"
        " WHERE ?1 IS NULL OR kiln_match(?1, key) ORDER BY key",
        -1, &st, NULL);
    if (rc == SQLITE_OK && pattern)
        sqlite3_bind_text(st, 1, pattern, -1, SQLITE_STATIC);
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        rc = SQLITE_OK;
        if (rv->n == rv->cap) {
            size_t cap = rv->cap ? 2 * rv->cap : 64;
            list_row *g = kiln__realloc(rv->v, cap * sizeof *g);
            if (!g) {
                sqlite3_finalize(st);
                return SQLITE_NOMEM;
            }
            rv->v = g;
            rv->cap = cap;
        }
        list_row *r = &rv->v[rv->n];
        memset(r, 0, sizeof *r);
        char hash[33];
        hex16(sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1),
              hash);
        const char *src[] = {col_text(st, 0), hash, L->path, col_text(st, 2),
                             col_text(st, 3), col_text(st, 4), col_text(st, 5)};
        const char **dst[] = {&r->e.key, &r->e.hash, &r->e.layer,
                              &r->e.nvrtc, &r->e.options, &r->e.prelude,
                              &r->e.log};
        r->mem = pack(src, dst, 7);
        if (!r->mem) {
            sqlite3_finalize(st);
            return SQLITE_NOMEM;
        }
        int64_t bytes = sqlite3_column_int64(st, 6);
        r->e.bytes = bytes > 0 ? (uint64_t)bytes : 0;
        r->e.regs = sqlite3_column_int(st, 7);
        r->e.smem = sqlite3_column_int(st, 8);
        r->e.spills = sqlite3_column_int(st, 9);
        r->e.compile_ms = sqlite3_column_double(st, 10);
        r->e.created = sqlite3_column_int64(st, 11);
        r->e.last_used = sqlite3_column_int64(st, 12);
        r->e.hits = sqlite3_column_int64(st, 13);
        rv->n++;
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_DONE) return SQLITE_OK;
    kiln__cache_note_rc(c, L, rc);
    KILN_LOGW(c->log, "cache %s: listing stopped: %s", L->path,
              sqlite3_errstr(rc));
    return rc;
}

kiln_status kiln__cache_list(kiln_cache *c, const char *pattern,
                             int (*fn)(const kiln_cache_entry *e, void *user),
                             void *user)
{
    KILN_FAIL_IF(!c || !fn, KILN_EBADARG, "kiln__cache_list: NULL argument");
    row_vec rv = {0};
    int nomem = 0;
    kiln__cache_lock(c);
    for (int i = 0; i <= c->nro && !nomem; i++) {
        cache_layer *L = layer_at(c, i);
        if (L) nomem = list_layer(c, L, pattern, &rv) == SQLITE_NOMEM;
    }
    kiln__cache_unlock(c);
    int stop = 0;
    for (size_t i = 0; i < rv.n; i++) {
        if (!nomem && !stop) stop = fn(&rv.v[i].e, user);
        kiln__free(rv.v[i].mem);
    }
    kiln__free(rv.v);
    if (nomem) return kiln__fail(KILN_ENOMEM, "out of memory listing the cache");
    return KILN_OK;
}

/* ---------------------------------------------------------------- stats */

kiln_status kiln__cache_stats(kiln_cache *c, kiln_cache_stats *out)
{
    KILN_FAIL_IF(!c || !out, KILN_EBADARG, "kiln__cache_stats: NULL argument");
    kiln_cache_stats s;
    memset(&s, 0, sizeof s);
    kiln__cache_lock(c);
    for (int i = 0; i <= c->nro; i++) {
        cache_layer *L = layer_at(c, i);
        if (!L) continue;
        if (L != &c->w) s.ro_layers++;
        sqlite3_stmt *st = NULL;
        int rc = sqlite3_prepare_v2(L->db,
                                    "SELECT count(*), total(bytes), total(hits)"
                                    " FROM kernels",
                                    -1, &st, NULL);
        if (rc == SQLITE_OK) rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            s.entries += sqlite3_column_int64(st, 0);
            s.bytes += (int64_t)sqlite3_column_double(st, 1);
            s.hits += (int64_t)sqlite3_column_double(st, 2);
        } else {
            kiln__cache_note_rc(c, L, rc);
        }
        sqlite3_finalize(st);
    }
    s.writable = c->w.db && c->w.writable;
    s.path = s.writable ? c->db_path : "";
    if (c->w.db) {
        static const char *const suffix[] = {"", "-wal"};
        for (int i = 0; i < 2; i++) {
            char p[4096];
            struct stat sb;
            snprintf(p, sizeof p, "%s%s", c->db_path, suffix[i]);
            if (stat(p, &sb) == 0) s.file_bytes += (int64_t)sb.st_size;
        }
    }
    s.rejected = c->rejected;
    kiln__cache_unlock(c);
    *out = s;
    return KILN_OK;
}

/* ---------------------------------------------------------------- verify */

typedef struct bad_row {
    char *key, *why; /* why is static */
    int64_t rowid;
    uint8_t hash[16];
    int in_w;
} bad_row;

typedef struct bad_vec {
    bad_row *v;
    size_t n, cap;
} bad_vec;

static int add_bad(bad_vec *bv, const char *key, const char *why,
                   int64_t rowid, const void *hash, size_t hn, int in_w)
{
    if (bv->n == bv->cap) {
        size_t cap = bv->cap ? 2 * bv->cap : 16;
        bad_row *g = kiln__realloc(bv->v, cap * sizeof *g);
        if (!g) return -1;
        bv->v = g;
        bv->cap = cap;
    }
    bad_row *b = &bv->v[bv->n];
    memset(b, 0, sizeof *b);
    b->key = kiln__strdup(key);
    if (!b->key) return -1;
    b->why = (char *)why;
    b->rowid = rowid;
    if (hash) memcpy(b->hash, hash, hn < 16 ? hn : 16);
    b->in_w = in_w;
    bv->n++;
    return 0;
}

/* PRAGMA integrity_check; 1 if "ok", -1 if it ran out of memory (which
 * says nothing about the file).  report: log what it found. */
static int integrity_run(kiln_cache *c, cache_layer *L, char *first, size_t n,
                         int report)
{
    sqlite3_stmt *st = NULL;
    int ok = 1, rows = 0;
    first[0] = '\0';
    int rc = sqlite3_prepare_v2(L->db, "PRAGMA integrity_check", -1, &st,
                                NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        rc = SQLITE_OK;
        const char *msg = col_text(st, 0);
        if (strcmp(msg, "ok") == 0) continue;
        ok = 0;
        if (!first[0]) snprintf(first, n, "%s", msg);
        if (report && rows++ < 10)
            KILN_LOGW(c->log, "cache %s: integrity_check: %s", L->path, msg);
    }
    sqlite3_finalize(st);
    if ((rc & 0xff) == SQLITE_NOMEM) return -1;
    if (rc != SQLITE_DONE) {
        kiln__cache_note_rc(c, L, rc);
        if (!first[0]) snprintf(first, n, "%s", sqlite3_errstr(rc));
        if (report)
            KILN_LOGW(c->log, "cache %s: integrity_check failed: %s", L->path,
                      sqlite3_errstr(rc));
        ok = 0;
    }
    return ok;
}

/* A page SQLite could not read for want of memory is reported as damage
 * (e.g. "failed to get page N") with no error code: a failed check counts
 * only if a second one agrees. */
static int integrity(kiln_cache *c, cache_layer *L, char *first, size_t n)
{
    int ok = integrity_run(c, L, first, n, 0);
    return ok ? ok : integrity_run(c, L, first, n, 1);
}

static int check_rows(kiln_cache *c, cache_layer *L, bad_vec *bv,
                      kiln_cache_verify_report *r)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(L->db,
                                "SELECT rowid, hash, key, ident, bytes,"
                                " digest, cubin FROM kernels",
                                -1, &st, NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        rc = SQLITE_OK;
        r->checked++;
        const void *h = sqlite3_column_blob(st, 1);
        size_t hn = (size_t)sqlite3_column_bytes(st, 1);
        const void *id = sqlite3_column_blob(st, 3);
        size_t idn = (size_t)sqlite3_column_bytes(st, 3);
        int64_t bytes = sqlite3_column_int64(st, 4);
        const void *dg = sqlite3_column_blob(st, 5);
        size_t dgn = (size_t)sqlite3_column_bytes(st, 5);
        const void *cb = sqlite3_column_blob(st, 6);
        size_t cbn = (size_t)sqlite3_column_bytes(st, 6);
        const char *why = kiln__cache_row_check(h, hn, NULL, 0, id, idn,
                                                bytes, dg, dgn, cb, cbn);
        if (!why) continue;
        r->bad++;
        KILN_LOGI(c->log, "cache %s: bad row %s: %s", L->path,
                  col_text(st, 2), why);
        if (add_bad(bv, col_text(st, 2), why, sqlite3_column_int64(st, 0), h,
                    hn, L == &c->w) != 0) {
            sqlite3_finalize(st);
            return SQLITE_NOMEM;
        }
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_DONE) return SQLITE_OK;
    kiln__cache_note_rc(c, L, rc);
    KILN_LOGW(c->log, "cache %s: reading rows failed: %s", L->path,
              sqlite3_errstr(rc));
    return rc;
}

typedef struct drop_ctx {
    bad_vec *bv;
    int64_t dropped;
} drop_ctx;

static int drop_bad_body(sqlite3 *db, void *ctx)
{
    drop_ctx *d = ctx;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db,
                                "DELETE FROM kernels WHERE rowid = ?1 AND"
                                " (hash = ?2 OR length(hash) != 16)",
                                -1, &st, NULL);
    d->dropped = 0;
    for (size_t i = 0; rc == SQLITE_OK && i < d->bv->n; i++) {
        bad_row *b = &d->bv->v[i];
        if (!b->in_w) continue;
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, b->rowid);
        sqlite3_bind_blob(st, 2, b->hash, 16, SQLITE_STATIC);
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE) {
            d->dropped += sqlite3_changes(db);
            rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(st);
    return rc;
}

kiln_status kiln__cache_verify(kiln_cache *c, int drop,
                               kiln_cache_verify_report *out,
                               void (*fn)(const char *key, const char *why,
                                          void *user),
                               void *user)
{
    KILN_FAIL_IF(!c || !out, KILN_EBADARG, "kiln__cache_verify: NULL argument");
    kiln_cache_verify_report r = {.integrity_ok = 1};
    bad_vec bv = {0};
    int nomem = 0;
    kiln__cache_lock(c);
    for (int i = 0; i <= c->nro && !nomem; i++) {
        cache_layer *L = layer_at(c, i);
        if (!L) continue;
        char first[256];
        int ig = integrity(c, L, first, sizeof first);
        if (ig < 0) {
            nomem = 1;
            break;
        }
        if (!ig) {
            r.integrity_ok = 0;
            if (drop && L == &c->w && L->writable && !c->w_corrupt) {
                /* Past repair row by row: the unlock moves it aside. */
                snprintf(c->corrupt_why, sizeof c->corrupt_why,
                         "integrity_check: %.200s", first);
                c->w_corrupt = 1;
                continue;
            }
        }
        nomem = check_rows(c, L, &bv, &r) == SQLITE_NOMEM;
    }
    if (drop && !nomem && !c->w_corrupt && c->w.db && c->w.writable) {
        drop_ctx d = {.bv = &bv};
        char err[256];
        int rc = kiln__cache_write(c, drop_bad_body, &d, err, sizeof err);
        if (rc == SQLITE_OK) r.dropped = d.dropped;
        else KILN_LOGW(c->log, "cache %s: could not drop bad rows: %s",
                       c->db_path, err);
    }
    kiln__cache_unlock(c);
    for (size_t i = 0; i < bv.n; i++) {
        if (fn && !nomem) fn(bv.v[i].key, bv.v[i].why, user);
        kiln__free(bv.v[i].key);
    }
    kiln__free(bv.v);
    if (nomem) return kiln__fail(KILN_ENOMEM, "out of memory verifying the cache");
    *out = r;
    return KILN_OK;
}

/* ---------------------------------------------------------------- clear, evict */

typedef struct del_ctx {
    const char *pattern;
    int64_t max_bytes;
    int64_t removed;
} del_ctx;

static int clear_body(sqlite3 *db, void *ctx)
{
    del_ctx *d = ctx;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db,
                                "DELETE FROM kernels WHERE ?1 IS NULL OR"
                                " kiln_match(?1, key)",
                                -1, &st, NULL);
    if (rc != SQLITE_OK) return rc;
    if (d->pattern) sqlite3_bind_text(st, 1, d->pattern, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    d->removed = rc == SQLITE_DONE ? sqlite3_changes64(db) : 0;
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

int kiln__cache_evict_body(sqlite3 *db, int64_t max_bytes, int64_t *removed)
{
    sqlite3_stmt *st = NULL;
    /* Keep the most recently used rows whose running total fits. */
    int rc = sqlite3_prepare_v2(
        db,
        "DELETE FROM kernels WHERE rowid IN (SELECT rowid FROM (SELECT rowid,"
        " sum(bytes) OVER (ORDER BY coalesce(last_used, created, 0) DESC,"
        " created DESC, rowid DESC) AS run FROM kernels) WHERE run > ?1)",
        -1, &st, NULL);
    if (rc != SQLITE_OK) return rc;
    sqlite3_bind_int64(st, 1, max_bytes);
    rc = sqlite3_step(st);
    *removed = rc == SQLITE_DONE ? sqlite3_changes64(db) : 0;
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int evict_body(sqlite3 *db, void *ctx)
{
    del_ctx *d = ctx;
    return kiln__cache_evict_body(db, d->max_bytes, &d->removed);
}

static kiln_status delete_rows(kiln_cache *c, int (*body)(sqlite3 *, void *),
                               del_ctx *d, const char *what)
{
    kiln_status s = KILN_OK;
    kiln__cache_lock(c);
    if (c->w.db && c->w.writable) {
        char err[256];
        int rc = kiln__cache_write(c, body, d, err, sizeof err);
        if (rc != SQLITE_OK) {
            d->removed = 0;
            s = kiln__fail(KILN_ECACHE, "cannot %s cache %s: %s", what,
                           c->db_path, err);
        } else if (d->removed > 0) {
            /* Give the freed pages back to the file system (best effort). */
            sqlite3_exec(c->w.db, "PRAGMA incremental_vacuum", NULL, NULL,
                         NULL);
        }
    }
    kiln__cache_unlock(c);
    return s;
}

kiln_status kiln__cache_clear(kiln_cache *c, const char *pattern,
                              int64_t *removed)
{
    KILN_FAIL_IF(!c, KILN_EBADARG, "kiln__cache_clear: NULL cache");
    del_ctx d = {.pattern = pattern};
    kiln_status s = delete_rows(c, clear_body, &d, "clear");
    if (removed) *removed = d.removed;
    return s;
}

kiln_status kiln__cache_evict(kiln_cache *c, int64_t max_bytes,
                              int64_t *removed)
{
    KILN_FAIL_IF(!c || max_bytes < 0, KILN_EBADARG,
                 "kiln__cache_evict: bad argument (max_bytes %lld)",
                 (long long)max_bytes);
    del_ctx d = {.max_bytes = max_bytes};
    kiln_status s = delete_rows(c, evict_body, &d, "evict from");
    if (removed) *removed = d.removed;
    return s;
}

/* ---------------------------------------------------------------- find_key */

kiln_status kiln__cache_find_key(kiln_cache *c, const char *key_text,
                                 void **cubin, size_t *len)
{
    KILN_FAIL_IF(!c || !key_text || !cubin || !len, KILN_EBADARG,
                 "kiln__cache_find_key: NULL argument");
    kiln_status s = KILN_ENOTFOUND;
    kiln__cache_lock(c);
    for (int i = 0; i <= c->nro && s == KILN_ENOTFOUND; i++) {
        cache_layer *L = layer_at(c, i);
        if (!L) continue;
        sqlite3_stmt *st = NULL;
        int rc = sqlite3_prepare_v2(L->db,
                                    "SELECT hash, ident, bytes, digest, cubin"
                                    " FROM kernels WHERE key = ?1"
                                    " ORDER BY created DESC, rowid DESC",
                                    -1, &st, NULL);
        if (rc == SQLITE_OK)
            sqlite3_bind_text(st, 1, key_text, -1, SQLITE_STATIC);
        while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
            rc = SQLITE_OK;
            const void *cb = sqlite3_column_blob(st, 4);
            size_t cbn = (size_t)sqlite3_column_bytes(st, 4);
            const char *why = kiln__cache_row_check(
                sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0),
                NULL, 0, sqlite3_column_blob(st, 1),
                (size_t)sqlite3_column_bytes(st, 1),
                sqlite3_column_int64(st, 2), sqlite3_column_blob(st, 3),
                (size_t)sqlite3_column_bytes(st, 3), cb, cbn);
            if (why) {
                KILN_LOGW(c->log, "cache %s: skipped a bad row for %s: %s",
                          L->path, key_text, why);
                continue;
            }
            void *copy = kiln__malloc(cbn);
            if (!copy) {
                s = KILN_ENOMEM;
                break;
            }
            memcpy(copy, cb, cbn);
            *cubin = copy;
            *len = cbn;
            s = KILN_OK;
            break;
        }
        if (rc != SQLITE_OK && rc != SQLITE_DONE) kiln__cache_note_rc(c, L, rc);
        sqlite3_finalize(st);
    }
    kiln__cache_unlock(c);
    if (s == KILN_ENOMEM) return kiln__fail(s, "out of memory");
    if (s == KILN_ENOTFOUND)
        return kiln__fail(s, "no cache entry for key %s", key_text);
    return s;
}
