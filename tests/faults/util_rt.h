/* util_rt.h -- shared pieces of the runtime fault programs (f_rt_*.c): a
 * fake CUDA driver table with counters and failure modes, a log sink that
 * counts lines, temporary directories and a valid forward parameter set. */
#ifndef KILN_UTIL_RT_H
#define KILN_UTIL_RT_H

#include <stdint.h>

#include "kiln.h"
#include "runtime/cuda.h"
#include "util_fakecu.h"

/* The modes of the shared fake driver (tests/util_fakecu.h). */
enum rt_driver_mode {
    RT_DRIVER_OK = KT_FAKECU_OK,               /* one sm_90a device, every call succeeds */
    RT_DRIVER_INIT_FAIL = KT_FAKECU_INIT_FAIL, /* every call: CUDA_ERROR_NOT_INITIALIZED (3) */
    RT_DRIVER_NO_DEVICE = KT_FAKECU_NO_DEVICE, /* no context, cuDeviceGet: CUDA_ERROR_NO_DEVICE (100) */
    RT_DRIVER_LOAD_FAIL = KT_FAKECU_LOAD_FAIL  /* cuLibraryLoadData: CUDA_ERROR_INVALID_PTX (218) */
};

typedef struct rt_driver_counts {
    long loads;     /* cuLibraryLoadData calls */
    long launches;  /* cuLaunchKernel calls */
    long calls;     /* every call */
} rt_driver_counts;

/* The fake table (tests/util_fakecu.c, set to this profile: sm_90a "fake",
 * non-ELF loads rejected); kiln__cu_override(rt_driver()) installs it.
 * Mode and counters are those of the shared fake and persist. */
const kiln_cu_api *rt_driver(void);
void rt_driver_mode(int mode);
rt_driver_counts rt_driver_counts_get(void);

/* A log sink counting lines per level; keeps the last warning. */
typedef struct rt_log {
    int lines[4];
    char last[2048];
} rt_log;
void rt_log_fn(int level, const char *line, void *user);

/* mkdtemp under $TMPDIR; rt_rmrf removes it. */
void rt_tmpdir(char *buf, size_t n, const char *tag);
void rt_rmrf(const char *path);

/* An engine on dir (NULL: no disk cache) with flags and log sink (may be NULL). */
kiln_engine *rt_engine(const char *dir, uint32_t flags, rt_log *log);

/* A valid forward launch: bf16, head_dim, 2 heads, batch 3, fake pointers. */
kiln_hstu_fwd_params rt_fwd_params(int head_dim, int causal);

/* 1 if the real NVRTC loads in this process (call before anything pins one). */
int rt_have_nvrtc(void);

#endif
