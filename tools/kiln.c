/* kiln.c -- the kiln command: main, global options, help, the shared helpers
 * of tools/kiln_cli.h, and the verbs that need no cache (info, key).
 *
 * Uses only the public API in include/kiln.h. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kiln.h"
#include "kiln_cli.h"

cli_globals g_cli;

int cmd_bake(int argc, char **argv); /* tools/kiln_cache.c */

/* ===================================================================== */
/* Help                                                                   */
/* ===================================================================== */

typedef struct verb {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
    const char *help; /* first line is the usage line */
} verb;

static const verb verbs[] = {
    {"info", cmd_info, "versions, driver, NVRTC, GPUs, cache path",
     "usage: kiln info [--json]\n"
     "\n"
     "Show the kiln version, the CUDA driver version (or why there is no\n"
     "driver or GPU), the NVRTC version and the path it is loaded from, every\n"
     "GPU (name, arch, SMs, memory), the cache database and the digest of the\n"
     "templates built into the library.\n"
     "\n"
     "  --json      print one JSON object\n"},
    {"prewarm", cmd_prewarm, "compile kernels into the cache (parallel)",
     "usage: kiln prewarm [--arch ARCH] [-j N] [--file SPEC] [--quiet] [-n] KEY...\n"
     "\n"
     "Compile kernels with NVRTC and store them in the cache, so that no\n"
     "process pays for a compile later.  Needs NVRTC, not a GPU.\n"
     "\n"
     "A KEY is the text form of one kernel, e.g.\n"
     "    hstu_fwd/sm_90a/bf16/d128/causal+target/rab\n"
     "or a pattern with shell wildcards ('*' also spans '/'), matched against\n"
     "every valid canonical key (quote it):\n"
     "    'hstu_fwd/sm_90a/*'   'hstu_fwd/sm_80/bf16/*/causal'\n"
     "Every key and pattern is checked before anything is compiled; a key\n"
     "named twice is compiled once.  An sm_90a fp16/bf16 hstu_fwd key\n"
     "without rab has two kernels: KEY/persist runs sequences of up to 2048\n"
     "rows, KEY longer ones; patterns expand to both.\n"
     "\n"
     "  --arch ARCH      compile for ARCH (sm_80, sm_86, sm_89, sm_90a),\n"
     "                   replacing the arch the keys name; keys may then leave\n"
     "                   it out.  Without --arch each key must name its arch.\n"
     "  -j, --jobs N     compile N kernels at once (default: the number of\n"
     "                   CPUs this process may run on)\n"
     "  --file SPEC      read keys and patterns from SPEC, one per line; '#'\n"
     "                   starts a comment, blank lines are ignored, '-' is\n"
     "                   standard input.  May be repeated.\n"
     "  --workers MODE   'threads' (default): threads sharing one engine;\n"
     "                   'processes': forked workers, each with its own engine\n"
     "                   (a crash in NVRTC then fails only its key).  NVRTC\n"
     "                   compiles overlap in threads, so both scale alike.\n"
     "  -q, --quiet      print nothing but failures\n"
     "  -n, --dry-run    print the keys that would be compiled (canonical,\n"
     "                   patterns expanded, duplicates dropped) and stop\n"
     "\n"
     "Progress goes to stderr: a bar when stderr is a terminal, otherwise one\n"
     "line per key ('ok KEY 1234 ms', 'ok KEY 3 ms (cached)' or\n"
     "'FAIL KEY: why'), then a summary: compiled, already cached, failed, time.\n"
     "Exit status: 0 every key compiled or cached, 1 some failed, 2 usage\n"
     "error or bad key.\n"},
    {"ls", cmd_ls, "list cached kernels",
     "usage: kiln ls [--json] [PATTERN]\n"
     "\n"
     "List the cached kernels of every layer (read-only layers first), one\n"
     "line each: key, cubin bytes, registers per thread, spill bytes, compile\n"
     "time, hits, last use (UTC).  A header line is printed when standard\n"
     "output is a terminal.  PATTERN selects keys with shell wildcards ('*'\n"
     "also spans '/', e.g. 'hstu_fwd/sm_90a/*'); a plain key is canonicalized\n"
     "first.\n"
     "\n"
     "  --json      print a JSON array of objects (without prelude and log;\n"
     "              see 'kiln show')\n"},
    {"show", cmd_show, "everything about one cached kernel",
     "usage: kiln show [--arch ARCH] [--json] KEY\n"
     "\n"
     "Print everything the cache holds about KEY (canonicalized first): hash,\n"
     "layer, NVRTC version, compile options, sizes, registers, shared memory,\n"
     "spills, compile time, dates, hits, the specialization prelude that was\n"
     "compiled and the NVRTC log.  Every row holding the key is shown (one per\n"
     "layer, or more after a template or NVRTC change).\n"
     "\n"
     "  --arch ARCH  replace the key's arch\n"
     "  --json       print a JSON array with one object per row\n"
     "\n"
     "Exit status: 0 found, 1 not cached or an error, 2 usage error or bad key.\n"},
    {"key", cmd_key, "print a key's canonical form",
     "usage: kiln key [--arch ARCH] [--explain] KEY\n"
     "\n"
     "Parse KEY, fill in the defaults (tile sizes), validate it and print its\n"
     "canonical text form.  A bad key is reported with the field at fault.\n"
     "\n"
     "  --arch ARCH  replace the key's arch (or give one it leaves out)\n"
     "  --explain    print the tagged fields of the canonical encoding, the\n"
     "               template digest, the compile options and the hash\n"},
    {"stats", cmd_stats, "cache statistics",
     "usage: kiln stats [--json]\n"
     "\n"
     "Print the cache's statistics: the writable database, rows and cubin\n"
     "bytes over all layers, the database file size, the sum of hit counters\n"
     "and the number of read-only layers.\n"
     "\n"
     "  --json      print one JSON object\n"},
    {"verify", cmd_verify, "check every cached kernel",
     "usage: kiln verify [--drop] [--json]\n"
     "\n"
     "Check every row of every layer (key, length, digest, ELF header) and\n"
     "run SQLite's integrity check.  Each bad row is printed with the reason.\n"
     "\n"
     "  --drop      delete the bad rows of the writable layer\n"
     "  --json      print one JSON object\n"
     "\n"
     "Exit status: 0 all good, 1 bad rows were found (even if dropped) or the\n"
     "integrity check failed, 2 usage error.\n"},
    {"clear", cmd_clear, "delete cached kernels",
     "usage: kiln clear [--yes] [PATTERN]\n"
     "\n"
     "Delete the writable layer's kernels matching PATTERN (shell wildcards,\n"
     "'*' also spans '/'; a plain key is canonicalized first), or all of them.\n"
     "Read-only layers are never changed.  Without --yes, asks for confirmation\n"
     "when standard input is a terminal, and refuses otherwise.\n"
     "\n"
     "  -y, --yes   do not ask\n"},
    {"evict", cmd_evict, "shrink the cache to a size, least recently used first",
     "usage: kiln evict --max-bytes N[K|M|G]\n"
     "\n"
     "Delete the least recently used kernels of the writable layer until its\n"
     "cubins total at most N bytes (suffixes K, M, G are powers of 1024).\n"
     "Read-only layers are never changed.\n"
     "\n"
     "  --max-bytes N   the size to shrink to\n"},
    {"bake", cmd_bake, "write a database for a read-only layer",
     "usage: kiln bake [--from DB] OUT\n"
     "\n"
     "Write OUT, a copy of the cache database fit for a read-only layer\n"
     "($KILN_CACHE_RO): every row that verifies, checkpointed, in journal mode\n"
     "DELETE, integrity-checked and made read-only (0444).  It refuses to\n"
     "finish while a -wal remains, and refuses if OUT-wal already exists.\n"
     "\n"
     "  --from DB   bake DB instead of the writable cache (see kiln info)\n"
     "\n"
     "The writable cache may be capped with KILN_CACHE_MAX_BYTES=N[K|M|G]:\n"
     "each insert then evicts the least recently used kernels beyond N.\n"},
    {"export", cmd_export, "write a kernel's cubin to a file",
     "usage: kiln export [--arch ARCH] KEY FILE\n"
     "\n"
     "Write the cubin cached for KEY (canonicalized first) to FILE, e.g. for\n"
     "'cuobjdump -sass FILE'.\n"
     "\n"
     "  --arch ARCH  replace the key's arch\n"},
};
#define NVERBS (sizeof verbs / sizeof verbs[0])

static const char main_usage[] =
    "usage: kiln [--cache-dir DIR] [--no-cache] [-v] VERB [ARGS...]\n";

static void print_main_help(FILE *f)
{
    fputs(main_usage, f);
    fputs("\n"
          "kiln compiles CUDA attention kernels just in time with NVRTC and\n"
          "caches the cubins in SQLite.  This command inspects and fills the cache.\n"
          "\n"
          "Verbs:\n",
          f);
    for (size_t i = 0; i < NVERBS; i++)
        fprintf(f, "  %-9s %s\n", verbs[i].name, verbs[i].summary);
    fputs("  help      'kiln help VERB' is 'kiln VERB --help'\n"
          "\n"
          "Global options (before the verb, or anywhere after it):\n"
          "  --cache-dir DIR  use DIR/kiln.db as the writable cache (default:\n"
          "                   $KILN_CACHE_DIR, else $XDG_CACHE_HOME/kiln, else\n"
          "                   ~/.cache/kiln)\n"
          "  --no-cache       open no cache database (kernels stay in memory)\n"
          "  -v, --verbose    log at level info; twice: debug\n"
          "  --version        print the version and exit\n"
          "  -h, --help       print this help and exit\n"
          "\n"
          "Environment: KILN_CACHE_DIR, KILN_CACHE_RO (read-only layers,\n"
          "':'-separated), KILN_CACHE_MAX_BYTES (cap on the writable cache,\n"
          "N[K|M|G], least recently used evicted), KILN_LOG (error|warn|info|debug).\n"
          "Exit status: 0 success, 1 failure, 2 usage error or bad key.\n",
          f);
}

static const verb *find_verb(const char *name)
{
    for (size_t i = 0; i < NVERBS; i++)
        if (strcmp(verbs[i].name, name) == 0) return &verbs[i];
    return NULL;
}

void cli_print_help(const char *name, FILE *f)
{
    const verb *v = find_verb(name);
    if (v) fputs(v->help, f);
}

/* ===================================================================== */
/* Messages                                                               */
/* ===================================================================== */

int cli_usage(const char *verb_name, const char *fmt, ...)
{
    va_list ap;
    fputs("kiln: ", stderr);
    if (verb_name) fprintf(stderr, "%s: ", verb_name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (verb_name)
        fprintf(stderr, "\nTry 'kiln %s --help'.\n", verb_name);
    else
        fputs("\nTry 'kiln --help'.\n", stderr);
    return EXIT_USAGE;
}

/* The detail must be copied before any other kiln call. */
static void copy_last_error(char *buf, size_t n)
{
    const char *e = kiln_last_error();
    snprintf(buf, n, "%s", e ? e : "");
}

int cli_fail(kiln_status s, const char *what_fmt, ...)
{
    char detail[8192];
    va_list ap;
    copy_last_error(detail, sizeof detail);
    fputs("kiln: ", stderr);
    va_start(ap, what_fmt);
    vfprintf(stderr, what_fmt, ap);
    va_end(ap);
    fprintf(stderr, ": %s: %s\n", kiln_status_name(s),
            detail[0] ? detail : kiln_status_string(s));
    return EXIT_FAIL;
}

int cli_bad_key(const char *key)
{
    char detail[2048];
    const char *d = detail;
    size_t kl = strlen(key);
    copy_last_error(detail, sizeof detail);
    /* The library's detail may start with "key 'KEY': "; it is said once. */
    if (strncmp(d, "key '", 5) == 0 && strncmp(d + 5, key, kl) == 0 &&
        strncmp(d + 5 + kl, "': ", 3) == 0)
        d += 5 + kl + 3;
    fprintf(stderr, "kiln: bad key '%s': %s\n", key, d[0] ? d : "invalid key");
    return EXIT_USAGE;
}

int cli_key_error(kiln_status s, const char *key)
{
    if (s == KILN_EBADARG || s == KILN_EUNSUPPORTED) return cli_bad_key(key);
    return cli_fail(s, "key '%s'", key);
}

/* ===================================================================== */
/* Arguments                                                              */
/* ===================================================================== */

void cli_args_init(cli_args *a, const char *verb_name, int argc, char **argv)
{
    memset(a, 0, sizeof *a);
    a->verb = verb_name;
    a->argc = argc;
    a->argv = argv;
    a->i = -1;
}

/* Global options accepted after the verb too.  1 if consumed. */
static int global_option(cli_args *a)
{
    const char *v;
    if (cli_flag(a, "--no-cache")) {
        g_cli.no_cache = 1;
        return 1;
    }
    if (cli_flag(a, "-v") || cli_flag(a, "--verbose")) {
        g_cli.verbose++;
        return 1;
    }
    if (cli_flag(a, "-vv")) {
        g_cli.verbose += 2;
        return 1;
    }
    if (cli_value(a, "--cache-dir", NULL, &v)) {
        if (!a->error) g_cli.cache_dir = v;
        return 1;
    }
    return 0;
}

int cli_next(cli_args *a)
{
    for (;;) {
        if (a->error || a->help) return 0;
        a->i++;
        if (a->i >= a->argc) return 0;
        a->arg = a->argv[a->i];
        a->positional = a->only_pos || a->arg[0] != '-' || a->arg[1] == '\0';
        if (a->positional) return 1;
        if (strcmp(a->arg, "--") == 0) {
            a->only_pos = 1;
            continue;
        }
        if (strcmp(a->arg, "--help") == 0 || strcmp(a->arg, "-h") == 0) {
            cli_print_help(a->verb, stdout);
            a->help = 1;
            return 0;
        }
        if (global_option(a)) continue;
        return 1;
    }
}

int cli_flag(cli_args *a, const char *long_name)
{
    return !a->positional && strcmp(a->arg, long_name) == 0;
}

int cli_value(cli_args *a, const char *long_name, const char *short_name,
              const char **val)
{
    const char *arg = a->arg;
    size_t ln = strlen(long_name);
    if (a->positional) return 0;
    if (strncmp(arg, long_name, ln) == 0 && arg[ln] == '=') {
        *val = arg + ln + 1;
        return 1;
    }
    if (short_name && strncmp(arg, short_name, strlen(short_name)) == 0 &&
        arg[strlen(short_name)] != '\0' && short_name[1] != '-') {
        /* "-j4" */
        *val = arg + strlen(short_name);
        return 1;
    }
    if (strcmp(arg, long_name) == 0 ||
        (short_name && strcmp(arg, short_name) == 0)) {
        if (a->i + 1 >= a->argc) {
            cli_usage(a->verb, "option '%s' needs a value", arg);
            a->error = 1;
            *val = NULL;
            return 1;
        }
        a->i++;
        *val = a->argv[a->i];
        return 1;
    }
    return 0;
}

int cli_unknown(cli_args *a)
{
    if (a->positional)
        cli_usage(a->verb, "unexpected argument '%s'", a->arg);
    else
        cli_usage(a->verb, "unknown option '%s'", a->arg);
    a->error = 1;
    return EXIT_USAGE;
}

/* ===================================================================== */
/* Engine and logging                                                     */
/* ===================================================================== */

static void (*log_before)(void);
static void (*log_after)(void);
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

void cli_set_log_hook(void (*before)(void), void (*after)(void))
{
    pthread_mutex_lock(&log_mu);
    log_before = before;
    log_after = after;
    pthread_mutex_unlock(&log_mu);
}

/* The library's lines already read "kiln: warn: ...". */
static void cli_log(int level, const char *line, void *user)
{
    size_t n = line ? strlen(line) : 0;
    (void)level;
    (void)user;
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) n--;
    pthread_mutex_lock(&log_mu);
    if (log_before) log_before();
    fprintf(stderr, "%.*s\n", (int)n, line ? line : "");
    if (log_after) log_after();
    pthread_mutex_unlock(&log_mu);
}

kiln_engine *cli_engine(void)
{
    kiln_engine_options o;
    kiln_engine *e = NULL;
    kiln_status s = kiln_engine_options_init(&o);
    if (s != KILN_OK) {
        cli_fail(s, "engine options");
        return NULL;
    }
    o.cache_dir = g_cli.cache_dir;
    if (g_cli.no_cache) o.flags |= KILN_ENGINE_NO_DISK_CACHE;
    if (g_cli.verbose == 1) o.log_level = KILN_LOG_INFO;
    if (g_cli.verbose >= 2) o.log_level = KILN_LOG_DEBUG;
    o.log_fn = cli_log;
    s = kiln_engine_create(&o, &e);
    if (s != KILN_OK) {
        cli_fail(s, "cannot create engine");
        return NULL;
    }
    return e;
}

/* ===================================================================== */
/* Keys                                                                   */
/* ===================================================================== */

int cli_is_pattern(const char *text)
{
    return strpbrk(text, "*?[") != NULL;
}

int cli_pattern_arg(const char *text, char *buf, size_t n, const char **out)
{
    kiln_status s;
    if (cli_is_pattern(text)) {
        *out = text;
        return 0;
    }
    s = kiln_key_canonical(text, NULL, buf, n);
    if (s != KILN_OK) return cli_key_error(s, text);
    *out = buf;
    return 0;
}

/* ===================================================================== */
/* Output helpers                                                         */
/* ===================================================================== */

/* Length of the valid UTF-8 sequence at p (1..4), or 0 if invalid. */
static int utf8_len(const unsigned char *p)
{
    unsigned c = p[0];
    int n, i;
    unsigned cp;
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) n = 2, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef) n = 3, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4) n = 4, cp = c & 0x07;
    else return 0;
    for (i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0; /* also stops at NUL */
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

void json_str(FILE *f, const char *s)
{
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    fputc('"', f);
    while (*p) {
        unsigned c = *p;
        int n;
        switch (c) {
        case '"': fputs("\\\"", f); p++; continue;
        case '\\': fputs("\\\\", f); p++; continue;
        case '\b': fputs("\\b", f); p++; continue;
        case '\f': fputs("\\f", f); p++; continue;
        case '\n': fputs("\\n", f); p++; continue;
        case '\r': fputs("\\r", f); p++; continue;
        case '\t': fputs("\\t", f); p++; continue;
        default: break;
        }
        if (c < 0x20 || c == 0x7f) {
            fprintf(f, "\\u%04x", c);
            p++;
            continue;
        }
        n = utf8_len(p);
        if (n == 0) {
            fputs("\\ufffd", f);
            p++;
            continue;
        }
        fwrite(p, 1, (size_t)n, f);
        p += n;
    }
    fputc('"', f);
}

void json_num(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, "%.3f", v);
    else
        fputs("null", f);
}

void fmt_bytes(char *buf, size_t n, double bytes)
{
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024 && u < 4) bytes /= 1024, u++;
    if (u == 0)
        snprintf(buf, n, "%.0f B", bytes);
    else
        snprintf(buf, n, "%.1f %s", bytes, units[u]);
}

void fmt_time(char *buf, size_t n, int64_t t)
{
    struct tm tm;
    time_t tt = (time_t)t;
    if (t <= 0 || !gmtime_r(&tt, &tm)) {
        snprintf(buf, n, "-");
        return;
    }
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int stdout_is_tty(void)
{
    return isatty(STDOUT_FILENO);
}

/* ===================================================================== */
/* kiln info                                                              */
/* ===================================================================== */

/* A fixed char array that may lack its NUL. */
#define FIELD(a) (int)strnlen((a), sizeof(a)), (a)

static void json_field_str(FILE *f, const char *name, const char *v, size_t cap,
                           int comma)
{
    char tmp[1024];
    size_t n = strnlen(v, cap);
    if (n >= sizeof tmp) n = sizeof tmp - 1;
    memcpy(tmp, v, n);
    tmp[n] = '\0';
    fprintf(f, "  \"%s\": ", name);
    json_str(f, tmp);
    fputs(comma ? ",\n" : "\n", f);
}

int cmd_info(int argc, char **argv)
{
    cli_args a;
    int json = 0, ndev, rc = EXIT_OK;
    kiln_engine *e;
    kiln_info info;
    kiln_status s;
    char bytes[32];

    cli_args_init(&a, "info", argc, argv);
    while (cli_next(&a)) {
        if (cli_flag(&a, "--json")) json = 1;
        else return cli_unknown(&a);
    }
    if (a.help) return EXIT_OK;
    if (a.error) return EXIT_USAGE;

    e = cli_engine();
    if (!e) return EXIT_FAIL;
    memset(&info, 0, sizeof info);
    s = kiln_engine_info(e, &info);
    if (s != KILN_OK) {
        rc = cli_fail(s, "info");
        kiln_engine_destroy(e);
        return rc;
    }
    ndev = info.device_count;
    if (ndev < 0) ndev = 0;
    if (ndev > 8) ndev = 8;

    if (json) {
        FILE *f = stdout;
        fputs("{\n  \"kiln_version\": ", f);
        json_str(f, kiln_version_string());
        fprintf(f, ",\n  \"library_version_number\": %u,\n",
                kiln_version_number());
        fprintf(f, "  \"header_version_number\": %u,\n", KILN_VERSION_NUMBER);
        fprintf(f, "  \"driver_version\": %d,\n", info.driver_version);
        json_field_str(f, "driver_error", info.driver_error,
                       sizeof info.driver_error, 1);
        json_field_str(f, "nvrtc_version", info.nvrtc_version,
                       sizeof info.nvrtc_version, 1);
        json_field_str(f, "nvrtc_path", info.nvrtc_path,
                       sizeof info.nvrtc_path, 1);
        json_field_str(f, "template_digest", info.template_digest,
                       sizeof info.template_digest, 1);
        json_field_str(f, "cache_path", info.cache_path,
                       sizeof info.cache_path, 1);
        fprintf(f, "  \"device_count\": %d,\n  \"devices\": [", info.device_count);
        for (int i = 0; i < ndev; i++) {
            char name[sizeof info.devices[i].name + 1];
            char arch[sizeof info.devices[i].arch + 1];
            snprintf(name, sizeof name, "%.*s", FIELD(info.devices[i].name));
            snprintf(arch, sizeof arch, "%.*s", FIELD(info.devices[i].arch));
            fprintf(f, "%s\n    {\"index\": %d, \"name\": ", i ? "," : "", i);
            json_str(f, name);
            fputs(", \"arch\": ", f);
            json_str(f, arch);
            fprintf(f, ", \"sm_count\": %d, \"memory_bytes\": %lld}",
                    info.devices[i].sm_count,
                    (long long)info.devices[i].memory_bytes);
        }
        fputs(ndev ? "\n  ]\n}\n" : "]\n}\n", f);
    } else {
        printf("kiln:       %s", kiln_version_string());
        if (kiln_version_number() != KILN_VERSION_NUMBER)
            printf(" (header %d.%d.%d: mismatch)", KILN_VERSION_MAJOR,
                   KILN_VERSION_MINOR, KILN_VERSION_PATCH);
        printf("\n");
        if (info.driver_version > 0)
            printf("driver:     CUDA %d.%d (%d)\n", info.driver_version / 1000,
                   (info.driver_version % 1000) / 10, info.driver_version);
        else if (info.driver_error[0])
            printf("driver:     none (%.*s)\n", FIELD(info.driver_error));
        else
            printf("driver:     none\n");
        if (info.nvrtc_version[0])
            printf("nvrtc:      %.*s (%.*s)\n", FIELD(info.nvrtc_version),
                   FIELD(info.nvrtc_path));
        else
            printf("nvrtc:      not found (%.*s)\n", FIELD(info.nvrtc_path));
        printf("templates:  %.*s\n", FIELD(info.template_digest));
        if (info.cache_path[0])
            printf("cache:      %.*s\n", FIELD(info.cache_path));
        else
            printf("cache:      none (kernels stay in memory)\n");
        printf("devices:    %d\n", info.device_count);
        if (info.device_count == 0 && info.driver_version > 0 &&
            info.driver_error[0])
            printf("            (%.*s)\n", FIELD(info.driver_error));
        for (int i = 0; i < ndev; i++) {
            fmt_bytes(bytes, sizeof bytes,
                      (double)info.devices[i].memory_bytes);
            printf("  %d: %.*s, %.*s, %d SMs, %s\n", i,
                   FIELD(info.devices[i].name), FIELD(info.devices[i].arch),
                   info.devices[i].sm_count, bytes);
        }
        if (info.device_count > ndev)
            printf("  ... and %d more\n", info.device_count - ndev);
    }
    if (fflush(stdout) != 0) rc = EXIT_FAIL;
    kiln_engine_destroy(e);
    return rc;
}

/* ===================================================================== */
/* kiln key                                                               */
/* ===================================================================== */

int cmd_key(int argc, char **argv)
{
    cli_args a;
    const char *arch = NULL, *key = NULL, *v;
    int explain = 0, rc = EXIT_OK;
    char canon[CLI_KEY_MAX];
    kiln_status s;

    cli_args_init(&a, "key", argc, argv);
    while (cli_next(&a)) {
        if (cli_flag(&a, "--explain")) explain = 1;
        else if (cli_value(&a, "--arch", NULL, &v)) arch = v;
        else if (a.positional && !key) key = a.arg;
        else return cli_unknown(&a);
    }
    if (a.help) return EXIT_OK;
    if (a.error) return EXIT_USAGE;
    if (!key) return cli_usage("key", "missing KEY");

    s = kiln_key_canonical(key, arch, canon, sizeof canon);
    if (s != KILN_OK) return cli_key_error(s, key);
    if (!explain) {
        printf("%s\n", canon);
    } else {
        size_t cap = 1 << 16;
        char *buf = malloc(cap);
        kiln_engine *e;
        if (!buf) {
            fprintf(stderr, "kiln: key: out of memory\n");
            return EXIT_FAIL;
        }
        e = cli_engine();
        if (!e) {
            free(buf);
            return EXIT_FAIL;
        }
        s = kiln_key_explain(e, canon, NULL, buf, cap);
        if (s != KILN_OK) {
            rc = cli_fail(s, "explain '%s'", canon);
        } else {
            size_t n = strnlen(buf, cap);
            fwrite(buf, 1, n, stdout);
            if (n == 0 || buf[n - 1] != '\n') fputc('\n', stdout);
        }
        free(buf);
        kiln_engine_destroy(e);
    }
    if (fflush(stdout) != 0) rc = EXIT_FAIL;
    return rc;
}

/* ===================================================================== */
/* main                                                                   */
/* ===================================================================== */

int main(int argc, char **argv)
{
    int i;
    const verb *v;

    for (i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            print_main_help(stdout);
            return EXIT_OK;
        } else if (strcmp(arg, "--version") == 0) {
            printf("kiln %s\n", kiln_version_string());
            return EXIT_OK;
        } else if (strcmp(arg, "--no-cache") == 0) {
            g_cli.no_cache = 1;
        } else if (strcmp(arg, "-v") == 0 || strcmp(arg, "--verbose") == 0) {
            g_cli.verbose++;
        } else if (strcmp(arg, "-vv") == 0) {
            g_cli.verbose += 2;
        } else if (strcmp(arg, "--cache-dir") == 0) {
            if (i + 1 >= argc)
                return cli_usage(NULL, "option '--cache-dir' needs a value");
            g_cli.cache_dir = argv[++i];
        } else if (strncmp(arg, "--cache-dir=", 12) == 0) {
            g_cli.cache_dir = arg + 12;
        } else if (arg[0] == '-' && arg[1] != '\0') {
            return cli_usage(NULL, "unknown option '%s'", arg);
        } else {
            break;
        }
    }
    if (i >= argc) {
        fputs(main_usage, stderr);
        fputs("Try 'kiln --help'.\n", stderr);
        return EXIT_USAGE;
    }
    if (g_cli.cache_dir && g_cli.cache_dir[0] == '\0')
        return cli_usage(NULL, "--cache-dir needs a non-empty directory");

    if (strcmp(argv[i], "help") == 0) {
        if (i + 1 >= argc) {
            print_main_help(stdout);
            return EXIT_OK;
        }
        v = find_verb(argv[i + 1]);
        if (!v) return cli_usage(NULL, "unknown verb '%s'", argv[i + 1]);
        fputs(v->help, stdout);
        return EXIT_OK;
    }
    v = find_verb(argv[i]);
    if (!v) {
        fprintf(stderr, "kiln: unknown verb '%s'\n", argv[i]);
        fputs(main_usage, stderr);
        fputs("Try 'kiln --help'.\n", stderr);
        return EXIT_USAGE;
    }
    return v->fn(argc - i - 1, argv + i + 1);
}
