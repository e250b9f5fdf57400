/* cuda.c -- the driver table, opened with dlopen. */
#include "runtime/cuda.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "runtime/error.h"

static kiln_cu_api real;
static const kiln_cu_api *override;
static kiln_status load_status = KILN_ENODEV;
static char load_error[256];
static pthread_once_t once = PTHREAD_ONCE_INIT;

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
    if (missing) return;
    CUresult r = real.Init(0);
    if (r != 0) {
        const char *name = "?";
        real.GetErrorName(r, &name);
        snprintf(load_error, sizeof load_error, "cuInit failed: %s (%d)", name, r);
        return;
    }
    load_status = KILN_OK;
}

kiln_status kiln__cu(const kiln_cu_api **out)
{
    if (override) {
        *out = override;
        return KILN_OK;
    }
    pthread_once(&once, load);
    if (load_status != KILN_OK) return kiln__fail(load_status, "%s", load_error);
    *out = &real;
    return KILN_OK;
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
