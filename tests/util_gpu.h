/* util_gpu.h -- helpers shared by the tests, the bench and the demo.
 *
 * A tiny CUDA Driver API layer opened with dlopen("libcuda.so.1") (no link
 * against libcuda or cudart, no cuda.h), plus host helpers: fp16/bf16
 * conversion and a seeded RNG.  Linked into every test program and into the
 * bench and the demo, so it has no main() and no cmocka tables.
 *
 * Not thread-safe except kt_gpu_* calls made after kt_gpu_init() succeeded
 * from the thread that called it (the context is current on that thread).
 */
#ifndef KILN_TESTS_UTIL_GPU_H
#define KILN_TESTS_UTIL_GPU_H

#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------ GPU */

/* Load the driver, pick device 0, make its primary context current on the
 * calling thread.  Returns 0 when a usable GPU (sm_80 or newer) is there;
 * otherwise -1 and why (if not NULL) receives the reason, e.g.
 * "libcuda.so.1 not found" or "no CUDA device".  Setting KILN_TEST_NO_GPU=1
 * forces the no-GPU path.  Idempotent: later calls return the first result. */
int kt_gpu_init(char *why, size_t n);

/* After a successful kt_gpu_init: "sm_90a" for cc 9.0, "sm_100a" for 10.0,
 * else "sm_XY" (sm_80, sm_86, sm_89, sm_120 ...).  buf holds >= 16 bytes.
 * Returns 0, or -1 (buf = "") without a GPU. */
int kt_gpu_arch(char *buf);
/* The arch name for a compute capability given as 10*major+minor (the
 * mapping kt_gpu_arch uses).  buf holds >= 16 bytes. */
void kt_gpu_arch_for_cc(int cc, char *buf);
/* Compute capability as 10*major+minor (90 for H100), 0 without a GPU. */
int kt_gpu_cc(void);
/* Device 0's name and SM count ("" and 0 without a GPU). */
const char *kt_gpu_name(void);
int kt_gpu_sm_count(void);

/* The last driver failure of these helpers, e.g.
 * "cuMemAlloc_v2(1048576): CUDA_ERROR_OUT_OF_MEMORY".  Never NULL. */
const char *kt_gpu_error(void);

/* Device memory.  kt_gpu_alloc returns 0 on failure (see kt_gpu_error);
 * a request of 0 bytes allocates 16 so that the pointer is never 0.
 * Copies and memset return 0 or -1.  They are synchronous. */
uint64_t kt_gpu_alloc(size_t bytes);
uint64_t kt_gpu_alloc_copy(const void *src, size_t bytes); /* alloc+upload */
void kt_gpu_free(uint64_t ptr); /* 0: nothing */
int kt_gpu_upload(uint64_t dst, const void *src, size_t bytes);
int kt_gpu_download(void *dst, uint64_t src, size_t bytes);
int kt_gpu_memset8(uint64_t dst, unsigned char value, size_t bytes);
/* cuCtxSynchronize: 0, or -1 with the error (e.g. a kernel fault). */
int kt_gpu_sync(void);

/* Events for timing (CUevent as void*).  stream NULL: the legacy stream. */
void *kt_gpu_event_create(void);
void kt_gpu_event_destroy(void *ev);
int kt_gpu_event_record(void *ev, void *stream);
/* Wait for end, return the milliseconds between start and end, or -1. */
double kt_gpu_event_ms(void *start, void *end);

/* ------------------------------------------------------------------ host */

/* Round to nearest even; NaN stays NaN, overflow goes to infinity, fp16
 * subnormals are produced and read exactly. */
uint16_t kt_f32_to_bf16(float f);
float kt_bf16_to_f32(uint16_t h);
uint16_t kt_f32_to_fp16(float f);
float kt_fp16_to_f32(uint16_t h);
/* dtype: KILN_DTYPE_FP16 (1) or KILN_DTYPE_BF16 (2). */
uint16_t kt_f32_to_half(int dtype, float f);
float kt_half_to_f32(int dtype, uint16_t h);

/* xoshiro256** seeded through splitmix64: the same seed gives the same
 * stream on every machine. */
typedef struct kt_rng {
    uint64_t s[4];
} kt_rng;
void kt_rng_seed(kt_rng *r, uint64_t seed);
uint64_t kt_rng_u64(kt_rng *r);
double kt_rng_uniform(kt_rng *r);            /* [0, 1) */
double kt_rng_range(kt_rng *r, double lo, double hi); /* [lo, hi) */
int kt_rng_int(kt_rng *r, int lo, int hi);   /* uniform in [lo, hi] */

/* Wall clock in milliseconds (CLOCK_MONOTONIC). */
double kt_now_ms(void);

#endif
