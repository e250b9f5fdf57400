/* cuda.c -- the driver table, opened with dlopen. */
#include "runtime/cuda.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "runtime/error.h"

static kiln_cu_api real;
static const kiln_cu_api *override;
/* As for NVRTC (nvrtc.c): a success is final, a failure is retried at most
 * once per retry_s, so a driver that comes back (module loaded, device
 * reset) is picked up without a restart.  After a success kiln__cu() costs
 * one atomic load. */
static _Atomic int loaded;
static pthread_mutex_t load_mu = PTHREAD_MUTEX_INITIALIZER;
static char load_error[256];
static double last_try = -1;
static double retry_s = 10;

static double mono_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void *sym(void *h, const char *name, int *missing)
{
    void *p = dlsym(h, name);
    if (!p && !*missing) {
        snprintf(load_error, sizeof load_error,
                 "libcuda.so.1 lacks %s (driver older than CUDA 12.0?)", name);
        *missing = 1;
    }
    return p;
}

/* Under load_mu: one attempt.  On failure nothing stays open. */
static void load(void)
{
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(load_error, sizeof load_error,
                 "libcuda.so.1 not found (no NVIDIA driver on this machine): %s",
                 dlerror());
        return;
    }
    int missing = 0;
#define S(field, name) *(void **)&real.field = sym(h, name, &missing)
    S(Init, "cuInit");
    S(DriverGetVersion, "cuDriverGetVersion");
    S(DeviceGetCount, "cuDeviceGetCount");
    S(DeviceGet, "cuDeviceGet");
    S(DeviceGetAttribute, "cuDeviceGetAttribute");
    S(DeviceGetName, "cuDeviceGetName");
    S(DeviceTotalMem, "cuDeviceTotalMem_v2");
    S(CtxGetCurrent, "cuCtxGetCurrent");
    S(CtxSetCurrent, "cuCtxSetCurrent");
    S(CtxGetDevice, "cuCtxGetDevice");
    S(CtxSynchronize, "cuCtxSynchronize");
    S(DevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
    S(LibraryLoadData, "cuLibraryLoadData");
    S(LibraryUnload, "cuLibraryUnload");
    S(LibraryGetKernel, "cuLibraryGetKernel");
    S(KernelSetAttribute, "cuKernelSetAttribute");
    S(LaunchKernel, "cuLaunchKernel");
    S(MemAlloc, "cuMemAlloc_v2");
    S(MemFree, "cuMemFree_v2");
    S(MemsetD8, "cuMemsetD8_v2");
    S(MemsetD32Async, "cuMemsetD32Async");
    S(MemcpyDtoH, "cuMemcpyDtoH_v2");
    S(GetErrorName, "cuGetErrorName");
    S(GetErrorString, "cuGetErrorString");
#undef S
    if (missing) goto fail;
    *(void **)&real.TensorMapEncodeTiled = dlsym(h, "cuTensorMapEncodeTiled");
    CUresult r = real.Init(0);
    if (r != 0) {
        const char *name = "?";
        real.GetErrorName(r, &name);
        snprintf(load_error, sizeof load_error, "cuInit failed: %s (%d)",
                 name ? name : "?", r);
        goto fail;
    }
    atomic_store_explicit(&loaded, 1, memory_order_release);
    return;
fail:
    memset(&real, 0, sizeof real);
    dlclose(h);
}

kiln_status kiln__cu(const kiln_cu_api **out)
{
    if (override) {
        *out = override;
        return KILN_OK;
    }
    if (!atomic_load_explicit(&loaded, memory_order_acquire)) {
        char why[sizeof load_error];
        pthread_mutex_lock(&load_mu);
        double now = mono_s();
        if (!atomic_load_explicit(&loaded, memory_order_relaxed) &&
            (last_try < 0 || now - last_try >= retry_s)) {
            load();
            last_try = now;
        }
        int ok = atomic_load_explicit(&loaded, memory_order_relaxed);
        snprintf(why, sizeof why, "%s", load_error);
        pthread_mutex_unlock(&load_mu);
        if (!ok) return kiln__fail(KILN_ENODEV, "%s", why);
    }
    *out = &real;
    return KILN_OK;
}

void kiln__cu_retry_after(double seconds)
{
    pthread_mutex_lock(&load_mu);
    retry_s = seconds >= 0 ? seconds : 10;
    last_try = -1;
    pthread_mutex_unlock(&load_mu);
}

void kiln__cu_override(const kiln_cu_api *api)
{
    override = api;
}

kiln_status kiln__cu_fail(const kiln_cu_api *cu, CUresult r, const char *what)
{
    const char *name = "CUDA_ERROR_UNKNOWN", *text = "";
    if (cu && cu->GetErrorName) cu->GetErrorName(r, &name);
    if (cu && cu->GetErrorString) cu->GetErrorString(r, &text);
    return kiln__fail(KILN_ECUDA, "%s: %s (%d: %s)", what, name ? name : "?", r,
                      text ? text : "");
}
