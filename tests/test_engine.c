/* test_engine.c -- the launch path end to end on the CPU: real keys, real
 * NVRTC and cache, a fake driver table in place of libcuda.
 *
 * Proves: a miss compiles once and loads once; a hit allocates nothing and
 * reaches neither SQLite nor NVRTC; threads missing one key compile it once;
 * a second engine on the same cache loads without compiling; a no-compile
 * engine reports a miss clearly; an unusable cache directory degrades to
 * memory; the Hopper forward's launch grid is the one its key names. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "kiln.h"
#include "runtime/cuda.h"
#include "templates/hstu_params.h"
#include "util_fakecu.h"

/* ---------------------------------------------- counting the heap (glibc) */

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
static __thread long allocs;
void *malloc(size_t n) { allocs++; return __libc_malloc(n); }
void *calloc(size_t n, size_t s) { allocs++; return __libc_calloc(n, s); }
void *realloc(void *p, size_t n) { allocs++; return __libc_realloc(p, n); }
void free(void *p) { __libc_free(p); }

/* ---------------------------------------------- a fake driver */

/* The shared fake (tests/util_fakecu.c): sm_90a, keeping the last launch;
 * every load must be an ELF and every kernel the forward one. */
static CUresult check_load(const void *code, void *user)
{
    (void)user;
    assert_memory_equal(code, "\x7f" "ELF", 4);
    return 0;
}
static void check_kernel(const char *name, void *user)
{
    (void)user;
    assert_string_equal(name, "kiln_hstu_fwd");
}
static void install_fake(void)
{
    kt_fakecu_config c;
    kt_fakecu_config_init(&c);
    c.load_check = check_load;
    c.kernel_check = check_kernel;
    c.capture_launch = 1;
    kt_fakecu_install(&c);
}
static int fake_loads(void) { return (int)kt_fakecu_counts_get().loads; }
static int fake_launches(void) { return (int)kt_fakecu_counts_get().launches; }

/* ---------------------------------------------- fixtures */

static char dir[256];
static int have_nvrtc;

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "%s/kiln-engine-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dir)) return -1;
    install_fake();
    kiln_engine *e;
    if (kiln_engine_create(NULL, &e) != KILN_OK) return -1;
    kiln_info info;
    kiln_engine_info(e, &info);
    have_nvrtc = info.nvrtc_version[0] != '\0';
    kiln_engine_destroy(e);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static kiln_engine *engine_at(const char *sub, uint32_t flags)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, sub);
    kiln_engine_options o;
    kiln_engine_options_init(&o);
    o.cache_dir = path;
    o.ro_layers = "";
    o.flags = flags;
    kiln_engine *e = NULL;
    assert_int_equal(kiln_engine_create(&o, &e), KILN_OK);
    return e;
}

static kiln_hstu_fwd_params params(int head_dim, int causal)
{
    kiln_hstu_fwd_params p;
    kiln_hstu_fwd_params_init(&p);
    p.dtype = KILN_DTYPE_BF16;
    p.head_dim = head_dim;
    p.num_heads = 2;
    p.batch = 3;
    p.total_q = p.total_k = 300;
    p.q = 0x100000; p.k = 0x200000; p.v = 0x300000; p.out = 0x400000;
    p.q_row_stride = p.k_row_stride = p.v_row_stride = p.out_row_stride = 2 * head_dim;
    p.q_head_stride = p.k_head_stride = p.v_head_stride = p.out_head_stride = head_dim;
    p.seq_offsets_q = 0x500000;
    p.max_seqlen_q = p.max_seqlen_k = 200;
    p.window_left = -1;
    p.window_right = causal ? 0 : -1;
    p.alpha = 0.5f;
    return p;
}

#define NEED_NVRTC()                                                           \
    do {                                                                       \
        if (!have_nvrtc) {                                                     \
            printf("skipped: NVRTC not found\n");                              \
            skip();                                                            \
        }                                                                      \
    } while (0)

/* ---------------------------------------------- tests */

static void miss_then_hit(void **state)
{
    (void)state;
    NEED_NVRTC();
    kiln_engine *e = engine_at("a", 0);
    kiln_hstu_fwd_params p = params(64, 1);
    int loads0 = fake_loads(), launches0 = fake_launches();
    assert_int_equal(kiln_hstu_fwd(e, &p, NULL), KILN_OK);
    assert_int_equal(fake_loads(), loads0 + 1);
    assert_int_equal(fake_launches(), launches0 + 1);
    /* geometry and parameters reach the driver as planned */
    kt_fakecu_launch fake = kt_fakecu_last_launch();
    /* the fake device is an sm_90a: the Hopper forward's persistent grid, a
     * CTA per unit of two m-blocks (3 sequences x 2 heads x 1), fewer than
     * the 132 SMs (kiln__hstu_fwd_sm90_grid) */
    assert_int_equal(fake.grid[0], 6);
    assert_int_equal(fake.grid[1], 1);
    assert_int_equal(fake.grid[2], 1);
    assert_true(fake.block[0] % 32 == 0 && fake.block[0] >= 128);
    assert_int_equal(fake.kp.q, p.q);
    assert_int_equal(fake.kp.out, p.out);
    assert_int_equal(fake.kp.max_seqlen_q, 200);
    assert_true(fake.kp.alpha == 0.5f);
    assert_true(fake.kp.inv_scaling == 1.0f / 200);

    kiln_cache_stats st0, st1;
    assert_int_equal(kiln_cache_stats_get(e, &st0), KILN_OK);
    assert_int_equal(st0.compiles, 1);
    long a0 = allocs;
    for (int i = 0; i < 1000; i++) assert_int_equal(kiln_hstu_fwd(e, &p, NULL), KILN_OK);
    long hit_allocs = allocs - a0;
    assert_int_equal(hit_allocs, 0);
    assert_int_equal(fake_loads(), loads0 + 1);
    assert_int_equal(fake_launches(), launches0 + 1001);
    assert_int_equal(kiln_cache_stats_get(e, &st1), KILN_OK);
    assert_int_equal(st1.compiles, 1);
    assert_int_equal(st1.disk_hits, st0.disk_hits); /* no SQLite on a hit */
    kiln_engine_destroy(e);

    /* A new engine (a new process, in effect) loads from disk, no compile. */
    e = engine_at("a", KILN_ENGINE_NO_COMPILE);
    assert_int_equal(kiln_hstu_fwd(e, &p, NULL), KILN_OK);
    assert_int_equal(kiln_cache_stats_get(e, &st1), KILN_OK);
    assert_int_equal(st1.compiles, 0);
    assert_int_equal(st1.disk_hits, 1);
    assert_int_equal(fake_loads(), loads0 + 2);
    kiln_engine_destroy(e);
}

static void no_compile_reports_miss(void **state)
{
    (void)state;
    kiln_engine *e = engine_at("empty", KILN_ENGINE_NO_COMPILE);
    kiln_hstu_fwd_params p = params(32, 0);
    assert_int_equal(kiln_hstu_fwd(e, &p, NULL), KILN_ENOTFOUND);
    assert_non_null(strstr(kiln_last_error(), "hstu_fwd/sm_90a/bf16/d32/none"));
    assert_non_null(strstr(kiln_last_error(), "compiling is off"));
    kiln_engine_destroy(e);
}

struct race {
    kiln_engine *e;
    kiln_hstu_fwd_params p;
    pthread_barrier_t *bar;
    kiln_status s;
};

static void *racer(void *arg)
{
    struct race *r = arg;
    pthread_barrier_wait(r->bar);
    r->s = kiln_hstu_fwd(r->e, &r->p, NULL);
    return NULL;
}

static void single_flight(void **state)
{
    (void)state;
    NEED_NVRTC();
    kiln_engine *e = engine_at("b", 0);
    enum { N = 8 };
    pthread_t t[N];
    struct race r[N];
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, N);
    int loads0 = fake_loads();
    for (int i = 0; i < N; i++) {
        r[i].e = e;
        r[i].p = params(128, 1);
        r[i].bar = &bar;
        pthread_create(&t[i], NULL, racer, &r[i]);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(r[i].s, KILN_OK);
    }
    kiln_cache_stats st;
    assert_int_equal(kiln_cache_stats_get(e, &st), KILN_OK);
    assert_int_equal(st.compiles, 1);
    assert_int_equal(fake_loads(), loads0 + 1);
    /* prewarm of the same key in the same engine (200 rows: the persistent
     * kernel's): nothing to do */
    assert_int_equal(kiln_prewarm(e, "hstu_fwd/sm_90a/bf16/d128/causal/persist", NULL),
                     KILN_OK);
    assert_int_equal(kiln_cache_stats_get(e, &st), KILN_OK);
    assert_int_equal(st.compiles, 1);
    pthread_barrier_destroy(&bar);
    kiln_engine_destroy(e);
}

static void load_failure_is_reported_and_retried(void **state)
{
    (void)state;
    NEED_NVRTC();
    kiln_engine *e = engine_at("c", 0);
    kiln_hstu_fwd_params p = params(64, 0);
    kt_fakecu_set_mode(KT_FAKECU_LOAD_FAIL);
    assert_int_equal(kiln_hstu_fwd(e, &p, NULL), KILN_ECUDA);
    assert_non_null(strstr(kiln_last_error(), "CUDA_ERROR_INVALID_PTX"));
    kt_fakecu_set_mode(KT_FAKECU_OK);
    assert_int_equal(kiln_hstu_fwd(e, &p, NULL), KILN_OK);
    kiln_engine_destroy(e);
}

static void unusable_cache_dir_degrades_to_memory(void **state)
{
    (void)state;
    NEED_NVRTC();
    kiln_engine_options o;
    kiln_engine_options_init(&o);
    o.cache_dir = "/proc/kiln-cannot-exist";
    o.ro_layers = "";
    kiln_engine *e;
    assert_int_equal(kiln_engine_create(&o, &e), KILN_OK);
    kiln_hstu_fwd_params p = params(32, 1);
    assert_int_equal(kiln_hstu_fwd(e, &p, NULL), KILN_OK);
    assert_int_equal(kiln_hstu_fwd(e, &p, NULL), KILN_OK);
    kiln_cache_stats st;
    assert_int_equal(kiln_cache_stats_get(e, &st), KILN_OK);
    assert_int_equal(st.compiles, 1);
    assert_int_equal(st.writable, 0);
    /* prewarm without a writable cache keeps the cubin for a later launch */
    assert_int_equal(kiln_prewarm(e, "hstu_fwd/sm_90a/fp16/d32/none/persist", NULL),
                     KILN_OK);
    int loads0 = fake_loads();
    kiln_hstu_fwd_params q = params(32, 0);
    q.dtype = KILN_DTYPE_FP16;
    assert_int_equal(kiln_hstu_fwd(e, &q, NULL), KILN_OK);
    assert_int_equal(kiln_cache_stats_get(e, &st), KILN_OK);
    assert_int_equal(st.compiles, 2);
    assert_int_equal(fake_loads(), loads0 + 1);
    kiln_engine_destroy(e);
}

/* Launch p on the fake device, checking the key it plans first. */
static kt_fakecu_launch launch_as(kiln_engine *e, const kiln_hstu_fwd_params *p,
                                  const char *want_key)
{
    char key[160];
    assert_int_equal(kiln_hstu_fwd_key(p, NULL, key, sizeof key), KILN_OK);
    assert_string_equal(key, want_key);
    assert_int_equal(kiln_hstu_fwd(e, p, NULL), KILN_OK);
    return kt_fakecu_last_launch();
}

/* The Hopper forward's module holds one grid's kernel: the key names it, and
 * the launch takes that kernel's grid. */
static void grid_follows_the_key(void **state)
{
    (void)state;
    NEED_NVRTC();
    kiln_engine *e = engine_at("f", 0);
    kiln_hstu_fwd_params p = params(64, 1);
    /* 17 m-blocks: past the persistent kernel's 16, a CTA per m-block */
    p.max_seqlen_q = p.max_seqlen_k = 16 * 128 + 1;
    kt_fakecu_launch fake = launch_as(e, &p, "hstu_fwd/sm_90a/bf16/d64/causal");
    assert_int_equal(fake.grid[0], 17);
    assert_int_equal(fake.grid[1], 2);
    assert_int_equal(fake.grid[2], 3);
    /* 16: persistent, a CTA per unit of two m-blocks (3 x 2 x 8 < 132 SMs) */
    p.max_seqlen_q = p.max_seqlen_k = 16 * 128;
    fake = launch_as(e, &p, "hstu_fwd/sm_90a/bf16/d64/causal/persist");
    assert_int_equal(fake.grid[0], 48);
    assert_int_equal(fake.grid[1], 1);
    assert_int_equal(fake.grid[2], 1);
    kiln_cache_stats st;
    assert_int_equal(kiln_cache_stats_get(e, &st), KILN_OK);
    assert_int_equal(st.compiles, 2);
    kiln_engine_destroy(e);
}

/* The Hopper fp8 forward: a CTA per unit of two m-blocks, and the portable
 * kernel (a CTA per m-block) when TMA cannot describe q, k or v. */
static void fp8_grid_and_tma_fallback(void **state)
{
    (void)state;
    NEED_NVRTC();
    kiln_engine *e = engine_at("g", 0);
    kiln_hstu_fwd_params p = params(128, 1);
    p.dtype = KILN_DTYPE_E4M3;
    p.out_dtype = KILN_DTYPE_BF16;
    p.max_seqlen_q = p.max_seqlen_k = 3 * 128; /* 3 m-blocks: 2 units */
    kt_fakecu_launch fake = launch_as(e, &p, "hstu_fwd/sm_90a/e4m3-bf16/d128/causal");
    assert_int_equal(fake.grid[0], 2);
    assert_int_equal(fake.grid[1], 2);
    assert_int_equal(fake.grid[2], 3);
    /* heads outside rows (head-major q, k, v): no TMA map has that nesting */
    p.q_row_stride = p.k_row_stride = p.v_row_stride = 128;
    p.q_head_stride = p.k_head_stride = p.v_head_stride = 300 * 128;
    assert_int_equal(kiln_hstu_fwd(e, &p, NULL), KILN_OK);
    fake = kt_fakecu_last_launch();
    assert_int_equal(fake.grid[0], 3);
    /* q and k as at first, v alone head-major: v's map fails, and with it
     * the Hopper kernel (it brings V by TMA too) */
    p.q_row_stride = p.k_row_stride = 2 * 128;
    p.q_head_stride = p.k_head_stride = 128;
    assert_int_equal(kiln_hstu_fwd(e, &p, NULL), KILN_OK);
    fake = kt_fakecu_last_launch();
    assert_int_equal(fake.grid[0], 3);
    kiln_cache_stats st;
    assert_int_equal(kiln_cache_stats_get(e, &st), KILN_OK);
    assert_int_equal(st.compiles, 2); /* the Hopper kernel, then the portable one */
    kiln_engine_destroy(e);
}

/* rab by TMA in the Hopper forward where TMA can describe it (rows of 16-byte
 * multiples, a broadcast batch included); rows of 201 elements go to the
 * portable kernel.  The fake driver refuses what the real one does. */
static void rab_tma_or_portable(void **state)
{
    (void)state;
    NEED_NVRTC();
    kiln_engine *e = engine_at("r", 0);
    kiln_hstu_fwd_params p = params(128, 1);
    p.rab = 0x700000;
    p.rab_heads = 1;
    p.rab_row_stride = 200;
    p.rab_head_stride = 200 * 200;
    p.rab_batch_stride = 200 * 200;
    kt_fakecu_launch fake = launch_as(e, &p, "hstu_fwd/sm_90a/bf16/d128/causal/rab");
    assert_int_equal(fake.block[0], 384); /* the Hopper kernel's 12 warps */
    assert_int_equal(fake.grid[0], 2);    /* a CTA per m-block of 128 rows */
    p.rab_batch_stride = 0;               /* one rab for the batch */
    assert_int_equal(kiln_hstu_fwd(e, &p, NULL), KILN_OK);
    assert_int_equal(kt_fakecu_last_launch().block[0], 384);
    p.rab_row_stride = 201;
    p.rab_head_stride = p.rab_batch_stride = 201 * 200;
    assert_int_equal(kiln_hstu_fwd(e, &p, NULL), KILN_OK);
    assert_true(kt_fakecu_last_launch().block[0] != 384);
    kiln_cache_stats st;
    assert_int_equal(kiln_cache_stats_get(e, &st), KILN_OK);
    assert_int_equal(st.compiles, 2); /* the Hopper kernel, then the portable one */
    kiln_engine_destroy(e);
}

static void empty_batch_launches_nothing(void **state)
{
    (void)state;
    kiln_engine *e = engine_at("d", KILN_ENGINE_NO_COMPILE);
    kiln_hstu_fwd_params p = params(64, 1);
    p.batch = 0;
    int l0 = fake_launches();
    assert_int_equal(kiln_hstu_fwd(e, &p, NULL), KILN_OK);
    p.batch = 2;
    p.max_seqlen_q = 0;
    assert_int_equal(kiln_hstu_fwd(e, &p, NULL), KILN_OK);
    assert_int_equal(fake_launches(), l0);
    kiln_engine_destroy(e);
}

static void info_and_key_for_params(void **state)
{
    (void)state;
    kiln_engine *e = engine_at("e", 0);
    kiln_info info;
    assert_int_equal(kiln_engine_info(e, &info), KILN_OK);
    assert_int_equal(info.device_count, 1);
    assert_string_equal(info.devices[0].arch, "sm_90a");
    assert_int_equal(strlen(info.template_digest), 32);
    assert_non_null(strstr(info.cache_path, "kiln.db"));
    kiln_hstu_fwd_params p = params(128, 1);
    p.num_targets = 0x600000;
    p.rab = 0x700000;
    p.rab_heads = 1;
    p.rab_row_stride = 200;
    char key[160];
    assert_int_equal(kiln_hstu_fwd_key(&p, NULL, key, sizeof key), KILN_OK);
    assert_string_equal(key, "hstu_fwd/sm_90a/bf16/d128/causal+target/rab");
    assert_int_equal(kiln_hstu_fwd_key(&p, "sm_80", key, sizeof key), KILN_OK);
    assert_string_equal(key, "hstu_fwd/sm_80/bf16/d128/causal+target/rab");
    kiln_engine_destroy(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(miss_then_hit),
        cmocka_unit_test(no_compile_reports_miss),
        cmocka_unit_test(single_flight),
        cmocka_unit_test(load_failure_is_reported_and_retried),
        cmocka_unit_test(unusable_cache_dir_degrades_to_memory),
        cmocka_unit_test(grid_follows_the_key),
        cmocka_unit_test(fp8_grid_and_tma_fallback),
        cmocka_unit_test(rab_tma_or_portable),
        cmocka_unit_test(empty_batch_launches_nothing),
        cmocka_unit_test(info_and_key_for_params),
    };
    return cmocka_run_group_tests_name("engine", tests, setup, teardown);
}
