/* test_cache.c -- the on-disk cubin cache (cache/), and runtime/error.c.
 *
 * Each test runs in a fresh directory under $TMPDIR (or /tmp).  Blobs are
 * minimal fake cubins (an ELF64 header with e_machine 190 and one section).
 * Damage is done with the SQLite API directly, the way a disk or a person
 * would do it.  Tests that fork check their children with CHILD_CHECK, which
 * exits the child (never a cmocka assert in a child). */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>
#include <xxhash.h>

#include "cache/cache.h"

/* ================================================================ helpers */

static char g_dir[1024]; /* this test's directory */

/* Captured log lines. */
static pthread_mutex_t g_log_mu = PTHREAD_MUTEX_INITIALIZER;
static char g_log[1 << 16];
static size_t g_log_len;

static void capture(int level, const char *line, void *user)
{
    (void)level;
    (void)user;
    pthread_mutex_lock(&g_log_mu);
    size_t n = strlen(line);
    if (g_log_len + n + 2 < sizeof g_log) {
        memcpy(g_log + g_log_len, line, n);
        g_log_len += n;
        g_log[g_log_len++] = '\n';
        g_log[g_log_len] = '\0';
    }
    pthread_mutex_unlock(&g_log_mu);
    if (getenv("KILN_TEST_VERBOSE")) fprintf(stderr, "%s\n", line);
}

static kiln_logger g_logger = {KILN_LOG_DEBUG, capture, NULL};

static int log_has(const char *s) { return strstr(g_log, s) != NULL; }

static int count_in_log(const char *s)
{
    int n = 0;
    for (const char *p = g_log; (p = strstr(p, s)); p++) n++;
    return n;
}

static void log_reset(void)
{
    g_log_len = 0;
    g_log[0] = '\0';
}

static void path_in(char *out, const char *name)
{
    snprintf(out, PATH_MAX, "%s/%s", g_dir, name);
}

static int unlock_dirs(const char *p, const struct stat *sb, int flag,
                       struct FTW *ftw)
{
    (void)ftw;
    if (flag == FTW_D || flag == FTW_DNR) chmod(p, 0700);
    (void)sb;
    return 0;
}

static int remove_one(const char *p, const struct stat *sb, int flag,
                      struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(p);
    return 0;
}

static int setup(void **state)
{
    (void)state;
    const char *t = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/kiln-test-cache-XXXXXX",
             t && *t ? t : "/tmp");
    if (!mkdtemp(g_dir)) return -1;
    chmod(g_dir, 0711); /* reachable by a child that dropped privileges */
    log_reset();
    kiln__clear_error();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    nftw(g_dir, unlock_dirs, 16, FTW_PHYS);
    nftw(g_dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* A child's assertion: report and exit non-zero. */
#define CHILD_CHECK(cond)                                                      \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "child %d: %s:%d: check failed: %s\n",             \
                    (int)getpid(), __FILE__, __LINE__, #cond);                 \
            _exit(1);                                                          \
        }                                                                      \
    } while (0)

static int wait_ok(pid_t pid)
{
    int st = 0;
    if (waitpid(pid, &st, 0) != pid) return 0;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* A child's way to say "skipped" (the parent calls skip()). */
#define CHILD_SKIP 77

static int wait_code(pid_t pid)
{
    int st = 0;
    if (waitpid(pid, &st, 0) != pid) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int is_root(void) { return geteuid() == 0; }

/* Drop to nobody (65534) in a forked child; 0 on success. */
static int drop_privileges(void)
{
    if (setgroups(0, NULL) != 0 && errno != EPERM) return -1;
    if (setgid(65534) != 0) return -1;
    if (setuid(65534) != 0) return -1;
    return geteuid() == 65534 ? 0 : -1;
}

/* ---------------------------------------------------------------- fake cubins */

static void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* ELF64 LE, e_machine 190, sections: null + one PROGBITS of payload bytes. */
static uint8_t *fake_elf(size_t payload, unsigned seed, size_t *len)
{
    size_t shoff = (64 + payload + 7) & ~(size_t)7;
    size_t n = shoff + 2 * 64;
    uint8_t *b = calloc(1, n);
    assert_non_null(b);
    memcpy(b, "\177ELF", 4);
    b[4] = 2; /* ELFCLASS64 */
    b[5] = 1; /* little-endian */
    b[6] = 1;
    put_le(b + 16, 2, 2);   /* ET_EXEC */
    put_le(b + 18, 190, 2); /* EM_CUDA */
    put_le(b + 20, 1, 4);
    put_le(b + 40, shoff, 8);
    put_le(b + 52, 64, 2);
    put_le(b + 54, 56, 2);
    put_le(b + 58, 64, 2);
    put_le(b + 60, 2, 2);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < payload; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        b[64 + i] = (uint8_t)x;
    }
    uint8_t *sh = b + shoff + 64;
    put_le(sh + 4, 1, 4); /* SHT_PROGBITS */
    put_le(sh + 24, 64, 8);
    put_le(sh + 32, payload, 8);
    *len = n;
    return b;
}

/* ---------------------------------------------------------------- entries */

typedef struct tentry {
    char key[160];
    uint8_t ident[90];
    uint8_t hash[16];
    uint8_t *cubin;
    size_t cubin_len;
} tentry;

static unsigned str_seed(const char *s)
{
    return (unsigned)XXH3_64bits(s, strlen(s));
}

/* variant changes the identity (e.g. another NVRTC) but not the key text. */
static void tentry_make(tentry *t, const char *key, size_t payload,
                        unsigned variant)
{
    memset(t, 0, sizeof *t);
    snprintf(t->key, sizeof t->key, "%s", key);
    snprintf((char *)t->ident, sizeof t->ident, "ident/%u/%s", variant, key);
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(t->ident, sizeof t->ident));
    memcpy(t->hash, c.digest, 16);
    t->cubin = fake_elf(payload, str_seed(key) + variant, &t->cubin_len);
}

static void tentry_free(tentry *t)
{
    free(t->cubin);
    t->cubin = NULL;
}

static kiln_cache_put_args targs(const tentry *t)
{
    kiln_cache_put_args a;
    memset(&a, 0, sizeof a);
    memcpy(a.hash, t->hash, 16);
    a.ident = t->ident;
    a.ident_len = sizeof t->ident;
    a.f.key = t->key;
    a.f.family = "hstu_fwd";
    a.f.arch = "sm_90a";
    a.f.dtype = "bf16";
    a.f.mask = "causal";
    a.f.head_dim = 128;
    a.f.rab = 1;
    a.f.block_m = 128;
    a.f.block_n = 64;
    a.f.warps = 8;
    a.f.template_digest = "00112233445566778899aabbccddeeff";
    a.f.nvrtc = "13.0";
    a.f.options = "--gpu-architecture=sm_90a -std=c++17";
    a.cubin = t->cubin;
    a.cubin_len = t->cubin_len;
    a.prelude = "#define KILN_HEAD_DIM 128\n";
    a.log = "";
    a.compile_ms = 123.5;
    a.regs = 168;
    a.smem = 49152;
    a.spills = 0;
    return a;
}

static kiln_status tput(kiln_cache *c, const tentry *t)
{
    kiln_cache_put_args a = targs(t);
    return kiln__cache_put(c, &a);
}

/* KILN_OK and the exact bytes, or the status. */
static kiln_status tget(kiln_cache *c, const tentry *t)
{
    void *b = NULL;
    size_t n = 0;
    kiln_status s = kiln__cache_get(c, t->hash, t->ident, sizeof t->ident, &b,
                                    &n);
    if (s == KILN_OK && (n != t->cubin_len || memcmp(b, t->cubin, n) != 0))
        s = KILN_EINTERNAL; /* served the wrong bytes */
    free(b);
    return s;
}

static kiln_cache *topen(const char *dir, const char *ro)
{
    kiln_cache *c = NULL;
    assert_int_equal(kiln__cache_open(dir, ro, &g_logger, &c), KILN_OK);
    assert_non_null(c);
    return c;
}

/* ---------------------------------------------------------------- sqlite */

static sqlite3 *db_open(const char *path)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL);
    assert_int_equal(rc, SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static void db_exec(const char *path, const char *sql)
{
    sqlite3 *db = db_open(path);
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK) fail_msg("%s: %s", sql, err ? err : "?");
    sqlite3_close(db);
}

static int64_t db_int(const char *path, const char *sql)
{
    sqlite3 *db = db_open(path);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    int64_t v = -1;
    if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static int64_t db_rows_for(const char *path, const tentry *t)
{
    sqlite3 *db = db_open(path);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT count(*) FROM kernels WHERE"
                                        " hash = ?1",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_blob(st, 1, t->hash, 16, SQLITE_STATIC);
    int64_t v = -1;
    if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* Replace a row's cubin (and maybe bytes and digest) behind the cache. */
static void db_set_cubin(const char *path, const tentry *t, const void *data,
                         size_t n, int set_bytes, int set_digest)
{
    sqlite3 *db = db_open(path);
    sqlite3_stmt *st = NULL;
    assert_int_equal(
        sqlite3_prepare_v2(db,
                           "UPDATE kernels SET cubin = ?1,"
                           " bytes = CASE WHEN ?2 THEN ?3 ELSE bytes END,"
                           " digest = CASE WHEN ?4 THEN ?5 ELSE digest END"
                           " WHERE hash = ?6",
                           -1, &st, NULL),
        SQLITE_OK);
    uint8_t d[16];
    XXH3_state_t *xs = XXH3_createState();
    XXH3_128bits_reset(xs);
    XXH3_128bits_update(xs, t->ident, sizeof t->ident);
    XXH3_128bits_update(xs, data, n);
    XXH128_canonical_t cd;
    XXH128_canonicalFromHash(&cd, XXH3_128bits_digest(xs));
    XXH3_freeState(xs);
    memcpy(d, cd.digest, 16);
    sqlite3_bind_blob(st, 1, data, (int)n, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, set_bytes);
    sqlite3_bind_int64(st, 3, (int64_t)n);
    sqlite3_bind_int(st, 4, set_digest);
    sqlite3_bind_blob(st, 5, d, 16, SQLITE_STATIC);
    sqlite3_bind_blob(st, 6, t->hash, 16, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    assert_int_equal(sqlite3_changes(db), 1);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static uint64_t file_digest(const char *path, off_t *size)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    XXH3_state_t *xs = XXH3_createState();
    XXH3_64bits_reset(xs);
    char buf[65536];
    size_t n;
    *size = 0;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        XXH3_64bits_update(xs, buf, n);
        *size += (off_t)n;
    }
    fclose(f);
    uint64_t h = XXH3_64bits_digest(xs);
    XXH3_freeState(xs);
    return h;
}

static int exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* Number of "<dir>/kiln.db.corrupt-*" files (not -wal/-shm). */
static int corrupt_copies(const char *dir)
{
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -c '^kiln.db.corrupt-[0-9]*-[0-9]*\\(\\.[0-9]*\\)\\?$'",
             dir);
    FILE *p = popen(cmd, "r");
    int n = 0;
    if (p) {
        if (fscanf(p, "%d", &n) != 1) n = 0;
        pclose(p);
    }
    return n;
}

static void write_file(const char *path, const void *data, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, n), (ssize_t)n);
    close(fd);
}

static kiln_cache_verify_report tverify(kiln_cache *c, int drop)
{
    kiln_cache_verify_report r;
    memset(&r, 0xff, sizeof r);
    assert_int_equal(kiln__cache_verify(c, drop, &r, NULL, NULL), KILN_OK);
    return r;
}

/* ================================================================ runtime/error.c */

static void test_error_api(void **state)
{
    (void)state;
    assert_string_equal(kiln_status_name(KILN_OK), "KILN_OK");
    assert_string_equal(kiln_status_name(KILN_ECACHE), "KILN_ECACHE");
    assert_string_equal(kiln_status_name((kiln_status)999), "KILN_UNKNOWN");
    assert_string_equal(kiln_status_string(KILN_EBADARG), "invalid argument");
    assert_string_equal(kiln_status_string(KILN_ENOTFOUND), "not found");
    assert_non_null(kiln_status_string((kiln_status)-3));

    kiln__clear_error();
    assert_string_equal(kiln_last_error(), "");
    assert_int_equal(kiln__fail(KILN_EBADARG, "field %s = %d", "head_dim", 7),
                     KILN_EBADARG);
    assert_string_equal(kiln_last_error(), "field head_dim = 7");
    kiln__fail_append("; more");
    assert_string_equal(kiln_last_error(), "field head_dim = 7; more");
    char big[6000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    kiln__fail_append(big); /* truncated, never overflows */
    assert_true(strlen(kiln_last_error()) < 4096);
    kiln__fail(KILN_EIO, "%s", big);
    assert_int_equal(strlen(kiln_last_error()), 4095);
    kiln__clear_error();
    assert_string_equal(kiln_last_error(), "");

    kiln_logger lg = {KILN_LOG_WARN, capture, NULL};
    kiln__log(&lg, KILN_LOG_INFO, "hidden %d", 1);
    assert_false(log_has("hidden"));
    kiln__log(&lg, KILN_LOG_WARN, "two\nlines");
    assert_true(log_has("kiln: warn: two\nkiln: warn: lines\n"));
    kiln__log(&lg, KILN_LOG_ERROR, "%s", big); /* longer than the stack buffer */
    assert_true(log_has("kiln: error: xxxxxxxx"));
    assert_true(strlen(g_log) > 5999);

    char *d = kiln__strdup("abc");
    assert_string_equal(d, "abc");
    kiln__free(d);
    assert_null(kiln__strdup(NULL));
    void *p = kiln__calloc(4, 4);
    assert_non_null(p);
    p = kiln__realloc(p, 64);
    assert_non_null(p);
    kiln__free(p);
}

/* ================================================================ ELF */

static void test_elf_check(void **state)
{
    (void)state;
    size_t n;
    uint8_t *b = fake_elf(100, 1, &n);
    assert_null(kiln__elf_check(b, n));
    assert_non_null(kiln__elf_check(NULL, 0));
    assert_non_null(kiln__elf_check(b, 63));
    assert_non_null(kiln__elf_check(b, n - 1)); /* section table cut */

    uint8_t *c = malloc(n);
#define MUTATE(stmt)                                                           \
    do {                                                                       \
        memcpy(c, b, n);                                                       \
        stmt;                                                                  \
        assert_non_null(kiln__elf_check(c, n));                                \
    } while (0)
    MUTATE(c[0] = 0x7e);                    /* magic */
    MUTATE(c[4] = 1);                       /* 32-bit */
    MUTATE(c[5] = 2);                       /* big-endian */
    MUTATE(put_le(c + 18, 62, 2));          /* x86-64, not CUDA */
    MUTATE(put_le(c + 52, 20, 2));          /* e_ehsize */
    MUTATE(put_le(c + 40, UINT64_MAX - 10, 8)); /* shoff overflow */
    MUTATE(put_le(c + 40, n - 64, 8));      /* table runs past the end */
    MUTATE(put_le(c + 60, 0, 2));           /* no sections */
    MUTATE(put_le(c + 58, 10, 2));          /* shentsize */
    MUTATE(put_le(c + 62, 5, 2));           /* shstrndx */
    size_t sh1 = (size_t)(n - 64);
    MUTATE(put_le(c + sh1 + 24, n, 8));                  /* section offset */
    MUTATE(put_le(c + sh1 + 32, UINT64_MAX, 8));         /* size overflow */
    MUTATE((put_le(c + 56, 1, 2), put_le(c + 32, 64, 8))); /* phdrs past end */
    MUTATE((put_le(c + 56, 1, 2), put_le(c + 32, UINT64_MAX - 8, 8)));
#undef MUTATE
    /* SHT_NOBITS sections may point anywhere. */
    memcpy(c, b, n);
    put_le(c + sh1 + 4, 8, 4);
    put_le(c + sh1 + 24, UINT64_MAX, 8);
    put_le(c + sh1 + 32, UINT64_MAX, 8);
    assert_null(kiln__elf_check(c, n));
    free(c);
    free(b);
}

/* ================================================================ basics */

static void test_round_trip(void **state)
{
    (void)state;
    char dir[PATH_MAX], db[PATH_MAX];
    path_in(dir, "c");
    path_in(db, "c/kiln.db");
    kiln_cache *c = topen(dir, NULL);
    assert_string_equal(kiln__cache_path(c), db);

    tentry t;
    tentry_make(&t, "hstu_fwd/sm_90a/bf16/d128/causal/rab", 5000, 0);
    assert_int_equal(tget(c, &t), KILN_ENOTFOUND);
    assert_int_equal(tput(c, &t), KILN_OK);
    assert_int_equal(tput(c, &t), KILN_OK); /* again: INSERT OR IGNORE */
    assert_int_equal(tget(c, &t), KILN_OK);

    kiln_cache_stats s;
    assert_int_equal(kiln__cache_stats(c, &s), KILN_OK);
    assert_int_equal(s.entries, 1);
    assert_int_equal(s.bytes, (int64_t)t.cubin_len);
    assert_int_equal(s.writable, 1);
    assert_string_equal(s.path, db);
    assert_true(s.file_bytes > 0);
    assert_int_equal(s.rejected, 0);
    kiln__cache_close(c);

    /* Persisted; readable columns; schema version; WAL. */
    c = topen(dir, NULL);
    assert_int_equal(tget(c, &t), KILN_OK);
    kiln__cache_close(c);
    assert_int_equal(db_int(db, "PRAGMA user_version"), KILN_CACHE_SCHEMA);
    assert_int_equal(db_int(db, "SELECT count(*) FROM kernels WHERE key ="
                                " 'hstu_fwd/sm_90a/bf16/d128/causal/rab' AND"
                                " regs = 168 AND spills = 0 AND smem = 49152"
                                " AND head_dim = 128 AND arch = 'sm_90a' AND"
                                " length(hash) = 16 AND length(digest) = 16"
                                " AND nvrtc = '13.0' AND block_n = 64"),
                     1);
    assert_int_equal(db_int(db, "SELECT bytes FROM kernels"),
                     (int64_t)t.cubin_len);
    assert_int_equal(db_int(db, "SELECT count(*) FROM sqlite_master WHERE"
                                " name IN ('kernels', 'meta', 'kernels_key')"),
                     3);
    sqlite3 *h = db_open(db);
    sqlite3_stmt *st;
    sqlite3_prepare_v2(h, "PRAGMA journal_mode", -1, &st, NULL);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(h);

    /* Bad arguments. */
    assert_int_equal(kiln__cache_open(dir, NULL, NULL, NULL), KILN_EBADARG);
    assert_int_equal(kiln__cache_open("", NULL, NULL, &c), KILN_EBADARG);
    c = topen(dir, NULL);
    kiln_cache_put_args a = targs(&t);
    a.ident = NULL;
    assert_int_equal(kiln__cache_put(c, &a), KILN_EBADARG);
    void *b;
    size_t n;
    assert_int_equal(kiln__cache_get(c, t.hash, NULL, 0, &b, &n), KILN_EBADARG);
    kiln__cache_close(c);
    kiln__cache_close(NULL);
    tentry_free(&t);
}

static void test_memory_mode(void **state)
{
    (void)state;
    kiln_cache *c = topen(NULL, NULL);
    tentry t;
    tentry_make(&t, "k/mem", 100, 0);
    assert_int_equal(tput(c, &t), KILN_OK);
    assert_int_equal(tget(c, &t), KILN_ENOTFOUND);
    assert_string_equal(kiln__cache_path(c), "");
    kiln_cache_stats s;
    assert_int_equal(kiln__cache_stats(c, &s), KILN_OK);
    assert_int_equal(s.writable, 0);
    assert_string_equal(s.path, "");
    int64_t removed = -1;
    assert_int_equal(kiln__cache_clear(c, NULL, &removed), KILN_OK);
    assert_int_equal(removed, 0);
    kiln__cache_close(c);
    tentry_free(&t);
}

static void test_dir_created_0700(void **state)
{
    (void)state;
    char dir[PATH_MAX], p[PATH_MAX];
    mode_t old = umask(0);
    path_in(dir, "a/b/c");
    kiln_cache *c = topen(dir, NULL);
    umask(old);
    assert_string_not_equal(kiln__cache_path(c), "");
    const char *parts[] = {"a", "a/b", "a/b/c"};
    for (int i = 0; i < 3; i++) {
        struct stat st;
        path_in(p, parts[i]);
        assert_int_equal(stat(p, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0700);
    }
    kiln__cache_close(c);

    old = umask(0777); /* a umask that would leave no permission at all */
    path_in(dir, "u/v");
    c = topen(dir, NULL);
    umask(old);
    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    tentry t;
    tentry_make(&t, "k/umask", 100, 0);
    assert_int_equal(tput(c, &t), KILN_OK);
    assert_int_equal(tget(c, &t), KILN_OK);
    kiln__cache_close(c);
    tentry_free(&t);

    /* A trailing slash is the same directory. */
    path_in(dir, "a/b/c/");
    c = topen(dir, NULL);
    path_in(p, "a/b/c/kiln.db");
    assert_string_equal(kiln__cache_path(c), p);
    kiln__cache_close(c);
}

/* ================================================================ bad rows */

static void test_ident_mismatch(void **state)
{
    (void)state;
    char dir[PATH_MAX], db[PATH_MAX];
    path_in(dir, "c");
    path_in(db, "c/kiln.db");
    kiln_cache *c = topen(dir, NULL);
    tentry t, u;
    tentry_make(&t, "k/one", 1000, 0);
    tentry_make(&u, "k/one", 1000, 7); /* another identity ... */
    memcpy(u.hash, t.hash, 16);        /* ... under the same hash */
    assert_int_equal(tput(c, &t), KILN_OK);
    assert_int_equal(tget(c, &u), KILN_ENOTFOUND); /* not served */
    assert_true(log_has("identity differs"));
    assert_true(log_has("k/one"));
    kiln_cache_stats s;
    kiln__cache_stats(c, &s);
    assert_int_equal(s.rejected, 1);
    assert_int_equal(db_rows_for(db, &t), 0); /* dropped, to be rebuilt */
    kiln__cache_close(c);
    tentry_free(&t);
    tentry_free(&u);
}

static void test_flipped_byte(void **state)
{
    (void)state;
    char dir[PATH_MAX], db[PATH_MAX];
    path_in(dir, "c");
    path_in(db, "c/kiln.db");
    kiln_cache *c = topen(dir, NULL);
    tentry t, u;
    tentry_make(&t, "k/flip", 3000, 0);
    tentry_make(&u, "k/other", 3000, 0);
    assert_int_equal(tput(c, &t), KILN_OK);
    assert_int_equal(tput(c, &u), KILN_OK);
    uint8_t *bad = malloc(t.cubin_len);
    memcpy(bad, t.cubin, t.cubin_len);
    bad[1500] ^= 0x10;
    db_set_cubin(db, &t, bad, t.cubin_len, 0, 0);
    assert_int_equal(tget(c, &t), KILN_ENOTFOUND);
    assert_true(log_has("digest does not match"));
    assert_true(log_has("k/flip"));
    assert_int_equal(db_rows_for(db, &t), 0);
    assert_int_equal(tget(c, &u), KILN_OK); /* the other row is fine */
    /* Rebuilt by the caller: served again. */
    assert_int_equal(tput(c, &t), KILN_OK);
    assert_int_equal(tget(c, &t), KILN_OK);
    kiln_cache_stats s;
    kiln__cache_stats(c, &s);
    assert_int_equal(s.rejected, 1);
    kiln__cache_close(c);
    free(bad);
    tentry_free(&t);
    tentry_free(&u);
}

static void test_truncated_blob(void **state)
{
    (void)state;
    char dir[PATH_MAX], db[PATH_MAX];
    path_in(dir, "c");
    path_in(db, "c/kiln.db");
    kiln_cache *c = topen(dir, NULL);
    for (int set_bytes = 0; set_bytes < 2; set_bytes++) {
        tentry t;
        tentry_make(&t, set_bytes ? "k/trunc/bytes" : "k/trunc", 4000, 0);
        assert_int_equal(tput(c, &t), KILN_OK);
        db_set_cubin(db, &t, t.cubin, t.cubin_len / 2, set_bytes, 0);
        log_reset();
        assert_int_equal(tget(c, &t), KILN_ENOTFOUND);
        assert_true(log_has(set_bytes ? "digest does not match"
                                      : "length differs"));
        assert_int_equal(db_rows_for(db, &t), 0);
        tentry_free(&t);
    }
    kiln__cache_close(c);
}

static void test_swapped_blobs(void **state)
{
    (void)state;
    char dir[PATH_MAX], db[PATH_MAX];
    path_in(dir, "c");
    path_in(db, "c/kiln.db");
    kiln_cache *c = topen(dir, NULL);
    tentry t, u;
    tentry_make(&t, "k/a", 2000, 0);
    tentry_make(&u, "k/b", 2000, 0); /* same length: only the digest tells */
    assert_int_equal(tput(c, &t), KILN_OK);
    assert_int_equal(tput(c, &u), KILN_OK);
    db_set_cubin(db, &t, u.cubin, u.cubin_len, 1, 0);
    db_set_cubin(db, &u, t.cubin, t.cubin_len, 1, 0);
    assert_int_equal(tget(c, &t), KILN_ENOTFOUND);
    assert_int_equal(tget(c, &u), KILN_ENOTFOUND);
    assert_int_equal(db_int(db, "SELECT count(*) FROM kernels"), 0);
    kiln_cache_stats s;
    kiln__cache_stats(c, &s);
    assert_int_equal(s.rejected, 2);
    kiln__cache_close(c);
    tentry_free(&t);
    tentry_free(&u);
}

static void test_non_elf_blob(void **state)
{
    (void)state;
    char dir[PATH_MAX], db[PATH_MAX];
    path_in(dir, "c");
    path_in(db, "c/kiln.db");
    kiln_cache *c = topen(dir, NULL);
    tentry t;
    tentry_make(&t, "k/elf", 2000, 0);

    /* put refuses to store junk. */
    kiln_cache_put_args a = targs(&t);
    static const char junk[] = "this is not an ELF image, it is text......"
                               "................................................";
    a.cubin = junk;
    a.cubin_len = sizeof junk;
    assert_int_equal(kiln__cache_put(c, &a), KILN_EBADARG);
    assert_non_null(strstr(kiln_last_error(), "k/elf"));

    /* Junk with a consistent digest and length: the ELF check catches it. */
    assert_int_equal(tput(c, &t), KILN_OK);
    db_set_cubin(db, &t, junk, sizeof junk, 1, 1);
    assert_int_equal(tget(c, &t), KILN_ENOTFOUND);
    assert_true(log_has("bad magic"));
    assert_int_equal(db_rows_for(db, &t), 0);
    kiln__cache_close(c);
    tentry_free(&t);
}

/* ================================================================ damaged files */

/* Fill a cache with n rows and close it. */
static void fill(const char *dir, tentry *ts, int n, size_t payload)
{
    kiln_cache *c = topen(dir, NULL);
    for (int i = 0; i < n; i++) {
        char key[64];
        snprintf(key, sizeof key, "k/fill/%d", i);
        tentry_make(&ts[i], key, payload, 0);
        assert_int_equal(tput(c, &ts[i]), KILN_OK);
    }
    kiln__cache_close(c);
}

/* After damage: open works, nothing wrong is served, puts work and the file
 * passes integrity_check. */
static void check_usable_after_damage(const char *dir, tentry *ts, int n)
{
    kiln_cache *c = topen(dir, NULL);
    for (int i = 0; i < n; i++) {
        kiln_status s = tget(c, &ts[i]);
        assert_true(s == KILN_OK || s == KILN_ENOTFOUND);
    }
    tentry t;
    tentry_make(&t, "k/after", 3000, 0);
    assert_int_equal(tput(c, &t), KILN_OK);
    assert_int_equal(tget(c, &t), KILN_OK);
    assert_string_not_equal(kiln__cache_path(c), "");
    kiln_cache_verify_report r = tverify(c, 0);
    assert_int_equal(r.integrity_ok, 1);
    assert_int_equal(r.bad, 0);
    kiln__cache_close(c);
    tentry_free(&t);
}

static void test_truncated_db(void **state)
{
    (void)state;
    char dir[PATH_MAX], db[PATH_MAX];
    path_in(dir, "c");
    path_in(db, "c/kiln.db");
    tentry ts[6];
    fill(dir, ts, 6, 20000);
    struct stat st;
    assert_int_equal(stat(db, &st), 0);
    assert_int_equal(truncate(db, st.st_size / 2), 0);
    check_usable_after_damage(dir, ts, 6);
    assert_int_equal(corrupt_copies(dir), 1); /* moved aside, not deleted */
    assert_true(log_has("is corrupt"));
    assert_true(log_has("moved aside"));
    for (int i = 0; i < 6; i++) tentry_free(&ts[i]);

    /* Cut inside the first page: the header itself is damaged. */
    path_in(dir, "d");
    path_in(db, "d/kiln.db");
    fill(dir, ts, 2, 1000);
    assert_int_equal(truncate(db, 1000), 0);
    check_usable_after_damage(dir, ts, 2);
    for (int i = 0; i < 2; i++) tentry_free(&ts[i]);
}

static void test_garbage_db(void **state)
{
    (void)state;
    char dir[PATH_MAX], db[PATH_MAX], wal[PATH_MAX];
    path_in(dir, "c");
    path_in(db, "c/kiln.db");
    path_in(wal, "c/kiln.db-wal");
    assert_int_equal(mkdir(dir, 0700), 0);
    uint8_t junk[70000];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (uint8_t)(i * 7 + 3);
    write_file(db, junk, sizeof junk);
    write_file(wal, junk, 100);
    tentry t;
    check_usable_after_damage(dir, &t, 0);
    assert_int_equal(corrupt_copies(dir), 1);
    assert_true(log_has("moved aside"));
    assert_true(log_has(db));
    /* The renamed copy holds the garbage, byte for byte. */
    char cmd[PATH_MAX * 2];
    off_t size;
    char aside[PATH_MAX];
    FILE *p;
    snprintf(cmd, sizeof cmd, "ls -d '%s'/kiln.db.corrupt-* | grep -v -- -wal", dir);
    p = popen(cmd, "r");
    assert_non_null(fgets(aside, sizeof aside, p));
    pclose(p);
    aside[strcspn(aside, "\n")] = '\0';
    file_digest(aside, &size);
    assert_int_equal(size, (off_t)sizeof junk);

    /* Corruption found by a later statement: page 1 (the schema) is fine,
     * the table's pages are not. */
    kiln_cache *c = topen(dir, NULL);
    tentry_make(&t, "k/later", 30000, 0);
    assert_int_equal(tput(c, &t), KILN_OK);
    kiln__cache_close(c);
    int fd = open(db, O_WRONLY);
    assert_true(fd >= 0);
    for (off_t off = 4096; off < 40000; off += 4096)
        assert_int_equal(pwrite(fd, junk, 4096, off), 4096);
    close(fd);
    c = topen(dir, NULL);
    assert_string_not_equal(kiln__cache_path(c), "");
    log_reset();
    assert_int_equal(tget(c, &t), KILN_ENOTFOUND);
    assert_true(log_has("is corrupt"));
    assert_int_equal(tput(c, &t), KILN_OK); /* into a fresh file */
    assert_int_equal(tget(c, &t), KILN_OK);
    kiln__cache_close(c);
    assert_int_equal(corrupt_copies(dir), 2);
    tentry_free(&t);
}

static void test_zero_length_db(void **state)
{
    (void)state;
    char dir[PATH_MAX], db[PATH_MAX];
    path_in(dir, "c");
    path_in(db, "c/kiln.db");
    assert_int_equal(mkdir(dir, 0700), 0);
    write_file(db, "", 0);
    tentry t;
    check_usable_after_damage(dir, &t, 0);
    assert_int_equal(db_int(db, "PRAGMA user_version"), KILN_CACHE_SCHEMA);
}

static void test_newer_schema(void **state)
{
    (void)state;
    char dir[PATH_MAX], db[PATH_MAX];
    path_in(dir, "c");
    path_in(db, "c/kiln.db");
    tentry t;
    fill(dir, &t, 1, 1000);
    db_exec(db, "PRAGMA user_version = 99");
    off_t size0, size1;
    uint64_t h0 = file_digest(db, &size0);

    kiln_cache *c = topen(dir, NULL);
    assert_true(log_has("newer"));
    assert_true(log_has(db));
    assert_string_equal(kiln__cache_path(c), "");
    assert_int_equal(tget(c, &t), KILN_ENOTFOUND);
    assert_int_equal(tput(c, &t), KILN_OK);
    kiln__cache_close(c);

    assert_int_equal(db_int(db, "PRAGMA user_version"), 99); /* not downgraded */
    assert_int_equal(file_digest(db, &size1), h0);
    assert_int_equal(size1, size0);
    tentry_free(&t);
}

/* ================================================================ locations */

static void test_symlinked_dir(void **state)
{
    (void)state;
    char real[PATH_MAX], link[PATH_MAX];
    path_in(real, "real");
    path_in(link, "link");
    assert_int_equal(mkdir(real, 0700), 0);
    assert_int_equal(symlink(real, link), 0);
    kiln_cache *c = topen(link, NULL);
    assert_string_equal(kiln__cache_path(c), "");
    assert_true(log_has(link));
    assert_true(log_has("symbolic link"));
    tentry t;
    tentry_make(&t, "k/link", 100, 0);
    assert_int_equal(tput(c, &t), KILN_OK);
    assert_int_equal(tget(c, &t), KILN_ENOTFOUND);
    kiln__cache_close(c);
    char db[PATH_MAX];
    path_in(db, "real/kiln.db");
    assert_false(exists(db));
    tentry_free(&t);
}

static void test_group_writable_dir(void **state)
{
    (void)state;
    static const mode_t modes[] = {0770, 0707, 0777};
    for (int i = 0; i < 3; i++) {
        char dir[PATH_MAX], name[16];
        snprintf(name, sizeof name, "g%d", i);
        path_in(dir, name);
        assert_int_equal(mkdir(dir, 0700), 0);
        assert_int_equal(chmod(dir, modes[i]), 0);
        log_reset();
        kiln_cache *c = topen(dir, NULL);
        assert_string_equal(kiln__cache_path(c), "");
        assert_true(log_has("group- or world-writable"));
        assert_true(log_has(dir));
        kiln__cache_close(c);
    }
}

static void test_foreign_owner(void **state)
{
    (void)state;
    if (!is_root()) {
        print_message("skipped: needs root to chown a directory to another "
                      "user\n");
        skip();
    }
    char dir[PATH_MAX];
    path_in(dir, "foreign");
    assert_int_equal(mkdir(dir, 0700), 0);
    if (chown(dir, 65534, 65534) != 0) {
        print_message("skipped: cannot chown to 65534: %s\n", strerror(errno));
        skip();
    }
    kiln_cache *c = topen(dir, NULL);
    assert_string_equal(kiln__cache_path(c), "");
    assert_true(log_has("owned by uid 65534"));
    assert_true(log_has(dir));
    kiln__cache_close(c);
}

static void test_db_file_refused(void **state)
{
    (void)state;
    char dir[PATH_MAX], db[PATH_MAX], other[PATH_MAX];
    /* kiln.db a symlink */
    path_in(dir, "s");
    path_in(db, "s/kiln.db");
    path_in(other, "elsewhere.db");
    assert_int_equal(mkdir(dir, 0700), 0);
    write_file(other, "", 0);
    assert_int_equal(symlink(other, db), 0);
    kiln_cache *c = topen(dir, NULL);
    assert_string_equal(kiln__cache_path(c), "");
    assert_true(log_has("symbolic link"));
    kiln__cache_close(c);
    struct stat st;
    assert_int_equal(stat(other, &st), 0);
    assert_int_equal(st.st_size, 0); /* untouched */

    /* kiln.db with a second hard link */
    path_in(dir, "h");
    path_in(db, "h/kiln.db");
    tentry t;
    fill(dir, &t, 1, 100);
    path_in(other, "hardlink.db");
    assert_int_equal(link(db, other), 0);
    log_reset();
    c = topen(dir, NULL);
    assert_string_equal(kiln__cache_path(c), "");
    assert_true(log_has("2 hard links"));
    assert_int_equal(tget(c, &t), KILN_ENOTFOUND);
    kiln__cache_close(c);
    tentry_free(&t);
}

static void test_readonly_dir(void **state)
{
    (void)state;
    char dir[PATH_MAX], db[PATH_MAX];
    path_in(dir, "ro");
    path_in(db, "ro/kiln.db");
    tentry t, u;
    fill(dir, &t, 1, 2000);
    tentry_make(&u, "k/new", 2000, 0);
    if (is_root() && /* root ignores permissions: drop them in the child */
        (chown(dir, 65534, 65534) != 0 || chown(db, 65534, 65534) != 0)) {
        print_message("skipped: running as root and cannot chown to 65534: "
                      "%s\n", strerror(errno));
        skip();
    }
    assert_int_equal(chmod(dir, 0555), 0);
    off_t size0, size1;
    uint64_t h0 = file_digest(db, &size0);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (is_root() && drop_privileges() != 0) _exit(CHILD_SKIP);
        kiln_cache *c = NULL;
        CHILD_CHECK(kiln__cache_open(dir, NULL, &g_logger, &c) == KILN_OK);
        CHILD_CHECK(log_has("not writable"));
        CHILD_CHECK(log_has(db));
        CHILD_CHECK(strcmp(kiln__cache_path(c), "") == 0);
        CHILD_CHECK(tget(c, &t) == KILN_OK); /* still readable */
        CHILD_CHECK(tput(c, &u) == KILN_OK); /* best effort: not an error */
        CHILD_CHECK(tget(c, &u) == KILN_ENOTFOUND);
        CHILD_CHECK(tget(c, &t) == KILN_OK);
        kiln__cache_close(c);
        _exit(0);
    }
    int code = wait_code(pid);
    chmod(dir, 0700);
    if (code == CHILD_SKIP) {
        print_message("skipped: running as root and cannot drop privileges\n");
        tentry_free(&t);
        tentry_free(&u);
        skip();
    }
    assert_int_equal(code, 0);
    assert_int_equal(file_digest(db, &size1), h0);
    char wal[PATH_MAX + 16];
    snprintf(wal, sizeof wal, "%s-wal", db);
    assert_false(exists(wal));
    tentry_free(&t);
    tentry_free(&u);
}

static void test_full_disk(void **state)
{
    (void)state;
    char dir[PATH_MAX], db[PATH_MAX];
    path_in(dir, "full");
    path_in(db, "full/kiln.db");
    tentry t, big;
    fill(dir, &t, 1, 4000);
    tentry_make(&big, "k/big", 1 << 20, 0);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {256 << 10, 256 << 10};
        CHILD_CHECK(setrlimit(RLIMIT_FSIZE, &rl) == 0);
        kiln_cache *c = NULL;
        CHILD_CHECK(kiln__cache_open(dir, NULL, &g_logger, &c) == KILN_OK);
        CHILD_CHECK(tput(c, &big) == KILN_OK); /* fails inside: logged */
        CHILD_CHECK(log_has("cannot write to cache"));
        CHILD_CHECK(tput(c, &big) == KILN_OK);
        CHILD_CHECK(count_in_log("warn: cannot write to cache") == 1); /* once */
        CHILD_CHECK(tget(c, &t) == KILN_OK);
        CHILD_CHECK(tget(c, &big) == KILN_ENOTFOUND);
        kiln__cache_close(c);
        _exit(0);
    }
    assert_true(wait_ok(pid));
    kiln_cache *c = topen(dir, NULL);
    assert_int_equal(tget(c, &t), KILN_OK);
    assert_int_equal(tget(c, &big), KILN_ENOTFOUND);
    kiln_cache_verify_report r = tverify(c, 0);
    assert_int_equal(r.integrity_ok, 1);
    assert_int_equal(r.bad, 0);
    assert_int_equal(r.checked, 1);
    assert_int_equal(tput(c, &big), KILN_OK); /* room again */
    assert_int_equal(tget(c, &big), KILN_OK);
    kiln__cache_close(c);
    tentry_free(&t);
    tentry_free(&big);
}

/* ================================================================ read-only layers */

static void test_ro_layer(void **state)
{
    (void)state;
    char rodir[PATH_MAX], rodb[PATH_MAX], wdir[PATH_MAX], wdb[PATH_MAX];
    path_in(rodir, "ro %?#&= x"); /* URI-hostile name */
    path_in(rodb, "ro %?#&= x/kiln.db");
    path_in(wdir, "w");
    path_in(wdb, "w/kiln.db");
    tentry ts[3];
    fill(rodir, ts, 3, 3000); /* k/fill/0..2 */
    /* Row 2 of the shipped layer is damaged. */
    uint8_t *bad = malloc(ts[2].cubin_len);
    memcpy(bad, ts[2].cubin, ts[2].cubin_len);
    bad[100] ^= 1;
    db_set_cubin(rodb, &ts[2], bad, ts[2].cubin_len, 0, 0);
    free(bad);
    off_t size0, size1;
    uint64_t h0 = file_digest(rodb, &size0);
    struct stat st0, st1;
    assert_int_equal(stat(rodb, &st0), 0);

    /* The writable layer has another cubin under row 0's identity: the
     * read-only layer comes first. */
    tentry shadow;
    tentry_make(&shadow, "k/fill/0", 5000, 0);
    kiln_cache *c = topen(wdir, NULL);
    assert_int_equal(tput(c, &shadow), KILN_OK);
    kiln__cache_close(c);

    for (int form = 0; form < 2; form++) {
        char spec[PATH_MAX * 2];
        char missing[PATH_MAX];
        path_in(missing, "nope");
        /* form 0: the directory; form 1: the file, among other entries */
        snprintf(spec, sizeof spec, form ? "%s::%s" : "%s", form ? missing : rodir,
                 rodb);
        log_reset();
        c = topen(wdir, spec);
        kiln_cache_stats s;
        kiln__cache_stats(c, &s);
        assert_int_equal(s.ro_layers, 1);
        assert_int_equal(tget(c, &ts[0]), KILN_OK); /* the RO bytes */
        assert_int_equal(tget(c, &ts[1]), KILN_OK);
        assert_int_equal(db_rows_for(wdb, &ts[1]), 0); /* served from RO */
        assert_int_equal(tget(c, &ts[2]), KILN_ENOTFOUND);
        assert_true(log_has("rejected"));
        assert_true(log_has(rodb));
        kiln__cache_stats(c, &s);
        assert_int_equal(s.rejected, 1);
        /* A rebuild goes into the writable layer and is served from it. */
        assert_int_equal(tput(c, &ts[2]), KILN_OK);
        assert_int_equal(db_rows_for(wdb, &ts[2]), 1);
        void *b;
        size_t n;
        assert_int_equal(kiln__cache_get(c, ts[2].hash, ts[2].ident,
                                         sizeof ts[2].ident, &b, &n),
                         KILN_OK);
        free(b);
        int64_t removed;
        assert_int_equal(kiln__cache_clear(c, NULL, &removed), KILN_OK);
        assert_int_equal(removed, 2); /* the writable layer's rows only */
        kiln_cache_verify_report r = tverify(c, 1);
        assert_int_equal(r.bad, 1); /* the RO layer's bad row: not dropped */
        assert_int_equal(r.dropped, 0);
        kiln__cache_close(c);
        assert_int_equal(db_rows_for(rodb, &ts[2]), 1); /* ignored, not deleted */
        c = topen(wdir, NULL); /* put the shadow back for the next form */
        assert_int_equal(tput(c, &shadow), KILN_OK);
        kiln__cache_close(c);
    }
    assert_int_equal(file_digest(rodb, &size1), h0);
    assert_int_equal(size1, size0);
    assert_int_equal(stat(rodb, &st1), 0);
    assert_int_equal(st1.st_mtim.tv_sec, st0.st_mtim.tv_sec);
    assert_int_equal(st1.st_mtim.tv_nsec, st0.st_mtim.tv_nsec);
    char side[PATH_MAX + 16];
    snprintf(side, sizeof side, "%s-wal", rodb);
    assert_false(exists(side));
    snprintf(side, sizeof side, "%s-shm", rodb);
    assert_false(exists(side));

    /* A read-only layer alone (no writable directory). */
    c = topen(NULL, rodir);
    assert_int_equal(tget(c, &ts[1]), KILN_OK);
    assert_int_equal(tput(c, &ts[1]), KILN_OK);
    kiln__cache_close(c);

    for (int i = 0; i < 3; i++) tentry_free(&ts[i]);
    tentry_free(&shadow);
}

static void test_ro_layer_unusable(void **state)
{
    (void)state;
    char garbage[PATH_MAX], newer[PATH_MAX], newdir[PATH_MAX], spec[PATH_MAX * 3];
    char wdir[PATH_MAX];
    path_in(garbage, "garbage.db");
    path_in(newdir, "newer");
    path_in(newer, "newer/kiln.db");
    path_in(wdir, "w");
    write_file(garbage, "not a database at all, not at all, no no no no no no"
                        "....................................................",
               104);
    tentry t;
    fill(newdir, &t, 1, 100);
    db_exec(newer, "PRAGMA user_version = 7");
    snprintf(spec, sizeof spec, "%s:%s", garbage, newdir);
    kiln_cache *c = topen(wdir, spec);
    kiln_cache_stats s;
    kiln__cache_stats(c, &s);
    assert_int_equal(s.ro_layers, 0);
    assert_int_equal(s.writable, 1);
    assert_true(log_has(garbage));
    assert_true(log_has(newer));
    assert_true(log_has("newer than"));
    assert_int_equal(tget(c, &t), KILN_ENOTFOUND);
    kiln__cache_close(c);
    assert_true(exists(garbage)); /* never moved: not ours */
    assert_int_equal(corrupt_copies(g_dir), 0);
    tentry_free(&t);
}

/* ================================================================ inspection */

static const char *const KEYS[] = {
    "hstu_fwd/sm_90a/bf16/d128/causal",
    "hstu_fwd/sm_80/fp16/d64/none",
    "hstu_fwd/sm_90a/fp16/d64/none",
};

static void fill_keys(kiln_cache *c, tentry *ts)
{
    for (int i = 0; i < 3; i++) {
        tentry_make(&ts[i], KEYS[i], 1000 + 100 * (size_t)i, 0);
        assert_int_equal(tput(c, &ts[i]), KILN_OK);
    }
}

typedef struct seen {
    int n;
    char keys[8][96];
    uint64_t bytes[8];
    int stop_after;
} seen;

static int on_entry(const kiln_cache_entry *e, void *user)
{
    seen *s = user;
    if (s->n < 8) {
        snprintf(s->keys[s->n], sizeof s->keys[0], "%s", e->key);
        s->bytes[s->n] = e->bytes;
    }
    s->n++;
    assert_int_equal(strlen(e->hash), 32);
    assert_non_null(strstr(e->layer, "kiln.db"));
    assert_string_equal(e->nvrtc, "13.0");
    assert_int_equal(e->regs, 168);
    assert_int_equal(e->smem, 49152);
    assert_true(e->compile_ms > 123 && e->compile_ms < 124);
    assert_true(e->created > 0);
    assert_non_null(strstr(e->prelude, "KILN_HEAD_DIM"));
    assert_string_equal(e->log, "");
    return s->stop_after && s->n >= s->stop_after;
}

static void test_list_pattern(void **state)
{
    (void)state;
    char dir[PATH_MAX];
    path_in(dir, "c");
    kiln_cache *c = topen(dir, NULL);
    tentry ts[3];
    fill_keys(c, ts);
    seen s = {0};
    assert_int_equal(kiln__cache_list(c, NULL, on_entry, &s), KILN_OK);
    assert_int_equal(s.n, 3);
    memset(&s, 0, sizeof s);
    assert_int_equal(kiln__cache_list(c, "hstu_fwd/sm_90a/*", on_entry, &s),
                     KILN_OK);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.keys[0], KEYS[0]); /* ordered by key */
    assert_string_equal(s.keys[1], KEYS[2]);
    assert_int_equal(s.bytes[0], ts[0].cubin_len);
    memset(&s, 0, sizeof s);
    assert_int_equal(kiln__cache_list(c, "*/d64/*", on_entry, &s), KILN_OK);
    assert_int_equal(s.n, 2);
    memset(&s, 0, sizeof s);
    assert_int_equal(kiln__cache_list(c, "nothing*", on_entry, &s), KILN_OK);
    assert_int_equal(s.n, 0);
    memset(&s, 0, sizeof s);
    s.stop_after = 1;
    assert_int_equal(kiln__cache_list(c, NULL, on_entry, &s), KILN_OK);
    assert_int_equal(s.n, 1);
    kiln__cache_close(c);
    for (int i = 0; i < 3; i++) tentry_free(&ts[i]);
}

/* A callback that uses the cache itself must not deadlock. */
static int reenter(const kiln_cache_entry *e, void *user)
{
    void *b;
    size_t n;
    kiln_status s = kiln__cache_find_key(user, e->key, &b, &n);
    assert_int_equal(s, KILN_OK);
    assert_int_equal(n, e->bytes);
    free(b);
    return 0;
}

static void test_clear_pattern(void **state)
{
    (void)state;
    char dir[PATH_MAX], db[PATH_MAX];
    path_in(dir, "c");
    path_in(db, "c/kiln.db");
    kiln_cache *c = topen(dir, NULL);
    tentry ts[3];
    fill_keys(c, ts);
    assert_int_equal(kiln__cache_list(c, NULL, reenter, c), KILN_OK);
    int64_t removed = -1;
    assert_int_equal(kiln__cache_clear(c, "*/sm_80/*", &removed), KILN_OK);
    assert_int_equal(removed, 1);
    assert_int_equal(tget(c, &ts[1]), KILN_ENOTFOUND);
    assert_int_equal(tget(c, &ts[0]), KILN_OK);
    assert_int_equal(kiln__cache_clear(c, "*/sm_80/*", &removed), KILN_OK);
    assert_int_equal(removed, 0);
    assert_int_equal(kiln__cache_clear(c, NULL, NULL), KILN_OK);
    assert_int_equal(db_int(db, "SELECT count(*) FROM kernels"), 0);
    kiln_cache_stats s;
    kiln__cache_stats(c, &s);
    assert_int_equal(s.entries, 0);
    kiln__cache_close(c);
    for (int i = 0; i < 3; i++) tentry_free(&ts[i]);
}

typedef struct bad_seen {
    int n;
    char keys[4][96];
} bad_seen;

static void on_bad(const char *key, const char *why, void *user)
{
    bad_seen *b = user;
    assert_non_null(why);
    assert_true(strlen(why) > 0);
    if (b->n < 4) snprintf(b->keys[b->n], sizeof b->keys[0], "%s", key);
    b->n++;
}

static void test_verify_drop(void **state)
{
    (void)state;
    char dir[PATH_MAX], db[PATH_MAX];
    path_in(dir, "c");
    path_in(db, "c/kiln.db");
    kiln_cache *c = topen(dir, NULL);
    tentry ts[3];
    fill_keys(c, ts);
    uint8_t *bad = malloc(ts[0].cubin_len);
    memcpy(bad, ts[0].cubin, ts[0].cubin_len);
    bad[77] ^= 0x80;
    db_set_cubin(db, &ts[0], bad, ts[0].cubin_len, 0, 0);
    db_set_cubin(db, &ts[1], ts[1].cubin, 10, 1, 1); /* consistent but not ELF */
    free(bad);
    /* A row whose hash is not the hash of its identity. */
    db_exec(db, "INSERT INTO kernels (hash, key, bytes, digest, ident, cubin)"
                " SELECT x'00112233445566778899aabbccddeeff', key || '/x',"
                " bytes, digest, ident, cubin FROM kernels WHERE key = "
                "'hstu_fwd/sm_90a/fp16/d64/none'");

    bad_seen b = {0};
    kiln_cache_verify_report r;
    assert_int_equal(kiln__cache_verify(c, 0, &r, on_bad, &b), KILN_OK);
    assert_int_equal(r.checked, 4);
    assert_int_equal(r.bad, 3);
    assert_int_equal(r.dropped, 0);
    assert_int_equal(r.integrity_ok, 1);
    assert_int_equal(b.n, 3);
    assert_int_equal(db_int(db, "SELECT count(*) FROM kernels"), 4);

    memset(&b, 0, sizeof b);
    assert_int_equal(kiln__cache_verify(c, 1, &r, on_bad, &b), KILN_OK);
    assert_int_equal(r.bad, 3);
    assert_int_equal(r.dropped, 3);
    assert_int_equal(b.n, 3);
    assert_int_equal(db_int(db, "SELECT count(*) FROM kernels"), 1);
    r = tverify(c, 1);
    assert_int_equal(r.checked, 1);
    assert_int_equal(r.bad, 0);
    assert_int_equal(tget(c, &ts[2]), KILN_OK);
    kiln__cache_close(c);
    for (int i = 0; i < 3; i++) tentry_free(&ts[i]);
}

static void test_find_key(void **state)
{
    (void)state;
    char dir[PATH_MAX], db[PATH_MAX];
    path_in(dir, "c");
    path_in(db, "c/kiln.db");
    kiln_cache *c = topen(dir, NULL);
    tentry old, cur;
    tentry_make(&old, "hstu_fwd/sm_90a/bf16/d64/none", 1000, 1); /* older NVRTC */
    tentry_make(&cur, "hstu_fwd/sm_90a/bf16/d64/none", 2000, 2);
    assert_int_equal(tput(c, &old), KILN_OK);
    assert_int_equal(tput(c, &cur), KILN_OK);
    db_exec(db, "UPDATE kernels SET created = created - 100 WHERE bytes < 1500");
    void *b = NULL;
    size_t n = 0;
    assert_int_equal(kiln__cache_find_key(c, cur.key, &b, &n), KILN_OK);
    assert_int_equal(n, cur.cubin_len); /* the newest */
    assert_memory_equal(b, cur.cubin, n);
    free(b);
    /* A bad newest row is skipped, never served. */
    db_set_cubin(db, &cur, old.cubin, old.cubin_len, 1, 0);
    assert_int_equal(kiln__cache_find_key(c, cur.key, &b, &n), KILN_OK);
    assert_int_equal(n, old.cubin_len);
    assert_memory_equal(b, old.cubin, n);
    free(b);
    assert_int_equal(kiln__cache_find_key(c, "no/such/key", &b, &n),
                     KILN_ENOTFOUND);
    kiln__cache_close(c);
    tentry_free(&old);
    tentry_free(&cur);
}

static void test_evict(void **state)
{
    (void)state;
    char dir[PATH_MAX], db[PATH_MAX];
    path_in(dir, "c");
    path_in(db, "c/kiln.db");
    kiln_cache *c = topen(dir, NULL);
    tentry ts[3];
    fill_keys(c, ts);
    db_exec(db, "UPDATE kernels SET last_used = 1000 WHERE key LIKE '%sm_80%';"
                "UPDATE kernels SET last_used = 3000 WHERE key LIKE '%bf16%';"
                "UPDATE kernels SET last_used = 2000 WHERE key LIKE '%sm_90a/fp16%';");
    int64_t removed = -1;
    assert_int_equal(kiln__cache_evict(c, (int64_t)(ts[0].cubin_len + ts[2].cubin_len),
                                       &removed),
                     KILN_OK);
    assert_int_equal(removed, 1);
    assert_int_equal(tget(c, &ts[1]), KILN_ENOTFOUND); /* least recently used */
    assert_int_equal(kiln__cache_evict(c, (int64_t)ts[0].cubin_len, &removed),
                     KILN_OK);
    assert_int_equal(removed, 1);
    assert_int_equal(tget(c, &ts[0]), KILN_OK);
    assert_int_equal(kiln__cache_evict(c, 0, &removed), KILN_OK);
    assert_int_equal(removed, 1);
    assert_int_equal(kiln__cache_evict(c, -1, &removed), KILN_EBADARG);
    kiln__cache_close(c);
    for (int i = 0; i < 3; i++) tentry_free(&ts[i]);
}

static void test_meta(void **state)
{
    (void)state;
    char dir[PATH_MAX], rodir[PATH_MAX];
    path_in(dir, "c");
    path_in(rodir, "ro");
    kiln_cache *c = topen(rodir, NULL);
    assert_int_equal(kiln__cache_meta_put(c, "shipped", "from-ro"), KILN_OK);
    assert_int_equal(kiln__cache_meta_put(c, "nvrtc:/x/libnvrtc.so:1:2", "12.0"),
                     KILN_OK);
    kiln__cache_close(c);

    c = topen(dir, rodir);
    char *v = NULL;
    assert_int_equal(kiln__cache_meta_get(c, "absent", &v), KILN_ENOTFOUND);
    assert_int_equal(kiln__cache_meta_put(c, "nvrtc:/x/libnvrtc.so:1:2", "13.0"),
                     KILN_OK);
    assert_int_equal(kiln__cache_meta_get(c, "nvrtc:/x/libnvrtc.so:1:2", &v),
                     KILN_OK);
    assert_string_equal(v, "13.0"); /* writable layer first */
    kiln__free(v);
    assert_int_equal(kiln__cache_meta_get(c, "shipped", &v), KILN_OK);
    assert_string_equal(v, "from-ro");
    kiln__free(v);
    assert_int_equal(kiln__cache_meta_put(c, "k", "1"), KILN_OK);
    assert_int_equal(kiln__cache_meta_put(c, "k", "2"), KILN_OK);
    assert_int_equal(kiln__cache_meta_get(c, "k", &v), KILN_OK);
    assert_string_equal(v, "2");
    kiln__free(v);
    kiln__cache_close(c);

    c = topen(NULL, NULL); /* memory mode: put is a no-op, get a miss */
    assert_int_equal(kiln__cache_meta_put(c, "k", "1"), KILN_OK);
    assert_int_equal(kiln__cache_meta_get(c, "k", &v), KILN_ENOTFOUND);
    kiln__cache_close(c);
}

static void test_hits(void **state)
{
    (void)state;
    char dir[PATH_MAX], db[PATH_MAX];
    path_in(dir, "c");
    path_in(db, "c/kiln.db");
    kiln_cache *c = topen(dir, NULL);
    tentry t;
    tentry_make(&t, "k/hits", 1000, 0);
    assert_int_equal(tput(c, &t), KILN_OK);
    db_exec(db, "UPDATE kernels SET last_used = 5");
    assert_int_equal(tget(c, &t), KILN_OK);
    assert_int_equal(db_int(db, "SELECT hits FROM kernels"), 1);
    assert_true(db_int(db, "SELECT last_used FROM kernels") > 5);
    for (int i = 0; i < 5; i++) assert_int_equal(tget(c, &t), KILN_OK);
    /* written at most once a minute: still 1 on disk ... */
    assert_int_equal(db_int(db, "SELECT hits FROM kernels"), 1);
    kiln_cache_stats s;
    kiln__cache_stats(c, &s);
    assert_int_equal(s.hits, 1);
    kiln__cache_close(c);
    /* ... and the rest written at close. */
    assert_int_equal(db_int(db, "SELECT hits FROM kernels"), 6);
    tentry_free(&t);
}

static void test_busy(void **state)
{
    (void)state;
    char dir[PATH_MAX], db[PATH_MAX];
    path_in(dir, "c");
    path_in(db, "c/kiln.db");
    tentry t, u;
    fill(dir, &t, 1, 1000);
    tentry_make(&u, "k/busy", 1000, 0);
    kiln_cache *c = topen(dir, NULL);

    sqlite3 *other = db_open(db); /* another process's writer, stuck */
    assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL),
                     SQLITE_OK);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    assert_int_equal(tget(c, &t), KILN_OK); /* readers are not blocked */
    assert_int_equal(tput(c, &u), KILN_OK); /* gives up quietly */
    clock_gettime(CLOCK_MONOTONIC, &b);
    double secs = (double)(b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
    assert_true(secs < 8.0);
    assert_true(log_has("busy"));
    assert_false(log_has("warn: cannot write"));
    assert_int_equal(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(other);

    assert_int_equal(tget(c, &u), KILN_ENOTFOUND);
    assert_int_equal(tput(c, &u), KILN_OK);
    assert_int_equal(tget(c, &u), KILN_OK);
    kiln__cache_close(c);
    tentry_free(&t);
    tentry_free(&u);
}

/* ================================================================ processes */

#define NPROC 4
#define NTHREAD 4
#define NSHARED 12
#define NOWN 5

typedef struct worker {
    kiln_cache *c;
    int proc, thread, errors;
    char first[200]; /* the first failure, for the report */
} worker;

static void worker_fail(worker *w, const char *step, const char *key,
                        kiln_status s)
{
    if (!w->errors++)
        snprintf(w->first, sizeof w->first, "%s %s: status %d (%s)", step, key,
                 (int)s, s == KILN_ENOTFOUND ? "not found" : kiln_last_error());
}

static void worker_key(char *out, size_t n, int proc, int thread, int i)
{
    if (proc < 0) snprintf(out, n, "hstu_fwd/shared/%d", i);
    else snprintf(out, n, "hstu_fwd/own/p%d/t%d/%d", proc, thread, i);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    for (int i = 0; i < NSHARED + NOWN; i++) {
        char key[96];
        int shared = i < NSHARED;
        int idx = shared ? (i + w->thread * 3 + w->proc * 5) % NSHARED : i - NSHARED;
        worker_key(key, sizeof key, shared ? -1 : w->proc, w->thread, idx);
        tentry t;
        memset(&t, 0, sizeof t);
        snprintf(t.key, sizeof t.key, "%s", key);
        snprintf((char *)t.ident, sizeof t.ident, "ident/0/%.80s", key);
        XXH128_canonical_t cd;
        XXH128_canonicalFromHash(&cd, XXH3_128bits(t.ident, sizeof t.ident));
        memcpy(t.hash, cd.digest, 16);
        size_t len;
        t.cubin = NULL;
        {
            /* fake_elf asserts with cmocka; rebuild it by hand here */
            size_t payload = 2000 + (str_seed(key) % 30000);
            size_t shoff = (64 + payload + 7) & ~(size_t)7;
            len = shoff + 128;
            t.cubin = calloc(1, len);
            if (!t.cubin) {
                w->errors++;
                continue;
            }
            memcpy(t.cubin, "\177ELF", 4);
            t.cubin[4] = 2;
            t.cubin[5] = 1;
            put_le(t.cubin + 18, 190, 2);
            put_le(t.cubin + 40, shoff, 8);
            put_le(t.cubin + 52, 64, 2);
            put_le(t.cubin + 58, 64, 2);
            put_le(t.cubin + 60, 2, 2);
            memset(t.cubin + 64, (int)(str_seed(key) & 0xff), payload);
            put_le(t.cubin + shoff + 64 + 4, 1, 4);
            put_le(t.cubin + shoff + 64 + 24, 64, 8);
            put_le(t.cubin + shoff + 64 + 32, payload, 8);
            t.cubin_len = len;
        }
        kiln_status s = tget(w->c, &t);
        if (s != KILN_OK && s != KILN_ENOTFOUND) worker_fail(w, "get", key, s);
        if ((s = tput(w->c, &t)) != KILN_OK) worker_fail(w, "put", key, s);
        if ((s = tget(w->c, &t)) != KILN_OK)
            worker_fail(w, "get after put", key, s);
        free(t.cubin);
    }
    return NULL;
}

static int on_count(const kiln_cache_entry *e, void *user)
{
    (void)e;
    (*(int *)user)++;
    return 0;
}

static void test_concurrent_processes(void **state)
{
    (void)state;
    char dir[PATH_MAX], db[PATH_MAX];
    path_in(dir, "c");
    path_in(db, "c/kiln.db");
    pid_t pids[NPROC];
    for (int p = 0; p < NPROC; p++) {
        pids[p] = fork();
        assert_true(pids[p] >= 0);
        if (pids[p] == 0) {
            kiln_cache *c = NULL;
            CHILD_CHECK(kiln__cache_open(dir, NULL, &g_logger, &c) == KILN_OK);
            pthread_t th[NTHREAD];
            worker w[NTHREAD];
            for (int i = 0; i < NTHREAD; i++) {
                w[i] = (worker){c, p, i, 0, ""};
                CHILD_CHECK(pthread_create(&th[i], NULL, worker_main, &w[i]) == 0);
            }
            int errors = 0;
            for (int i = 0; i < NTHREAD; i++) {
                pthread_join(th[i], NULL);
                errors += w[i].errors;
                if (w[i].errors)
                    fprintf(stderr, "child %d thread %d: %d failed, first: %s\n",
                            (int)getpid(), i, w[i].errors, w[i].first);
            }
            if (errors || log_has("warn"))
                fprintf(stderr, "child %d log:\n%s", (int)getpid(), g_log);
            kiln__cache_close(c);
            CHILD_CHECK(errors == 0);
            CHILD_CHECK(!log_has("warn"));
            _exit(0);
        }
    }
    for (int p = 0; p < NPROC; p++) assert_true(wait_ok(pids[p]));

    kiln_cache *c = topen(dir, NULL);
    int n = 0;
    assert_int_equal(kiln__cache_list(c, NULL, on_count, &n), KILN_OK);
    assert_int_equal(n, NSHARED + NPROC * NTHREAD * NOWN);
    char sql[256];
    for (int i = 0; i < NSHARED; i++) {
        char key[96];
        worker_key(key, sizeof key, -1, 0, i);
        snprintf(sql, sizeof sql, "SELECT count(*) FROM kernels WHERE key = '%s'", key);
        assert_int_equal(db_int(db, sql), 1);
    }
    assert_int_equal(db_int(db, "SELECT count(DISTINCT key) FROM kernels"),
                     NSHARED + NPROC * NTHREAD * NOWN);
    kiln_cache_verify_report r = tverify(c, 0);
    assert_int_equal(r.checked, NSHARED + NPROC * NTHREAD * NOWN);
    assert_int_equal(r.bad, 0);
    assert_int_equal(r.integrity_ok, 1);
    kiln__cache_close(c);
}

/* Many processes opening one fresh cache at the same moment: the switch to
 * WAL needs an exclusive lock and SQLite refuses it at once, without the busy
 * handler, while another opener holds any lock -- every opener must still get
 * a writable cache (before the fix about 1 in 100 fell back to memory with a
 * warning; CI saw it).  Children are released together through a pipe. */
#define OPEN_ROUNDS 60
#define OPEN_PROCS 8

static void test_concurrent_first_open(void **state)
{
    (void)state;
    tentry t[OPEN_PROCS];
    for (int p = 0; p < OPEN_PROCS; p++) {
        char key[64];
        snprintf(key, sizeof key, "hstu_fwd/open/%d", p);
        tentry_make(&t[p], key, 3000, (unsigned)p);
    }
    for (int r = 0; r < OPEN_ROUNDS; r++) {
        char dir[PATH_MAX], name[32];
        snprintf(name, sizeof name, "open%d", r);
        path_in(dir, name);
        int go[2];
        assert_int_equal(pipe(go), 0);
        pid_t pids[OPEN_PROCS];
        for (int p = 0; p < OPEN_PROCS; p++) {
            pids[p] = fork();
            assert_true(pids[p] >= 0);
            if (pids[p] == 0) {
                char b;
                close(go[1]);
                CHILD_CHECK(read(go[0], &b, 1) == 0); /* EOF: all released */
                kiln_cache *c = NULL;
                CHILD_CHECK(kiln__cache_open(dir, NULL, &g_logger, &c) == KILN_OK);
                CHILD_CHECK(tput(c, &t[p]) == KILN_OK);
                kiln_status s = tget(c, &t[p]);
                kiln__cache_close(c);
                if (s != KILN_OK || log_has("warn"))
                    fprintf(stderr, "child %d, round %d: get %d; log:\n%s",
                            (int)getpid(), r, (int)s, g_log);
                CHILD_CHECK(s == KILN_OK);
                CHILD_CHECK(!log_has("warn"));
                _exit(0);
            }
        }
        close(go[0]);
        close(go[1]);
        int ok = 1;
        for (int p = 0; p < OPEN_PROCS; p++) ok &= wait_ok(pids[p]);
        assert_true(ok);
    }
    for (int p = 0; p < OPEN_PROCS; p++) tentry_free(&t[p]);
}

static void test_killed_mid_insert(void **state)
{
    (void)state;
    char dir[PATH_MAX];
    path_in(dir, "c");
    srand((unsigned)getpid());
    int64_t total = 0;
    for (int round = 0; round < 5; round++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            kiln_cache *c = NULL;
            CHILD_CHECK(kiln__cache_open(dir, NULL, &g_logger, &c) == KILN_OK);
            for (int i = 0;; i++) {
                char key[64];
                snprintf(key, sizeof key, "k/kill/%d/%d", round, i);
                tentry t;
                tentry_make(&t, key, (size_t)(200000 + (i % 5) * 150000), 0);
                CHILD_CHECK(tput(c, &t) == KILN_OK);
                tentry_free(&t);
            }
        }
        struct timespec ts = {0, (long)(30 + rand() % 120) * 1000000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int st;
        waitpid(pid, &st, 0);
        assert_true(WIFSIGNALED(st));

        kiln_cache *c = topen(dir, NULL);
        kiln_cache_verify_report r = tverify(c, 0);
        assert_int_equal(r.integrity_ok, 1);
        assert_int_equal(r.bad, 0);
        total = r.checked;
        tentry t;
        char key[64];
        snprintf(key, sizeof key, "k/after/%d", round);
        tentry_make(&t, key, 1000, 0);
        assert_int_equal(tput(c, &t), KILN_OK);
        assert_int_equal(tget(c, &t), KILN_OK);
        kiln__cache_close(c);
        tentry_free(&t);
    }
    assert_true(total > 5); /* the children did insert */
    assert_false(log_has("corrupt"));
}

static void test_fork_after_open(void **state)
{
    (void)state;
    char dir[PATH_MAX], db[PATH_MAX];
    path_in(dir, "c");
    path_in(db, "c/kiln.db");
    kiln_cache *c = topen(dir, NULL);
    tentry a, b, d, e, f;
    tentry_make(&a, "k/parent/before", 5000, 0);
    tentry_make(&b, "k/child", 5000, 0);
    tentry_make(&d, "k/parent/after", 5000, 0);
    tentry_make(&e, "k/rawchild", 5000, 0);
    tentry_make(&f, "k/parent/last", 5000, 0);
    assert_int_equal(tput(c, &a), KILN_OK);
    assert_int_equal(tget(c, &a), KILN_OK);

    pid_t pid = fork(); /* pthread_atfork handlers run */
    assert_true(pid >= 0);
    if (pid == 0) {
        CHILD_CHECK(tget(c, &a) == KILN_OK);
        CHILD_CHECK(tput(c, &b) == KILN_OK);
        CHILD_CHECK(tget(c, &b) == KILN_OK);
        kiln__cache_close(c);
        _exit(0);
    }
    assert_int_equal(tput(c, &d), KILN_OK); /* while the child may run */
    assert_true(wait_ok(pid));
    assert_int_equal(tget(c, &b), KILN_OK);

    /* A raw fork (no atfork handlers): the child forgets the inherited
     * connections instead of using or closing them. */
    pid = (pid_t)syscall(SYS_fork);
    assert_true(pid >= 0);
    if (pid == 0) {
        CHILD_CHECK(tget(c, &a) == KILN_OK);
        CHILD_CHECK(tput(c, &e) == KILN_OK);
        CHILD_CHECK(tget(c, &e) == KILN_OK);
        kiln__cache_close(c);
        _exit(0);
    }
    assert_true(wait_ok(pid));
    assert_int_equal(tput(c, &f), KILN_OK);
    assert_int_equal(tget(c, &e), KILN_OK);
    kiln__cache_close(c);

    c = topen(dir, NULL);
    tentry *all[] = {&a, &b, &d, &e, &f};
    for (int i = 0; i < 5; i++) assert_int_equal(tget(c, all[i]), KILN_OK);
    kiln_cache_verify_report r = tverify(c, 0);
    assert_int_equal(r.integrity_ok, 1);
    assert_int_equal(r.checked, 5);
    kiln__cache_close(c);
    for (int i = 0; i < 5; i++) tentry_free(all[i]);
}

/* A log callback that forks (while the cache holds its lock) must not
 * deadlock the fork handlers. */
static void forking_logger(int level, const char *line, void *user)
{
    (void)user;
    capture(level, line, NULL);
    if (level > KILN_LOG_WARN) return;
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    if (pid > 0) waitpid(pid, NULL, 0);
}

static void test_log_callback_forks(void **state)
{
    (void)state;
    char dir[PATH_MAX], db[PATH_MAX];
    path_in(dir, "c");
    path_in(db, "c/kiln.db");
    kiln_logger lg = {KILN_LOG_WARN, forking_logger, NULL};
    kiln_cache *c = NULL;
    assert_int_equal(kiln__cache_open(dir, NULL, &lg, &c), KILN_OK);
    tentry t;
    tentry_make(&t, "k/forklog", 1000, 0);
    assert_int_equal(tput(c, &t), KILN_OK);
    db_set_cubin(db, &t, t.cubin, 100, 1, 1);
    alarm(30); /* a deadlock fails the run instead of hanging it */
    assert_int_equal(tget(c, &t), KILN_ENOTFOUND); /* warns, which forks */
    assert_int_equal(tput(c, &t), KILN_OK);
    assert_int_equal(tget(c, &t), KILN_OK);
    alarm(0);
    kiln__cache_close(c);
    tentry_free(&t);
}

static void test_missing_location(void **state)
{
    (void)state;
    char file[PATH_MAX], dir[PATH_MAX];
    path_in(file, "plain");
    path_in(dir, "plain/sub");
    write_file(file, "x", 1);
    kiln_cache *c = topen(dir, NULL);
    assert_string_equal(kiln__cache_path(c), "");
    assert_true(log_has("cannot create it"));
    assert_true(log_has(dir));
    tentry t;
    tentry_make(&t, "k/missing", 100, 0);
    assert_int_equal(tput(c, &t), KILN_OK);
    assert_int_equal(tget(c, &t), KILN_ENOTFOUND);
    kiln__cache_close(c);
    tentry_free(&t);
}

/* ================================================================ main */

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_error_api),
        T(test_elf_check),
        T(test_round_trip),
        T(test_memory_mode),
        T(test_dir_created_0700),
        T(test_ident_mismatch),
        T(test_flipped_byte),
        T(test_truncated_blob),
        T(test_swapped_blobs),
        T(test_non_elf_blob),
        T(test_truncated_db),
        T(test_garbage_db),
        T(test_zero_length_db),
        T(test_newer_schema),
        T(test_symlinked_dir),
        T(test_group_writable_dir),
        T(test_foreign_owner),
        T(test_db_file_refused),
        T(test_readonly_dir),
        T(test_full_disk),
        T(test_ro_layer),
        T(test_ro_layer_unusable),
        T(test_list_pattern),
        T(test_clear_pattern),
        T(test_verify_drop),
        T(test_find_key),
        T(test_evict),
        T(test_meta),
        T(test_hits),
        T(test_busy),
        T(test_concurrent_processes),
        T(test_concurrent_first_open),
        T(test_killed_mid_insert),
        T(test_fork_after_open),
        T(test_log_callback_forks),
        T(test_missing_location),
    };
#undef T
    /* KILN_TEST_FILTER=name runs the tests whose names match (cmocka's
     * pattern: * and ? wildcards), to repeat one under load. */
    if (getenv("KILN_TEST_FILTER")) cmocka_set_test_filter(getenv("KILN_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
