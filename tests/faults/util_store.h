/* util_store.h -- helpers for the cache fault programs (tests/faults/f_store_*.c).
 *
 * A fake CUDA driver (kiln__cu_override) that counts cuLibraryLoadData calls
 * and checks each loaded buffer: it must pass kiln__elf_check and equal,
 * byte for byte, a reference cubin compiled fresh by this process (st_refs);
 * anything else is counted in st_bad_loads().  A logger that keeps every line
 * so a test can count incidents.  Scratch directories, per-case alarms, and
 * CHECK(), which reports the case and exits 1.
 *
 * Not thread-safe except the fake driver, the logger and the counters. */
#ifndef KILN_FAULTS_UTIL_STORE_H
#define KILN_FAULTS_UTIL_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "kiln.h"

extern int st_long;          /* --long given */
extern const char *st_case_name;

/* Parse --long, make a scratch root (removed at exit unless KILN_FAULT_KEEP),
 * install the fake driver. */
void st_init(int argc, char **argv, const char *prog);
const char *st_root(void);
/* A fresh directory under the root, "<root>/<name>" (removed first). */
const char *st_dir(const char *name);

/* Start a case: its name for messages, an alarm of `seconds` (the case fails
 * with exit 124 if it hangs), a cleared log, counters noted. */
void st_case(const char *name, int seconds);
/* End it: print "ok  name (detail)". */
void st_case_ok(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "FAIL [%s] %s:%d: %s: ", st_case_name, __FILE__,   \
                    __LINE__, #cond);                                          \
            fprintf(stderr, __VA_ARGS__);                                      \
            fprintf(stderr, "\n--- log:\n%s---\n", st_log());                  \
            exit(1);                                                           \
        }                                                                      \
    } while (0)

/* ---------------------------------------------------------------- driver */
int st_loads(void);     /* cuLibraryLoadData calls */
int st_bad_loads(void); /* ... on bytes that were not a verified reference */
/* Register bytes the fake driver accepts (done by st_refs). */
void st_ref_bytes(const void *cubin, size_t len);
/* Bytes of the last load (valid until the next). */
const void *st_last_load(size_t *len);

/* ---------------------------------------------------------------- logger */
const char *st_log(void);
void st_log_reset(void);
/* Lines at level <= KILN_LOG_WARN (an "incident" is one such line). */
int st_log_warnings(void);
int st_log_count(const char *needle);

/* ---------------------------------------------------------------- engines */
/* An engine on cache directory dir (NULL: no writable layer) and read-only
 * layers ro ("" for none), logging into the capture at level debug. */
kiln_engine *st_engine(const char *dir, const char *ro, uint32_t flags);

/* ---------------------------------------------------------------- refs */
typedef struct st_ref {
    char key[128];             /* the key kiln_hstu_fwd uses on sm_80 */
    kiln_hstu_fwd_params p;
    void *cubin;               /* a fresh compile of key */
    size_t len;
} st_ref;
/* The first n (<= 16) reference kernels: compiled once per process into
 * <root>/ref/kiln.db (reused if KILN_FAULT_REFS names a directory holding
 * one), their bytes registered with the fake driver. */
st_ref *st_refs(int n);
const char *st_ref_db(void); /* <root>/ref/kiln.db after st_refs */
/* Launch r on e through the fake driver.  Checks: KILN_OK; no unverified
 * load; if a load happened, its bytes equal r->cubin.  Returns loads made. */
int st_launch(kiln_engine *e, const st_ref *r);

/* ---------------------------------------------------------------- files */
void st_copy(const char *from, const char *to);
int st_exists(const char *path);
int st_count_prefix(const char *dir, const char *prefix);
/* Run a one-row integer SQL query on path (opened read-write, not
 * immutable); -1 on error. */
int64_t st_sql_int(const char *path, const char *sql);
/* Execute SQL on path; SQLite status. */
int st_sql_exec(const char *path, const char *sql);
/* PRAGMA integrity_check == "ok" */
int st_integrity_ok(const char *path);
double st_now(void);

/* A fake but structurally valid cubin (passes kiln__elf_check: ELF64 LE,
 * e_machine 190, a null section and one PROGBITS of `payload` pseudo-random
 * bytes from seed), malloc'd; *len its size.  Never loadable by a driver. */
void *st_fake_elf(size_t payload, unsigned seed, size_t *len);

#endif
