/* util_gpu.c -- see util_gpu.h. */
#include "util_gpu.h"

#include <dlfcn.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------------ driver */

/* The few driver types and entry points used here, declared by hand. */
typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;
typedef void *CUevent;
typedef void *CUstream;
typedef unsigned long long CUdeviceptr;

enum {
    CU_ATTR_SM_COUNT = 16,  /* CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT */
    CU_ATTR_CC_MAJOR = 75,  /* CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR */
    CU_ATTR_CC_MINOR = 76   /* CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR */
};

static struct {
    CUresult (*init)(unsigned);
    CUresult (*device_get)(CUdevice *, int);
    CUresult (*device_get_count)(int *);
    CUresult (*device_get_attribute)(int *, int, CUdevice);
    CUresult (*device_get_name)(char *, int, CUdevice);
    CUresult (*primary_ctx_retain)(CUcontext *, CUdevice);
    CUresult (*ctx_set_current)(CUcontext);
    CUresult (*ctx_synchronize)(void);
    CUresult (*mem_alloc)(CUdeviceptr *, size_t);
    CUresult (*mem_free)(CUdeviceptr);
    CUresult (*memcpy_htod)(CUdeviceptr, const void *, size_t);
    CUresult (*memcpy_dtoh)(void *, CUdeviceptr, size_t);
    CUresult (*memset_d8)(CUdeviceptr, unsigned char, size_t);
    CUresult (*event_create)(CUevent *, unsigned);
    CUresult (*event_destroy)(CUevent);
    CUresult (*event_record)(CUevent, CUstream);
    CUresult (*event_synchronize)(CUevent);
    CUresult (*event_elapsed)(float *, CUevent, CUevent);
    CUresult (*get_error_name)(CUresult, const char **);
} cu;

static int g_state;        /* 0: not tried, 1: usable, -1: not usable */
static char g_why[256];
static char g_err[512];
static char g_name[128];
static int g_cc, g_sms;
static CUcontext g_ctx;

static const char *err_name(CUresult r) {
    const char *s = NULL;
    if (cu.get_error_name && cu.get_error_name(r, &s) == 0 && s) return s;
    return "CUDA_ERROR_UNKNOWN";
}

/* Record "what: NAME" as the last error; returns -1. */
static int cu_fail(CUresult r, const char *fmt, ...) {
    char what[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(g_err, sizeof g_err, "%s: %s (%d)", what, err_name(r), r);
    return -1;
}

static void *sym(void *lib, const char *a, const char *b) {
    void *p = dlsym(lib, a);
    if (!p && b) p = dlsym(lib, b);
    return p;
}

static int set_why(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_why, sizeof g_why, fmt, ap);
    va_end(ap);
    g_state = -1;
    return -1;
}

static int load_and_init(void) {
    const char *force = getenv("KILN_TEST_NO_GPU");
    if (force && *force && strcmp(force, "0") != 0)
        return set_why("KILN_TEST_NO_GPU is set");

    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return set_why("libcuda.so.1 not found");

#define LOAD(field, a, b)                                                      \
    do {                                                                       \
        *(void **)(&cu.field) = sym(lib, a, b);                                \
        if (!cu.field) return set_why("libcuda.so.1 lacks %s", a);             \
    } while (0)
    LOAD(get_error_name, "cuGetErrorName", NULL);
    LOAD(init, "cuInit", NULL);
    LOAD(device_get, "cuDeviceGet", NULL);
    LOAD(device_get_count, "cuDeviceGetCount", NULL);
    LOAD(device_get_attribute, "cuDeviceGetAttribute", NULL);
    LOAD(device_get_name, "cuDeviceGetName", NULL);
    LOAD(primary_ctx_retain, "cuDevicePrimaryCtxRetain", NULL);
    LOAD(ctx_set_current, "cuCtxSetCurrent", NULL);
    LOAD(ctx_synchronize, "cuCtxSynchronize", NULL);
    LOAD(mem_alloc, "cuMemAlloc_v2", NULL);
    LOAD(mem_free, "cuMemFree_v2", NULL);
    LOAD(memcpy_htod, "cuMemcpyHtoD_v2", NULL);
    LOAD(memcpy_dtoh, "cuMemcpyDtoH_v2", NULL);
    LOAD(memset_d8, "cuMemsetD8_v2", NULL);
    LOAD(event_create, "cuEventCreate", NULL);
    LOAD(event_destroy, "cuEventDestroy_v2", "cuEventDestroy");
    LOAD(event_record, "cuEventRecord", NULL);
    LOAD(event_synchronize, "cuEventSynchronize", NULL);
    LOAD(event_elapsed, "cuEventElapsedTime_v2", "cuEventElapsedTime");
#undef LOAD

    CUresult r = cu.init(0);
    if (r == 100 /* CUDA_ERROR_NO_DEVICE */)
        return set_why("no CUDA device (cuInit: %s)", err_name(r));
    if (r != 0) return set_why("cuInit failed: %s (%d)", err_name(r), r);
    int count = 0;
    r = cu.device_get_count(&count);
    if (r != 0) return set_why("cuDeviceGetCount failed: %s", err_name(r));
    if (count <= 0) return set_why("no CUDA device");

    CUdevice dev;
    if ((r = cu.device_get(&dev, 0)) != 0)
        return set_why("cuDeviceGet(0) failed: %s", err_name(r));
    int major = 0, minor = 0;
    cu.device_get_attribute(&major, CU_ATTR_CC_MAJOR, dev);
    cu.device_get_attribute(&minor, CU_ATTR_CC_MINOR, dev);
    cu.device_get_attribute(&g_sms, CU_ATTR_SM_COUNT, dev);
    if (cu.device_get_name(g_name, (int)sizeof g_name, dev) != 0) g_name[0] = 0;
    g_cc = major * 10 + minor;
    if (major < 8)
        return set_why("device 0 (%s) is sm_%d%d; kiln needs sm_80 or newer",
                       g_name, major, minor);
    if ((r = cu.primary_ctx_retain(&g_ctx, dev)) != 0)
        return set_why("cuDevicePrimaryCtxRetain failed: %s", err_name(r));
    if ((r = cu.ctx_set_current(g_ctx)) != 0)
        return set_why("cuCtxSetCurrent failed: %s", err_name(r));
    g_state = 1;
    return 0;
}

int kt_gpu_init(char *why, size_t n) {
    if (g_state == 0) load_and_init();
    if (g_state == 1) {
        /* make it current on this thread too (cheap, idempotent) */
        cu.ctx_set_current(g_ctx);
        if (why && n) why[0] = 0;
        return 0;
    }
    if (why && n) snprintf(why, n, "%s", g_why);
    return -1;
}

void kt_gpu_arch_for_cc(int cc, char *buf) {
    if (cc == 90)
        snprintf(buf, 16, "sm_90a");
    else if (cc == 100)
        snprintf(buf, 16, "sm_100a");
    else
        snprintf(buf, 16, "sm_%d", cc);
}

int kt_gpu_arch(char *buf) {
    if (g_state != 1) {
        buf[0] = 0;
        return -1;
    }
    kt_gpu_arch_for_cc(g_cc, buf);
    return 0;
}

int kt_gpu_cc(void) { return g_state == 1 ? g_cc : 0; }
const char *kt_gpu_name(void) { return g_state == 1 ? g_name : ""; }
int kt_gpu_sm_count(void) { return g_state == 1 ? g_sms : 0; }
const char *kt_gpu_error(void) { return g_err; }

static int need_gpu(const char *what) {
    if (g_state == 1) return 0;
    snprintf(g_err, sizeof g_err, "%s: no GPU (%s)", what,
             g_state == 0 ? "kt_gpu_init not called" : g_why);
    return -1;
}

uint64_t kt_gpu_alloc(size_t bytes) {
    if (need_gpu("cuMemAlloc_v2")) return 0;
    CUdeviceptr p = 0;
    size_t n = bytes ? bytes : 16;
    CUresult r = cu.mem_alloc(&p, n);
    if (r != 0) {
        cu_fail(r, "cuMemAlloc_v2(%zu)", n);
        return 0;
    }
    return (uint64_t)p;
}

uint64_t kt_gpu_alloc_copy(const void *src, size_t bytes) {
    uint64_t p = kt_gpu_alloc(bytes);
    if (p && bytes && kt_gpu_upload(p, src, bytes) != 0) {
        kt_gpu_free(p);
        return 0;
    }
    return p;
}

void kt_gpu_free(uint64_t ptr) {
    if (ptr && g_state == 1) cu.mem_free((CUdeviceptr)ptr);
}

int kt_gpu_upload(uint64_t dst, const void *src, size_t bytes) {
    if (need_gpu("cuMemcpyHtoD_v2")) return -1;
    if (!bytes) return 0;
    CUresult r = cu.memcpy_htod((CUdeviceptr)dst, src, bytes);
    return r ? cu_fail(r, "cuMemcpyHtoD_v2(%zu)", bytes) : 0;
}

int kt_gpu_download(void *dst, uint64_t src, size_t bytes) {
    if (need_gpu("cuMemcpyDtoH_v2")) return -1;
    if (!bytes) return 0;
    CUresult r = cu.memcpy_dtoh(dst, (CUdeviceptr)src, bytes);
    return r ? cu_fail(r, "cuMemcpyDtoH_v2(%zu)", bytes) : 0;
}

int kt_gpu_memset8(uint64_t dst, unsigned char value, size_t bytes) {
    if (need_gpu("cuMemsetD8_v2")) return -1;
    if (!bytes) return 0;
    CUresult r = cu.memset_d8((CUdeviceptr)dst, value, bytes);
    return r ? cu_fail(r, "cuMemsetD8_v2(%zu)", bytes) : 0;
}

int kt_gpu_sync(void) {
    if (need_gpu("cuCtxSynchronize")) return -1;
    CUresult r = cu.ctx_synchronize();
    return r ? cu_fail(r, "cuCtxSynchronize") : 0;
}

void *kt_gpu_event_create(void) {
    if (need_gpu("cuEventCreate")) return NULL;
    CUevent ev = NULL;
    CUresult r = cu.event_create(&ev, 0);
    if (r) {
        cu_fail(r, "cuEventCreate");
        return NULL;
    }
    return ev;
}

void kt_gpu_event_destroy(void *ev) {
    if (ev && g_state == 1) cu.event_destroy((CUevent)ev);
}

int kt_gpu_event_record(void *ev, void *stream) {
    if (need_gpu("cuEventRecord")) return -1;
    CUresult r = cu.event_record((CUevent)ev, (CUstream)stream);
    return r ? cu_fail(r, "cuEventRecord") : 0;
}

double kt_gpu_event_ms(void *start, void *end) {
    if (need_gpu("cuEventElapsedTime")) return -1;
    CUresult r = cu.event_synchronize((CUevent)end);
    if (r) return cu_fail(r, "cuEventSynchronize");
    float ms = 0;
    r = cu.event_elapsed(&ms, (CUevent)start, (CUevent)end);
    if (r) return cu_fail(r, "cuEventElapsedTime");
    return (double)ms;
}

/* ------------------------------------------------------------------ halves */

static uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t kt_f32_to_bf16(float f) {
    uint32_t u = f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep sign, force quiet */
        return (uint16_t)((u >> 16) | 0x0040u);
    /* round to nearest even; a carry into the exponent is the right answer,
     * including overflow to infinity */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float kt_bf16_to_f32(uint16_t h) { return u2f((uint32_t)h << 16); }

uint16_t kt_f32_to_fp16(float f) {
    uint32_t u = f2u(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u); /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520: inf */
    if (a >= 0x38800000u) { /* normal half (>= 2^-14) */
        uint32_t mant = a & 0x7fffffu;
        uint32_t exp = (a >> 23) - 127 + 15;
        uint32_t h = (exp << 10) | (mant >> 13);
        uint32_t rest = mant & 0x1fffu;
        if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++;
        return (uint16_t)(sign | h);
    }
    if (a < 0x33000000u) return sign; /* < 2^-25: rounds to zero */
    /* subnormal half: value = m * 2^-24, m in [0, 1024] (1024 = smallest
     * normal after rounding up) */
    uint32_t e = a >> 23;                  /* biased float exponent */
    uint32_t mant = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e;              /* 24-bit mantissa -> units of 2^-24 */
    /* value = mant * 2^(e-127-23); in units of 2^-24: mant >> (126 - e) */
    uint32_t m = mant >> shift;
    uint32_t rest = mant & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1);
    if (rest > half || (rest == half && (m & 1u))) m++;
    return (uint16_t)(sign | m);
}

float kt_fp16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0) { /* zero or subnormal: exact */
        float v = ldexpf((float)mant, -24);
        return sign ? -v : v;
    }
    if (exp == 31) return u2f(sign | 0x7f800000u | (mant << 13));
    return u2f(sign | ((exp - 15 + 127) << 23) | (mant << 13));
}

uint16_t kt_f32_to_half(int dtype, float f) {
    return dtype == 1 ? kt_f32_to_fp16(f) : kt_f32_to_bf16(f);
}

float kt_half_to_f32(int dtype, uint16_t h) {
    return dtype == 1 ? kt_fp16_to_f32(h) : kt_bf16_to_f32(h);
}

/* ------------------------------------------------------------------ rng */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void kt_rng_seed(kt_rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t kt_rng_u64(kt_rng *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double kt_rng_uniform(kt_rng *r) {
    return (double)(kt_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
}

double kt_rng_range(kt_rng *r, double lo, double hi) {
    return lo + (hi - lo) * kt_rng_uniform(r);
}

int kt_rng_int(kt_rng *r, int lo, int hi) {
    if (hi <= lo) return lo;
    uint64_t span = (uint64_t)((int64_t)hi - lo + 1);
    return lo + (int)(kt_rng_u64(r) % span);
}

double kt_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}
