/* error.h -- the one way kiln propagates errors and logs.  Internal. */
#ifndef KILN_ERROR_H
#define KILN_ERROR_H

#include <stdarg.h>
#include <stddef.h>

#include "kiln.h"

#if defined(__GNUC__)
#define KILN_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define KILN_PRINTF(a, b)
#endif

/* Record fmt as this thread's last error and return s. */
kiln_status kiln__fail(kiln_status s, const char *fmt, ...) KILN_PRINTF(2, 3);
/* Append text to the last error (e.g. an NVRTC log). */
void kiln__fail_append(const char *text);
void kiln__clear_error(void);

#define KILN_FAIL_IF(cond, status, ...)                                        \
    do {                                                                       \
        if (cond) return kiln__fail((status), __VA_ARGS__);                    \
    } while (0)

#define KILN_TRY(expr)                                                         \
    do {                                                                       \
        kiln_status kiln_s_ = (expr);                                          \
        if (kiln_s_ != KILN_OK) return kiln_s_;                                \
    } while (0)

/* Logging: one sink per engine; modules get a pointer to it. */
typedef struct kiln_logger {
    int level;
    void (*fn)(int level, const char *line, void *user);
    void *user;
} kiln_logger;

void kiln__log(const kiln_logger *lg, int level, const char *fmt, ...)
    KILN_PRINTF(3, 4);
#define KILN_LOGE(lg, ...) kiln__log((lg), KILN_LOG_ERROR, __VA_ARGS__)
#define KILN_LOGW(lg, ...) kiln__log((lg), KILN_LOG_WARN, __VA_ARGS__)
#define KILN_LOGI(lg, ...) kiln__log((lg), KILN_LOG_INFO, __VA_ARGS__)
#define KILN_LOGD(lg, ...) kiln__log((lg), KILN_LOG_DEBUG, __VA_ARGS__)

/* The heap, in one replaceable place. */
void *kiln__malloc(size_t n);
void *kiln__calloc(size_t n, size_t size);
void *kiln__realloc(void *p, size_t n);
void kiln__free(void *p);
char *kiln__strdup(const char *s);

/* Replace the heap behind kiln__malloc & co. (tests: a failing allocator).
 * All four or none: NULL restores the C library's.  Not thread-safe: call it
 * while no other kiln call runs.  Costs nothing when unused (one indirect
 * call, as before through the PLT). */
typedef struct kiln_allocator {
    void *(*malloc_fn)(size_t n);
    void *(*calloc_fn)(size_t n, size_t size);
    void *(*realloc_fn)(void *p, size_t n);
    void (*free_fn)(void *p);
} kiln_allocator;
void kiln__set_allocator(const kiln_allocator *a);

#endif
