/* test_compile.c -- NVRTC compiles every HSTU template variant (forward and
 * backward, the Hopper wgmma kernels included) for sm_80 and sm_90a, with no
 * spills, through the real engine and cache (no GPU needed).
 *
 * The variants are split over one worker process per CPU, all writing the same
 * cache, which also exercises concurrent inserts.  The cache lives in
 * $KILN_BUILD/test-cache/<template digest> so a rerun with unchanged templates
 * only verifies hits; set KILN_TEST_FRESH=1 to start empty. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "kiln.h"

#define MAX_KEYS 4096

static char keys[MAX_KEYS][160];
static int nkeys;
static char cache_dir[512];

static int collect(const char *key, void *user)
{
    (void)user;
    if (nkeys < MAX_KEYS) snprintf(keys[nkeys++], sizeof keys[0], "%s", key);
    return 0;
}

/* The Hopper backward (hstu_bwd_sm90.cu) for every sm_90a backward key it
 * serves (head dim 64 / 128 / 256, no rab, drab or det, no func mask), default
 * or not: named with "/wgmma" and canonicalized, so each is listed under its
 * stored key. */
static int nwgmma, wgmma_bad;

static int collect_wgmma(const char *key, void *user)
{
    (void)user;
    if ((!strstr(key, "/d64/") && !strstr(key, "/d128/") && !strstr(key, "/d256/")) ||
        strstr(key, "/rab") ||
        strstr(key, "/det") || strstr(key, "func"))
        return 0;
    char named[200], canon[160];
    snprintf(named, sizeof named, "%s/wgmma", key);
    if (kiln_key_canonical(named, NULL, canon, sizeof canon) != KILN_OK) {
        fprintf(stderr, "FAIL %s: %s\n", named, kiln_last_error());
        wgmma_bad++;
        return 0;
    }
    nwgmma++;
    for (int i = 0; i < nkeys; i++)
        if (strcmp(keys[i], canon) == 0) return 0;
    return collect(canon, user);
}

static int setup(void **state)
{
    (void)state;
    const char *b = getenv("KILN_BUILD");
    kiln_engine_options o;
    kiln_engine_options_init(&o);
    o.flags = KILN_ENGINE_NO_DISK_CACHE;
    kiln_engine *e;
    kiln_info info;
    if (kiln_engine_create(&o, &e) != KILN_OK) return -1;
    kiln_engine_info(e, &info);
    kiln_engine_destroy(e);
    /* One directory per template text: old rows never mix in. */
    snprintf(cache_dir, sizeof cache_dir, "%s/test-cache/%.16s", b && *b ? b : "build",
             info.template_digest);
    if (getenv("KILN_TEST_FRESH")) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", cache_dir);
        if (system(cmd) != 0) return -1;
    }
    char mk[1200];
    snprintf(mk, sizeof mk, "mkdir -p -m 0700 '%s/..' && chmod 0700 '%s/..'", cache_dir,
             cache_dir);
    if (system(mk) != 0) return -1;
    nkeys = 0;
    if (kiln_key_expand("hstu_fwd/*", "sm_80", collect, NULL) != KILN_OK) return -1;
    if (kiln_key_expand("hstu_fwd/*", "sm_90a", collect, NULL) != KILN_OK) return -1;
    if (kiln_key_expand("hstu_bwd/*", "sm_80", collect, NULL) != KILN_OK) return -1;
    if (kiln_key_expand("hstu_bwd/*", "sm_90a", collect, NULL) != KILN_OK) return -1;
    if (kiln_key_expand("hstu_bwd/*", "sm_90a", collect_wgmma, NULL) != KILN_OK) return -1;
    if (nwgmma == 0 || wgmma_bad) return -1; /* the rule above is stale */
    return 0;
}

static kiln_engine *open_engine(void)
{
    kiln_engine_options o;
    kiln_engine_options_init(&o);
    o.cache_dir = cache_dir;
    o.ro_layers = "";
    kiln_engine *e = NULL;
    if (kiln_engine_create(&o, &e) != KILN_OK) return NULL;
    return e;
}

static int worker(int w, int nw)
{
    kiln_engine *e = open_engine();
    if (!e) return 2;
    int bad = 0;
    for (int i = w; i < nkeys; i += nw) {
        kiln_status s = kiln_prewarm(e, keys[i], NULL);
        if (s != KILN_OK) {
            fprintf(stderr, "FAIL %s: %s: %s\n", keys[i], kiln_status_name(s),
                    kiln_last_error());
            bad = 1;
        }
    }
    kiln_engine_destroy(e);
    return bad;
}

struct seen {
    int count, spilled, no_regs;
};

static int check_entry(const kiln_cache_entry *en, void *user)
{
    struct seen *s = user;
    s->count++;
    if (en->spills != 0) {
        fprintf(stderr, "SPILL %s: %d bytes\n", en->key, en->spills);
        s->spilled++;
    }
    if (en->regs <= 0) s->no_regs++;
    return 0;
}

static void every_variant_compiles_without_spills(void **state)
{
    (void)state;
    char ver[64] = "";
    kiln_engine *e = open_engine();
    assert_non_null(e);
    kiln_info info;
    assert_int_equal(kiln_engine_info(e, &info), KILN_OK);
    snprintf(ver, sizeof ver, "%s", info.nvrtc_version);
    kiln_engine_destroy(e);
    if (!*ver) {
        printf("skipped: NVRTC not found (%s)\n", info.nvrtc_path);
        skip();
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int nw = ncpu > 0 ? (int)ncpu : 1;
    if (nw > 16) nw = 16;
    printf("compiling %d variants with NVRTC %s in %d processes into %s\n", nkeys, ver,
           nw, cache_dir);
    fflush(stdout);
    pid_t pids[16];
    for (int w = 0; w < nw; w++) {
        pids[w] = fork();
        assert_true(pids[w] >= 0);
        if (pids[w] == 0) _exit(worker(w, nw));
    }
    int failed = 0;
    for (int w = 0; w < nw; w++) {
        int st;
        waitpid(pids[w], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) failed++;
    }
    assert_int_equal(failed, 0);

    e = open_engine();
    assert_non_null(e);
    struct seen s = {0, 0, 0};
    for (int i = 0; i < nkeys; i++) {
        int before = s.count;
        assert_int_equal(kiln_cache_list(e, keys[i], check_entry, &s), KILN_OK);
        if (s.count != before + 1) fail_msg("%s: %d rows", keys[i], s.count - before);
    }
    kiln_cache_verify_report r;
    assert_int_equal(kiln_cache_verify(e, 0, &r, NULL, NULL), KILN_OK);
    kiln_engine_destroy(e);
    printf("%d variants: %d with spills, %d without a register count; verify: %lld "
           "rows, %lld bad, integrity %s\n",
           s.count, s.spilled, s.no_regs, (long long)r.checked, (long long)r.bad,
           r.integrity_ok ? "ok" : "FAILED");
    assert_int_equal(s.spilled, 0);
    assert_int_equal(s.no_regs, 0);
    assert_int_equal(r.bad, 0);
    assert_true(r.integrity_ok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_variant_compiles_without_spills),
    };
    return cmocka_run_group_tests_name("compile", tests, setup, NULL);
}
