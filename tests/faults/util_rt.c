/* util_rt.c -- see util_rt.h. */
#include "util_rt.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- driver */

static _Atomic int mode;
static _Atomic long n_loads, n_launches, n_calls;
static int lib_storage[64];

#define ENTER()                                                                \
    do {                                                                       \
        atomic_fetch_add(&n_calls, 1);                                         \
        if (atomic_load(&mode) == RT_DRIVER_INIT_FAIL) return 3;               \
    } while (0)

static CUresult d_ok(void) { ENTER(); return 0; }
static CUresult d_init(unsigned f) { (void)f; ENTER(); return 0; }
static CUresult d_ver(int *v) { ENTER(); *v = 13000; return 0; }
static CUresult d_count(int *n)
{
    ENTER();
    *n = atomic_load(&mode) == RT_DRIVER_NO_DEVICE ? 0 : 1;
    return 0;
}
static CUresult d_dev(CUdevice *d, int o)
{
    ENTER();
    if (atomic_load(&mode) == RT_DRIVER_NO_DEVICE) return 100;
    *d = o;
    return 0;
}
static CUresult d_attr(int *v, int a, CUdevice d)
{
    (void)d;
    ENTER();
    *v = a == KILN_CU_ATTR_CC_MAJOR ? 9 : a == KILN_CU_ATTR_CC_MINOR ? 0 : 132;
    return 0;
}
static CUresult d_name(char *n, int l, CUdevice d)
{
    (void)d;
    ENTER();
    snprintf(n, (size_t)l, "fake");
    return 0;
}
static CUresult d_mem(size_t *b, CUdevice d) { (void)d; ENTER(); *b = 1u << 30; return 0; }
static CUresult d_getcur(CUcontext *c)
{
    ENTER();
    *c = atomic_load(&mode) == RT_DRIVER_NO_DEVICE ? NULL : (CUcontext)&mode;
    return 0;
}
static CUresult d_setcur(CUcontext c) { (void)c; ENTER(); return 0; }
static CUresult d_ctxdev(CUdevice *d)
{
    ENTER();
    if (atomic_load(&mode) == RT_DRIVER_NO_DEVICE) return 201;
    *d = 0;
    return 0;
}
static CUresult d_retain(CUcontext *c, CUdevice d)
{
    (void)d;
    ENTER();
    if (atomic_load(&mode) == RT_DRIVER_NO_DEVICE) return 100;
    *c = (CUcontext)&mode;
    return 0;
}
static CUresult d_load(CUlibrary *lib, const void *code, void *a, void **b, unsigned c,
                       void *d, void **e, unsigned f)
{
    (void)a; (void)b; (void)c; (void)d; (void)e; (void)f;
    ENTER();
    long n = atomic_fetch_add(&n_loads, 1);
    if (atomic_load(&mode) == RT_DRIVER_LOAD_FAIL) return 218;
    if (memcmp(code, "\x7f" "ELF", 4) != 0) return 218;
    *lib = (CUlibrary)&lib_storage[n % 64];
    return 0;
}
static CUresult d_unload(CUlibrary l) { (void)l; ENTER(); return 0; }
static CUresult d_getk(CUkernel *k, CUlibrary l, const char *name)
{
    (void)name;
    ENTER();
    *k = (CUkernel)l;
    return 0;
}
static CUresult d_kattr(int a, int v, CUkernel k, CUdevice d)
{
    (void)a; (void)v; (void)k; (void)d;
    ENTER();
    return 0;
}
static CUresult d_launch(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                         unsigned by, unsigned bz, unsigned smem, CUstream s, void **params,
                         void **extra)
{
    (void)f; (void)gx; (void)gy; (void)gz; (void)bx; (void)by; (void)bz; (void)smem;
    (void)s; (void)params; (void)extra;
    ENTER();
    atomic_fetch_add(&n_launches, 1);
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
static CUresult d_errname(CUresult r, const char **s)
{
    *s = r == 3     ? "CUDA_ERROR_NOT_INITIALIZED"
         : r == 100 ? "CUDA_ERROR_NO_DEVICE"
         : r == 201 ? "CUDA_ERROR_INVALID_CONTEXT"
         : r == 218 ? "CUDA_ERROR_INVALID_PTX"
                    : "CUDA_ERROR_FAKE";
    return 0;
}
static CUresult d_errstr(CUresult r, const char **s) { (void)r; *s = "fake driver"; return 0; }

static const kiln_cu_api table = {
    .Init = d_init, .DriverGetVersion = d_ver, .DeviceGetCount = d_count,
    .DeviceGet = d_dev, .DeviceGetAttribute = d_attr, .DeviceGetName = d_name,
    .DeviceTotalMem = d_mem, .CtxGetCurrent = d_getcur, .CtxSetCurrent = d_setcur,
    .CtxGetDevice = d_ctxdev, .CtxSynchronize = d_ok, .DevicePrimaryCtxRetain = d_retain,
    .LibraryLoadData = d_load, .LibraryUnload = d_unload, .LibraryGetKernel = d_getk,
    .KernelSetAttribute = d_kattr, .LaunchKernel = d_launch, .MemAlloc = d_malloc,
    .MemFree = d_free, .MemsetD8 = d_memset, .MemsetD32Async = d_memset32,
    .MemcpyDtoH = d_dtoh, .GetErrorName = d_errname, .GetErrorString = d_errstr,
};

const kiln_cu_api *rt_driver(void) { return &table; }
void rt_driver_mode(int m) { atomic_store(&mode, m); }

rt_driver_counts rt_driver_counts_get(void)
{
    rt_driver_counts c = {atomic_load(&n_loads), atomic_load(&n_launches),
                          atomic_load(&n_calls)};
    return c;
}

/* ---------------------------------------------------------------- log */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

void rt_log_fn(int level, const char *line, void *user)
{
    rt_log *l = user;
    pthread_mutex_lock(&log_mu);
    if (level >= 0 && level < 4) l->lines[level]++;
    if (level <= KILN_LOG_WARN) snprintf(l->last, sizeof l->last, "%s", line);
    pthread_mutex_unlock(&log_mu);
    if (getenv("RT_VERBOSE")) fprintf(stderr, "%s\n", line);
}

/* ---------------------------------------------------------------- files */

void rt_tmpdir(char *buf, size_t n, const char *tag)
{
    const char *t = getenv("TMPDIR");
    snprintf(buf, n, "%s/kiln-%s-XXXXXX", t && *t ? t : "/tmp", tag);
    if (!mkdtemp(buf)) buf[0] = '\0';
}

void rt_rmrf(const char *path)
{
    if (!path || !*path || strchr(path, '\'')) return;
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) fprintf(stderr, "rt: could not remove %s\n", path);
}

kiln_engine *rt_engine(const char *dir, uint32_t flags, rt_log *log)
{
    kiln_engine_options o;
    kiln_engine_options_init(&o);
    o.cache_dir = dir;
    o.ro_layers = "";
    o.flags = flags | (dir ? 0 : KILN_ENGINE_NO_DISK_CACHE);
    if (log) {
        o.log_fn = rt_log_fn;
        o.log_user = log;
        o.log_level = KILN_LOG_WARN;
    }
    kiln_engine *e = NULL;
    if (kiln_engine_create(&o, &e) != KILN_OK) return NULL;
    return e;
}

kiln_hstu_fwd_params rt_fwd_params(int head_dim, int causal)
{
    kiln_hstu_fwd_params p;
    kiln_hstu_fwd_params_init(&p);
    p.dtype = KILN_DTYPE_BF16;
    p.head_dim = head_dim;
    p.num_heads = 2;
    p.batch = 3;
    p.total_q = p.total_k = 300;
    p.q = 0x100000;
    p.k = 0x200000;
    p.v = 0x300000;
    p.out = 0x400000;
    p.q_row_stride = p.k_row_stride = p.v_row_stride = p.out_row_stride = 2 * head_dim;
    p.q_head_stride = p.k_head_stride = p.v_head_stride = p.out_head_stride = head_dim;
    p.seq_offsets_q = 0x500000;
    p.max_seqlen_q = p.max_seqlen_k = 200;
    p.window_left = -1;
    p.window_right = causal ? 0 : -1;
    p.alpha = 0.5f;
    return p;
}

int rt_have_nvrtc(void)
{
    kiln_info info;
    kiln_engine *e = rt_engine(NULL, 0, NULL);
    if (!e) return 0;
    int ok = kiln_engine_info(e, &info) == KILN_OK && info.nvrtc_version[0];
    kiln_engine_destroy(e);
    return ok;
}
