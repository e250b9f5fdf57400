/* error.c -- the last error (per thread), status names, logging and the heap.
 *
 * Everything kiln reports goes through here: kiln__fail() records the detail
 * that kiln_last_error() returns, kiln__log() formats one log line ("kiln:
 * warn: ...") and hands it to the engine's sink, and the kiln__malloc family
 * is the single place that touches the C heap. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/error.h"

/* ---------------------------------------------------------------- last error */

static _Thread_local char last_error[4096];

kiln_status kiln__fail(kiln_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return s;
}

void kiln__fail_append(const char *text)
{
    if (!text) return;
    size_t have = strnlen(last_error, sizeof last_error - 1);
    size_t room = sizeof last_error - 1 - have;
    size_t n = strlen(text);
    if (n > room) n = room;
    memcpy(last_error + have, text, n);
    last_error[have + n] = '\0';
}

void kiln__clear_error(void) { last_error[0] = '\0'; }

const char *kiln_last_error(void) { return last_error; }

/* ---------------------------------------------------------------- statuses */

const char *kiln_status_name(kiln_status s)
{
    switch (s) {
#define KILN_X_(name, value, text)                                             \
    case name:                                                                 \
        return #name;
        KILN_STATUS_LIST(KILN_X_)
#undef KILN_X_
    }
    return "KILN_UNKNOWN";
}

const char *kiln_status_string(kiln_status s)
{
    switch (s) {
#define KILN_X_(name, value, text)                                             \
    case name:                                                                 \
        return text;
        KILN_STATUS_LIST(KILN_X_)
#undef KILN_X_
    }
    return "unknown status";
}

/* ---------------------------------------------------------------- logging */

static const char *level_name(int level)
{
    switch (level) {
    case KILN_LOG_ERROR: return "error";
    case KILN_LOG_WARN: return "warn";
    case KILN_LOG_INFO: return "info";
    default: return "debug";
    }
}

/* Each line of msg becomes "kiln: <level>: <line>"; the lines are joined
 * with '\n' (no trailing newline).  Returns a kiln__malloc'd string or NULL. */
static char *prefix_lines(int level, const char *msg)
{
    char prefix[32];
    int pl = snprintf(prefix, sizeof prefix, "kiln: %s: ", level_name(level));
    size_t lines = 1;
    for (const char *p = msg; *p; p++)
        if (*p == '\n' && p[1]) lines++;
    size_t n = strlen(msg) + lines * (size_t)pl + 1;
    char *out = kiln__malloc(n);
    if (!out) return NULL;
    char *o = out;
    const char *p = msg;
    for (;;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        memcpy(o, prefix, (size_t)pl);
        o += pl;
        memcpy(o, p, len);
        o += len;
        if (!nl || !nl[1]) break;
        *o++ = '\n';
        p = nl + 1;
    }
    *o = '\0';
    return out;
}

void kiln__log(const kiln_logger *lg, int level, const char *fmt, ...)
{
    int threshold = lg ? lg->level : KILN_LOG_WARN;
    if (level > threshold) return;

    char small[1024];
    char *msg = small;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= sizeof small) {
        char *big = kiln__malloc((size_t)n + 1);
        if (big) {
            va_start(ap, fmt);
            vsnprintf(big, (size_t)n + 1, fmt, ap);
            va_end(ap);
            msg = big;
        }
    }

    char *line = prefix_lines(level, msg);
    const char *text = line ? line : msg;
    if (lg && lg->fn)
        lg->fn(level, text, lg->user);
    else
        fprintf(stderr, "%s\n", text); /* one call: lines do not interleave */
    kiln__free(line);
    if (msg != small) kiln__free(msg);
}

/* ---------------------------------------------------------------- heap */

static const kiln_allocator libc_allocator = {malloc, calloc, realloc, free};
static const kiln_allocator *heap = &libc_allocator;

void kiln__set_allocator(const kiln_allocator *a)
{
    heap = a && a->malloc_fn && a->calloc_fn && a->realloc_fn && a->free_fn
               ? a
               : &libc_allocator;
}

void *kiln__malloc(size_t n) { return heap->malloc_fn(n ? n : 1); }

void *kiln__calloc(size_t n, size_t size)
{
    return heap->calloc_fn(n ? n : 1, size ? size : 1);
}

void *kiln__realloc(void *p, size_t n) { return heap->realloc_fn(p, n ? n : 1); }

void kiln__free(void *p)
{
    if (p) heap->free_fn(p);
}

char *kiln__strdup(const char *s)
{
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = kiln__malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}
