/* f_rt_nvrtc.c -- issue 5 item 7: no NVRTC, no driver.
 *
 * NVRTC absent (KILN_NVRTC_PATH pointing nowhere) or not NVRTC (a library
 * lacking its symbols); libcuda absent, cuInit failing, no device visible
 * (fake driver tables).  Hits are still served, a miss returns a clear status,
 * nothing aborts, one warning per incident, and a later retry succeeds once
 * the cause is gone.  NVRTC's state is per process and a successful load is
 * final, so the order of the tests matters: absent first, real last. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "runtime/nvrtc.h"
#include "util_rt.h"

static char dir[256];

/* In a child (so this process never loads NVRTC): prewarm key with the real
 * NVRTC into dir.  Returns 1 on success, 0 if NVRTC is not on this machine. */
static int prewarm_in_child(const char *key)
{
    pid_t pid = fork();
    if (pid == 0) {
        unsetenv("KILN_NVRTC_PATH");
        kiln_engine *e = rt_engine(dir, 0, NULL);
        int rc = e && kiln_prewarm(e, key, NULL) == KILN_OK ? 0 : 1;
        if (rc) fprintf(stderr, "child prewarm %s: %s\n", key, kiln_last_error());
        kiln_engine_destroy(e);
        _exit(rc);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static const char *libm_path(void)
{
    static const char *const c[] = {"/lib/x86_64-linux-gnu/libm.so.6",
                                    "/lib/aarch64-linux-gnu/libm.so.6", "/lib64/libm.so.6",
                                    "/usr/lib/libm.so.6", NULL};
    for (int i = 0; c[i]; i++)
        if (access(c[i], R_OK) == 0) return c[i];
    return NULL;
}

static void nvrtc_absent_hits_served_misses_clear_then_recovers(void **state)
{
    (void)state;
    /* the key of the hit below (200 rows: the persistent grid's module) */
    if (!prewarm_in_child("hstu_fwd/sm_90a/bf16/d64/causal/persist")) {
        printf("skipped: no NVRTC on this machine to prewarm with\n");
        skip();
    }
    kiln__cu_override(rt_driver());
    rt_driver_mode(RT_DRIVER_OK);
    setenv("KILN_NVRTC_PATH", "/nonexistent/kiln/libnvrtc.so.13", 1);
    kiln__nvrtc_retry_after(3600); /* no retry until we say so */

    rt_log log = {{0}, ""};
    kiln_engine *e = rt_engine(dir, 0, &log);
    assert_non_null(e);
    rt_driver_counts c0 = rt_driver_counts_get();

    /* a hit: served from the cache without NVRTC */
    kiln_hstu_fwd_params hit = rt_fwd_params(64, 1);
    assert_int_equal(kiln_hstu_fwd(e, &hit, NULL), KILN_OK);
    assert_int_equal(kiln_hstu_fwd(e, &hit, NULL), KILN_OK);
    rt_driver_counts c1 = rt_driver_counts_get();
    assert_int_equal(c1.loads - c0.loads, 1);
    assert_int_equal(c1.launches - c0.launches, 2);
    int warns = log.lines[KILN_LOG_WARN];
    assert_int_equal(warns, 1); /* "NVRTC not found; serving cached kernels" */
    assert_non_null(strstr(log.last, "/nonexistent/kiln/libnvrtc.so.13"));

    /* a miss: a clear status naming the cause, again and again, one warning */
    kiln_hstu_fwd_params miss = rt_fwd_params(32, 0);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(kiln_hstu_fwd(e, &miss, NULL), KILN_ENOTFOUND);
        assert_non_null(strstr(kiln_last_error(), "hstu_fwd/sm_90a/bf16/d32/none"));
        assert_non_null(strstr(kiln_last_error(), "NVRTC not found"));
        assert_non_null(strstr(kiln_last_error(), "KILN_NVRTC_PATH"));
    }
    assert_int_equal(kiln_prewarm(e, "hstu_fwd/sm_90a/fp16/d32/none", NULL),
                     KILN_ENOTFOUND);
    assert_int_equal(log.lines[KILN_LOG_WARN], warns);
    assert_int_equal(log.lines[KILN_LOG_ERROR], 0);
    /* the hit is still served between the misses */
    assert_int_equal(kiln_hstu_fwd(e, &hit, NULL), KILN_OK);

    /* a library that is not NVRTC: a clear status too */
    const char *libm = libm_path();
    if (libm) {
        setenv("KILN_NVRTC_PATH", libm, 1);
        kiln__nvrtc_retry_after(3600);
        assert_int_equal(kiln_hstu_fwd(e, &miss, NULL), KILN_ENOTFOUND);
        assert_non_null(strstr(kiln_last_error(), "lacks nvrtc"));
        assert_int_equal(log.lines[KILN_LOG_WARN], warns);
    }

    /* the cause goes away: the retry after the interval compiles */
    unsetenv("KILN_NVRTC_PATH");
    kiln__nvrtc_retry_after(0.2);
    usleep(250 * 1000);
    assert_int_equal(kiln_hstu_fwd(e, &miss, NULL), KILN_OK);
    assert_int_equal(kiln_hstu_fwd(e, &hit, NULL), KILN_OK);
    kiln_cache_stats st;
    assert_int_equal(kiln_cache_stats_get(e, &st), KILN_OK);
    assert_int_equal(st.compiles, 1);
    assert_int_equal(log.lines[KILN_LOG_WARN], warns + 1); /* "available again" */
    kiln_engine_destroy(e);
    kiln__nvrtc_retry_after(-1);

    /* a new engine after recovery: both keys are hits */
    e = rt_engine(dir, KILN_ENGINE_NO_COMPILE, NULL);
    assert_int_equal(kiln_hstu_fwd(e, &miss, NULL), KILN_OK);
    assert_int_equal(kiln_hstu_fwd(e, &hit, NULL), KILN_OK);
    kiln_engine_destroy(e);
}

/* Driver failures: status, one warning per incident, recovery. */
static void check_driver_incident(int mode, kiln_status want, const char *needle)
{
    rt_log log = {{0}, ""};
    kiln_engine *e = rt_engine(dir, KILN_ENGINE_NO_COMPILE, &log);
    assert_non_null(e);
    kiln_hstu_fwd_params p = rt_fwd_params(64, 1); /* cached by the test above */
    rt_driver_mode(mode);
    rt_driver_counts c0 = rt_driver_counts_get();
    for (int i = 0; i < 50; i++) {
        kiln_status s = kiln_hstu_fwd(e, &p, NULL);
        assert_int_equal(s, want);
        assert_non_null(strstr(kiln_last_error(), needle));
    }
    /* bad arguments are still reported as such without a driver */
    kiln_hstu_fwd_params bad = p;
    bad.head_dim = 48;
    assert_int_equal(kiln_hstu_fwd(e, &bad, NULL), KILN_EBADARG);
    rt_driver_counts c1 = rt_driver_counts_get();
    assert_int_equal(c1.loads, c0.loads);
    assert_int_equal(c1.launches, c0.launches);
    assert_int_equal(log.lines[KILN_LOG_WARN], 1);
    assert_non_null(strstr(log.last, needle));
    assert_int_equal(log.lines[KILN_LOG_ERROR], 0);
    /* engine info still answers */
    kiln_info info;
    assert_int_equal(kiln_engine_info(e, &info), KILN_OK);
    /* the driver recovers: the next call succeeds, no restart */
    rt_driver_mode(RT_DRIVER_OK);
    kiln__cu_override(rt_driver());
    assert_int_equal(kiln_hstu_fwd(e, &p, NULL), KILN_OK);
    assert_int_equal(rt_driver_counts_get().launches, c1.launches + 1);
    /* a second incident is a second warning */
    rt_driver_mode(mode);
    if (mode == RT_DRIVER_OK) kiln__cu_override(NULL);
    assert_int_equal(kiln_hstu_fwd(e, &p, NULL), want);
    assert_int_equal(log.lines[KILN_LOG_WARN], 2);
    rt_driver_mode(RT_DRIVER_OK);
    kiln__cu_override(rt_driver());
    kiln_engine_destroy(e);
}

static void libcuda_absent(void **state)
{
    (void)state;
    kiln__cu_override(NULL);
    kiln__cu_retry_after(0);
    const kiln_cu_api *cu;
    if (kiln__cu(&cu) == KILN_OK) {
        printf("skipped: a real CUDA driver is installed here\n");
        kiln__cu_override(rt_driver());
        skip();
    }
    assert_non_null(strstr(kiln_last_error(), "libcuda.so.1"));
    /* RT_DRIVER_OK with no override: the real (absent) driver */
    check_driver_incident(RT_DRIVER_OK, KILN_ENODEV, "libcuda.so.1");
    kiln__cu_retry_after(-1);
}

static void driver_init_failing(void **state)
{
    (void)state;
    kiln__cu_override(rt_driver());
    check_driver_incident(RT_DRIVER_INIT_FAIL, KILN_ECUDA, "CUDA_ERROR_NOT_INITIALIZED");
}

static void no_device_visible(void **state)
{
    (void)state;
    kiln__cu_override(rt_driver());
    check_driver_incident(RT_DRIVER_NO_DEVICE, KILN_ECUDA, "CUDA_ERROR_NO_DEVICE");
}

static void prewarm_needs_no_driver(void **state)
{
    (void)state;
    kiln__cu_override(rt_driver());
    rt_driver_mode(RT_DRIVER_INIT_FAIL);
    kiln_engine *e = rt_engine(dir, KILN_ENGINE_NO_COMPILE, NULL);
    assert_int_equal(kiln_prewarm(e, "hstu_fwd/sm_90a/bf16/d64/causal/persist", NULL),
                     KILN_OK);
    char buf[160];
    assert_int_equal(kiln_key_canonical("hstu_fwd/sm_80/fp16/d64/none", NULL, buf, sizeof buf),
                     KILN_OK);
    kiln_engine_destroy(e);
    rt_driver_mode(RT_DRIVER_OK);
}

static int setup(void **state)
{
    (void)state;
    rt_tmpdir(dir, sizeof dir, "rt-nvrtc");
    return dir[0] ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    rt_rmrf(dir);
    return 0;
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(nvrtc_absent_hits_served_misses_clear_then_recovers),
        cmocka_unit_test(libcuda_absent),
        cmocka_unit_test(driver_init_failing),
        cmocka_unit_test(no_device_visible),
        cmocka_unit_test(prewarm_needs_no_driver),
    };
    return cmocka_run_group_tests_name("rt_nvrtc", tests, setup, teardown);
}
