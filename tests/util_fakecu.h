/* util_fakecu.h -- one configurable fake CUDA driver table for the tests,
 * the fault programs and anything else that links tests/util_*.c.
 *
 * Install it with kiln__cu_override(kt_fakecu_api()) (or kt_fakecu_install).
 * It reports one device (by default sm_90a, 132 SMs, named "fake"), counts
 * calls, module loads, launches and kernel attribute sets (atomically), can
 * fail on purpose (kt_fakecu_set_mode), keeps the last launch's geometry and
 * kiln_hstu_kparams bytes when asked, and hands every loaded buffer to an
 * optional check callback.  No cmocka here: checks that assert live in the
 * callbacks of the program that installs them.
 *
 * Thread-safe except kt_fakecu_configure, which must run before the table is
 * used concurrently. */
#ifndef KILN_TESTS_UTIL_FAKECU_H
#define KILN_TESTS_UTIL_FAKECU_H

#include <stddef.h>

#include "kiln.h"
#include "runtime/cuda.h"
#include "templates/hstu_params.h"

enum kt_fakecu_mode {
    KT_FAKECU_OK = 0,     /* one device, every call succeeds */
    KT_FAKECU_INIT_FAIL,  /* every call: CUDA_ERROR_NOT_INITIALIZED (3) */
    KT_FAKECU_NO_DEVICE,  /* no context, cuDeviceGet: CUDA_ERROR_NO_DEVICE (100) */
    KT_FAKECU_LOAD_FAIL   /* cuLibraryLoadData: CUDA_ERROR_INVALID_PTX (218) */
};

#define KT_FAKECU_NOT_INITIALIZED 3
#define KT_FAKECU_NO_DEVICE_ERR 100
#define KT_FAKECU_INVALID_PTX 218

/* Check the bytes handed to cuLibraryLoadData (after the load is counted,
 * unless the mode failed it); returns the CUresult of the load (0: accept). */
typedef CUresult (*kt_fakecu_load_check_fn)(const void *code, void *user);
/* See the name passed to cuLibraryGetKernel. */
typedef void (*kt_fakecu_kernel_check_fn)(const char *name, void *user);

typedef struct kt_fakecu_config {
    int cc_major, cc_minor;   /* compute capability: 9, 0 */
    int attr_default;         /* every other device attribute: 132 */
    int max_smem_optin;       /* KILN_CU_ATTR_MAX_SMEM_OPTIN; 0: attr_default */
    int max_threads;          /* KILN_CU_ATTR_MAX_THREADS_PER_BLOCK; 0: attr_default */
    const char *name;         /* cuDeviceGetName: "fake" */
    const char *error_string; /* cuGetErrorString: "fake" */
    /* NULL: reject any buffer not starting with "\x7fELF" (218). */
    kt_fakecu_load_check_fn load_check;
    kt_fakecu_kernel_check_fn kernel_check; /* NULL: any name */
    void *user;                             /* passed to both */
    int capture_launch; /* keep params[0] as kiln_hstu_kparams per launch */
} kt_fakecu_config;

/* The defaults above. */
void kt_fakecu_config_init(kt_fakecu_config *c);
/* Use c from now on (copied; NULL: the defaults).  Leaves mode and counters. */
void kt_fakecu_configure(const kt_fakecu_config *c);
/* The table (always the same pointer). */
const kiln_cu_api *kt_fakecu_api(void);
/* kt_fakecu_configure(c) and kiln__cu_override(kt_fakecu_api()). */
void kt_fakecu_install(const kt_fakecu_config *c);

void kt_fakecu_set_mode(int mode);
int kt_fakecu_mode(void);

typedef struct kt_fakecu_counts {
    long loads;    /* cuLibraryLoadData calls (failed ones included) */
    long launches; /* cuLaunchKernel calls */
    long set_attr; /* cuKernelSetAttribute calls */
    long calls;    /* every call but the error-name/-string ones */
} kt_fakecu_counts;
kt_fakecu_counts kt_fakecu_counts_get(void);

typedef struct kt_fakecu_launch {
    unsigned grid[3], block[3], smem;
    kiln_hstu_kparams kp; /* only with capture_launch */
} kt_fakecu_launch;
/* The last launch (zeros before the first). */
kt_fakecu_launch kt_fakecu_last_launch(void);

/* "CUDA_ERROR_..." for the codes the fake returns, else "CUDA_ERROR_FAKE". */
const char *kt_fakecu_error_name(CUresult r);

#endif
