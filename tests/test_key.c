/* test_key.c -- the dispatch key: encoding, text form, validation, planning. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dispatch/hstu_bwd.h"
#include "dispatch/hstu_fwd.h"
#include "dispatch/hstu_fwd_sm90_tiles.h"
#include "dispatch/key.h"
#include "kiln.h"

static kiln_key base_key(void)
{
    kiln_key k;
    memset(&k, 0, sizeof k);
    k.family = KILN_FAM_HSTU_FWD;
    k.arch = 90;
    k.arch_a = 1;
    k.dtype = KILN_DTYPE_BF16;
    k.head_dim = 128;
    k.mask = KILN_MASK_CAUSAL | KILN_MASK_TARGET;
    k.rab = 1;
    kiln__key_default_tiles(&k);
    return k;
}

static void encoding_is_fixed_and_tagged(void **state)
{
    (void)state;
    kiln_key k = base_key();
    uint8_t a[KILN_KEY_BYTES], b[KILN_KEY_BYTES];
    memset(a, 0xAA, sizeof a);
    memset(b, 0x55, sizeof b);
    kiln__key_encode(&k, a);
    kiln__key_encode(&k, b);
    assert_memory_equal(a, b, KILN_KEY_BYTES); /* no uninitialized bytes */
    assert_int_equal(a[0], KILN_KEY_VERSION);
    assert_int_equal(a[1], 'F');
    assert_int_equal(a[3], 'A');
    assert_int_equal(a[4], 90); /* little endian */
    assert_int_equal(a[5], 0);
    assert_int_equal(a[6], 1); /* arch_a */
}

static void every_field_changes_encoding(void **state)
{
    (void)state;
    kiln_key k = base_key();
    uint8_t ref[KILN_KEY_BYTES], got[KILN_KEY_BYTES];
    kiln__key_encode(&k, ref);
    kiln_key v[9];
    for (int i = 0; i < 9; i++) v[i] = k;
    v[0].arch = 80;
    kiln_key vd = k, vx = k;
    vd.drab = 1;
    vx.det = 1;
    kiln__key_encode(&vd, got);
    assert_memory_not_equal(ref, got, KILN_KEY_BYTES);
    kiln__key_encode(&vx, got);
    assert_memory_not_equal(ref, got, KILN_KEY_BYTES);
    v[1].arch_a = 0;
    v[2].dtype = KILN_DTYPE_FP16;
    v[3].head_dim = 64;
    v[4].mask = KILN_MASK_CAUSAL;
    v[5].rab = 0;
    v[6].block_m += 1;
    v[7].block_n += 1;
    v[8].warps += 1;
    kiln_key vf = k;
    vf.mask = KILN_MASK_FUNC;
    kiln__key_encode(&vf, got);
    assert_memory_not_equal(ref, got, KILN_KEY_BYTES);
    kiln_key vp = k;
    vp.persist = 1;
    kiln__key_encode(&vp, got);
    assert_memory_not_equal(ref, got, KILN_KEY_BYTES);
    assert_int_equal(got[KILN_KEY_BYTES - 2], 'p');
    assert_int_equal(got[KILN_KEY_BYTES - 1], 1);
    for (int i = 0; i < 9; i++) {
        kiln__key_encode(&v[i], got);
        assert_memory_not_equal(ref, got, KILN_KEY_BYTES);
    }
}

static int count_key_fp8(const char *key, void *user)
{
    (void)key;
    (*(int *)user)++;
    return 0;
}

static int roundtrip_one(const char *text, void *user)
{
    int *count = user;
    kiln_key k;
    char again[160];
    assert_int_equal(kiln__key_parse(text, NULL, &k), KILN_OK);
    assert_true(kiln__key_format(&k, again, sizeof again) > 0);
    assert_string_equal(text, again);
    (*count)++;
    return 0;
}

static void text_roundtrips_for_every_key(void **state)
{
    (void)state;
    int count = 0;
    assert_int_equal(kiln_key_expand("hstu_*", NULL, roundtrip_one, &count),
                     KILN_OK);
    /* 4 archs x 2 dtypes x 4 dims x 13 valid masks (func, deltaq+func
     * included) x 2 rab, less the tiles that do not fit an arch's shared
     * memory. */
    assert_true(count > 300);
    /* plus e4m3 on every arch: 2 out dtypes x 3 dims x 11 masks (no func) x
     * 2 rab, and the Hopper forward's persistent grid: 2 dtypes x 4 dims x 11
     * masks */
    assert_true(count <= 4 * 2 * 4 * 13 * (2 + 6) + 4 * 2 * 3 * 11 * 2 + 2 * 4 * 11);
}

static void canonical_form_normalizes(void **state)
{
    (void)state;
    char buf[160];
    assert_int_equal(kiln_key_canonical("hstu_fwd/sm_90a/bf16/d128/target+causal/rab",
                                        NULL, buf, sizeof buf),
                     KILN_OK);
    assert_string_equal(buf, "hstu_fwd/sm_90a/bf16/d128/causal+target/rab");
    assert_int_equal(kiln_key_canonical("hstu_fwd/bf16/d64/delta_q+causal", "sm_80",
                                        buf, sizeof buf),
                     KILN_OK);
    assert_string_equal(buf, "hstu_fwd/sm_80/bf16/d64/causal+deltaq");
    /* the override wins over the key's arch */
    assert_int_equal(kiln_key_canonical("hstu_fwd/sm_80/fp16/d32/none", "sm_90a", buf,
                                        sizeof buf),
                     KILN_OK);
    assert_string_equal(buf, "hstu_fwd/sm_90a/fp16/d32/none");
    /* func: its own mask bit, alone or with deltaq, in the fixed order */
    assert_int_equal(kiln_key_canonical("hstu_bwd/sm_80/bf16/d64/func+deltaq/rab/drab/det", NULL,
                                        buf, sizeof buf),
                     KILN_OK);
    assert_string_equal(buf, "hstu_bwd/sm_80/bf16/d64/deltaq+func/rab/drab/det");
    /* on sm_90a the portable kernel is the default for func: no "/mma" */
    assert_int_equal(kiln_key_canonical("hstu_fwd/sm_90a/bf16/d128/func", NULL, buf, sizeof buf),
                     KILN_OK);
    assert_string_equal(buf, "hstu_fwd/sm_90a/bf16/d128/func");
    assert_int_equal(kiln_key_canonical("hstu_bwd/sm_90a/bf16/d128/func/mma", NULL, buf,
                                        sizeof buf),
                     KILN_OK);
    assert_string_equal(buf, "hstu_bwd/sm_90a/bf16/d128/func");
    /* too small a buffer is an error, not a truncation */
    assert_int_equal(kiln_key_canonical("hstu_fwd/sm_80/fp16/d32/none", NULL, buf, 8),
                     KILN_EBADARG);
}

/* fp8 keys carry the out dtype; 16-bit keys keep their old bytes. */
static void fp8_keys_name_the_out_dtype(void **state)
{
    (void)state;
    char buf[160];
    assert_int_equal(kiln_key_canonical("hstu_fwd/sm_90a/fp8/d128/causal", NULL, buf,
                                        sizeof buf),
                     KILN_OK);
    assert_string_equal(buf, "hstu_fwd/sm_90a/e4m3-bf16/d128/causal");
    assert_int_equal(kiln_key_canonical("hstu_fwd/e4m3-fp16/d64/none/rab", "sm_90a", buf,
                                        sizeof buf),
                     KILN_OK);
    /* on sm_90a e4m3 defaults to the wgmma kernel, rab or not: no "/wgmma" */
    assert_string_equal(buf, "hstu_fwd/sm_90a/e4m3-fp16/d64/none/rab");
    kiln_key a, b, c;
    assert_int_equal(kiln__key_parse("hstu_fwd/sm_90a/e4m3-bf16/d128/causal", NULL, &a),
                     KILN_OK);
    assert_int_equal(kiln__key_parse("hstu_fwd/sm_90a/e4m3-fp16/d128/causal", NULL, &b),
                     KILN_OK);
    assert_int_equal(kiln__key_parse("hstu_fwd/sm_90a/bf16/d128/causal", NULL, &c),
                     KILN_OK);
    uint8_t ea[KILN_KEY_BYTES], eb[KILN_KEY_BYTES], ec[KILN_KEY_BYTES];
    kiln__key_encode(&a, ea);
    kiln__key_encode(&b, eb);
    kiln__key_encode(&c, ec);
    assert_memory_not_equal(ea, eb, KILN_KEY_BYTES);
    assert_int_equal(ec[7], 'T');
    assert_int_equal(ec[8], KILN_DTYPE_BF16); /* unchanged by the out dtype nibble */
    assert_int_equal(ea[8], KILN_DTYPE_E4M3 | KILN_DTYPE_BF16 << 4);
    /* a 16-bit key cannot name an out dtype */
    c.out_dtype = KILN_DTYPE_FP16;
    assert_int_equal(kiln__key_validate(&c), KILN_EBADARG);
    assert_non_null(strstr(kiln_last_error(), "out dtype"));
    /* expanding covers both out dtypes, on sm_90a (the wgmma kernel) and
     * elsewhere (the portable one) */
    int n = 0;
    assert_int_equal(kiln_key_expand("hstu_fwd/sm_90a/e4m3-*/d128/causal", NULL, count_key_fp8,
                                     &n),
                     KILN_OK);
    assert_int_equal(n, 2);
    n = 0;
    assert_int_equal(kiln_key_expand("hstu_fwd/e4m3*/d128/causal", "sm_80", count_key_fp8, &n),
                     KILN_OK);
    assert_int_equal(n, 2);
    /* the portable e4m3 key: impl 0, the 16-bit kernel's template */
    kiln_key pk;
    assert_int_equal(kiln__key_parse("hstu_fwd/sm_89/e4m3-fp16/d256/causal", NULL, &pk), KILN_OK);
    assert_int_equal(pk.impl, 0);
    assert_int_equal(pk.block_n, 16); /* next K and V tiles in registers: d256 needs 16 keys */
    char pre[1024];
    assert_true(kiln__key_prelude(&pk, pre, sizeof pre) > 0);
    assert_non_null(strstr(pre, "#include \"hstu_fwd.cu\""));
    assert_non_null(strstr(pre, "#define KILN_DTYPE 3\n"));
    assert_non_null(strstr(pre, "#define KILN_OUT_DTYPE 1\n"));
    assert_int_equal(kiln__key_parse("hstu_fwd/sm_90a/e4m3/d128/causal/mma", NULL, &pk), KILN_OK);
    assert_int_equal(pk.impl, 0);
}

struct bad_case {
    const char *key, *arch;
    kiln_status status;
    const char *needle1, *needle2;
};

static void bad_keys_name_the_field(void **state)
{
    (void)state;
    static const struct bad_case cases[] = {
        {"mha_fwd/sm_90a/bf16/d128/causal", NULL, KILN_EBADARG, "family", "mha_fwd"},
        {"hstu_fwd/sm_9x/bf16/d128/causal", NULL, KILN_EBADARG, "arch", "sm_9x"},
        {"hstu_fwd/bf16/d128/causal", NULL, KILN_EBADARG, "arch", "missing"},
        {"hstu_fwd/sm_90a/bf17/d128/causal", NULL, KILN_EBADARG, "dtype", "bf17"},
        {"hstu_fwd/sm_90a/bf16/d100/causal", NULL, KILN_EBADARG, "head_dim", "100"},
        {"hstu_fwd/sm_90a/bf16/128/causal", NULL, KILN_EBADARG, "head_dim", "128"},
        {"hstu_fwd/sm_90a/bf16/d128/casual", NULL, KILN_EBADARG, "mask", "casual"},
        {"hstu_fwd/sm_90a/bf16/d128", NULL, KILN_EBADARG, "mask", "missing"},
        {"hstu_fwd/sm_90a/bf16/d128/causal/rob", NULL, KILN_EBADARG, "option", "rob"},
        {"hstu_fwd/sm_90a/bf16/d128/context", NULL, KILN_EBADARG, "context", "causal"},
        {"hstu_fwd/sm_90a/bf16/d128/target", NULL, KILN_EBADARG, "target", "causal"},
        {"hstu_fwd/sm_90a/bf16/d128/causal+local+target", NULL, KILN_EBADARG, "local",
         "target"},
        {"hstu_fwd/sm_90a/bf16/d128/causal+context+deltaq", NULL, KILN_EBADARG,
         "deltaq", "context"},
        {"hstu_fwd/sm_80/bf16/d128/causal+func", NULL, KILN_EBADARG, "func", "causal"},
        {"hstu_bwd/sm_80/bf16/d128/local+func", NULL, KILN_EBADARG, "func", "local"},
        {"hstu_fwd/sm_90a/bf16/d128/func/wgmma", NULL, KILN_EUNSUPPORTED, "func", "wgmma"},
        {"hstu_bwd/sm_90a/bf16/d128/func/wgmma", NULL, KILN_EUNSUPPORTED, "func", "wgmma"},
        {"hstu_fwd/sm_90a/e4m3/d128/func", NULL, KILN_EUNSUPPORTED, "func", "e4m3"},
        {"hstu_fwd/sm_90a/bf16/d128/funk", NULL, KILN_EBADARG, "mask", "funk"},
        {"hstu_fwd/sm_90a/e4m3/d32/causal", NULL, KILN_EUNSUPPORTED, "e4m3", "head_dim 32"},
        {"hstu_bwd/sm_90a/e4m3/d128/causal", NULL, KILN_EUNSUPPORTED, "e4m3", "forward only"},
        {"hstu_fwd/sm_90a/e4m3-e4m3/d128/causal", NULL, KILN_EBADARG, "dtype", "e4m3-e4m3"},
        {"hstu_fwd/sm_80/e4m3/d128/causal/wgmma", NULL, KILN_EUNSUPPORTED, "wgmma", "sm_80"},
        {"hstu_fwd/sm_75/bf16/d128/causal", NULL, KILN_EUNSUPPORTED, "sm_75", "sm_80"},
        {"hstu_fwd/sm_80a/bf16/d128/causal", NULL, KILN_EBADARG, "sm_80a", "arch"},
        {"hstu_fwd/sm_90a/bf16/d128/causal", "sm90", KILN_EBADARG, "arch", "sm90"},
        {"hstu_fwd/sm_90a/bf16/d128/causal/bm7", NULL, KILN_EBADARG, "bm7", "block_m"},
        {"hstu_fwd/sm_80/bf16/d128/causal/persist", NULL, KILN_EUNSUPPORTED, "persist",
         "sm_80"},
        {"hstu_fwd/sm_90a/bf16/d128/causal/mma/persist", NULL, KILN_EUNSUPPORTED, "persist",
         "mma"},
        {"hstu_fwd/sm_90a/bf16/d128/causal/rab/persist", NULL, KILN_EUNSUPPORTED, "persist",
         "rab"},
        {"hstu_fwd/sm_90a/bf16/d128/causal/rab/wgmma/persist", NULL, KILN_EUNSUPPORTED,
         "persist", "rab"},
        {"hstu_fwd/sm_90a/e4m3/d128/causal/persist", NULL, KILN_EUNSUPPORTED, "persist",
         "e4m3"},
        {"hstu_bwd/sm_90a/bf16/d128/causal/persist", NULL, KILN_EBADARG, "persist",
         "hstu_fwd only"},
        {"hstu_fwd/sm_90a/bf16/d128/causal/persistent", NULL, KILN_EBADARG, "option",
         "persistent"},
        {"", NULL, KILN_EBADARG, "family", "''"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kiln_key k;
        kiln_status s = kiln__key_parse(cases[i].key, cases[i].arch, &k);
        const char *msg = kiln_last_error();
        if (s != cases[i].status || !strstr(msg, cases[i].needle1) ||
            !strstr(msg, cases[i].needle2))
            fail_msg("key '%s': status %s, message '%s'; wanted %s with '%s' and '%s'",
                     cases[i].key, kiln_status_name(s), msg,
                     kiln_status_name(cases[i].status), cases[i].needle1,
                     cases[i].needle2);
    }
}

static void parser_survives_random_text(void **state)
{
    (void)state;
    static const char alphabet[] = "hstu_fwd/sm90abf16d2+causaltrgexnoqb*0123/";
    uint64_t x = 0x9E3779B97F4A7C15ull;
    char buf[300];
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        size_t n = (size_t)(x % 280);
        for (size_t j = 0; j < n; j++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf[j] = alphabet[x % (sizeof alphabet - 1)];
        }
        buf[n] = '\0';
        kiln_key k;
        char again[160];
        if (kiln__key_parse(buf, NULL, &k) == KILN_OK) {
            /* anything accepted must round trip through its canonical form */
            assert_true(kiln__key_format(&k, again, sizeof again) > 0);
            kiln_key k2;
            assert_int_equal(kiln__key_parse(again, NULL, &k2), KILN_OK);
            assert_memory_equal(&k, &k2, sizeof k);
        } else {
            assert_true(strlen(kiln_last_error()) > 0);
        }
    }
}

static void ident_covers_compiler_and_templates(void **state)
{
    (void)state;
    kiln_key k = base_key();
    kiln_ident a, b, c;
    kiln__ident_build(&k, "13.0", &a);
    kiln__ident_build(&k, "13.0", &b);
    kiln__ident_build(&k, "13.1", &c);
    assert_memory_equal(a.bytes, b.bytes, KILN_IDENT_BYTES);
    assert_memory_equal(a.hash, b.hash, 16);
    assert_memory_not_equal(a.bytes, c.bytes, KILN_IDENT_BYTES);
    assert_memory_not_equal(a.hash, c.hash, 16);
    kiln_key k2 = k;
    k2.arch_a = 0; /* sm_90 vs sm_90a must never share a cubin */
    kiln__ident_build(&k2, "13.0", &c);
    assert_memory_not_equal(a.hash, c.hash, 16);
}

static int count_key(const char *key, void *user)
{
    (void)key;
    (*(int *)user)++;
    return 0;
}

static void expand_patterns(void **state)
{
    (void)state;
    int n = 0;
    assert_int_equal(kiln_key_expand("hstu_fwd/sm_90a/bf16/d128/causal+*", NULL,
                                     count_key, &n),
                     KILN_OK);
    /* causal + {context, target, context+target, local, deltaq, local+deltaq}
     * x {rab 0, rab 1, rab 0 with the persistent grid} */
    assert_int_equal(n, 18);
    n = 0; /* causal and the six above, none with rab */
    assert_int_equal(kiln_key_expand("hstu_fwd/sm_90a/bf16/d128/causal*/persist", NULL,
                                     count_key, &n),
                     KILN_OK);
    assert_int_equal(n, 7);
    assert_int_equal(kiln_key_expand("hstu_fwd/sm_80/bf16/*/persist", NULL, count_key, &n),
                     KILN_EBADARG);
    assert_int_equal(kiln_key_expand("hstu_*/sm_90a/e4m3*/persist", NULL, count_key, &n),
                     KILN_EBADARG);
    assert_int_equal(kiln_key_expand("hstu_bwd/sm_90a/*/persist", NULL, count_key, &n),
                     KILN_EBADARG);
    n = 0;
    assert_int_equal(kiln_key_expand("hstu_fwd/*", "sm_80", count_key, &n), KILN_OK);
    int per_arch = n;
    /* 2 dtypes x 4 dims x 13 masks x 2 rab, and e4m3: 2 out dtypes x 3 dims
     * x 11 masks x 2 rab */
    assert_true(per_arch > 0 && per_arch <= 2 * 4 * 13 * 2 + 2 * 3 * 11 * 2);
    n = 0; /* func, deltaq+func x rab {0, 1} */
    assert_int_equal(kiln_key_expand("hstu_fwd/sm_90a/bf16/d128/*func*", NULL, count_key, &n),
                     KILN_OK);
    assert_int_equal(n, 4);
    n = 0;
    assert_int_equal(kiln_key_expand("hstu_fwd/bf16/*", "sm_90a", count_key, &n),
                     KILN_OK);
    assert_true(n > 0 && n <= per_arch);
    assert_int_equal(kiln_key_expand("hstu_fwd/sm_90a/bf17/*", NULL, count_key, &n),
                     KILN_EBADARG);
    assert_non_null(strstr(kiln_last_error(), "bf17"));
}

/* ------------------------------------------------------ parameter checks */

static kiln_hstu_fwd_params good_params(void)
{
    kiln_hstu_fwd_params p;
    kiln_hstu_fwd_params_init(&p);
    p.dtype = KILN_DTYPE_BF16;
    p.head_dim = 128;
    p.num_heads = 4;
    p.batch = 2;
    p.total_q = p.total_k = 100;
    p.q = 0x10000;
    p.k = 0x20000;
    p.v = 0x30000;
    p.out = 0x40000;
    p.q_row_stride = p.k_row_stride = p.v_row_stride = p.out_row_stride = 4 * 128;
    p.q_head_stride = p.k_head_stride = p.v_head_stride = p.out_head_stride = 128;
    p.seq_offsets_q = 0x50000;
    p.max_seqlen_q = p.max_seqlen_k = 64;
    p.window_left = -1;
    p.window_right = 0;
    return p;
}

typedef void (*mutate_fn)(kiln_hstu_fwd_params *p);
#define MUT(name, body)                                                        \
    static void name(kiln_hstu_fwd_params *p) { body; }
MUT(m_size, p->struct_size = 8)
MUT(m_dtype, p->dtype = 7)
MUT(m_dim, p->head_dim = 100)
MUT(m_heads0, p->num_heads = 0)
MUT(m_heads_big, p->num_heads = 70000)
MUT(m_batch_neg, p->batch = -1)
MUT(m_batch_big, p->batch = 65536)
MUT(m_q_null, p->q = 0)
MUT(m_out_null, p->out = 0)
MUT(m_q_misaligned, p->q = 0x10002)
MUT(m_stride, p->k_row_stride = 3)
MUT(m_overflow, { p->total_q = INT64_MAX / 4; p->offsets_type = KILN_INDEX_INT64; })
MUT(m_out_overlap, p->out_row_stride = 128)
MUT(m_offsets_null, p->seq_offsets_q = 0)
MUT(m_offsets_type, p->offsets_type = 5)
MUT(m_window, p->window_left = -2)
MUT(m_context_nocausal, { p->num_contexts = 0x60000; p->window_right = -1; })
MUT(m_target_group, { p->num_targets = 0x60000; p->target_group_size = 0; })
MUT(m_target_local, { p->num_targets = 0x60000; p->window_left = 8; })
MUT(m_deltaq_target, { p->num_targets = 0x60000; p->is_delta_q = 1; })
MUT(m_rab_heads, { p->rab = 0x70000; p->rab_heads = 3; p->rab_row_stride = 64; })
MUT(m_alpha, p->alpha = 1.0f / 0.0f)
MUT(m_scaling, p->scaling_seqlen = -1)
MUT(m_maxlen, p->max_seqlen_q = -5)
MUT(m_int32_total, { p->total_q = 3000000000ll; p->q_row_stride = 512; })
#define FUNC_OK p->window_right = -1, p->func = 0x80000, p->n_func = 3, p->func_stride = 356
MUT(m_func_even, { FUNC_OK; p->n_func = 4; })
MUT(m_func_big, { FUNC_OK; p->n_func = 301; })
MUT(m_func_align, { FUNC_OK; p->func = 0x80002; })
MUT(m_func_stride, { FUNC_OK; p->func_stride = 99; })
MUT(m_func_causal, { FUNC_OK; p->window_right = 0; })
MUT(m_func_ctx, { FUNC_OK; p->num_contexts = 0x60000; })
MUT(m_func_tgt, { FUNC_OK; p->num_targets = 0x60000; })
MUT(m_func_null, { FUNC_OK; p->func = 0; })
MUT(m_func_fp8, { FUNC_OK; p->dtype = KILN_DTYPE_E4M3; p->out_dtype = KILN_DTYPE_BF16; })

static void bad_params_name_the_field(void **state)
{
    (void)state;
    static const struct {
        mutate_fn fn;
        const char *needle;
    } cases[] = {
        {m_size, "struct_size"},      {m_dtype, "dtype"},
        {m_dim, "head_dim 100"},      {m_heads0, "num_heads 0"},
        {m_heads_big, "num_heads 70000"}, {m_batch_neg, "batch -1"},
        {m_batch_big, "batch 65536"}, {m_q_null, "q is NULL"},
        {m_out_null, "out is NULL"},  {m_q_misaligned, "q 0x10002"},
        {m_stride, "k_row_stride 3"}, {m_overflow, "overflow"},
        {m_out_overlap, "overlap"},   {m_offsets_null, "seq_offsets_q"},
        {m_offsets_type, "offsets_type 5"}, {m_window, "window_left -2"},
        {m_context_nocausal, "num_contexts"}, {m_target_group, "target_group_size 0"},
        {m_target_local, "num_targets"}, {m_deltaq_target, "is_delta_q"},
        {m_rab_heads, "rab_heads 3"}, {m_alpha, "alpha"},
        {m_scaling, "scaling_seqlen"}, {m_maxlen, "max_seqlen_q -5"},
        {m_int32_total, "int64 offsets"},
        {m_func_even, "n_func 4"},    {m_func_big, "n_func 301"},
        {m_func_align, "func 0x80002"}, {m_func_stride, "func_stride 99"},
        {m_func_causal, "window"},    {m_func_ctx, "num_contexts"},
        {m_func_tgt, "num_targets"},  {m_func_null, "func is NULL"},
        {m_func_fp8, "e4m3"},
    };
    kiln_hstu_fwd_params p = good_params();
    kiln_key k;
    kiln_hstu_kparams kp;
    kiln_launch l;
    int empty;
    assert_int_equal(kiln__hstu_fwd_plan(&p, 90, 1, &k, &kp, &l, &empty), KILN_OK);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        p = good_params();
        cases[i].fn(&p);
        kiln_status s = kiln__hstu_fwd_plan(&p, 90, 1, &k, &kp, &l, &empty);
        if (s == KILN_OK || !strstr(kiln_last_error(), cases[i].needle))
            fail_msg("case %zu: status %s, message '%s'; wanted '%s'", i,
                     kiln_status_name(s), kiln_last_error(), cases[i].needle);
    }
}

static void plan_derives_masks_and_geometry(void **state)
{
    (void)state;
    kiln_hstu_fwd_params p = good_params();
    kiln_key k;
    kiln_hstu_kparams kp;
    kiln_launch l;
    int empty;
    struct {
        int wl, wr;
        unsigned mask;
    } w[] = {{-1, -1, 0},
             {-1, 0, KILN_MASK_CAUSAL},
             {16, 0, KILN_MASK_CAUSAL | KILN_MASK_LOCAL},
             {16, 4, KILN_MASK_LOCAL},
             {-1, 4, KILN_MASK_LOCAL}};
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) {
        p.window_left = w[i].wl;
        p.window_right = w[i].wr;
        assert_int_equal(kiln__hstu_fwd_plan(&p, 80, 0, &k, &kp, &l, &empty), KILN_OK);
        assert_int_equal(k.mask, w[i].mask);
    }
    p = good_params();
    p.num_targets = 0x60000;
    p.num_contexts = 0x60100;
    p.target_group_size = 3;
    assert_int_equal(kiln__hstu_fwd_plan(&p, 90, 1, &k, &kp, &l, &empty), KILN_OK);
    assert_int_equal(k.mask, KILN_MASK_CAUSAL | KILN_MASK_CONTEXT | KILN_MASK_TARGET);
    assert_int_equal(empty, 0);
    assert_int_equal(l.grid[0], (64 + k.block_m - 1) / k.block_m);
    assert_int_equal(l.grid[1], 4);
    assert_int_equal(l.grid[2], 2);
    assert_int_equal(l.block[0], k.warps * 32);
    assert_int_equal(kp.target_group_size, 3);
    assert_int_equal(kp.seq_offsets_k, p.seq_offsets_q);
    assert_true(kp.inv_scaling == 1.0f / 64);
    /* func: its own mask, its fields in the kernel's params; never wgmma */
    p = good_params();
    p.window_right = -1;
    p.func = 0x80000;
    p.n_func = 5;
    p.func_stride = 100;
    for (int impl = -1; impl <= 1; impl++) {
        assert_int_equal(kiln__hstu_fwd_plan_impl(&p, 90, 1, impl, &k, &kp, &l, &empty),
                         KILN_OK);
        assert_int_equal(k.mask, KILN_MASK_FUNC);
        assert_int_equal(k.impl, 0);
    }
    assert_true(kp.func == 0x80000 && kp.n_func == 5 && kp.func_stride == 100);
    p.is_delta_q = 1;
    assert_int_equal(kiln__hstu_fwd_plan(&p, 80, 0, &k, &kp, &l, &empty), KILN_OK);
    assert_int_equal(k.mask, KILN_MASK_FUNC | KILN_MASK_DELTA_Q);
    p = good_params();
    assert_int_equal(kiln__hstu_fwd_plan(&p, 80, 0, &k, &kp, &l, &empty), KILN_OK);
    assert_true(kp.func == 0 && kp.n_func == 0 && kp.func_stride == 0);
    p = good_params();
    p.batch = 0;
    p.q = 0; /* nothing is read when there is nothing to do */
    assert_int_equal(kiln__hstu_fwd_plan(&p, 90, 1, &k, &kp, &l, &empty), KILN_OK);
    assert_int_equal(empty, 1);
}

/* The Hopper 16-bit forward comes in two modules, one per grid: "/persist"
 * names the persistent one; planning picks it by sequence length. */
static void persist_names_the_grid(void **state)
{
    (void)state;
    char buf[160], pre[1024];
    kiln_key k, b;
    assert_int_equal(kiln_key_canonical("hstu_fwd/bf16/d128/causal+target/persist", "sm_90a",
                                        buf, sizeof buf),
                     KILN_OK);
    assert_string_equal(buf, "hstu_fwd/sm_90a/bf16/d128/causal+target/persist");
    /* after a forced impl, before the tiles */
    assert_int_equal(kiln_key_canonical("hstu_fwd/sm_90a/fp16/d64/none/bn64/persist/wgmma",
                                        NULL, buf, sizeof buf),
                     KILN_OK);
    assert_string_equal(buf, "hstu_fwd/sm_90a/fp16/d64/none/persist/bm128/bn64/w12");
    assert_int_equal(kiln__key_parse("hstu_fwd/sm_90a/bf16/d128/causal/persist", NULL, &k),
                     KILN_OK);
    assert_int_equal(kiln__key_parse("hstu_fwd/sm_90a/bf16/d128/causal", NULL, &b),
                     KILN_OK);
    assert_int_equal(k.persist, 1);
    assert_int_equal(b.persist, 0); /* the default: a CTA per m-block */
    uint8_t ek[KILN_KEY_BYTES], eb[KILN_KEY_BYTES];
    kiln__key_encode(&k, ek);
    kiln__key_encode(&b, eb);
    assert_memory_not_equal(ek, eb, KILN_KEY_BYTES);
    assert_memory_equal(ek, eb, KILN_KEY_BYTES - 1);
    /* both preludes name the grid; other templates' preludes do not */
    assert_true(kiln__key_prelude(&k, pre, sizeof pre) > 0);
    assert_non_null(strstr(pre, "#define KILN_PERSIST 1\n"));
    assert_non_null(strstr(pre, "hstu_fwd_sm90.cu"));
    assert_true(kiln__key_prelude(&b, pre, sizeof pre) > 0);
    assert_non_null(strstr(pre, "#define KILN_PERSIST 0\n"));
    assert_int_equal(kiln__key_parse("hstu_fwd/sm_80/bf16/d128/causal", NULL, &b), KILN_OK);
    assert_true(kiln__key_prelude(&b, pre, sizeof pre) > 0);
    assert_null(strstr(pre, "KILN_PERSIST"));
    assert_int_equal(kiln__key_parse("hstu_fwd/sm_90a/e4m3/d128/causal", NULL, &b), KILN_OK);
    assert_true(kiln__key_prelude(&b, pre, sizeof pre) > 0);
    assert_null(strstr(pre, "KILN_PERSIST"));
    k.persist = 2;
    assert_int_equal(kiln__key_validate(&k), KILN_EBADARG);
    assert_non_null(strstr(kiln_last_error(), "persist 2"));

    /* planning: up to KILN_SM90_PERSIST_MAX_MBLOCKS m-blocks of 128 rows */
    static const struct {
        int arch, arch_a, impl, max_len, rab, dtype, persist;
    } c[] = {
        {90, 1, -1, 64, 0, KILN_DTYPE_BF16, 1},
        {90, 1, -1, 16 * 128, 0, KILN_DTYPE_FP16, 1},
        {90, 1, -1, 16 * 128 + 1, 0, KILN_DTYPE_BF16, 0},
        {90, 1, -1, 64, 1, KILN_DTYPE_BF16, 0},  /* rab: the Hopper kernel, blocks */
        {90, 1, 1, 64, 1, KILN_DTYPE_BF16, 0},   /* rab, Hopper forced: blocks */
        {90, 1, 0, 64, 0, KILN_DTYPE_BF16, 0},   /* portable forced */
        {80, 0, -1, 64, 0, KILN_DTYPE_BF16, 0},
        {90, 1, -1, 64, 0, KILN_DTYPE_E4M3, 0},  /* fp8: one grid */
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        kiln_hstu_fwd_params p = good_params();
        kiln_hstu_kparams kp;
        kiln_launch l;
        int empty;
        p.max_seqlen_q = p.max_seqlen_k = c[i].max_len;
        p.dtype = c[i].dtype;
        if (c[i].dtype == KILN_DTYPE_E4M3) p.out_dtype = KILN_DTYPE_BF16;
        if (c[i].rab) {
            p.rab = 0x70000;
            p.rab_row_stride = c[i].max_len;
        }
        kiln_status s = kiln__hstu_fwd_plan_impl(&p, c[i].arch, c[i].arch_a, c[i].impl, &k,
                                                 &kp, &l, &empty);
        if (s != KILN_OK || k.persist != c[i].persist)
            fail_msg("case %zu: %s, persist %d; wanted %d", i, kiln_last_error(), k.persist,
                     c[i].persist);
        assert_int_equal(kiln__key_validate(&k), KILN_OK);
        if (k.impl == 1 && k.dtype != KILN_DTYPE_E4M3) {
            assert_int_equal(k.persist,
                             kiln__hstu_fwd_sm90_persistent(kp.num_m_blocks, k.rab));
            unsigned g[3];
            kiln__hstu_fwd_sm90_grid(132, kp.batch, kp.num_heads, kp.num_m_blocks, k.persist, g);
            if (k.persist) assert_true(g[1] == 1 && g[2] == 1);
            else assert_true(g[0] == (unsigned)kp.num_m_blocks && g[1] == 4 && g[2] == 2);
        }
        /* kiln_hstu_fwd_key reports the key the call runs */
        char a[16];
        kiln__arch_format(c[i].arch, c[i].arch_a, a, sizeof a);
        if (c[i].impl < 0) {
            assert_int_equal(kiln_hstu_fwd_key(&p, a, buf, sizeof buf), KILN_OK);
            assert_int_equal(strstr(buf, "/persist") != NULL, c[i].persist);
        }
    }
    /* an empty call's key still follows its max_seqlen_q */
    kiln_hstu_fwd_params p = good_params();
    p.batch = 0;
    p.max_seqlen_q = 4096;
    assert_int_equal(kiln_hstu_fwd_key(&p, "sm_90a", buf, sizeof buf), KILN_OK);
    assert_string_equal(buf, "hstu_fwd/sm_90a/bf16/d128/causal");
    p.max_seqlen_q = 100;
    assert_int_equal(kiln_hstu_fwd_key(&p, "sm_90a", buf, sizeof buf), KILN_OK);
    assert_string_equal(buf, "hstu_fwd/sm_90a/bf16/d128/causal/persist");
}

/* A func backward asked for the Hopper kernel ($KILN_BWD_IMPL=wgmma) gets
 * the portable one, like every call that kernel does not serve. */
static void func_backward_stays_portable(void **state)
{
    (void)state;
    kiln_bwd_plan plan;
    kiln_hstu_bwd_params bp;
    kiln_hstu_bwd_params_init(&bp);
    bp.fwd = good_params();
    bp.fwd.head_dim = 64;
    bp.fwd.q_row_stride = bp.fwd.k_row_stride = bp.fwd.v_row_stride = 4 * 64;
    bp.fwd.q_head_stride = bp.fwd.k_head_stride = bp.fwd.v_head_stride = 64;
    bp.fwd.out = 0;
    bp.dout = 0x90000;
    bp.dq = 0xa0000;
    bp.dk = 0xb0000;
    bp.dv = 0xc0000;
    bp.dout_row_stride = bp.dq_row_stride = bp.dk_row_stride = bp.dv_row_stride = 4 * 64;
    bp.dout_head_stride = bp.dq_head_stride = bp.dk_head_stride = bp.dv_head_stride = 64;
    bp.workspace = 0x100000;
    assert_int_equal(kiln_hstu_bwd_workspace_size(&bp, &bp.workspace_bytes), KILN_OK);
    bp.fwd.window_right = -1;
    bp.fwd.func = 0x80000;
    bp.fwd.n_func = 3;
    bp.fwd.func_stride = 100;
    for (int impl = -1; impl <= 1; impl++) {
        assert_int_equal(kiln__hstu_bwd_plan_impl(&bp, 90, 1, impl, &plan), KILN_OK);
        assert_int_equal(plan.key.impl, 0);
        assert_int_equal(plan.key.mask, KILN_MASK_FUNC);
    }
    assert_true(plan.kp.f.func == 0x80000 && plan.kp.f.n_func == 3 &&
                plan.kp.f.func_stride == 100);
}

static void bad_params_rejected_without_gpu(void **state)
{
    (void)state;
    kiln_engine_options o;
    kiln_engine_options_init(&o);
    o.flags = KILN_ENGINE_NO_DISK_CACHE;
    kiln_engine *e;
    assert_int_equal(kiln_engine_create(&o, &e), KILN_OK);
    kiln_hstu_fwd_params p = good_params();
    p.head_dim = 96;
    assert_int_equal(kiln_hstu_fwd(e, &p, NULL), KILN_EBADARG);
    assert_non_null(strstr(kiln_last_error(), "head_dim 96"));
    assert_int_equal(kiln_hstu_fwd(e, NULL, NULL), KILN_EBADARG);
    assert_int_equal(kiln_hstu_fwd(NULL, &p, NULL), KILN_EBADARG);
    kiln_engine_destroy(e);
}

static void status_strings(void **state)
{
    (void)state;
    assert_string_equal(kiln_status_name(KILN_OK), "KILN_OK");
    assert_string_equal(kiln_status_name(KILN_EBADARG), "KILN_EBADARG");
    assert_string_equal(kiln_status_string(KILN_ECOMPILE), "kernel compilation failed");
    assert_non_null(kiln_status_name((kiln_status)999));
    assert_int_equal(kiln_version_number(), KILN_VERSION_NUMBER);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(encoding_is_fixed_and_tagged),
        cmocka_unit_test(every_field_changes_encoding),
        cmocka_unit_test(text_roundtrips_for_every_key),
        cmocka_unit_test(fp8_keys_name_the_out_dtype),
        cmocka_unit_test(persist_names_the_grid),
        cmocka_unit_test(canonical_form_normalizes),
        cmocka_unit_test(bad_keys_name_the_field),
        cmocka_unit_test(parser_survives_random_text),
        cmocka_unit_test(ident_covers_compiler_and_templates),
        cmocka_unit_test(expand_patterns),
        cmocka_unit_test(bad_params_name_the_field),
        cmocka_unit_test(plan_derives_masks_and_geometry),
        cmocka_unit_test(func_backward_stays_portable),
        cmocka_unit_test(bad_params_rejected_without_gpu),
        cmocka_unit_test(status_strings),
    };
    return cmocka_run_group_tests_name("key", tests, NULL, NULL);
}
