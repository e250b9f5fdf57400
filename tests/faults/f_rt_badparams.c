/* f_rt_badparams.c -- issue 5 item 8: a table of named bad parameters, each
 * rejected on the host before NVRTC or the driver: zero module loads and
 * launches (fake driver counters) and zero compiles (engine stats). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "util_rt.h"

typedef void (*mutate_fn)(kiln_hstu_fwd_params *p);

#define CASE(name, body)                                                       \
    static void m_##name(kiln_hstu_fwd_params *p) { body; }
CASE(struct_size_zero, p->struct_size = 0)
CASE(struct_size_big, p->struct_size = 1u << 30)
CASE(dtype_zero, p->dtype = 0)
CASE(dtype_e4m3, p->dtype = KILN_DTYPE_E4M3)
CASE(dtype_negative, p->dtype = -1)
CASE(head_dim_zero, p->head_dim = 0)
CASE(head_dim_negative, p->head_dim = -64)
CASE(head_dim_48, p->head_dim = 48)
CASE(head_dim_512, p->head_dim = 512)
CASE(head_dim_int_max, p->head_dim = INT32_MAX)
CASE(heads_zero, p->num_heads = 0)
CASE(heads_negative, p->num_heads = -2)
CASE(heads_grid_limit, p->num_heads = 70000)
CASE(batch_negative, p->batch = -1)
CASE(batch_grid_limit, p->batch = 70000)
CASE(total_q_negative, p->total_q = -1)
CASE(total_k_negative, p->total_k = -5)
CASE(total_q_2p62, p->total_q = (int64_t)1 << 62)
CASE(total_k_int64_max, p->total_k = INT64_MAX)
CASE(q_null, p->q = 0)
CASE(k_null, p->k = 0)
CASE(v_null, p->v = 0)
CASE(out_null, p->out = 0)
CASE(q_misaligned, p->q += 2)
CASE(k_misaligned, p->k += 8)
CASE(v_misaligned, p->v += 1)
CASE(out_misaligned, p->out += 4)
CASE(offsets_null, p->seq_offsets_q = 0)
CASE(offsets_misaligned, p->seq_offsets_q += 1)
CASE(offsets_type_bad, p->offsets_type = 7)
CASE(q_row_stride_negative, p->q_row_stride = -128)
CASE(q_row_stride_zero, p->q_row_stride = 0)
CASE(q_row_stride_odd, p->q_row_stride = 129)
CASE(k_head_stride_overlap, p->k_head_stride = 1)
CASE(out_row_stride_overflow, p->out_row_stride = INT64_MAX / 2)
CASE(v_head_stride_2p62, p->v_head_stride = (int64_t)1 << 62)
CASE(max_seqlen_q_negative, p->max_seqlen_q = -1)
CASE(max_seqlen_k_negative, p->max_seqlen_k = -7)
CASE(max_seqlen_q_near_int_max, p->max_seqlen_q = INT32_MAX - 1)
CASE(rab_end_overflows_u64, { p->rab = UINT64_MAX - 1; p->rab_row_stride = 200; })
CASE(window_left_negative_two, p->window_left = -2)
CASE(window_right_negative_two, p->window_right = -9)
CASE(contexts_without_causal, { p->window_right = -1; p->num_contexts = 0x600000; })
CASE(targets_without_causal, { p->window_right = -1; p->num_targets = 0x600000; })
CASE(target_group_zero, { p->num_targets = 0x600000; p->target_group_size = 0; })
CASE(targets_misaligned, p->num_targets = 0x600001)
CASE(alpha_nan, p->alpha = __builtin_nanf(""))
CASE(alpha_inf, p->alpha = __builtin_inff())
CASE(scaling_negative, p->scaling_seqlen = -1.0f)
CASE(scaling_nan, p->scaling_seqlen = __builtin_nanf(""))
CASE(rab_heads_not_divisor, { p->rab = 0x700000; p->rab_heads = 3; p->rab_row_stride = 200; })
CASE(rab_heads_zero, { p->rab = 0x700000; p->rab_heads = 0; p->rab_row_stride = 200; })
CASE(rab_misaligned, { p->rab = 0x700001; p->rab_row_stride = 200; })
CASE(rab_stride_negative, { p->rab = 0x700000; p->rab_row_stride = -200; })
CASE(rab_stride_overflow, { p->rab = 0x700000; p->rab_row_stride = INT64_MAX; })
CASE(q_end_overflows_u64, { p->q = UINT64_MAX - 15; })
#undef CASE

static const struct {
    const char *name;
    mutate_fn fn;
} cases[] = {
#define C(n) {#n, m_##n}
    C(struct_size_zero), C(struct_size_big), C(dtype_zero), C(dtype_e4m3),
    C(dtype_negative), C(head_dim_zero), C(head_dim_negative), C(head_dim_48),
    C(head_dim_512), C(head_dim_int_max), C(heads_zero), C(heads_negative),
    C(heads_grid_limit), C(batch_negative), C(batch_grid_limit), C(total_q_negative),
    C(total_k_negative), C(total_q_2p62), C(total_k_int64_max), C(q_null), C(k_null),
    C(v_null), C(out_null), C(q_misaligned), C(k_misaligned), C(v_misaligned),
    C(out_misaligned), C(offsets_null), C(offsets_misaligned), C(offsets_type_bad),
    C(q_row_stride_negative), C(q_row_stride_zero), C(q_row_stride_odd),
    C(k_head_stride_overlap), C(out_row_stride_overflow), C(v_head_stride_2p62),
    C(max_seqlen_q_negative), C(max_seqlen_k_negative), C(max_seqlen_q_near_int_max),
    C(rab_end_overflows_u64),
    C(window_left_negative_two), C(window_right_negative_two),
    C(contexts_without_causal), C(targets_without_causal), C(target_group_zero),
    C(targets_misaligned), C(alpha_nan), C(alpha_inf), C(scaling_negative),
    C(scaling_nan), C(rab_heads_not_divisor), C(rab_heads_zero), C(rab_misaligned),
    C(rab_stride_negative), C(rab_stride_overflow), C(q_end_overflows_u64),
#undef C
};

static void named_cases_rejected_on_host(void **state)
{
    (void)state;
    kiln__cu_override(rt_driver());
    rt_driver_mode(RT_DRIVER_OK);
    kiln_engine *e = rt_engine(NULL, 0, NULL); /* compiles allowed: must not happen */
    assert_non_null(e);
    rt_driver_counts c0 = rt_driver_counts_get();
    int accepted = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        for (int causal = 0; causal < 2; causal++) {
            kiln_hstu_fwd_params p = rt_fwd_params(64, 1);
            if (!causal) p.window_right = -1;
            cases[i].fn(&p);
            kiln_status s = kiln_hstu_fwd(e, &p, NULL);
            char key[160];
            kiln_status ks = kiln_hstu_fwd_key(&p, "sm_90a", key, sizeof key);
            kiln_hstu_bwd_params b;
            kiln_hstu_bwd_params_init(&b);
            b.fwd = p;
            b.dout = b.dq = b.dk = b.dv = 0x800000;
            kiln_status bs = kiln_hstu_bwd(e, &b, NULL);
            if (s == KILN_OK || ks == KILN_OK) {
                /* some mutations are legal with the non-causal base */
                if (causal) {
                    printf("ACCEPTED %s: fwd %s key %s\n", cases[i].name,
                           kiln_status_name(s), kiln_status_name(ks));
                    accepted++;
                }
                continue;
            }
            if (s != KILN_EBADARG && s != KILN_EUNSUPPORTED) {
                printf("%s: fwd returned %s: %s\n", cases[i].name, kiln_status_name(s),
                       kiln_last_error());
                accepted++;
            }
            (void)bs;
        }
    }
    rt_driver_counts c1 = rt_driver_counts_get();
    kiln_cache_stats st;
    assert_int_equal(kiln_cache_stats_get(e, &st), KILN_OK);
    printf("%zu named cases: %d accepted, %ld loads, %ld launches, %lld compiles\n",
           sizeof cases / sizeof *cases, accepted, c1.loads - c0.loads,
           c1.launches - c0.launches, (long long)st.compiles);
    assert_int_equal(c1.loads, c0.loads);
    assert_int_equal(c1.launches, c0.launches);
    assert_int_equal(st.compiles, 0);
    assert_int_equal(accepted, 0);
    kiln_engine_destroy(e);
}

static void null_everywhere(void **state)
{
    (void)state;
    kiln__cu_override(rt_driver());
    kiln_engine *e = rt_engine(NULL, 0, NULL);
    kiln_hstu_fwd_params p = rt_fwd_params(64, 1);
    kiln_hstu_bwd_params b;
    char buf[160];
    uint64_t ws;
    assert_int_equal(kiln_hstu_fwd(NULL, &p, NULL), KILN_EBADARG);
    assert_int_equal(kiln_hstu_fwd(e, NULL, NULL), KILN_EBADARG);
    assert_int_equal(kiln_hstu_bwd(e, NULL, NULL), KILN_EBADARG);
    assert_int_equal(kiln_hstu_bwd(NULL, NULL, NULL), KILN_EBADARG);
    assert_int_equal(kiln_hstu_fwd_key(NULL, "sm_90a", buf, sizeof buf), KILN_EBADARG);
    assert_int_equal(kiln_hstu_fwd_key(&p, "sm_90a", NULL, 10), KILN_EBADARG);
    assert_int_equal(kiln_hstu_fwd_key(&p, "sm_90a", buf, 0), KILN_EBADARG);
    assert_int_equal(kiln_hstu_fwd_key(&p, "sm_90a", buf, 5), KILN_EBADARG);
    assert_int_equal(kiln_hstu_fwd_key(&p, "sm_9", buf, sizeof buf), KILN_EBADARG);
    assert_int_equal(kiln_hstu_bwd_key(NULL, "sm_90a", buf, sizeof buf), KILN_EBADARG);
    assert_int_equal(kiln_hstu_bwd_workspace_size(NULL, &ws), KILN_EBADARG);
    kiln_hstu_bwd_params_init(&b);
    assert_int_equal(kiln_hstu_bwd_workspace_size(&b, NULL), KILN_EBADARG);
    assert_int_equal(kiln_key_canonical(NULL, NULL, buf, sizeof buf), KILN_EBADARG);
    assert_int_equal(kiln_key_canonical("hstu_fwd/sm_90a/bf16/d64/none", NULL, NULL, 9),
                     KILN_EBADARG);
    assert_int_equal(kiln_key_canonical("", NULL, buf, sizeof buf), KILN_EBADARG);
    assert_int_equal(kiln_key_expand(NULL, NULL, NULL, NULL), KILN_EBADARG);
    assert_int_equal(kiln_prewarm(NULL, "hstu_fwd/sm_90a/bf16/d64/none", NULL), KILN_EBADARG);
    assert_int_equal(kiln_prewarm(e, NULL, NULL), KILN_EBADARG);
    assert_int_equal(kiln_prewarm(e, "hstu_fwd/sm_90a/bf16/d48/none", NULL), KILN_EBADARG);
    assert_int_equal(kiln_hstu_fwd_params_init(NULL), KILN_EBADARG);
    assert_int_equal(kiln_hstu_bwd_params_init(NULL), KILN_EBADARG);
    assert_int_equal(kiln_engine_create(NULL, NULL), KILN_EBADARG);
    assert_int_equal(kiln_cache_stats_get(NULL, NULL), KILN_EBADARG);
    assert_int_equal(kiln_engine_debug_report(NULL, NULL), KILN_EBADARG);
    kiln_cache_stats st;
    assert_int_equal(kiln_cache_stats_get(e, &st), KILN_OK);
    assert_int_equal(st.compiles, 0);
    kiln_engine_destroy(e);
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(named_cases_rejected_on_host),
        cmocka_unit_test(null_everywhere),
    };
    return cmocka_run_group_tests_name("rt_badparams", tests, NULL, NULL);
}
