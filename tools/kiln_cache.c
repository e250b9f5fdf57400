/* kiln_cache.c -- the verbs that read or change the cache: ls, show, stats,
 * verify, clear, export.  Public API only. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kiln.h"
#include "kiln_cli.h"

/* ===================================================================== */
/* Entries copied out of the callback                                     */
/* ===================================================================== */

typedef struct entry {
    char *key, *hash, *layer, *nvrtc, *options, *prelude, *log;
    uint64_t bytes;
    int regs, smem, spills;
    double compile_ms;
    int64_t created, last_used, hits;
} entry;

typedef struct entry_list {
    entry *v;
    size_t n, cap;
    const char *exact; /* keep only this key (NULL: all) */
    int full;          /* copy prelude and log */
    int oom;
} entry_list;

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

static void entry_free(entry *e)
{
    free(e->key);
    free(e->hash);
    free(e->layer);
    free(e->nvrtc);
    free(e->options);
    free(e->prelude);
    free(e->log);
}

static void list_free(entry_list *l)
{
    for (size_t i = 0; i < l->n; i++) entry_free(&l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}

static int collect(const kiln_cache_entry *ce, void *user)
{
    entry_list *l = user;
    entry *e;
    if (!ce || !ce->key) return 0;
    if (l->exact && strcmp(ce->key, l->exact) != 0) return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        entry *nv = realloc(l->v, cap * sizeof *nv);
        if (!nv) {
            l->oom = 1;
            return 1;
        }
        l->v = nv;
        l->cap = cap;
    }
    e = &l->v[l->n];
    memset(e, 0, sizeof *e);
    e->key = dup_or_empty(ce->key);
    e->hash = dup_or_empty(ce->hash);
    e->layer = dup_or_empty(ce->layer);
    e->nvrtc = dup_or_empty(ce->nvrtc);
    e->options = dup_or_empty(ce->options);
    e->prelude = dup_or_empty(l->full ? ce->prelude : "");
    e->log = dup_or_empty(l->full ? ce->log : "");
    l->n++; /* counted now so that list_free() frees a partial copy */
    if (!e->key || !e->hash || !e->layer || !e->nvrtc || !e->options ||
        !e->prelude || !e->log) {
        l->oom = 1;
        return 1;
    }
    e->bytes = ce->bytes;
    e->regs = ce->regs;
    e->smem = ce->smem;
    e->spills = ce->spills;
    e->compile_ms = ce->compile_ms;
    e->created = ce->created;
    e->last_used = ce->last_used;
    e->hits = ce->hits;
    return 0;
}

/* List into *l; 0 or an exit status (error printed). */
static int list_entries(kiln_engine *eng, const char *pattern, entry_list *l)
{
    kiln_status s = kiln_cache_list(eng, pattern, collect, l);
    if (s != KILN_OK) return cli_fail(s, "cannot list the cache");
    if (l->oom) {
        fprintf(stderr, "kiln: cannot list the cache: out of memory\n");
        return EXIT_FAIL;
    }
    return 0;
}

/* Registers, shared memory and spills are -1 when ptxas did not say. */
static void json_count(FILE *f, int v)
{
    if (v < 0)
        fputs("null", f);
    else
        fprintf(f, "%d", v);
}

static const char *count_str(char *buf, size_t n, int v, const char *unit)
{
    if (v < 0)
        snprintf(buf, n, "%s", *unit ? "unknown" : "-");
    else
        snprintf(buf, n, "%d%s", v, unit);
    return buf;
}

static void json_entry(FILE *f, const entry *e, int full, const char *indent)
{
    fprintf(f, "%s{\"key\": ", indent);
    json_str(f, e->key);
    fputs(", \"hash\": ", f);
    json_str(f, e->hash);
    fputs(", \"layer\": ", f);
    json_str(f, e->layer);
    fputs(", \"nvrtc\": ", f);
    json_str(f, e->nvrtc);
    fputs(", \"options\": ", f);
    json_str(f, e->options);
    fprintf(f, ", \"bytes\": %llu, \"regs\": ", (unsigned long long)e->bytes);
    json_count(f, e->regs);
    fputs(", \"smem\": ", f);
    json_count(f, e->smem);
    fputs(", \"spills\": ", f);
    json_count(f, e->spills);
    fputs(", \"compile_ms\": ", f);
    json_num(f, e->compile_ms);
    fprintf(f, ", \"created\": %lld, \"last_used\": %lld, \"hits\": %lld",
            (long long)e->created, (long long)e->last_used, (long long)e->hits);
    if (full) {
        fputs(", \"prelude\": ", f);
        json_str(f, e->prelude);
        fputs(", \"log\": ", f);
        json_str(f, e->log);
    }
    fputc('}', f);
}

static int finish(int rc)
{
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "kiln: cannot write to standard output\n");
        return EXIT_FAIL;
    }
    return rc;
}

/* ===================================================================== */
/* kiln ls                                                                */
/* ===================================================================== */

int cmd_ls(int argc, char **argv)
{
    cli_args a;
    int json = 0, rc;
    const char *pat_arg = NULL, *pattern = NULL;
    char canon[CLI_KEY_MAX];
    entry_list l;
    kiln_engine *eng;

    cli_args_init(&a, "ls", argc, argv);
    while (cli_next(&a)) {
        if (cli_flag(&a, "--json")) json = 1;
        else if (a.positional && !pat_arg) pat_arg = a.arg;
        else return cli_unknown(&a);
    }
    if (a.help) return EXIT_OK;
    if (a.error) return EXIT_USAGE;
    if (pat_arg && (rc = cli_pattern_arg(pat_arg, canon, sizeof canon, &pattern)))
        return rc;

    eng = cli_engine();
    if (!eng) return EXIT_FAIL;
    memset(&l, 0, sizeof l);
    rc = list_entries(eng, pattern, &l);
    kiln_engine_destroy(eng);
    if (rc) {
        list_free(&l);
        return rc;
    }

    if (json) {
        fputc('[', stdout);
        for (size_t i = 0; i < l.n; i++) {
            fputs(i ? ",\n" : "\n", stdout);
            json_entry(stdout, &l.v[i], 0, "  ");
        }
        fputs(l.n ? "\n]\n" : "]\n", stdout);
    } else {
        int kw = 3;
        for (size_t i = 0; i < l.n; i++) {
            int n = (int)strlen(l.v[i].key);
            if (n > kw) kw = n;
        }
        if (stdout_is_tty())
            printf("%-*s  %10s  %4s  %6s  %10s  %6s  %s\n", kw, "KEY", "BYTES",
                   "REGS", "SPILLS", "COMPILE", "HITS", "LAST USED");
        for (size_t i = 0; i < l.n; i++) {
            const entry *e = &l.v[i];
            char when[32], ms[32], regs[16], spills[16];
            fmt_time(when, sizeof when, e->last_used);
            snprintf(ms, sizeof ms, "%.0f ms", e->compile_ms);
            count_str(regs, sizeof regs, e->regs, "");
            count_str(spills, sizeof spills, e->spills, "");
            printf("%-*s  %10llu  %4s  %6s  %10s  %6lld  %s\n", kw, e->key,
                   (unsigned long long)e->bytes, regs, spills, ms,
                   (long long)e->hits, when);
        }
    }
    list_free(&l);
    return finish(EXIT_OK);
}

/* ===================================================================== */
/* kiln show                                                              */
/* ===================================================================== */

static void print_block(const char *title, const char *text)
{
    size_t n = strlen(text);
    printf("%s:%s", title, n ? "\n" : " (empty)\n");
    if (!n) return;
    /* indent every line by 4 */
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        printf("    %.*s\n", (int)len, p);
        p += len + (nl ? 1 : 0);
    }
}

int cmd_show(int argc, char **argv)
{
    cli_args a;
    int json = 0, rc;
    const char *key = NULL, *arch = NULL, *v;
    char canon[CLI_KEY_MAX];
    entry_list l;
    kiln_engine *eng;
    kiln_status s;

    cli_args_init(&a, "show", argc, argv);
    while (cli_next(&a)) {
        if (cli_flag(&a, "--json")) json = 1;
        else if (cli_value(&a, "--arch", NULL, &v)) arch = v;
        else if (a.positional && !key) key = a.arg;
        else return cli_unknown(&a);
    }
    if (a.help) return EXIT_OK;
    if (a.error) return EXIT_USAGE;
    if (!key) return cli_usage("show", "missing KEY");
    s = kiln_key_canonical(key, arch, canon, sizeof canon);
    if (s != KILN_OK) return cli_key_error(s, key);

    eng = cli_engine();
    if (!eng) return EXIT_FAIL;
    memset(&l, 0, sizeof l);
    l.exact = canon;
    l.full = 1;
    /* The canonical key is its own (wildcard-free) pattern; compare exactly
     * anyway in case the library's matching is looser. */
    rc = list_entries(eng, cli_is_pattern(canon) ? NULL : canon, &l);
    kiln_engine_destroy(eng);
    if (rc) {
        list_free(&l);
        return rc;
    }
    if (l.n == 0) {
        fprintf(stderr, "kiln: show: '%s' is not cached\n", canon);
        list_free(&l);
        return EXIT_FAIL;
    }

    if (json) {
        fputc('[', stdout);
        for (size_t i = 0; i < l.n; i++) {
            fputs(i ? ",\n" : "\n", stdout);
            json_entry(stdout, &l.v[i], 1, "  ");
        }
        fputs("\n]\n", stdout);
    } else {
        for (size_t i = 0; i < l.n; i++) {
            const entry *e = &l.v[i];
            char created[32], used[32], size[32];
            fmt_time(created, sizeof created, e->created);
            fmt_time(used, sizeof used, e->last_used);
            fmt_bytes(size, sizeof size, (double)e->bytes);
            if (i) putchar('\n');
            printf("key:        %s\n", e->key);
            printf("hash:       %s\n", e->hash);
            printf("layer:      %s\n", e->layer);
            printf("nvrtc:      %s\n", e->nvrtc);
            printf("options:    %s\n", e->options);
            printf("cubin:      %llu bytes (%s)\n",
                   (unsigned long long)e->bytes, size);
            char b1[32], b2[32], b3[32];
            printf("registers:  %s\n", count_str(b1, sizeof b1, e->regs, " per thread"));
            printf("smem:       %s\n", count_str(b2, sizeof b2, e->smem, " bytes static"));
            printf("spills:     %s\n", count_str(b3, sizeof b3, e->spills, " bytes"));
            printf("compile:    %.1f ms\n", e->compile_ms);
            printf("created:    %s\n", created);
            printf("last used:  %s\n", used);
            printf("hits:       %lld\n", (long long)e->hits);
            print_block("prelude", e->prelude);
            print_block("nvrtc log", e->log);
        }
    }
    list_free(&l);
    return finish(EXIT_OK);
}

/* ===================================================================== */
/* kiln stats                                                             */
/* ===================================================================== */

int cmd_stats(int argc, char **argv)
{
    cli_args a;
    int json = 0;
    kiln_engine *eng;
    kiln_cache_stats st;
    kiln_status s;
    char b1[32], b2[32];

    cli_args_init(&a, "stats", argc, argv);
    while (cli_next(&a)) {
        if (cli_flag(&a, "--json")) json = 1;
        else return cli_unknown(&a);
    }
    if (a.help) return EXIT_OK;
    if (a.error) return EXIT_USAGE;

    eng = cli_engine();
    if (!eng) return EXIT_FAIL;
    memset(&st, 0, sizeof st);
    s = kiln_cache_stats_get(eng, &st);
    if (s != KILN_OK) {
        int rc = cli_fail(s, "cannot read cache statistics");
        kiln_engine_destroy(eng);
        return rc;
    }
    if (json) {
        printf("{\n  \"path\": ");
        json_str(stdout, st.path);
        printf(",\n  \"writable\": %s,\n", st.writable ? "true" : "false");
        printf("  \"entries\": %lld,\n  \"bytes\": %lld,\n"
               "  \"file_bytes\": %lld,\n  \"hits\": %lld,\n"
               "  \"ro_layers\": %d\n}\n",
               (long long)st.entries, (long long)st.bytes,
               (long long)st.file_bytes, (long long)st.hits, st.ro_layers);
    } else {
        fmt_bytes(b1, sizeof b1, (double)st.bytes);
        fmt_bytes(b2, sizeof b2, (double)st.file_bytes);
        printf("cache:       %s%s\n",
               st.path && st.path[0] ? st.path : "none (memory only)",
               st.path && st.path[0] && !st.writable ? " (not writable)" : "");
        printf("entries:     %lld\n", (long long)st.entries);
        printf("cubin bytes: %lld (%s)\n", (long long)st.bytes, b1);
        printf("file bytes:  %lld (%s)\n", (long long)st.file_bytes, b2);
        printf("hits:        %lld\n", (long long)st.hits);
        printf("ro layers:   %d\n", st.ro_layers);
    }
    kiln_engine_destroy(eng);
    return finish(EXIT_OK);
}

/* ===================================================================== */
/* kiln verify                                                            */
/* ===================================================================== */

typedef struct bad_list {
    char **key, **why;
    size_t n, cap;
    int oom;
} bad_list;

static void on_bad(const char *key, const char *why, void *user)
{
    bad_list *b = user;
    if (b->oom) return;
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16;
        char **k = realloc(b->key, cap * sizeof *k);
        if (!k) {
            b->oom = 1;
            return;
        }
        b->key = k;
        char **w = realloc(b->why, cap * sizeof *w);
        if (!w) {
            b->oom = 1;
            return;
        }
        b->why = w;
        b->cap = cap;
    }
    b->key[b->n] = dup_or_empty(key);
    b->why[b->n] = dup_or_empty(why);
    b->n++;
}

int cmd_verify(int argc, char **argv)
{
    cli_args a;
    int json = 0, drop = 0, rc;
    kiln_engine *eng;
    kiln_cache_verify_report r;
    kiln_status s;
    bad_list b;

    cli_args_init(&a, "verify", argc, argv);
    while (cli_next(&a)) {
        if (cli_flag(&a, "--json")) json = 1;
        else if (cli_flag(&a, "--drop")) drop = 1;
        else return cli_unknown(&a);
    }
    if (a.help) return EXIT_OK;
    if (a.error) return EXIT_USAGE;

    eng = cli_engine();
    if (!eng) return EXIT_FAIL;
    memset(&r, 0, sizeof r);
    memset(&b, 0, sizeof b);
    s = kiln_cache_verify(eng, drop, &r, on_bad, &b);
    if (s != KILN_OK) {
        rc = cli_fail(s, "cannot verify the cache");
        goto out;
    }
    rc = (r.bad > 0 || !r.integrity_ok) ? EXIT_FAIL : EXIT_OK;
    if (json) {
        printf("{\n  \"checked\": %lld,\n  \"bad\": %lld,\n  \"dropped\": %lld,\n"
               "  \"integrity_ok\": %s,\n  \"bad_rows\": [",
               (long long)r.checked, (long long)r.bad, (long long)r.dropped,
               r.integrity_ok ? "true" : "false");
        for (size_t i = 0; i < b.n; i++) {
            printf("%s\n    {\"key\": ", i ? "," : "");
            json_str(stdout, b.key[i]);
            printf(", \"why\": ");
            json_str(stdout, b.why[i]);
            putchar('}');
        }
        printf(b.n ? "\n  ]\n}\n" : "]\n}\n");
    } else {
        for (size_t i = 0; i < b.n; i++)
            printf("bad %s: %s\n", b.key[i], b.why[i]);
        printf("checked %lld rows: %lld bad, %lld dropped; integrity %s\n",
               (long long)r.checked, (long long)r.bad, (long long)r.dropped,
               r.integrity_ok ? "ok" : "FAILED");
    }
    if (b.oom) fprintf(stderr, "kiln: verify: out of memory listing bad rows\n");
    rc = finish(rc);
out:
    for (size_t i = 0; i < b.n; i++) {
        free(b.key[i]);
        free(b.why[i]);
    }
    free(b.key);
    free(b.why);
    kiln_engine_destroy(eng);
    return rc;
}

/* ===================================================================== */
/* kiln clear                                                             */
/* ===================================================================== */

typedef struct count_ctx {
    const char *layer;
    int64_t n;
} count_ctx;

static int count_in_layer(const kiln_cache_entry *e, void *user)
{
    count_ctx *c = user;
    if (e && e->layer && strcmp(e->layer, c->layer) == 0) c->n++;
    return 0;
}

int cmd_clear(int argc, char **argv)
{
    cli_args a;
    int yes = 0, rc = EXIT_OK;
    const char *pat_arg = NULL, *pattern = NULL;
    char canon[CLI_KEY_MAX];
    kiln_engine *eng;
    kiln_status s;
    kiln_cache_stats st;
    int64_t removed = 0;

    cli_args_init(&a, "clear", argc, argv);
    while (cli_next(&a)) {
        if (cli_flag(&a, "--yes") || cli_flag(&a, "-y")) yes = 1;
        else if (a.positional && !pat_arg) pat_arg = a.arg;
        else return cli_unknown(&a);
    }
    if (a.help) return EXIT_OK;
    if (a.error) return EXIT_USAGE;
    if (pat_arg && (rc = cli_pattern_arg(pat_arg, canon, sizeof canon, &pattern)))
        return rc;
    if (!yes && !isatty(STDIN_FILENO))
        return cli_usage("clear", "refusing to delete without --yes "
                                  "(standard input is not a terminal)");

    eng = cli_engine();
    if (!eng) return EXIT_FAIL;
    memset(&st, 0, sizeof st);
    s = kiln_cache_stats_get(eng, &st);
    if (s != KILN_OK) {
        rc = cli_fail(s, "cannot read cache statistics");
        goto out;
    }
    if (!st.path || !st.path[0] || !st.writable) {
        fprintf(stderr, "kiln: clear: no writable cache to clear%s\n",
                g_cli.no_cache ? " (--no-cache)" : "");
        rc = EXIT_FAIL;
        goto out;
    }
    if (!yes) {
        count_ctx c;
        char answer[64];
        c.layer = st.path;
        c.n = 0;
        s = kiln_cache_list(eng, pattern, count_in_layer, &c);
        if (s != KILN_OK) {
            rc = cli_fail(s, "cannot list the cache");
            goto out;
        }
        if (c.n == 0) {
            printf("removed 0 entries\n");
            goto out;
        }
        fprintf(stderr, "Delete %lld entr%s%s%s from %s? [y/N] ",
                (long long)c.n, c.n == 1 ? "y" : "ies",
                pattern ? " matching " : "", pattern ? pattern : "", st.path);
        fflush(stderr);
        if (!fgets(answer, sizeof answer, stdin) ||
            (answer[0] != 'y' && answer[0] != 'Y')) {
            fprintf(stderr, "kiln: clear: nothing deleted\n");
            rc = EXIT_FAIL;
            goto out;
        }
    }
    s = kiln_cache_clear(eng, pattern, &removed);
    if (s != KILN_OK) {
        rc = cli_fail(s, "cannot clear the cache");
        goto out;
    }
    printf("removed %lld entr%s\n", (long long)removed,
           removed == 1 ? "y" : "ies");
    rc = finish(EXIT_OK);
out:
    kiln_engine_destroy(eng);
    return rc;
}

/* ===================================================================== */
/* kiln export                                                            */
/* ===================================================================== */

int cmd_export(int argc, char **argv)
{
    cli_args a;
    const char *key = NULL, *file = NULL, *arch = NULL, *v;
    char canon[CLI_KEY_MAX];
    kiln_engine *eng;
    kiln_status s;
    int rc = EXIT_OK;

    cli_args_init(&a, "export", argc, argv);
    while (cli_next(&a)) {
        if (cli_value(&a, "--arch", NULL, &v)) arch = v;
        else if (a.positional && !key) key = a.arg;
        else if (a.positional && !file) file = a.arg;
        else return cli_unknown(&a);
    }
    if (a.help) return EXIT_OK;
    if (a.error) return EXIT_USAGE;
    if (!key) return cli_usage("export", "missing KEY and FILE");
    if (!file) return cli_usage("export", "missing FILE");
    if (!file[0]) return cli_usage("export", "FILE is empty");
    s = kiln_key_canonical(key, arch, canon, sizeof canon);
    if (s != KILN_OK) return cli_key_error(s, key);

    eng = cli_engine();
    if (!eng) return EXIT_FAIL;
    s = kiln_cache_export(eng, canon, file);
    if (s != KILN_OK)
        rc = cli_fail(s, "cannot export '%s' to '%s'", canon, file);
    kiln_engine_destroy(eng);
    return rc;
}

/* ===================================================================== */
/* kiln evict                                                             */
/* ===================================================================== */

static int parse_size(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || v < 0) return -1;
    int shift = 0;
    if (*end == 'K' || *end == 'k') shift = 10;
    else if (*end == 'M' || *end == 'm') shift = 20;
    else if (*end == 'G' || *end == 'g') shift = 30;
    if (shift) end++;
    if (*end || v > (INT64_MAX >> shift)) return -1;
    *out = (int64_t)v << shift;
    return 0;
}

int cmd_evict(int argc, char **argv)
{
    cli_args a;
    const char *max = NULL;
    int64_t max_bytes = -1, removed = 0;
    cli_args_init(&a, "evict", argc, argv);
    while (cli_next(&a)) {
        if (cli_value(&a, "--max-bytes", NULL, &max)) ;
        else return cli_unknown(&a);
    }
    if (a.help) return EXIT_OK;
    if (a.error) return EXIT_USAGE;
    if (!max) return cli_usage("evict", "--max-bytes is required");
    if (parse_size(max, &max_bytes))
        return cli_usage("evict", "--max-bytes '%s' is not a size like 500M", max);
    kiln_engine *eng = cli_engine();
    if (!eng) return EXIT_FAIL;
    kiln_status s = kiln_cache_evict(eng, max_bytes, &removed);
    int rc;
    if (s != KILN_OK) {
        rc = cli_fail(s, "cannot evict");
    } else {
        printf("evicted %lld entr%s\n", (long long)removed, removed == 1 ? "y" : "ies");
        rc = finish(EXIT_OK);
    }
    kiln_engine_destroy(eng);
    return rc;
}

/* ===================================================================== */
/* kiln bake                                                              */
/* ===================================================================== */

int cmd_bake(int argc, char **argv)
{
    cli_args a;
    const char *out = NULL, *from = NULL;
    cli_args_init(&a, "bake", argc, argv);
    while (cli_next(&a)) {
        if (cli_value(&a, "--from", NULL, &from)) ;
        else if (a.positional && !out) out = a.arg;
        else return cli_unknown(&a);
    }
    if (a.help) return EXIT_OK;
    if (a.error) return EXIT_USAGE;
    if (!out || !out[0]) return cli_usage("bake", "missing OUT (the database to write)");
    char src[512];
    if (from) {
        snprintf(src, sizeof src, "%s", from);
    } else {
        kiln_engine *eng = cli_engine();
        if (!eng) return EXIT_FAIL;
        kiln_info info;
        kiln_status s = kiln_engine_info(eng, &info);
        kiln_engine_destroy(eng);
        if (s != KILN_OK) return cli_fail(s, "cannot find the cache");
        if (!info.cache_path[0]) {
            fprintf(stderr, "kiln: bake: no writable cache to bake (see kiln info)\n");
            return EXIT_FAIL;
        }
        snprintf(src, sizeof src, "%s", info.cache_path);
    }
    int64_t rows = 0;
    kiln_status s = kiln_cache_bake(src, out, &rows);
    if (s != KILN_OK) return cli_fail(s, "cannot bake '%s'", out);
    printf("baked %lld entr%s into %s\n", (long long)rows, rows == 1 ? "y" : "ies", out);
    return finish(EXIT_OK);
}
