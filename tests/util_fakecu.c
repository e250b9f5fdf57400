/* util_fakecu.c -- see util_fakecu.h. */
#include "util_fakecu.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

static kt_fakecu_config cfg = {
    .cc_major = 9, .cc_minor = 0, .attr_default = 132,
    .name = "fake", .error_string = "fake",
};
static _Atomic int mode;
static _Atomic long n_loads, n_launches, n_set_attr, n_calls;
static pthread_mutex_t launch_mu = PTHREAD_MUTEX_INITIALIZER;
static kt_fakecu_launch last;
static int ctx_storage;
static int lib_storage[256];

void kt_fakecu_config_init(kt_fakecu_config *c)
{
    memset(c, 0, sizeof *c);
    c->cc_major = 9;
    c->cc_minor = 0;
    c->attr_default = 132;
    c->name = "fake";
    c->error_string = "fake";
}

void kt_fakecu_configure(const kt_fakecu_config *c)
{
    if (c) cfg = *c;
    else kt_fakecu_config_init(&cfg);
}

void kt_fakecu_set_mode(int m) { atomic_store(&mode, m); }
int kt_fakecu_mode(void) { return atomic_load(&mode); }

kt_fakecu_counts kt_fakecu_counts_get(void)
{
    kt_fakecu_counts c = {atomic_load(&n_loads), atomic_load(&n_launches),
                          atomic_load(&n_set_attr), atomic_load(&n_calls)};
    return c;
}

kt_fakecu_launch kt_fakecu_last_launch(void)
{
    pthread_mutex_lock(&launch_mu);
    kt_fakecu_launch l = last;
    pthread_mutex_unlock(&launch_mu);
    return l;
}

const char *kt_fakecu_error_name(CUresult r)
{
    return r == KT_FAKECU_NOT_INITIALIZED   ? "CUDA_ERROR_NOT_INITIALIZED"
           : r == KT_FAKECU_NO_DEVICE_ERR   ? "CUDA_ERROR_NO_DEVICE"
           : r == KILN_CUDA_ERROR_INVALID_CONTEXT ? "CUDA_ERROR_INVALID_CONTEXT"
           : r == KT_FAKECU_INVALID_PTX     ? "CUDA_ERROR_INVALID_PTX"
                                            : "CUDA_ERROR_FAKE";
}

/* ---------------------------------------------------------------- table */

#define ENTER()                                                                \
    do {                                                                       \
        atomic_fetch_add(&n_calls, 1);                                         \
        if (atomic_load(&mode) == KT_FAKECU_INIT_FAIL)                         \
            return KT_FAKECU_NOT_INITIALIZED;                                  \
    } while (0)
#define NO_DEVICE() (atomic_load(&mode) == KT_FAKECU_NO_DEVICE)

static CUresult d_ok(void) { ENTER(); return 0; }
static CUresult d_init(unsigned f) { (void)f; ENTER(); return 0; }
static CUresult d_ver(int *v) { ENTER(); *v = 13000; return 0; }
static CUresult d_count(int *n) { ENTER(); *n = NO_DEVICE() ? 0 : 1; return 0; }
static CUresult d_dev(CUdevice *d, int o)
{
    ENTER();
    if (NO_DEVICE()) return KT_FAKECU_NO_DEVICE_ERR;
    *d = o;
    return 0;
}
static CUresult d_attr(int *v, int a, CUdevice d)
{
    (void)d;
    ENTER();
    *v = a == KILN_CU_ATTR_CC_MAJOR                        ? cfg.cc_major
         : a == KILN_CU_ATTR_CC_MINOR                      ? cfg.cc_minor
         : a == KILN_CU_ATTR_MAX_SMEM_OPTIN && cfg.max_smem_optin ? cfg.max_smem_optin
         : a == KILN_CU_ATTR_MAX_THREADS_PER_BLOCK && cfg.max_threads ? cfg.max_threads
                                                           : cfg.attr_default;
    return 0;
}
static CUresult d_name(char *n, int l, CUdevice d)
{
    (void)d;
    ENTER();
    snprintf(n, (size_t)l, "%s", cfg.name ? cfg.name : "fake");
    return 0;
}
static CUresult d_mem(size_t *b, CUdevice d) { (void)d; ENTER(); *b = (size_t)1 << 30; return 0; }
static CUresult d_getcur(CUcontext *c)
{
    ENTER();
    *c = NO_DEVICE() ? NULL : (CUcontext)&ctx_storage;
    return 0;
}
static CUresult d_setcur(CUcontext c) { (void)c; ENTER(); return 0; }
static CUresult d_ctxdev(CUdevice *d)
{
    ENTER();
    if (NO_DEVICE()) return KILN_CUDA_ERROR_INVALID_CONTEXT;
    *d = 0;
    return 0;
}
static CUresult d_retain(CUcontext *c, CUdevice d)
{
    (void)d;
    ENTER();
    if (NO_DEVICE()) return KT_FAKECU_NO_DEVICE_ERR;
    *c = (CUcontext)&ctx_storage;
    return 0;
}
static CUresult d_load(CUlibrary *lib, const void *code, void *a, void **b, unsigned c,
                       void *d, void **e, unsigned f)
{
    (void)a; (void)b; (void)c; (void)d; (void)e; (void)f;
    ENTER();
    long n = atomic_fetch_add(&n_loads, 1);
    if (atomic_load(&mode) == KT_FAKECU_LOAD_FAIL) return KT_FAKECU_INVALID_PTX;
    CUresult r = cfg.load_check ? cfg.load_check(code, cfg.user)
                 : memcmp(code, "\x7f" "ELF", 4) != 0 ? KT_FAKECU_INVALID_PTX : 0;
    if (r != 0) return r;
    *lib = (CUlibrary)&lib_storage[n % 256];
    return 0;
}
static CUresult d_unload(CUlibrary l) { (void)l; ENTER(); return 0; }
static CUresult d_getk(CUkernel *k, CUlibrary l, const char *name)
{
    ENTER();
    if (cfg.kernel_check) cfg.kernel_check(name, cfg.user);
    *k = (CUkernel)l;
    return 0;
}
static CUresult d_kattr(int a, int v, CUkernel k, CUdevice d)
{
    (void)a; (void)v; (void)k; (void)d;
    ENTER();
    atomic_fetch_add(&n_set_attr, 1);
    return 0;
}
static CUresult d_launch(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                         unsigned by, unsigned bz, unsigned smem, CUstream s, void **params,
                         void **extra)
{
    (void)f; (void)s; (void)extra;
    ENTER();
    pthread_mutex_lock(&launch_mu);
    atomic_fetch_add(&n_launches, 1);
    last.grid[0] = gx; last.grid[1] = gy; last.grid[2] = gz;
    last.block[0] = bx; last.block[1] = by; last.block[2] = bz;
    last.smem = smem;
    if (cfg.capture_launch) memcpy(&last.kp, params[0], sizeof last.kp);
    pthread_mutex_unlock(&launch_mu);
    return 0;
}
static CUresult d_malloc(CUdeviceptr *p, size_t n) { (void)n; ENTER(); *p = 0x1000; return 0; }
static CUresult d_free(CUdeviceptr p) { (void)p; ENTER(); return 0; }
static CUresult d_memset(CUdeviceptr p, unsigned char v, size_t n)
{
    (void)p; (void)v; (void)n;
    ENTER();
    return 0;
}
static CUresult d_memset32(CUdeviceptr p, unsigned v, size_t n, CUstream s)
{
    (void)p; (void)v; (void)n; (void)s;
    ENTER();
    return 0;
}
static CUresult d_dtoh(void *d, CUdeviceptr s, size_t n)
{
    (void)s;
    ENTER();
    memset(d, 0, n);
    return 0;
}
static CUresult d_errname(CUresult r, const char **s) { *s = kt_fakecu_error_name(r); return 0; }
static CUresult d_errstr(CUresult r, const char **s)
{
    (void)r;
    *s = cfg.error_string ? cfg.error_string : "fake";
    return 0;
}

/* A descriptor the fake kernels never read: zeros. */
static CUresult d_tmap(void *map, int dtype, unsigned rank, void *addr,
                       const unsigned long long *dims, const unsigned long long *strides,
                       const unsigned *box, const unsigned *estr, int il, int sw, int l2,
                       int oob)
{
    (void)dtype; (void)dims; (void)box; (void)estr; (void)il; (void)sw; (void)l2; (void)oob;
    /* the driver's own rules that kiln's fallbacks rely on: a 16-byte
     * aligned address and strides in multiples of 16 bytes */
    if ((uintptr_t)addr % 16) return 1; /* CUDA_ERROR_INVALID_VALUE */
    for (unsigned i = 0; i + 1 < rank; i++)
        if (strides[i] % 16) return 1;
    memset(map, 0, 128);
    return 0;
}

static const kiln_cu_api table = {
    .Init = d_init, .DriverGetVersion = d_ver, .DeviceGetCount = d_count,
    .DeviceGet = d_dev, .DeviceGetAttribute = d_attr, .DeviceGetName = d_name,
    .DeviceTotalMem = d_mem, .CtxGetCurrent = d_getcur, .CtxSetCurrent = d_setcur,
    .CtxGetDevice = d_ctxdev, .CtxSynchronize = d_ok, .DevicePrimaryCtxRetain = d_retain,
    .LibraryLoadData = d_load, .LibraryUnload = d_unload, .LibraryGetKernel = d_getk,
    .KernelSetAttribute = d_kattr, .LaunchKernel = d_launch, .MemAlloc = d_malloc,
    .MemFree = d_free, .MemsetD8 = d_memset, .MemsetD32Async = d_memset32,
    .MemcpyDtoH = d_dtoh, .GetErrorName = d_errname, .GetErrorString = d_errstr,
    .TensorMapEncodeTiled = d_tmap,
};

const kiln_cu_api *kt_fakecu_api(void) { return &table; }

void kt_fakecu_install(const kt_fakecu_config *c)
{
    kt_fakecu_configure(c);
    kiln__cu_override(&table);
}
