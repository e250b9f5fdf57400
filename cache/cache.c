/* cache.c -- the on-disk cubin cache: one SQLite file per layer.
 *
 * The file format (also in cache/SCHEMA.md; PRAGMA user_version = 1):
 *
 *   CREATE TABLE kernels (
 *     hash            BLOB PRIMARY KEY NOT NULL, -- 16 bytes: XXH3-128(ident),
 *                                                --   canonical (big-endian)
 *     key             TEXT NOT NULL,   -- "hstu_fwd/sm_90a/bf16/d128/causal+target/rab"
 *     family TEXT, arch TEXT, dtype TEXT, head_dim INTEGER, mask TEXT,
 *     rab INTEGER, block_m INTEGER, block_n INTEGER, warps INTEGER,
 *                                      -- the key's fields, for people
 *     template_digest TEXT,            -- hex XXH3-128 of the templates
 *     nvrtc           TEXT,            -- "13.0"
 *     options         TEXT,            -- NVRTC options, sorted, space-separated
 *     bytes           INTEGER NOT NULL,-- length of cubin
 *     regs INTEGER, smem INTEGER, spills INTEGER, -- registers/thread, static
 *                                      --   shared memory bytes, spill bytes
 *     compile_ms      REAL,
 *     created         INTEGER,         -- unix seconds
 *     last_used       INTEGER,         -- unix seconds (written <= once a minute)
 *     hits            INTEGER NOT NULL DEFAULT 0, -- loads from this file
 *     digest          BLOB NOT NULL,   -- 16 bytes: XXH3-128(ident || cubin),
 *                                      --   canonical (big-endian)
 *     ident           BLOB NOT NULL,   -- the full identity (key bytes, template
 *                                      --   digest, NVRTC version, options)
 *     prelude TEXT, log TEXT,          -- what NVRTC compiled, and said
 *     cubin           BLOB NOT NULL);  -- the ELF image
 *   CREATE INDEX kernels_key ON kernels(key);
 *   CREATE TABLE meta (name TEXT PRIMARY KEY NOT NULL, value TEXT);
 *
 * The big blobs come last so that reading the small columns never walks a
 * cubin's overflow pages.  A row is served only if its ident equals the
 * caller's byte for byte, length(cubin) = bytes, the digest matches and the
 * cubin passes kiln__elf_check(); otherwise it is deleted (writable layer),
 * counted as rejected and reported as a miss.
 *
 * Concurrency: the connection is in WAL mode with a 2 s busy timeout; a write
 * is BEGIN IMMEDIATE; INSERT OR IGNORE; COMMIT (retried a few times on
 * SQLITE_BUSY, then dropped quietly).  Within a process a mutex serializes
 * each kiln_cache's SQLite use.  fork(): handlers close every cache's
 * connections in the parent just before fork() (so the child inherits no
 * SQLite state for the file) and both sides reopen them on next use; a child
 * created without the handlers (a raw clone) forgets -- never closes -- the
 * inherited connections and opens new ones. */
#define XXH_STATIC_LINKING_ONLY
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "cache/cache_int.h"

/* ---------------------------------------------------------------- fork */

static pthread_mutex_t g_reg_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t g_fork_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static kiln_cache *g_caches;
static pid_t g_fork_parent;

/* Identifies the calling thread in cache->owner. */
static _Thread_local char tl_self;
#define SELF ((uintptr_t)&tl_self)

/* Close every cache's connections before fork(), holding its mutex across
 * it.  A cache this very thread holds (a log callback that forks) is left
 * alone: waiting for it would never end; its child falls back on forgetting
 * the connections. */
static void before_fork(void)
{
    pthread_mutex_lock(&g_reg_mu);
    g_fork_parent = getpid();
    for (kiln_cache *c = g_caches; c; c = c->next) {
        c->fork_held = 0;
        if (atomic_load(&c->pid) != g_fork_parent) continue;
        if (atomic_load(&c->owner) == SELF) continue;
        pthread_mutex_lock(&c->mu);
        c->fork_held = 1;
        if (!c->reopen) {
            kiln__cache_drop_layers(c, 1);
            c->reopen = 1;
            c->quiet = 1;
        }
    }
}

static void after_fork_parent(void)
{
    for (kiln_cache *c = g_caches; c; c = c->next)
        if (c->fork_held) pthread_mutex_unlock(&c->mu);
    pthread_mutex_unlock(&g_reg_mu);
}

static void after_fork_child(void)
{
    pid_t me = getpid();
    for (kiln_cache *c = g_caches; c; c = c->next) {
        if (!c->fork_held) continue;
        c->nnotes = 0; /* the parent writes its own pending hits */
        atomic_store(&c->pid, me);
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_unlock(&g_reg_mu);
}

static void register_handlers(void)
{
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

/* A process that did not run the handlers (raw clone): the inherited
 * connections belong to the parent; forget them, never close them. */
static void fork_fallback(kiln_cache *c, pid_t me)
{
    pthread_mutex_lock(&g_fork_mu);
    if (atomic_load(&c->pid) != me) {
        pthread_mutex_init(&c->mu, NULL); /* its holder is not in this process */
        atomic_store(&c->owner, (uintptr_t)0);
        kiln__cache_drop_layers(c, 0);
        c->nnotes = 0;
        c->reopen = 1;
        c->quiet = 1;
        atomic_store(&c->pid, me);
    }
    pthread_mutex_unlock(&g_fork_mu);
}

void kiln__cache_lock(kiln_cache *c)
{
    pid_t me = getpid();
    if (atomic_load(&c->pid) != me) fork_fallback(c, me);
    pthread_mutex_lock(&c->mu);
    atomic_store(&c->owner, SELF);
    if (c->reopen) {
        c->reopen = 0;
        kiln__cache_open_layers(c);
        c->quiet = 0;
    }
}

void kiln__cache_unlock(kiln_cache *c)
{
    if (c->w_corrupt) kiln__cache_recover(c);
    for (int i = 0; i < c->nro; i++) {
        if (!c->ro[i].dead || !c->ro[i].db) continue;
        sqlite3_close_v2(c->ro[i].db);
        c->ro[i].db = NULL;
    }
    atomic_store(&c->path_ok, c->w.db && c->w.writable);
    atomic_store(&c->owner, (uintptr_t)0);
    pthread_mutex_unlock(&c->mu);
}

/* ---------------------------------------------------------------- open/close */

kiln_status kiln__cache_open(const char *dir, const char *ro_layers,
                             const kiln_logger *log, kiln_cache **out)
{
    KILN_FAIL_IF(!out, KILN_EBADARG, "kiln__cache_open: out is NULL");
    KILN_FAIL_IF(dir && !*dir, KILN_EBADARG,
                 "kiln__cache_open: the cache directory is \"\"");
    pthread_once(&g_once, register_handlers);

    kiln_cache *c = kiln__calloc(1, sizeof *c);
    if (!c) goto nomem;
    c->log = log;
    if (dir) {
        c->dir = kiln__strdup(dir);
        if (!c->dir) goto nomem;
        size_t n = strlen(c->dir); /* "x/" would follow a symlink x */
        while (n > 1 && c->dir[n - 1] == '/') c->dir[--n] = '\0';
        c->db_path = kiln__malloc(n + sizeof "/kiln.db");
        if (!c->db_path) goto nomem;
        snprintf(c->db_path, n + sizeof "/kiln.db", "%s%skiln.db", c->dir,
                 strcmp(c->dir, "/") == 0 ? "" : "/");
    }
    if (ro_layers && *ro_layers) {
        c->ro_spec = kiln__strdup(ro_layers);
        if (!c->ro_spec) goto nomem;
    }
    c->w.path = c->db_path;
    const char *cap = getenv("KILN_CACHE_MAX_BYTES");
    if (cap && *cap) {
        char *end;
        errno = 0;
        long long v = strtoll(cap, &end, 10);
        int shift = *end == 'K' || *end == 'k' ? 10 : *end == 'M' || *end == 'm' ? 20
                  : *end == 'G' || *end == 'g' ? 30 : 0;
        if (shift) end++;
        if (errno || end == cap || *end || v < 0 || v > (INT64_MAX >> shift))
            KILN_LOGW(log, "ignoring KILN_CACHE_MAX_BYTES='%s': not a size like "
                      "500M", cap);
        else
            c->max_bytes = (int64_t)v << shift;
    }
    pthread_mutex_init(&c->mu, NULL);
    atomic_store(&c->pid, getpid());
    c->reopen = 1; /* the connections are opened by the lock below */

    pthread_mutex_lock(&g_reg_mu); /* registered first: a fork() from another */
    c->next = g_caches;            /* thread meanwhile is handled too */
    if (g_caches) g_caches->prev = c;
    g_caches = c;
    pthread_mutex_unlock(&g_reg_mu);
    kiln__cache_lock(c);
    kiln__cache_unlock(c);
    *out = c;
    return KILN_OK;
nomem:
    if (c) {
        kiln__free(c->dir);
        kiln__free(c->db_path);
        kiln__free(c);
    }
    return kiln__fail(KILN_ENOMEM, "out of memory opening the cache");
}

static void flush_notes(kiln_cache *c);

void kiln__cache_close(kiln_cache *c)
{
    if (!c) return;
    pthread_mutex_lock(&g_reg_mu);
    if (c->prev) c->prev->next = c->next;
    else g_caches = c->next;
    if (c->next) c->next->prev = c->prev;
    pthread_mutex_unlock(&g_reg_mu);

    if (atomic_load(&c->pid) == getpid()) {
        pthread_mutex_lock(&c->mu);
        flush_notes(c);
        kiln__cache_drop_layers(c, 1);
        pthread_mutex_unlock(&c->mu);
        pthread_mutex_destroy(&c->mu);
    } else {
        kiln__cache_drop_layers(c, 0); /* the parent's: forget, never close */
    }
    kiln__free(c->notes);
    kiln__free(c->dir);
    kiln__free(c->db_path);
    kiln__free(c->ro_spec);
    kiln__free(c);
}

/* Read without the lock (the engine asks on its own paths): path_ok is
 * what the last locked call left, and is kept across the fork handlers'
 * temporary close. */
const char *kiln__cache_path(const kiln_cache *c)
{
    return c && atomic_load(&c->path_ok) ? c->db_path : "";
}

/* ---------------------------------------------------------------- checks */

void kiln__cache_digest(const void *a, size_t an, const void *b, size_t bn,
                        uint8_t out[16])
{
    XXH3_state_t st;
    XXH3_INITSTATE(&st);
    XXH3_128bits_reset(&st);
    XXH3_128bits_update(&st, a, an);
    XXH3_128bits_update(&st, b, bn);
    XXH128_canonical_t cd;
    XXH128_canonicalFromHash(&cd, XXH3_128bits_digest(&st));
    memcpy(out, cd.digest, 16);
}

const char *kiln__cache_row_check(const uint8_t *hash, size_t hash_len,
                                  const uint8_t *want_ident, size_t want_len,
                                  const void *ident, size_t ident_len,
                                  int64_t bytes, const void *digest,
                                  size_t digest_len, const void *cubin,
                                  size_t cubin_len)
{
    if (want_ident) {
        if (ident_len != want_len || (want_len && memcmp(ident, want_ident, want_len)))
            return "its identity differs from the one looked up";
    } else {
        XXH128_canonical_t h;
        XXH128_canonicalFromHash(&h, XXH3_128bits(ident, ident_len));
        if (hash_len != 16 || memcmp(hash, h.digest, 16) != 0)
            return "its hash is not the hash of its identity";
    }
    if (bytes < 0 || (uint64_t)bytes != (uint64_t)cubin_len)
        return "the cubin's length differs from the bytes column";
    uint8_t d[16];
    kiln__cache_digest(ident, ident_len, cubin, cubin_len, d);
    if (digest_len != 16 || memcmp(d, digest, 16) != 0)
        return "the digest does not match";
    const char *elf = kiln__elf_check(cubin, cubin_len);
    if (elf) return elf;
    return NULL;
}

typedef struct drop_args {
    const void *hash, *digest; /* digest NULL: delete by hash alone */
    size_t hash_len, digest_len;
} drop_args;

static int drop_body(sqlite3 *db, void *ctx)
{
    const drop_args *a = ctx;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db,
                                a->digest ? "DELETE FROM kernels WHERE hash = ?1"
                                            " AND digest = ?2"
                                          : "DELETE FROM kernels WHERE hash = ?1",
                                -1, &st, NULL);
    if (rc != SQLITE_OK) return rc;
    sqlite3_bind_blob(st, 1, a->hash, (int)a->hash_len, SQLITE_STATIC);
    if (a->digest)
        sqlite3_bind_blob(st, 2, a->digest, (int)a->digest_len, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* The digest condition spares a row another process rebuilt meanwhile. */
void kiln__cache_drop_row(kiln_cache *c, const void *hash, size_t hash_len,
                          const void *digest, size_t digest_len)
{
    if (!c->w.db || !c->w.writable) return;
    drop_args a = {hash, digest, hash_len, digest_len};
    char err[200];
    int rc = kiln__cache_write(c, drop_body, &a, err, sizeof err);
    if (rc != SQLITE_OK)
        KILN_LOGD(c->log, "cache %s: could not delete a bad row: %s",
                  c->db_path, err);
}

/* ---------------------------------------------------------------- hits */

static int write_note(kiln_cache *c, cache_note *n, int64_t now)
{
    sqlite3_stmt *st = NULL;
    sqlite3_busy_timeout(c->w.db, CACHE_BUMP_BUSY_MS);
    int rc = sqlite3_prepare_v2(c->w.db,
                                "UPDATE kernels SET hits = hits + ?1,"
                                " last_used = ?2 WHERE hash = ?3",
                                -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, n->pending);
        sqlite3_bind_int64(st, 2, now);
        sqlite3_bind_blob(st, 3, n->hash, 16, SQLITE_STATIC);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
    }
    sqlite3_busy_timeout(c->w.db, CACHE_BUSY_MS);
    if (rc == SQLITE_DONE) {
        n->pending = 0;
        n->written = now;
        return SQLITE_OK;
    }
    kiln__cache_note_rc(c, &c->w, rc);
    KILN_LOGD(c->log, "cache %s: hit count not written (%s)", c->db_path,
              sqlite3_errstr(rc));
    return rc;
}

/* A hit in the writable layer: counted now, written at most once a minute. */
static void note_hit(kiln_cache *c, const uint8_t hash[16])
{
    if (!c->w.db || !c->w.writable) return;
    cache_note *n = NULL;
    for (size_t i = 0; i < c->nnotes; i++)
        if (memcmp(c->notes[i].hash, hash, 16) == 0) n = &c->notes[i];
    if (!n) {
        if (c->nnotes == c->cap_notes) {
            size_t cap = c->cap_notes ? 2 * c->cap_notes : 16;
            cache_note *g = kiln__realloc(c->notes, cap * sizeof *g);
            if (!g) return;
            c->notes = g;
            c->cap_notes = cap;
        }
        n = &c->notes[c->nnotes++];
        memset(n, 0, sizeof *n);
        memcpy(n->hash, hash, 16);
    }
    n->pending++;
    int64_t now = time(NULL);
    if (n->written == 0 || now - n->written >= CACHE_BUMP_SECONDS)
        write_note(c, n, now);
}

static void flush_notes(kiln_cache *c)
{
    int64_t now = time(NULL);
    for (size_t i = 0; i < c->nnotes && c->w.db && c->w.writable; i++)
        if (c->notes[i].pending && write_note(c, &c->notes[i], now) != SQLITE_OK)
            break;
    c->nnotes = 0;
}

/* ---------------------------------------------------------------- get */

enum { LOOK_MISS, LOOK_HIT, LOOK_BAD, LOOK_NOMEM };

static int lookup(kiln_cache *c, cache_layer *L, const uint8_t hash[16],
                  const uint8_t *ident, size_t ident_len, void **cubin,
                  size_t *len)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(L->db,
                                "SELECT ident, bytes, digest, key, cubin"
                                " FROM kernels WHERE hash = ?1",
                                -1, &st, NULL);
    if (rc != SQLITE_OK) goto fail;
    sqlite3_bind_blob(st, 1, hash, 16, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        sqlite3_finalize(st);
        return LOOK_MISS;
    }
    if (rc != SQLITE_ROW) goto fail;

    const void *id = sqlite3_column_blob(st, 0);
    size_t idn = (size_t)sqlite3_column_bytes(st, 0);
    int64_t bytes = sqlite3_column_int64(st, 1);
    const void *dg = sqlite3_column_blob(st, 2);
    size_t dgn = (size_t)sqlite3_column_bytes(st, 2);
    const unsigned char *key = sqlite3_column_text(st, 3);
    const void *cb = sqlite3_column_blob(st, 4);
    size_t cbn = (size_t)sqlite3_column_bytes(st, 4);
    int look = LOOK_HIT;
    const char *why = kiln__cache_row_check(hash, 16, ident, ident_len, id,
                                            idn, bytes, dg, dgn, cb, cbn);
    if (why) {
        kiln__log(c->log, KILN_LOG_WARN,
                  "cache %s: rejected the row for %s: %s%s", L->path,
                  key ? (const char *)key : "?", why,
                  L == &c->w && L->writable ? "; dropped" : "");
        c->rejected++;
        look = LOOK_BAD;
        if (L == &c->w && L->writable) {
            uint8_t dcopy[16];
            int whole = dg && dgn == 16;
            if (whole) memcpy(dcopy, dg, 16);
            sqlite3_finalize(st); /* before writing */
            st = NULL;
            kiln__cache_drop_row(c, hash, 16, whole ? dcopy : NULL, 16);
        }
    } else {
        void *copy = kiln__malloc(cbn);
        if (!copy) {
            look = LOOK_NOMEM;
        } else {
            memcpy(copy, cb, cbn);
            *cubin = copy;
            *len = cbn;
        }
    }
    sqlite3_finalize(st);
    return look;
fail:
    kiln__cache_note_rc(c, L, rc);
    KILN_LOGD(c->log, "cache %s: lookup failed: %s", L->path,
              sqlite3_errmsg(L->db));
    sqlite3_finalize(st);
    return LOOK_MISS;
}

kiln_status kiln__cache_get(kiln_cache *c, const uint8_t hash[16],
                            const uint8_t *ident, size_t ident_len,
                            void **cubin, size_t *len)
{
    KILN_FAIL_IF(!c || !hash || !ident || !ident_len || !cubin || !len,
                 KILN_EBADARG, "kiln__cache_get: NULL argument");
    kiln__cache_lock(c);
    int look = LOOK_MISS;
    for (int i = 0; i <= c->nro && look != LOOK_HIT && look != LOOK_NOMEM; i++) {
        cache_layer *L = i < c->nro ? &c->ro[i] : &c->w;
        if (!L->db || L->dead) continue;
        look = lookup(c, L, hash, ident, ident_len, cubin, len);
        if (look == LOOK_HIT && L == &c->w) note_hit(c, hash);
    }
    kiln__cache_unlock(c);
    if (look == LOOK_NOMEM)
        return kiln__fail(KILN_ENOMEM, "out of memory reading a cached cubin");
    return look == LOOK_HIT ? KILN_OK : KILN_ENOTFOUND;
}

/* ---------------------------------------------------------------- put */

typedef struct put_ctx {
    const kiln_cache_put_args *a;
    uint8_t digest[16];
    int64_t max_bytes; /* > 0: evict to this size in the same transaction */
    int64_t evicted;
} put_ctx;

static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s) sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
    else sqlite3_bind_null(st, i);
}

static int put_body(sqlite3 *db, void *ctx)
{
    const put_ctx *p = ctx;
    const kiln_cache_put_args *a = p->a;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(
        db,
        "INSERT OR IGNORE INTO kernels (hash, key, family, arch, dtype,"
        " head_dim, mask, rab, block_m, block_n, warps, template_digest,"
        " nvrtc, options, bytes, regs, smem, spills, compile_ms, created,"
        " last_used, hits, digest, ident, prelude, log, cubin) VALUES"
        " (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,"
        " ?16, ?17, ?18, ?19, ?20, ?20, 0, ?21, ?22, ?23, ?24, ?25)",
        -1, &st, NULL);
    if (rc != SQLITE_OK) return rc;
    const kiln_cache_fields *f = &a->f;
    sqlite3_bind_blob(st, 1, a->hash, 16, SQLITE_STATIC);
    bind_text(st, 2, f->key);
    bind_text(st, 3, f->family);
    bind_text(st, 4, f->arch);
    bind_text(st, 5, f->dtype);
    sqlite3_bind_int(st, 6, f->head_dim);
    bind_text(st, 7, f->mask);
    sqlite3_bind_int(st, 8, f->rab);
    sqlite3_bind_int(st, 9, f->block_m);
    sqlite3_bind_int(st, 10, f->block_n);
    sqlite3_bind_int(st, 11, f->warps);
    bind_text(st, 12, f->template_digest);
    bind_text(st, 13, f->nvrtc);
    bind_text(st, 14, f->options);
    sqlite3_bind_int64(st, 15, (int64_t)a->cubin_len);
    sqlite3_bind_int(st, 16, a->regs);
    sqlite3_bind_int(st, 17, a->smem);
    sqlite3_bind_int(st, 18, a->spills);
    sqlite3_bind_double(st, 19, a->compile_ms);
    sqlite3_bind_int64(st, 20, (int64_t)time(NULL));
    sqlite3_bind_blob(st, 21, p->digest, 16, SQLITE_STATIC);
    sqlite3_bind_blob(st, 22, a->ident, (int)a->ident_len, SQLITE_STATIC);
    bind_text(st, 23, a->prelude);
    bind_text(st, 24, a->log);
    sqlite3_bind_blob64(st, 25, a->cubin, a->cubin_len, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return rc;
    /* The cap holds at every commit: the insert and the eviction it causes
     * are one transaction (the new row is the most recent, so it stays
     * unless it alone exceeds the cap). */
    if (p->max_bytes > 0)
        return kiln__cache_evict_body(db, p->max_bytes, &((put_ctx *)p)->evicted);
    return SQLITE_OK;
}

/* A failed write: one warning per cache, then debug lines. */
static void write_failed(kiln_cache *c, int rc, const char *err)
{
    int busy = kiln__cache_is_busy(rc);
    int *warned = busy ? &c->warned_busy : &c->warned_write;
    int level = *warned ? KILN_LOG_DEBUG : busy ? KILN_LOG_INFO : KILN_LOG_WARN;
    *warned = 1;
    kiln__log(c->log, level,
              busy ? "cache %s stayed busy (%s); this kernel is kept in memory"
                   : "cannot write to cache %s (%s); new kernels are kept in "
                     "memory",
              c->db_path, err && *err ? err : sqlite3_errstr(rc));
}

kiln_status kiln__cache_put(kiln_cache *c, const kiln_cache_put_args *a)
{
    KILN_FAIL_IF(!c || !a || !a->f.key || !a->ident || !a->ident_len ||
                     !a->cubin,
                 KILN_EBADARG, "kiln__cache_put: NULL argument");
    KILN_FAIL_IF(a->ident_len > INT32_MAX || a->cubin_len > INT32_MAX,
                 KILN_EBADARG, "kiln__cache_put: entry too large");
    const char *elf = kiln__elf_check(a->cubin, a->cubin_len);
    KILN_FAIL_IF(elf, KILN_EBADARG,
                 "kiln__cache_put: refusing to store %s: %s", a->f.key, elf);
    put_ctx p = {.a = a, .max_bytes = c->max_bytes};
    kiln__cache_digest(a->ident, a->ident_len, a->cubin, a->cubin_len,
                       p.digest);

    kiln__cache_lock(c);
    if (!c->w.db && c->w_retry) kiln__cache_retry_writable(c);
    for (int attempt = 0; attempt < 2 && c->w.db && c->w.writable; attempt++) {
        char err[256];
        p.evicted = 0;
        int rc = kiln__cache_write(c, put_body, &p, err, sizeof err);
        if (rc == SQLITE_OK) {
            if (p.evicted > 0) {
                KILN_LOGD(c->log, "cache %s: evicted %lld entr%s to stay under "
                          "KILN_CACHE_MAX_BYTES=%lld", c->db_path,
                          (long long)p.evicted, p.evicted == 1 ? "y" : "ies",
                          (long long)c->max_bytes);
                sqlite3_exec(c->w.db, "PRAGMA incremental_vacuum", NULL, NULL,
                             NULL);
            }
            break;
        }
        if (c->w_corrupt && attempt == 0) {
            kiln__cache_recover(c); /* and write into the fresh file */
            continue;
        }
        write_failed(c, rc, err);
        break;
    }
    kiln__cache_unlock(c);
    return KILN_OK;
}

/* ---------------------------------------------------------------- meta */

kiln_status kiln__cache_meta_get(kiln_cache *c, const char *name, char **out)
{
    KILN_FAIL_IF(!c || !name || !out, KILN_EBADARG,
                 "kiln__cache_meta_get: NULL argument");
    kiln_status s = KILN_ENOTFOUND;
    kiln__cache_lock(c);
    for (int i = -1; i < c->nro && s == KILN_ENOTFOUND; i++) {
        cache_layer *L = i < 0 ? &c->w : &c->ro[i];
        if (!L->db || L->dead) continue;
        sqlite3_stmt *st = NULL;
        int rc = sqlite3_prepare_v2(L->db,
                                    "SELECT value FROM meta WHERE name = ?1",
                                    -1, &st, NULL);
        if (rc == SQLITE_OK) {
            sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
            rc = sqlite3_step(st);
            if (rc == SQLITE_ROW) {
                const char *v = (const char *)sqlite3_column_text(st, 0);
                char *copy = kiln__strdup(v ? v : "");
                s = copy ? KILN_OK : KILN_ENOMEM;
                if (copy) *out = copy;
            }
        }
        if (rc != SQLITE_OK && rc != SQLITE_ROW && rc != SQLITE_DONE)
            kiln__cache_note_rc(c, L, rc);
        sqlite3_finalize(st);
    }
    kiln__cache_unlock(c);
    if (s == KILN_ENOMEM) return kiln__fail(s, "out of memory");
    return s;
}

static int meta_body(sqlite3 *db, void *ctx)
{
    const char **nv = ctx;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db,
                                "INSERT OR REPLACE INTO meta (name, value)"
                                " VALUES (?1, ?2)",
                                -1, &st, NULL);
    if (rc != SQLITE_OK) return rc;
    sqlite3_bind_text(st, 1, nv[0], -1, SQLITE_STATIC);
    bind_text(st, 2, nv[1]);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

kiln_status kiln__cache_meta_put(kiln_cache *c, const char *name,
                                 const char *value)
{
    KILN_FAIL_IF(!c || !name, KILN_EBADARG,
                 "kiln__cache_meta_put: NULL argument");
    const char *nv[2] = {name, value};
    kiln__cache_lock(c);
    if (c->w.db && c->w.writable) {
        char err[256];
        int rc = kiln__cache_write(c, meta_body, nv, err, sizeof err);
        if (rc != SQLITE_OK) write_failed(c, rc, err);
    }
    kiln__cache_unlock(c);
    return KILN_OK;
}
