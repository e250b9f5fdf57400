/* fake_nvrtc.c -- a stand-in NVRTC for tests/faults/f_rt_nvrtc.c: it loads,
 * reports version 13.0, and fails every compile with
 * NVRTC_ERROR_BUILTIN_OPERATION_FAILURE (7) and a log.  Built at run time by
 * the test into a shared library named by KILN_NVRTC_PATH. */
#include <stdlib.h>
#include <string.h>

typedef int nvrtcResult;
typedef struct fake_prog { int compiled; } *nvrtcProgram;

static const char fake_log[] =
    "kiln_kernel.cu(1): catastrophic error: fake NVRTC builtin operation failure\n"
    "1 catastrophic error detected in the compilation of \"kiln_kernel.cu\".\n";

nvrtcResult nvrtcVersion(int *major, int *minor)
{
    *major = 13;
    *minor = 0;
    return 0;
}

nvrtcResult nvrtcCreateProgram(nvrtcProgram *p, const char *src, const char *name,
                               int n, const char *const *h, const char *const *hn)
{
    (void)src; (void)name; (void)n; (void)h; (void)hn;
    *p = calloc(1, sizeof **p);
    return *p ? 0 : 1;
}

nvrtcResult nvrtcCompileProgram(nvrtcProgram p, int n, const char *const *o)
{
    (void)n; (void)o;
    p->compiled = 1;
    return 7; /* NVRTC_ERROR_BUILTIN_OPERATION_FAILURE */
}

nvrtcResult nvrtcGetProgramLogSize(nvrtcProgram p, size_t *n)
{
    (void)p;
    *n = sizeof fake_log; /* includes the NUL, as NVRTC's does */
    return 0;
}

nvrtcResult nvrtcGetProgramLog(nvrtcProgram p, char *log)
{
    (void)p;
    memcpy(log, fake_log, sizeof fake_log);
    return 0;
}

nvrtcResult nvrtcGetCUBINSize(nvrtcProgram p, size_t *n) { (void)p; *n = 0; return 0; }
nvrtcResult nvrtcGetCUBIN(nvrtcProgram p, char *c) { (void)p; (void)c; return 0; }

nvrtcResult nvrtcDestroyProgram(nvrtcProgram *p)
{
    free(*p);
    *p = NULL;
    return 0;
}

const char *nvrtcGetErrorString(nvrtcResult r)
{
    return r == 7 ? "NVRTC_ERROR_BUILTIN_OPERATION_FAILURE" : r ? "NVRTC_ERROR_FAKE"
                                                                : "NVRTC_SUCCESS";
}
