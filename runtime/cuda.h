/* cuda.h -- the CUDA Driver API, opened with dlopen so kiln loads and
 * prewarms on machines without a GPU.  The table is the one place kiln
 * reaches the driver, so tests can wrap it (count module loads, inject
 * failures).  Internal. */
#ifndef KILN_CUDA_H
#define KILN_CUDA_H

#include <stddef.h>

#include "kiln.h"

typedef int CUresult;
typedef int CUdevice;
typedef struct CUctx_st *CUcontext;
typedef struct CUstream_st *CUstream;
typedef struct CUlib_st *CUlibrary;
typedef struct CUkern_st *CUkernel;
typedef struct CUfunc_st *CUfunction;
typedef unsigned long long CUdeviceptr;

#define KILN_CU_ATTR_MAX_THREADS_PER_BLOCK 1
#define KILN_CU_ATTR_SM_COUNT 16
#define KILN_CU_ATTR_CC_MAJOR 75
#define KILN_CU_ATTR_CC_MINOR 76
#define KILN_CU_ATTR_MAX_SMEM_OPTIN 97
#define KILN_CU_FUNC_ATTR_MAX_DYNAMIC_SMEM 8
#define KILN_CUDA_ERROR_INVALID_CONTEXT 201

typedef struct kiln_cu_api {
    CUresult (*Init)(unsigned flags);
    CUresult (*DriverGetVersion)(int *v);
    CUresult (*DeviceGetCount)(int *n);
    CUresult (*DeviceGet)(CUdevice *d, int ordinal);
    CUresult (*DeviceGetAttribute)(int *v, int attr, CUdevice d);
    CUresult (*DeviceGetName)(char *name, int len, CUdevice d);
    CUresult (*DeviceTotalMem)(size_t *bytes, CUdevice d);
    CUresult (*CtxGetCurrent)(CUcontext *c);
    CUresult (*CtxSetCurrent)(CUcontext c);
    CUresult (*CtxGetDevice)(CUdevice *d);
    CUresult (*CtxSynchronize)(void);
    CUresult (*DevicePrimaryCtxRetain)(CUcontext *c, CUdevice d);
    CUresult (*LibraryLoadData)(CUlibrary *lib, const void *code, void *jit_opts,
                                void **jit_vals, unsigned njit, void *lib_opts,
                                void **lib_vals, unsigned nlib);
    CUresult (*LibraryUnload)(CUlibrary lib);
    CUresult (*LibraryGetKernel)(CUkernel *k, CUlibrary lib, const char *name);
    CUresult (*KernelSetAttribute)(int attr, int value, CUkernel k, CUdevice d);
    CUresult (*LaunchKernel)(CUfunction f, unsigned gx, unsigned gy, unsigned gz,
                             unsigned bx, unsigned by, unsigned bz, unsigned smem,
                             CUstream s, void **params, void **extra);
    CUresult (*MemAlloc)(CUdeviceptr *p, size_t n);
    CUresult (*MemFree)(CUdeviceptr p);
    CUresult (*MemsetD8)(CUdeviceptr p, unsigned char v, size_t n);
    CUresult (*MemsetD32Async)(CUdeviceptr p, unsigned v, size_t n, CUstream s);
    CUresult (*MemcpyDtoH)(void *dst, CUdeviceptr src, size_t n);
    CUresult (*GetErrorName)(CUresult r, const char **s);
    CUresult (*GetErrorString)(CUresult r, const char **s);
    /* Optional (NULL when the driver lacks it): kernels that need TMA
     * descriptors then fall back to ones that don't.  Enum arguments are
     * passed as int (CUtensorMapDataType, Interleave, Swizzle,
     * L2promotion, FloatOOBfill). */
    CUresult (*TensorMapEncodeTiled)(void *map, int dtype, unsigned rank, void *addr,
                                     const unsigned long long *dims,
                                     const unsigned long long *strides,
                                     const unsigned *box, const unsigned *elem_strides,
                                     int interleave, int swizzle, int l2_promotion,
                                     int oob_fill);
} kiln_cu_api;

/* The driver table, loaded (dlopen + cuInit) once per process.  KILN_ENODEV
 * with the reason if libcuda is missing or cuInit fails; a failure is
 * retried at most once per retry interval (10 s), so a machine without a
 * driver pays the probe rarely and a driver that appears later is used. */
kiln_status kiln__cu(const kiln_cu_api **out);
/* Tests: set the retry interval (seconds; < 0 restores 10); the next call
 * tries at once. */
void kiln__cu_retry_after(double seconds);
/* Replace the table (tests); NULL restores the real one. */
void kiln__cu_override(const kiln_cu_api *api);

/* Turn a CUresult into a status with "what: CUDA_ERROR_X (text)". */
kiln_status kiln__cu_fail(const kiln_cu_api *cu, CUresult r, const char *what);
#define KILN_CU_TRY(cu, call, what)                                            \
    do {                                                                       \
        CUresult kiln_r_ = (call);                                             \
        if (kiln_r_ != 0) return kiln__cu_fail((cu), kiln_r_, (what));         \
    } while (0)

#endif
