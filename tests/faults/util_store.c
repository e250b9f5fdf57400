/* util_store.c -- see util_store.h. */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cache/cache.h"
#include "runtime/cuda.h"
#include "util_fakecu.h"
#include "util_store.h"

int st_long;
const char *st_case_name = "init";
static char g_root[512];
static char g_refdb[700];

/* ---------------------------------------------------------------- logger */

static pthread_mutex_t g_log_mu = PTHREAD_MUTEX_INITIALIZER;
static char g_log[1 << 16];
static size_t g_log_len;
static int g_warnings;

static void capture(int level, const char *line, void *user)
{
    (void)user;
    pthread_mutex_lock(&g_log_mu);
    if (level <= KILN_LOG_WARN) g_warnings++;
    int n = snprintf(g_log + g_log_len, sizeof g_log - g_log_len, "[%d] %s\n",
                     level, line);
    if (n > 0 && g_log_len + (size_t)n < sizeof g_log) g_log_len += (size_t)n;
    pthread_mutex_unlock(&g_log_mu);
}

const char *st_log(void) { return g_log; }

void st_log_reset(void)
{
    pthread_mutex_lock(&g_log_mu);
    g_log_len = 0;
    g_log[0] = '\0';
    g_warnings = 0;
    pthread_mutex_unlock(&g_log_mu);
}

int st_log_warnings(void) { return g_warnings; }

int st_log_count(const char *needle)
{
    int n = 0;
    pthread_mutex_lock(&g_log_mu);
    for (const char *p = g_log; (p = strstr(p, needle)); p++) n++;
    pthread_mutex_unlock(&g_log_mu);
    return n;
}

/* ---------------------------------------------------------------- driver */

/* The shared fake (tests/util_fakecu.c) as an sm_80 A100 whose loads are
 * checked against the verified references. */
#define MAX_GOOD 64
static pthread_mutex_t g_drv_mu = PTHREAD_MUTEX_INITIALIZER;
static struct { const void *p; size_t n; } g_good[MAX_GOOD];
static int g_ngood, g_bad;
static void *g_last;
static size_t g_last_len;

void st_ref_bytes(const void *cubin, size_t len)
{
    pthread_mutex_lock(&g_drv_mu);
    if (g_ngood < MAX_GOOD) {
        g_good[g_ngood].p = cubin;
        g_good[g_ngood].n = len;
        g_ngood++;
    }
    pthread_mutex_unlock(&g_drv_mu);
}

int st_loads(void) { return (int)kt_fakecu_counts_get().loads; }
int st_bad_loads(void) { return g_bad; }
const void *st_last_load(size_t *len)
{
    *len = g_last_len;
    return g_last;
}

/* The driver would read the ELF headers for the length; we find it by
 * matching a verified reference.  Bytes matching none are "unverified";
 * the load succeeds either way. */
static CUresult check_load(const void *code, void *user)
{
    (void)user;
    pthread_mutex_lock(&g_drv_mu);
    int good = -1;
    for (int i = 0; i < g_ngood && good < 0; i++)
        if (memcmp(code, g_good[i].p, g_good[i].n) == 0 &&
            !kiln__elf_check(code, g_good[i].n))
            good = i;
    if (good < 0) {
        g_bad++;
        g_last = NULL;
        g_last_len = 0;
    } else {
        g_last = (void *)g_good[good].p;
        g_last_len = g_good[good].n;
    }
    pthread_mutex_unlock(&g_drv_mu);
    return 0;
}

static void install_driver(void)
{
    kt_fakecu_config c;
    kt_fakecu_config_init(&c);
    c.cc_major = 8;
    c.cc_minor = 0;
    c.attr_default = 108;
    c.max_smem_optin = 163 * 1024;
    c.max_threads = 1024;
    c.name = "fake-a100";
    c.load_check = check_load;
    kt_fakecu_install(&c);
}

/* ---------------------------------------------------------------- cases */

static double g_case_t0;

static void on_alarm(int sig)
{
    (void)sig;
    static const char m[] = "FAIL: a case hung past its alarm: ";
    write(2, m, sizeof m - 1);
    write(2, st_case_name, strlen(st_case_name));
    write(2, "\n", 1);
    _exit(124);
}

double st_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

void st_case(const char *name, int seconds)
{
    st_case_name = name;
    st_log_reset();
    g_case_t0 = st_now();
    alarm((unsigned)seconds);
}

void st_case_ok(const char *fmt, ...)
{
    alarm(0);
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    printf("ok   %-34s %6.2fs  %s\n", st_case_name, st_now() - g_case_t0, buf);
    fflush(stdout);
}

static pid_t g_main_pid;

static void cleanup(void)
{
    if (getpid() != g_main_pid || getenv("KILN_FAULT_KEEP") || !g_root[0]) return;
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "chmod -R u+rwx '%s' 2>/dev/null; rm -rf '%s'", g_root, g_root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_root);
}

void st_init(int argc, char **argv, const char *prog)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--long") == 0) st_long = 1;
    const char *t = getenv("TMPDIR");
    snprintf(g_root, sizeof g_root, "%s/kiln-%s-XXXXXX", t && *t ? t : "/tmp", prog);
    if (!mkdtemp(g_root)) {
        perror("mkdtemp");
        exit(1);
    }
    chmod(g_root, 0755); /* a dropped-privilege child must traverse it */
    g_main_pid = getpid();
    atexit(cleanup);
    signal(SIGALRM, on_alarm);
    signal(SIGPIPE, SIG_IGN);
    unsetenv("KILN_CACHE_RO");
    unsetenv("KILN_CACHE_MAX_BYTES");
    install_driver();
    setvbuf(stdout, NULL, _IOLBF, 0);
}

const char *st_root(void) { return g_root; }

const char *st_dir(const char *name)
{
    static char bufs[8][600];
    static int k;
    char *d = bufs[k++ % 8];
    snprintf(d, 600, "%s/%s", g_root, name);
    char cmd[1300];
    snprintf(cmd, sizeof cmd, "chmod -R u+rwx '%s' 2>/dev/null; rm -rf '%s'", d, d);
    if (system(cmd) != 0) {}
    mkdir(d, 0700);
    return d;
}

/* ---------------------------------------------------------------- engines */

kiln_engine *st_engine(const char *dir, const char *ro, uint32_t flags)
{
    kiln_engine_options o;
    kiln_engine_options_init(&o);
    o.cache_dir = dir;
    o.ro_layers = ro ? ro : "";
    o.flags = flags | (dir ? 0 : KILN_ENGINE_NO_DISK_CACHE);
    o.log_level = KILN_LOG_DEBUG;
    o.log_fn = capture;
    kiln_engine *e = NULL;
    kiln_status s = kiln_engine_create(&o, &e);
    CHECK(s == KILN_OK && e, "kiln_engine_create: %s", kiln_last_error());
    return e;
}

/* ---------------------------------------------------------------- refs */

static st_ref g_refs[16];
static int g_nrefs;

static void ref_params(int i, kiln_hstu_fwd_params *p)
{
    static const int dims[] = {32, 64, 128, 256};
    kiln_hstu_fwd_params_init(p);
    p->dtype = (i / 8) ? KILN_DTYPE_FP16 : KILN_DTYPE_BF16;
    p->head_dim = dims[(i / 2) % 4];
    int causal = i % 2;
    p->num_heads = 2;
    p->batch = 2;
    p->total_q = p->total_k = 100;
    p->q = 0x100000; p->k = 0x200000; p->v = 0x300000; p->out = 0x400000;
    p->q_row_stride = p->k_row_stride = p->v_row_stride = p->out_row_stride = 2 * p->head_dim;
    p->q_head_stride = p->k_head_stride = p->v_head_stride = p->out_head_stride = p->head_dim;
    p->seq_offsets_q = 0x500000;
    p->max_seqlen_q = p->max_seqlen_k = 64;
    p->window_left = -1;
    p->window_right = causal ? 0 : -1;
    p->alpha = 0.5f;
}

static void *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *b = malloc((size_t)n);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

const char *st_ref_db(void) { return g_refdb; }

st_ref *st_refs(int n)
{
    if (n > 16) n = 16;
    if (g_nrefs >= n) return g_refs;
    const char *saved_case = st_case_name;
    st_case_name = "reference compiles";
    char dir[560];
    snprintf(dir, sizeof dir, "%s/ref", g_root);
    mkdir(dir, 0700);
    snprintf(g_refdb, sizeof g_refdb, "%s/kiln.db", dir);
    kiln_engine *e = st_engine(dir, "", 0);
    for (int i = g_nrefs; i < n; i++) {
        st_ref *r = &g_refs[i];
        ref_params(i, &r->p);
        kiln_status s = kiln_hstu_fwd_key(&r->p, "sm_80", r->key, sizeof r->key);
        CHECK(s == KILN_OK, "kiln_hstu_fwd_key: %s", kiln_last_error());
        s = kiln_prewarm(e, r->key, NULL);
        CHECK(s == KILN_OK, "prewarm %s: %s", r->key, kiln_last_error());
        char file[700];
        snprintf(file, sizeof file, "%s/%d.cubin", dir, i);
        s = kiln_cache_export(e, r->key, file);
        CHECK(s == KILN_OK, "export %s: %s", r->key, kiln_last_error());
        r->cubin = read_file(file, &r->len);
        CHECK(r->cubin && r->len > 64, "read %s", file);
        CHECK(!kiln__elf_check(r->cubin, r->len), "reference %s fails elf_check", r->key);
        st_ref_bytes(r->cubin, r->len);
    }
    kiln_engine_destroy(e);
    g_nrefs = n;
    st_case_name = saved_case;
    return g_refs;
}

int st_launch(kiln_engine *e, const st_ref *r)
{
    int l0 = st_loads(), b0 = st_bad_loads();
    kiln_status s = kiln_hstu_fwd(e, &r->p, NULL);
    CHECK(s == KILN_OK, "launch %s: %s: %s", r->key, kiln_status_name(s), kiln_last_error());
    CHECK(st_bad_loads() == b0, "launch %s loaded unverified bytes", r->key);
    int loads = st_loads() - l0;
    if (loads) {
        size_t n;
        const void *p = st_last_load(&n);
        CHECK(p && n == r->len && memcmp(p, r->cubin, n) == 0,
              "launch %s loaded another kernel's cubin", r->key);
    }
    return loads;
}

/* ---------------------------------------------------------------- files */

void st_copy(const char *from, const char *to)
{
    size_t n;
    void *b = read_file(from, &n);
    CHECK(b, "read %s: %s", from, strerror(errno));
    FILE *f = fopen(to, "wb");
    CHECK(f, "write %s: %s", to, strerror(errno));
    CHECK(fwrite(b, 1, n, f) == n, "write %s", to);
    fclose(f);
    free(b);
}

int st_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

int st_count_prefix(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strncmp(de->d_name, prefix, strlen(prefix)) == 0) n++;
    closedir(d);
    return n;
}

int64_t st_sql_int(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    int64_t v = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK) {
        sqlite3_busy_timeout(db, 5000);
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return v;
}

int st_sql_exec(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(db, 5000);
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    }
    sqlite3_close(db);
    return rc;
}

int st_integrity_ok(const char *path)
{
    sqlite3 *db = NULL;
    int ok = 0;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK) {
        sqlite3_busy_timeout(db, 5000);
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            ok = strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0;
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return ok;
}

/* ---------------------------------------------------------------- fake cubins */

static void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

void *st_fake_elf(size_t payload, unsigned seed, size_t *len)
{
    size_t shoff = (64 + payload + 7) & ~(size_t)7;
    size_t n = shoff + 2 * 64;
    uint8_t *b = calloc(1, n);
    CHECK(b, "out of memory");
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
    CHECK(!kiln__elf_check(b, n), "st_fake_elf: %s", kiln__elf_check(b, n));
    *len = n;
    return b;
}
