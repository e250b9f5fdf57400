/* cache_int.h -- what the files of cache/ share.  Private to cache/.
 *
 *   cache.c    the object: open/close, locking, fork, get/put/meta
 *   layer.c    opening one database: directory checks, pragmas, schema,
 *              read-only layers, moving a corrupt file aside
 *   inspect.c  list/stats/verify/clear/find_key (the CLI's view)
 *   elf.c      kiln__elf_check
 */
#ifndef KILN_CACHE_INT_H
#define KILN_CACHE_INT_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <sys/types.h>

#include "cache/cache.h"

#define CACHE_BUSY_MS 2000     /* sqlite3_busy_timeout on every connection */
#define CACHE_BUMP_BUSY_MS 50  /* the hit-count update waits less */
#define CACHE_WRITE_TRIES 3    /* BEGIN IMMEDIATE attempts ... */
#define CACHE_WRITE_DEADLINE_MS 3000 /* ... while less than this has passed */
#define CACHE_BUMP_SECONDS 60  /* a row's hits/last_used written at most this often */
#define CACHE_WAL_LIMIT (8 << 20)    /* PRAGMA journal_size_limit */

typedef struct cache_layer {
    sqlite3 *db;     /* NULL: not open */
    char *path;      /* the database file, for messages and entries */
    int writable;    /* 1: the writable layer, opened read-write */
    int dead;        /* found corrupt: closed at the next unlock */
    dev_t dev;       /* identity of the file opened (the writable layer */
    ino_t ino;       /*   moves a corrupt file aside only if it is this one) */
} cache_layer;

/* Hits of one writable row not yet written to it. */
typedef struct cache_note {
    uint8_t hash[16];
    int64_t pending;
    int64_t written; /* unix time of the last write, 0: never */
} cache_note;

struct kiln_cache {
    pthread_mutex_t mu; /* serializes all SQLite use of this cache */
    const kiln_logger *log;
    char *dir;          /* the writable directory, NULL: none */
    char *db_path;      /* dir/kiln.db, or NULL */
    char *ro_spec;      /* the ':'-separated read-only layers, or NULL */

    cache_layer w;      /* the writable layer; w.db NULL: memory mode */
    cache_layer *ro;    /* read-only layers, searched first, in order */
    int nro;

    _Atomic pid_t pid;  /* the process that opened the connections */
    _Atomic uintptr_t owner; /* the thread holding mu, 0 if none */
    int fork_held;      /* mu taken by the fork handlers */
    _Atomic int path_ok; /* kiln__cache_path() is db_path (writable layer open) */
    int reopen;         /* connections dropped (fork): open on next use */
    int quiet;          /* reopening: layer problems were already reported */
    int w_corrupt;      /* the writable layer said CORRUPT/NOTADB */
    char corrupt_why[256];
    int warned_write, warned_busy;
    int w_retry;        /* kiln.db could not be created (no space, no inode,
                         * I/O): open_writable is tried again at each put */
    int64_t rejected;   /* rows that failed verification in a get */
    int64_t max_bytes;  /* $KILN_CACHE_MAX_BYTES: cap applied in each put, 0: none */

    cache_note *notes;
    size_t nnotes, cap_notes;

    struct kiln_cache *next, *prev; /* the fork handlers' registry */
};

/* layer.c */
void kiln__cache_open_layers(kiln_cache *c);
/* Under the lock: if kiln.db could not be created for a reason that may pass
 * (c->w_retry), try to open the writable layer again, quietly. */
void kiln__cache_retry_writable(kiln_cache *c);
/* Close (close != 0) or just forget (after fork) every connection. */
void kiln__cache_drop_layers(kiln_cache *c, int close);
/* Move the corrupt writable database aside and start a fresh one. */
void kiln__cache_recover(kiln_cache *c);
/* rc is a failure of a statement on L: note corruption for the next unlock. */
int kiln__cache_note_rc(kiln_cache *c, cache_layer *L, int rc);
/* Run body inside BEGIN IMMEDIATE ... COMMIT on the writable layer, retrying
 * SQLITE_BUSY a bounded number of times.  err (may be NULL) receives the
 * SQLite message of a failure. */
int kiln__cache_write(kiln_cache *c, int (*body)(sqlite3 *db, void *ctx),
                      void *ctx, char *err, size_t errn);
int kiln__cache_is_busy(int rc);

/* inspect.c: inside a write transaction, delete the least recently used rows
 * until the cubins total at most max_bytes.  SQLite status; *removed set. */
int kiln__cache_evict_body(sqlite3 *db, int64_t max_bytes, int64_t *removed);

/* cache.c */
void kiln__cache_lock(kiln_cache *c);
void kiln__cache_unlock(kiln_cache *c);
/* Canonical XXH3-128 of a || b. */
void kiln__cache_digest(const void *a, size_t an, const void *b, size_t bn,
                        uint8_t out[16]);
/* Why a stored row is bad, or NULL.  ident/ident_len: the caller's identity,
 * or NULL to check that hash is the digest of the stored ident instead. */
const char *kiln__cache_row_check(const uint8_t *hash, size_t hash_len,
                                  const uint8_t *want_ident, size_t want_len,
                                  const void *ident, size_t ident_len,
                                  int64_t bytes, const void *digest,
                                  size_t digest_len, const void *cubin,
                                  size_t cubin_len);
/* Delete a row found bad (writable layer), best effort. */
void kiln__cache_drop_row(kiln_cache *c, const void *hash, size_t hash_len,
                          const void *digest, size_t digest_len);

#endif
