/* util_rt.c -- see util_rt.h. */
#include "util_rt.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- driver */

/* The shared fake (tests/util_fakecu.c) with its defaults: one sm_90a device
 * named "fake", loads of anything but an ELF rejected with 218. */
const kiln_cu_api *rt_driver(void)
{
    kt_fakecu_config c;
    kt_fakecu_config_init(&c);
    c.error_string = "fake driver";
    kt_fakecu_configure(&c);
    return kt_fakecu_api();
}

void rt_driver_mode(int m) { kt_fakecu_set_mode(m); }

rt_driver_counts rt_driver_counts_get(void)
{
    kt_fakecu_counts k = kt_fakecu_counts_get();
    rt_driver_counts c = {k.loads, k.launches, k.calls};
    return c;
}

/* ---------------------------------------------------------------- log */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

void rt_log_fn(int level, const char *line, void *user)
{
    rt_log *l = user;
    pthread_mutex_lock(&log_mu);
    if (level >= 0 && level < 4) l->lines[level]++;
    if (level <= KILN_LOG_WARN) snprintf(l->last, sizeof l->last, "%s", line);
    pthread_mutex_unlock(&log_mu);
    if (getenv("RT_VERBOSE")) fprintf(stderr, "%s\n", line);
}

/* ---------------------------------------------------------------- files */

void rt_tmpdir(char *buf, size_t n, const char *tag)
{
    const char *t = getenv("TMPDIR");
    snprintf(buf, n, "%s/kiln-%s-XXXXXX", t && *t ? t : "/tmp", tag);
    if (!mkdtemp(buf)) buf[0] = '\0';
}

void rt_rmrf(const char *path)
{
    if (!path || !*path || strchr(path, '\'')) return;
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) fprintf(stderr, "rt: could not remove %s\n", path);
}

kiln_engine *rt_engine(const char *dir, uint32_t flags, rt_log *log)
{
    kiln_engine_options o;
    kiln_engine_options_init(&o);
    o.cache_dir = dir;
    o.ro_layers = "";
    o.flags = flags | (dir ? 0 : KILN_ENGINE_NO_DISK_CACHE);
    if (log) {
        o.log_fn = rt_log_fn;
        o.log_user = log;
        o.log_level = KILN_LOG_WARN;
    }
    kiln_engine *e = NULL;
    if (kiln_engine_create(&o, &e) != KILN_OK) return NULL;
    return e;
}

kiln_hstu_fwd_params rt_fwd_params(int head_dim, int causal)
{
    kiln_hstu_fwd_params p;
    kiln_hstu_fwd_params_init(&p);
    p.dtype = KILN_DTYPE_BF16;
    p.head_dim = head_dim;
    p.num_heads = 2;
    p.batch = 3;
    p.total_q = p.total_k = 300;
    p.q = 0x100000;
    p.k = 0x200000;
    p.v = 0x300000;
    p.out = 0x400000;
    p.q_row_stride = p.k_row_stride = p.v_row_stride = p.out_row_stride = 2 * head_dim;
    p.q_head_stride = p.k_head_stride = p.v_head_stride = p.out_head_stride = head_dim;
    p.seq_offsets_q = 0x500000;
    p.max_seqlen_q = p.max_seqlen_k = 200;
    p.window_left = -1;
    p.window_right = causal ? 0 : -1;
    p.alpha = 0.5f;
    return p;
}

int rt_have_nvrtc(void)
{
    kiln_info info;
    kiln_engine *e = rt_engine(NULL, 0, NULL);
    if (!e) return 0;
    int ok = kiln_engine_info(e, &info) == KILN_OK && info.nvrtc_version[0];
    kiln_engine_destroy(e);
    return ok;
}
