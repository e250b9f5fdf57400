/* fuzz_api.c -- issue 5 item 8: libFuzzer over the public C API with the
 * launch stubbed by the fake driver (util_rt.c).  The input is split into a
 * forward params struct (raw bytes, struct_size forced half the time), a
 * backward tail, and a key/pattern string.  Invariants: no crash, ASan and
 * UBSan clean, and nothing rejected reaches the driver; with NO_COMPILE
 * nothing is ever compiled.  Built by tests/faults/build_fuzz.sh. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util_rt.h"

static kiln_engine *engine;

static int count_cb(const char *key, void *user)
{
    (void)key;
    return ++*(int *)user > 64; /* stop early: bounded work per input */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!engine) {
        kiln__cu_override(rt_driver());
        engine = rt_engine(NULL, KILN_ENGINE_NO_COMPILE, NULL);
        if (!engine) abort();
    }
    kiln_hstu_fwd_params p = rt_fwd_params(64, 1);
    size_t n = size < sizeof p ? size : sizeof p;
    memcpy(&p, data, n);
    if (size && (data[0] & 1)) p.struct_size = sizeof p;
    data += n;
    size -= n;
    kiln_hstu_bwd_params b;
    kiln_hstu_bwd_params_init(&b);
    b.fwd = p;
    size_t m = size < sizeof b - sizeof p - 4 ? size : sizeof b - sizeof p - 4;
    memcpy((char *)&b + 4 + sizeof p, data, m);
    data += m;
    size -= m;
    char text[200];
    size_t t = size < sizeof text - 1 ? size : sizeof text - 1;
    memcpy(text, data, t);
    text[t] = '\0';

    rt_driver_counts c0 = rt_driver_counts_get();
    char key[160];
    kiln_status s = kiln_hstu_fwd(engine, &p, NULL);
    kiln_status ks = kiln_hstu_fwd_key(&p, "sm_90a", key, sizeof key);
    /* a rejected call must not reach the driver's module loader or launcher */
    rt_driver_counts c1 = rt_driver_counts_get();
    if (s != KILN_OK && (c1.loads != c0.loads || c1.launches != c0.launches)) abort();
    (void)ks;
    uint64_t ws;
    kiln_hstu_bwd_workspace_size(&b, &ws);
    kiln_hstu_bwd(engine, &b, NULL);
    kiln_hstu_bwd_key(&b, "sm_90a", key, sizeof key);
    kiln_hstu_bwd_key(&b, "sm_80", key, 8);
    kiln_key_canonical(text, NULL, key, sizeof key);
    kiln_key_canonical(text, "sm_90a", key, (size_t)(t % 40));
    int count = 0;
    if (t < 48) kiln_key_expand(text, "sm_80", count_cb, &count);
    kiln_prewarm(engine, text, t & 1 ? "sm_90a" : NULL);
    (void)kiln_last_error();
    kiln_cache_stats st;
    if (kiln_cache_stats_get(engine, &st) != KILN_OK || st.compiles != 0) abort();
    return 0;
}
