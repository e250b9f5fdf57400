/* f_rt_nvrtc_fail.c -- issue 5 item 7: a failing NVRTC.
 *
 * tests/faults/fake_nvrtc.c, built here into a shared library and named by
 * KILN_NVRTC_PATH, loads fine and fails every compile with
 * NVRTC_ERROR_BUILTIN_OPERATION_FAILURE and a log.  A cached key is still
 * served, a miss returns KILN_ECOMPILE carrying the log, one warning for
 * the incident, and once another process (with a working NVRTC) has built
 * the key, the retry here succeeds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "util_rt.h"

static char dir[256], lib[320];

/* A fresh process (exec: this one may hold the fake NVRTC) prewarms key
 * with the real NVRTC. */
static int prewarm_in_child(const char *key)
{
    pid_t pid = fork();
    if (pid == 0) {
        unsetenv("KILN_NVRTC_PATH");
        execl("/proc/self/exe", "f_rt_nvrtc_fail", "--prewarm", dir, key, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* Build fake_nvrtc.c (beside this file) into lib. */
static int build_fake(void)
{
    char src[512];
    const char *srcdir = getenv("KILN_FAULTS_SRC");
    if (srcdir && *srcdir) {
        snprintf(src, sizeof src, "%s/fake_nvrtc.c", srcdir);
    } else {
        snprintf(src, sizeof src, "%s", __FILE__);
        char *slash = strrchr(src, '/');
        snprintf(slash ? slash + 1 : src, sizeof src - (size_t)(slash ? slash + 1 - src : 0),
                 "fake_nvrtc.c");
    }
    if (access(src, R_OK) != 0) return 0;
    const char *cc = getenv("CC");
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "%s -shared -fPIC -O1 -o '%s' '%s'", cc && *cc ? cc : "cc",
             lib, src);
    return system(cmd) == 0;
}

static void failing_nvrtc(void **state)
{
    (void)state;
    /* the key of the hit below (200 rows: the persistent grid's module) */
    if (!prewarm_in_child("hstu_fwd/sm_90a/bf16/d64/causal/persist")) {
        printf("skipped: no NVRTC on this machine to prewarm with\n");
        skip();
    }
    if (!build_fake()) {
        printf("skipped: cannot build fake_nvrtc.c\n");
        skip();
    }
    setenv("KILN_NVRTC_PATH", lib, 1);
    kiln__cu_override(rt_driver());
    rt_log log = {{0}, ""};
    kiln_engine *e = rt_engine(dir, 0, &log);
    assert_non_null(e);
    kiln_info info;
    assert_int_equal(kiln_engine_info(e, &info), KILN_OK);
    assert_string_equal(info.nvrtc_version, "13.0"); /* the fake loaded */

    kiln_hstu_fwd_params hit = rt_fwd_params(64, 1), miss = rt_fwd_params(128, 0);
    rt_driver_counts c0 = rt_driver_counts_get();
    assert_int_equal(kiln_hstu_fwd(e, &hit, NULL), KILN_OK);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(kiln_hstu_fwd(e, &miss, NULL), KILN_ECOMPILE);
        const char *m = kiln_last_error();
        assert_non_null(strstr(m, "hstu_fwd/sm_90a/bf16/d128/none"));
        assert_non_null(strstr(m, "NVRTC_ERROR_BUILTIN_OPERATION_FAILURE"));
        assert_non_null(strstr(m, "fake NVRTC builtin operation failure")); /* the log */
        assert_int_equal(kiln_hstu_fwd(e, &hit, NULL), KILN_OK);
    }
    assert_int_equal(kiln_prewarm(e, "hstu_fwd/sm_80/fp16/d32/none", NULL), KILN_ECOMPILE);
    rt_driver_counts c1 = rt_driver_counts_get();
    assert_int_equal(c1.loads - c0.loads, 1); /* only the hit's module */
    assert_int_equal(c1.launches - c0.launches, 11);
    assert_int_equal(log.lines[KILN_LOG_WARN], 1);
    assert_non_null(strstr(log.last, "BUILTIN_OPERATION_FAILURE"));
    assert_int_equal(log.lines[KILN_LOG_ERROR], 0);
    kiln_cache_stats st;
    assert_int_equal(kiln_cache_stats_get(e, &st), KILN_OK);
    assert_int_equal(st.compiles, 0);

    /* another process with a working NVRTC builds the key: the retry hits */
    assert_true(prewarm_in_child("hstu_fwd/sm_90a/bf16/d128/none/persist"));
    assert_int_equal(kiln_hstu_fwd(e, &miss, NULL), KILN_OK);
    assert_int_equal(rt_driver_counts_get().loads, c1.loads + 1);
    kiln_engine_destroy(e);
}

static int setup(void **state)
{
    (void)state;
    rt_tmpdir(dir, sizeof dir, "rt-nvrtc-fail");
    snprintf(lib, sizeof lib, "%s/libfake_nvrtc.so", dir);
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
    if (argc == 4 && !strcmp(argv[1], "--prewarm")) {
        kiln_engine *e = rt_engine(argv[2], 0, NULL);
        int rc = e && kiln_prewarm(e, argv[3], NULL) == KILN_OK ? 0 : 1;
        kiln_engine_destroy(e);
        return rc;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(failing_nvrtc)};
    return cmocka_run_group_tests_name("rt_nvrtc_fail", tests, setup, teardown);
}
