/* cache.h -- the on-disk cubin cache: one SQLite file per layer.  Internal.
 *
 * Layers: zero or more read-only layers (opened mode=ro&immutable=1, searched
 * first, never written) and at most one writable layer (kiln.db in the cache
 * directory).  If the writable location is unusable (read-only, full, foreign
 * owner, symlink, corrupt and not rebuildable) the cache logs ONE warning and
 * behaves as if it had no writable layer; callers keep kernels in memory.  A
 * kiln.db in a location that cannot be written is still read when that is
 * safe.  A corrupt kiln.db is renamed to kiln.db.corrupt-<unixtime>-<pid>
 * (with its -wal/-shm) and a fresh one created.
 *
 * Identity: rows are indexed by a 16-byte XXH3-128 `hash`, but a row is a hit
 * only if its stored `ident` bytes equal the caller's exactly, its cubin length
 * matches `bytes`, its `digest` (XXH3-128 over ident || cubin) matches, and
 * the cubin passes kiln__elf_check().  A row failing any check is deleted from
 * the writable layer (ignored in read-only ones) and reported as a miss, and
 * counted in `rejected`.
 *
 * Thread safety: one kiln_cache may be used from many threads; it serializes
 * its own SQLite access with an internal mutex (so connections are opened
 * SQLITE_OPEN_NOMUTEX).  Callbacks (list, verify) run after that mutex is
 * released and may call back into the cache; the logger's fn is called with
 * it held and must not call into kiln.  Processes coordinate through SQLite
 * (WAL, 2 s busy timeout, BEGIN IMMEDIATE, INSERT OR IGNORE); no call waits
 * on a lock for more than a few seconds.
 *
 * fork(): pthread_atfork handlers close every cache's connections in the
 * parent just before fork() (the child then inherits no SQLite state for the
 * file), and both processes reopen them on first use.  A child made without
 * the handlers (raw clone) notices the pid change, forgets the inherited
 * connections without closing them, and opens new ones.
 *
 * The file format is documented in cache/SCHEMA.md and atop cache.c. */
#ifndef KILN_CACHE_H
#define KILN_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "kiln.h"
#include "../runtime/error.h"

#define KILN_CACHE_SCHEMA 1 /* PRAGMA user_version */

typedef struct kiln_cache kiln_cache;

/* Readable columns of a row, given by the caller (the cache knows nothing of
 * keys beyond these strings). */
typedef struct kiln_cache_fields {
    const char *key;    /* canonical text form */
    const char *family; /* "hstu_fwd" */
    const char *arch;   /* "sm_90a" */
    const char *dtype;  /* "bf16" */
    const char *mask;   /* "causal+target" or "none" */
    int head_dim, rab, block_m, block_n, warps;
    const char *template_digest; /* hex */
    const char *nvrtc;           /* "13.0" */
    const char *options;         /* compile options, space-separated */
} kiln_cache_fields;

typedef struct kiln_cache_put_args {
    uint8_t hash[16]; /* canonical XXH3-128 of ident (kiln__ident_build's):
                       * verify and find_key check the stored pair */
    const uint8_t *ident;
    size_t ident_len;
    kiln_cache_fields f;
    const void *cubin;
    size_t cubin_len;
    const char *prelude, *log;
    double compile_ms;
    int regs, smem, spills;
} kiln_cache_put_args;

/* Open.  dir: writable cache directory (NULL: no writable layer); created 0700
 * if missing; refused (memory mode, one warning) if it is a symlink, not owned
 * by the effective uid, or group/world-writable, or if kiln.db, kiln.db-wal or
 * kiln.db-shm is a symlink, hard-linked or owned by another user.  A kiln.db
 * that could not be created (e.g. no space or inodes) is retried at the next
 * put, so stores resume without a restart.  ro_layers: ':'-separated
 * directories (holding kiln.db) or .db files, may be NULL; missing ones are
 * skipped with a debug log.  Fails only for ENOMEM/EBADARG. */
kiln_status kiln__cache_open(const char *dir, const char *ro_layers,
                             const kiln_logger *log, kiln_cache **out);
void kiln__cache_close(kiln_cache *c);

/* Look up hash, in the read-only layers first, then the writable one; on a
 * verified hit *cubin (kiln__malloc'd, caller frees) and *len are set and,
 * for a writable-layer row, its hits / last_used are bumped (written at most
 * once a minute per row and at close; best effort).  KILN_ENOTFOUND on a miss
 * or a rejected row.  Other statuses only for EBADARG/ENOMEM. */
kiln_status kiln__cache_get(kiln_cache *c, const uint8_t hash[16],
                            const uint8_t *ident, size_t ident_len,
                            void **cubin, size_t *len);

/* Insert (BEGIN IMMEDIATE, INSERT OR IGNORE).  Best effort: if the writable
 * layer is missing or the write fails (read-only, disk full, busy past the
 * bounded wait) it logs once and returns KILN_OK; the caller keeps the kernel
 * in memory.  Never holds a transaction longer than the insert itself.
 * KILN_EBADARG for NULL fields or a cubin that fails kiln__elf_check(). */
kiln_status kiln__cache_put(kiln_cache *c, const kiln_cache_put_args *a);

/* Small key/value store in the writable layer (table meta); used to memoize
 * the NVRTC version by file identity.  get: KILN_ENOTFOUND if absent (looks in
 * every layer, writable first); *out is kiln__malloc'd. put: best effort. */
kiln_status kiln__cache_meta_get(kiln_cache *c, const char *name, char **out);
kiln_status kiln__cache_meta_put(kiln_cache *c, const char *name,
                                 const char *value);

/* The writable database path, or "" if none. */
const char *kiln__cache_path(const kiln_cache *c);

/* For the public inspection API (see kiln.h for the semantics). pattern is
 * matched against the key text with fnmatch(3) (no flags, so '*' also spans
 * '/'); NULL matches all.  list visits read-only layers first, each ordered by
 * key.  stats fills the cache's fields and `rejected` (rows this cache
 * rejected in gets); the engine adds its own counters.  verify checks each
 * row as find_key does and runs PRAGMA integrity_check; with drop, bad rows of
 * the writable layer are deleted, and a writable file that fails the
 * integrity check is moved aside as corrupt.  clear touches the writable
 * layer only; KILN_ECACHE (with the SQLite message) if the delete fails. */
kiln_status kiln__cache_list(kiln_cache *c, const char *pattern,
                             int (*fn)(const kiln_cache_entry *e, void *user),
                             void *user);
kiln_status kiln__cache_stats(kiln_cache *c, kiln_cache_stats *out);
kiln_status kiln__cache_verify(kiln_cache *c, int drop,
                               kiln_cache_verify_report *out,
                               void (*fn)(const char *key, const char *why,
                                          void *user),
                               void *user);
kiln_status kiln__cache_clear(kiln_cache *c, const char *pattern,
                              int64_t *removed);
/* Delete least recently used rows of the writable layer until its cubins
 * total at most max_bytes.  *removed (may be NULL) receives the count. */
kiln_status kiln__cache_evict(kiln_cache *c, int64_t max_bytes,
                              int64_t *removed);
/* Exact key text lookup (for `kiln show` / export): the newest verified row
 * of the first layer that has one.  With no caller ident to compare, it checks
 * hash == XXH3-128(stored ident) instead, plus length, digest and ELF; bad
 * rows are skipped.  *cubin kiln__malloc'd.  KILN_ENOTFOUND if none. */
kiln_status kiln__cache_find_key(kiln_cache *c, const char *key_text,
                                 void **cubin, size_t *len);

/* Structural check of a cubin: ELF magic, 64-bit little-endian, e_machine
 * EM_CUDA (190), header/section/program tables within len.  0 if ok, else a
 * static string saying what is wrong. */
const char *kiln__elf_check(const void *data, size_t len);

#endif
