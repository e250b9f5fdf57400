/* nvrtc.h -- NVRTC, opened lazily with dlopen: a process whose kernels all
 * come from the cache never loads it.  Internal. */
#ifndef KILN_NVRTC_H
#define KILN_NVRTC_H

#include <stddef.h>

#include "kiln.h"

typedef struct kiln_compiled {
    void *cubin;   /* kiln__malloc'd */
    size_t len;
    char *log;     /* kiln__malloc'd, NUL-terminated, may be "" */
    double ms;     /* wall time of nvrtcCompileProgram */
    int regs, smem, spills; /* from the ptxas report; -1 if absent */
} kiln_compiled;

/* Where NVRTC is, without loading it: $KILN_NVRTC_PATH, $CUDA_HOME/lib64,
 * $CUDA_PATH/lib64, /usr/local/cuda/lib64 (libnvrtc.so.13, .so.12), else ""
 * (then the dynamic loader's search is used).  Copied into buf (thread-safe:
 * the path is looked up again at each load attempt). */
void kiln__nvrtc_path(char *buf, size_t n);

/* Load NVRTC and write its version ("13.0").  KILN_ENOTFOUND if it cannot be
 * loaded, naming the paths tried.  A success is final; a failure is retried
 * at most once per retry interval (10 s), so NVRTC appearing later is picked
 * up without a restart.  After a success this costs one atomic load. */
kiln_status kiln__nvrtc_version(char *buf, size_t n);
/* Tests: set the retry interval (seconds; < 0 restores 10) and let the next
 * call try at once. */
void kiln__nvrtc_retry_after(double seconds);

/* Compile source (a prelude that #includes embedded templates) with the
 * space-separated options.  KILN_ECOMPILE carries the log in the message. */
kiln_status kiln__nvrtc_compile(const char *source, const char *options,
                                kiln_compiled *out);
void kiln__compiled_free(kiln_compiled *c);

/* Parse ptxas -v lines of log into regs/smem/spills (-1 where absent). */
void kiln__ptxas_report(const char *log, int *regs, int *smem, int *spills);

#endif
