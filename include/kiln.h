/*
 * kiln.h -- the whole public API of kiln, a runtime that compiles GPU attention
 * kernels just in time (NVRTC), caches the cubins in SQLite and launches them
 * through the CUDA Driver API.  If it is not in this header, it is not API.
 *
 * Conventions
 *   - Every function returns a kiln_status.  KILN_OK is 0.  On failure a
 *     message naming the cause (the bad field and its value, the NVRTC log,
 *     the CUresult name, the SQLite message) is kept for kiln_last_error().
 *   - Outputs go through out-parameters and are written on success only.
 *   - Device memory is passed as uint64_t (a CUdeviceptr).  Streams are passed
 *     as void* (a CUstream; NULL is the legacy default stream).
 *   - The library never aborts and never exits the process.
 *
 * Thread safety
 *   - A kiln_engine may be used from any number of threads at once, except
 *     kiln_engine_destroy(), which must not race with any other call on it.
 *   - kiln_last_error() is per thread.
 *   - Everything else that takes no engine is thread-safe.
 */
#ifndef KILN_H
#define KILN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(KILN_BUILDING) && defined(__GNUC__)
#define KILN_API __attribute__((visibility("default")))
#else
#define KILN_API
#endif

/* ===================================================================== */
/* Version                                                                */
/* ===================================================================== */

#define KILN_VERSION_MAJOR 0
#define KILN_VERSION_MINOR 1
#define KILN_VERSION_PATCH 0
#define KILN_VERSION_NUMBER \
    (KILN_VERSION_MAJOR * 10000 + KILN_VERSION_MINOR * 100 + KILN_VERSION_PATCH)

/* The library's KILN_VERSION_NUMBER; compare with the header's to detect a
 * mismatch between the header you compiled against and the library loaded. */
KILN_API unsigned kiln_version_number(void);
/* "0.1.0".  Static storage. */
KILN_API const char *kiln_version_string(void);

/* ===================================================================== */
/* Status codes                                                           */
/* ===================================================================== */

/* X(name, value, description).  Values are never renumbered. */
#define KILN_STATUS_LIST(X)                                                    \
    X(KILN_OK, 0, "success")                                                   \
    X(KILN_EBADARG, 1, "invalid argument")                                     \
    X(KILN_ENOMEM, 2, "out of host memory")                                    \
    X(KILN_EUNSUPPORTED, 3, "unsupported combination")                         \
    X(KILN_ENODEV, 4, "no CUDA driver or device")                              \
    X(KILN_ECOMPILE, 5, "kernel compilation failed")                           \
    X(KILN_ECUDA, 6, "CUDA driver error")                                      \
    X(KILN_ECACHE, 7, "cache error")                                           \
    X(KILN_ENOTFOUND, 8, "not found")                                          \
    X(KILN_EIO, 9, "input/output error")                                       \
    X(KILN_EINTERNAL, 10, "internal error")

typedef enum kiln_status {
#define KILN_X_(name, value, text) name = value,
    KILN_STATUS_LIST(KILN_X_)
#undef KILN_X_
} kiln_status;

/* "KILN_EBADARG".  Static storage; "KILN_UNKNOWN" for a value not listed. */
KILN_API const char *kiln_status_name(kiln_status s);
/* "invalid argument".  Static storage. */
KILN_API const char *kiln_status_string(kiln_status s);
/* The detail of the last failure on this thread, or "" if none.  Valid until
 * the next kiln call on this thread.  Never NULL. */
KILN_API const char *kiln_last_error(void);

/* ===================================================================== */
/* Engine                                                                 */
/* ===================================================================== */

typedef struct kiln_engine kiln_engine; /* opaque */

enum kiln_log_level {
    KILN_LOG_ERROR = 0,
    KILN_LOG_WARN = 1, /* default */
    KILN_LOG_INFO = 2,
    KILN_LOG_DEBUG = 3 /* explains every lookup */
};

enum kiln_engine_flags {
    /* Keep compiled kernels in memory only; never open a cache database. */
    KILN_ENGINE_NO_DISK_CACHE = 1u << 0,
    /* Never compile: a cache miss fails with KILN_ENOTFOUND. */
    KILN_ENGINE_NO_COMPILE = 1u << 1,
    /* Kernels check device-side inputs (offsets) and record what they find;
     * see kiln_engine_debug_report(). */
    KILN_ENGINE_DEBUG_CHECKS = 1u << 2
};

typedef struct kiln_engine_options {
    uint32_t struct_size; /* sizeof(kiln_engine_options); set by _init */
    /* Directory of the writable cache (kiln.db inside).  NULL: $KILN_CACHE_DIR,
     * else $XDG_CACHE_HOME/kiln, else ~/.cache/kiln.  The string is copied. */
    const char *cache_dir;
    /* Read-only layers, ':'-separated directories or .db files, searched
     * before the writable cache.  NULL: $KILN_CACHE_RO.  Copied. */
    const char *ro_layers;
    /* One of kiln_log_level; -1: $KILN_LOG (error|warn|info|debug), else warn. */
    int log_level;
    uint32_t flags; /* kiln_engine_flags */
    /* Where log lines go; NULL: stderr.  Called from any thread. */
    void (*log_fn)(int level, const char *line, void *user);
    void *log_user;
} kiln_engine_options;

/* Fill *opts with the defaults.  Returns KILN_EBADARG for NULL. */
KILN_API kiln_status kiln_engine_options_init(kiln_engine_options *opts);

/* Create an engine.  opts may be NULL (defaults).  Opening the cache never
 * fails the call: an unusable cache location is reported once as a warning and
 * the engine keeps kernels in memory.  The CUDA driver is not touched until the
 * first launch, so an engine can be created on a machine with no GPU.
 * On success *out owns the engine; release it with kiln_engine_destroy(). */
KILN_API kiln_status kiln_engine_create(const kiln_engine_options *opts,
                                        kiln_engine **out);
/* Destroy an engine; NULL does nothing.  Kernels launched through it must have
 * completed (the loaded modules are unloaded). */
KILN_API kiln_status kiln_engine_destroy(kiln_engine *engine);

/* ===================================================================== */
/* Kernel keys and prewarming                                             */
/* ===================================================================== */

/* Compile the kernel named by key_text (e.g.
 * "hstu_fwd/sm_90a/bf16/d128/causal+target/rab") and store it in the cache,
 * without a GPU.  arch ("sm_80", "sm_90a", ...) overrides the key's arch; it
 * may be NULL when the key names one.  KILN_EBADARG names the bad field of a
 * malformed key; KILN_ECOMPILE carries the NVRTC log.  Thread-safe; two
 * threads prewarming one key compile it once. */
KILN_API kiln_status kiln_prewarm(kiln_engine *engine, const char *key_text,
                                  const char *arch);

/* Canonicalize a key: parse key_text (arch override as for kiln_prewarm),
 * fill defaults (tile sizes), validate, and write the canonical text form into
 * buf (NUL-terminated; KILN_EBADARG if it does not fit). */
KILN_API kiln_status kiln_key_canonical(const char *key_text, const char *arch,
                                        char *buf, size_t buf_size);

/* Write a multi-line explanation of a key into buf: each tagged field of its
 * canonical encoding, the template digest, the compile options and the hash. */
KILN_API kiln_status kiln_key_explain(kiln_engine *engine,
                                      const char *key_text, const char *arch,
                                      char *buf, size_t buf_size);

/* Expand a pattern into every valid canonical key, calling fn for each; stop
 * early if fn returns non-zero.  '*', '?' and [...] match as in fnmatch(3)
 * over the text form, so "hstu_fwd/sm_90a/bf16/d*" or
 * "hstu_fwd/sm_90a/bf16/d128/causal+*" select families of keys.  A key
 * without wildcards expands to its own canonical form. */
KILN_API kiln_status kiln_key_expand(const char *pattern, const char *arch,
                                     int (*fn)(const char *key, void *user),
                                     void *user);

/* ===================================================================== */
/* Cache inspection (for the CLI and for tools)                           */
/* ===================================================================== */

typedef struct kiln_cache_entry {
    const char *key;          /* canonical text form */
    const char *hash;         /* 32 hex digits */
    const char *layer;        /* path of the database holding it */
    const char *nvrtc;        /* NVRTC version that compiled it */
    const char *options;      /* compile options */
    const char *prelude;      /* the specialization prelude */
    const char *log;          /* the NVRTC log (may be "") */
    uint64_t bytes;           /* cubin size */
    int regs, smem, spills;   /* per thread / static bytes / spill bytes */
    double compile_ms;
    int64_t created, last_used; /* unix seconds */
    int64_t hits;
} kiln_cache_entry;

/* Visit the entries of every layer whose key matches pattern (NULL: all;
 * fnmatch(3) wildcards over the text form, '*' also crossing '/').  The entry's
 * strings are valid only during the callback.  fn returning non-zero stops. */
KILN_API kiln_status kiln_cache_list(kiln_engine *engine, const char *pattern,
                                     int (*fn)(const kiln_cache_entry *e,
                                               void *user),
                                     void *user);

typedef struct kiln_cache_stats {
    const char *path;       /* writable database, or "" in memory-only mode */
    int writable;           /* 1 if the writable layer is open */
    int64_t entries;        /* rows over all layers */
    int64_t bytes;          /* cubin bytes over all layers */
    int64_t file_bytes;     /* size of the writable database file(s) */
    int64_t hits;           /* sum of hit counters */
    int ro_layers;          /* read-only layers open */
    /* this engine's counters since creation */
    int64_t mem_hits, disk_hits, compiles, rejected;
} kiln_cache_stats;

/* Strings in *out stay valid until the engine is destroyed. */
KILN_API kiln_status kiln_cache_stats_get(kiln_engine *engine,
                                          kiln_cache_stats *out);

typedef struct kiln_cache_verify_report {
    int64_t checked;  /* rows read */
    int64_t bad;      /* rows whose length, digest, key or ELF check failed */
    int64_t dropped;  /* bad rows deleted (writable layer only) */
    int integrity_ok; /* PRAGMA integrity_check said ok on every layer */
} kiln_cache_verify_report;

/* Check every row of every layer (key, length, digest, ELF) and run SQLite's
 * integrity check.  With drop != 0, bad rows of the writable layer are
 * deleted.  fn, if not NULL, is called with each bad key and the reason. */
KILN_API kiln_status kiln_cache_verify(kiln_engine *engine, int drop,
                                       kiln_cache_verify_report *out,
                                       void (*fn)(const char *key,
                                                  const char *why, void *user),
                                       void *user);

/* Delete the writable layer's rows matching pattern (NULL: all).  *removed
 * (may be NULL) receives the count. */
KILN_API kiln_status kiln_cache_clear(kiln_engine *engine, const char *pattern,
                                      int64_t *removed);

/* Delete the least recently used rows of the writable layer until its cubins
 * total at most max_bytes (>= 0).  *removed (may be NULL) receives the count.
 * Other processes keep working: a kernel whose row vanishes is a miss. */
KILN_API kiln_status kiln_cache_evict(kiln_engine *engine, int64_t max_bytes,
                                      int64_t *removed);

/* Bake the cache database at src (e.g. kiln_info's cache_path) into out, a
 * database fit for a read-only layer ($KILN_CACHE_RO): src is read through
 * SQLite (its -wal included), copied, rows that would not be served are
 * dropped, and the copy is checkpointed, switched to journal_mode DELETE,
 * integrity-checked, closed, made 0444 and renamed over out.  It never
 * finishes while a -wal remains: KILN_ECACHE if out's "-wal" exists
 * beforehand or the copy's would be left behind (out is then untouched).
 * *rows (may be NULL) receives the rows baked.  KILN_EBADARG for NULL or
 * empty paths or out naming src.  Thread-safe; needs no engine. */
KILN_API kiln_status kiln_cache_bake(const char *src, const char *out,
                                     int64_t *rows);

/* Copy one entry's cubin to a file (for cuobjdump). */
KILN_API kiln_status kiln_cache_export(kiln_engine *engine, const char *key_text,
                                       const char *path);

/* ===================================================================== */
/* Environment information                                                */
/* ===================================================================== */

typedef struct kiln_info {
    int driver_version;         /* cuDriverGetVersion, 0 if no driver */
    char nvrtc_version[32];     /* "13.0", or "" if NVRTC cannot be found */
    char nvrtc_path[256];       /* where NVRTC is (or would be) loaded from */
    char template_digest[33];   /* XXH3-128 of the embedded templates, hex */
    char cache_path[512];       /* writable database, or "" */
    int device_count;           /* 0 without a GPU */
    struct {
        char name[96];
        char arch[16];          /* "sm_90a" */
        int sm_count;
        int64_t memory_bytes;
    } devices[8];
    char driver_error[256];     /* why device_count is 0, if it is */
} kiln_info;

/* Fill *out.  Loads the driver (if present) but does not create a context.
 * NVRTC's version is read without compiling anything. */
KILN_API kiln_status kiln_engine_info(kiln_engine *engine, kiln_info *out);

/* ===================================================================== */
/* HSTU attention (pointwise SiLU), jagged batches                        */
/* ===================================================================== */

enum kiln_dtype { KILN_DTYPE_FP16 = 1, KILN_DTYPE_BF16 = 2, KILN_DTYPE_E4M3 = 3 };
enum kiln_index_type { KILN_INDEX_INT32 = 0, KILN_INDEX_INT64 = 1 };

/*
 * out_i = sum over valid j of silu(alpha * (q_i . k_j + rab[b, h % rab_heads,
 *         pos(i), j])) / scaling_seqlen * v_j
 * (../SPEC.md section 1).  All tensors are in the jagged layout: q (total_q,
 * H, D), k and v (total_k, H, D), out (total_q, H, D); the last dimension is
 * contiguous, the other two strides are given in elements.
 *
 * Masks follow NVIDIA's HSTU interface: window (-1,-1) is no mask, (-1,0)
 * causal, (l,r) local ((l,0) local and causal).  num_contexts needs causal;
 * num_targets needs causal and target_group_size >= 1.  func (below) gives
 * each query row its own key intervals instead.
 *
 * Offsets live on the device and are not read by the host.  The kernel treats
 * a sequence whose offsets are negative, decreasing, past total_q/total_k or
 * longer than max_seqlen as empty (its rows are not written); with
 * KILN_ENGINE_DEBUG_CHECKS it also records the sequence.
 */
typedef struct kiln_hstu_fwd_params {
    uint32_t struct_size; /* sizeof(kiln_hstu_fwd_params); set by _init */
    int dtype;            /* kiln_dtype: FP16, BF16, or E4M3 (see out_dtype) */
    int head_dim;         /* 32, 64, 128 or 256 */
    int num_heads;        /* H (>= 1) */
    int batch;            /* B (>= 0) */
    int64_t total_q, total_k; /* rows of q / of k and v */
    uint64_t q, k, v, out;    /* device pointers, 16-byte aligned */
    int64_t q_row_stride, q_head_stride;
    int64_t k_row_stride, k_head_stride;
    int64_t v_row_stride, v_head_stride;
    int64_t out_row_stride, out_head_stride;
    uint64_t seq_offsets_q;   /* B+1 offsets (device) */
    uint64_t seq_offsets_k;   /* B+1 offsets; 0: same as seq_offsets_q */
    int offsets_type;         /* kiln_index_type of both offset arrays */
    int max_seqlen_q, max_seqlen_k; /* >= every sequence's length */
    int window_left, window_right;  /* -1: unbounded */
    uint64_t num_contexts;    /* int32[B] (device) or 0 */
    uint64_t num_targets;     /* int32[B] (device) or 0 */
    int target_group_size;    /* >= 1 when num_targets is given */
    float alpha;
    float scaling_seqlen;     /* 0: max_seqlen_q */
    uint64_t rab;             /* optional (B, rab_heads, max_seqlen_k, max_seqlen_k) */
    int rab_heads;            /* divides num_heads */
    int64_t rab_batch_stride, rab_head_stride, rab_row_stride;
    int is_delta_q;           /* queries are the last len_q positions */
    /* fp8.  out_dtype: 0 (same as dtype) or dtype for FP16/BF16; with
     * dtype KILN_DTYPE_E4M3 it must be KILN_DTYPE_FP16 or _BF16 (the type
     * of out and of rab).  descale_q/k/v: device pointers to one float
     * each, the per-tensor factors that turn e4m3 values into real ones
     * (q = descale_q * q8, ...); 0 means 1.0.  One float per tensor is
     * NVIDIA's quant_mode 5; descale_batch_stride / descale_head_stride
     * (below) make them per sequence (mode 4) or per sequence and head
     * (mode 3).  They must be 0 unless dtype is E4M3.  e4m3 takes head_dim
     * 64, 128 or 256 and row and head strides of q, k and v that are
     * multiples of 16 elements.  On sm_90a its kernel multiplies in e4m3
     * (wgmma) and rounds P = silu(s) to e4m3 for the second product
     * (SPEC.md: about 1% of typical and at most a few % of the largest
     * output); on other sm_80+ GPUs, and with $KILN_FWD_IMPL=mma, the
     * portable kernel widens e4m3 to the out dtype as it loads (exactly;
     * the NaN codes read as +-480) and keeps P in 16 bits. */
    int out_dtype;
    uint64_t descale_q, descale_k, descale_v;
    /* Arbitrary mask (NVIDIA's `func` argument): 0 (none), or a device
     * pointer to int32 values, 4-byte aligned, owned by the caller and read
     * by the kernels (so valid until the launch completes; kiln keeps no
     * reference).  Value f (0 <= f < n_func) of global query row g
     * (0 <= g < total_q) is func[f * func_stride + g]: NVIDIA's
     * (1, n_func, total_q + 256) tensor is func_stride = total_q + 256.
     * With F_f = func[f * func_stride + seq_offsets_q[b] + r], query r of
     * sequence b sees exactly the keys j (local, 0 <= j < len_k) in
     *   [0, F_0) U [F_1, F_2) U [F_3, F_4) U ... U [F_(n_func-2), F_(n_func-1))
     * Intervals may be empty (F_hi <= F_lo), overlap, or reach below 0 or
     * past len_k (clamped to [0, len_k)); they are integer ranges, never
     * Python-style negative indices.  With is_delta_q the query's row in rab
     * is its position r + len_k - len_q; the intervals stay indexed by r.
     * func is a mask family of its own: window must be (-1, -1) and
     * num_contexts, num_targets 0 (KILN_EBADARG otherwise); e4m3 has no func
     * kernel (KILN_EUNSUPPORTED).  n_func: odd, 1 to KILN_HSTU_FUNC_MAX;
     * func_stride: total_q to 2^31 - 1 elements.  Both must be 0 without
     * func.  Only the values of rows inside valid sequences are read.
     * func keys always run the portable (mma.sync) kernels. */
    uint64_t func;
    int n_func;
    int64_t func_stride;
    /* e4m3 only: sequence b, head h reads its factors at element
     * b * descale_batch_stride + h * descale_head_stride of descale_q, _k
     * and _v (all three laid out alike; the caller keeps them valid until
     * the launch completes).  0, 0 (the default): one float per tensor;
     * (num_heads, 1): a contiguous (B, H) array (NVIDIA's quant_mode 3);
     * (1, 0): one per sequence (quant_mode 4).  Both in [0, 2^31 - 1];
     * they must be 0 unless dtype is E4M3. */
    int64_t descale_batch_stride, descale_head_stride;
} kiln_hstu_fwd_params;

/* The largest n_func of kiln_hstu_fwd_params.func. */
#define KILN_HSTU_FUNC_MAX 255

/* Fill *p with defaults: struct_size, bf16, window (-1,-1), alpha 1,
 * target_group_size 1, rab_heads 1; everything else 0 (out_dtype 0: as
 * dtype; descales 0: 1.0; func 0: no arbitrary mask). */
KILN_API kiln_status kiln_hstu_fwd_params_init(kiln_hstu_fwd_params *p);

/* Launch HSTU forward on stream.  Validates every host-visible field first
 * (KILN_EBADARG naming the field), then finds or builds the kernel for the
 * current device's arch.  Asynchronous: returns after the launch is queued.
 * Uses the CUDA context current on the calling thread, else device 0's
 * primary context (made current).  A batch of 0 launches nothing. */
KILN_API kiln_status kiln_hstu_fwd(kiln_engine *engine,
                                   const kiln_hstu_fwd_params *params,
                                   void *stream);

/* The text key kiln_hstu_fwd would use for params on arch (NULL: the current
 * device), written into buf.  For prewarming exactly what a server will use. */
KILN_API kiln_status kiln_hstu_fwd_key(const kiln_hstu_fwd_params *params,
                                       const char *arch, char *buf,
                                       size_t buf_size);

/*
 * HSTU backward: dq, dk, dv (and d(rab) with drab) for the forward described
 * by fwd (fwd.out is not read).  With s = alpha * (q.k + rab) and
 * p = silu(s) / scaling_seqlen on valid pairs:
 *   dv_j = sum_i p_ij do_i,  ds_ij = (do_i . v_j) silu'(s_ij) alpha / scaling,
 *   dq_i = sum_j ds_ij k_j,  dk_j = sum_i ds_ij q_i,
 *   drab[b, hr, pos(i), j] = sum over heads h with h % rab_heads == hr of ds_ij.
 * dq, dk, dv, drab are written (not accumulated); drab entries of pairs that
 * no valid (i, j) touches are set to 0 within [0, len_k) x [0, len_k) of each
 * valid sequence.
 *
 * Scratch: the caller passes device memory of at least
 * kiln_hstu_bwd_workspace_size() bytes (16-byte aligned); kiln allocates
 * nothing, so the call can be captured in a CUDA graph.
 *
 * deterministic = 0 (default) accumulates dq with fp32 atomics (fastest);
 * deterministic = 1 gives bit-identical results run to run.
 */
typedef struct kiln_hstu_bwd_params {
    uint32_t struct_size;      /* sizeof(kiln_hstu_bwd_params); set by _init */
    kiln_hstu_fwd_params fwd;  /* inputs of the forward (fwd.out unused; the
                                  mask, fwd.func included, as there) */
    uint64_t dout;             /* (total_q, H, D) */
    int64_t dout_row_stride, dout_head_stride;
    uint64_t dq, dk, dv;       /* outputs, shaped like q, k, v */
    int64_t dq_row_stride, dq_head_stride;
    int64_t dk_row_stride, dk_head_stride;
    int64_t dv_row_stride, dv_head_stride;
    uint64_t drab;             /* optional: needs fwd.rab; shaped like rab */
    int64_t drab_batch_stride, drab_head_stride, drab_row_stride;
    int deterministic;
    uint64_t workspace;        /* device scratch */
    uint64_t workspace_bytes;
} kiln_hstu_bwd_params;

/* Defaults: struct_size, fwd initialized by kiln_hstu_fwd_params_init. */
KILN_API kiln_status kiln_hstu_bwd_params_init(kiln_hstu_bwd_params *p);
/* Scratch bytes kiln_hstu_bwd needs for p (depends on shapes, not pointers). */
KILN_API kiln_status kiln_hstu_bwd_workspace_size(const kiln_hstu_bwd_params *p,
                                                  uint64_t *bytes);
/* Launch HSTU backward on stream; validation, context and threading as for
 * kiln_hstu_fwd. */
KILN_API kiln_status kiln_hstu_bwd(kiln_engine *engine,
                                   const kiln_hstu_bwd_params *params,
                                   void *stream);

/* The text key kiln_hstu_bwd would use for params on arch (NULL: the current
 * device), written into buf; for prewarming. */
KILN_API kiln_status kiln_hstu_bwd_key(const kiln_hstu_bwd_params *params,
                                       const char *arch, char *buf,
                                       size_t buf_size);

/* With KILN_ENGINE_DEBUG_CHECKS: synchronizes the current context and
 * reports the number of sequences the kernels found invalid since the last
 * call (0 if none), then resets the count. */
KILN_API kiln_status kiln_engine_debug_report(kiln_engine *engine,
                                              int64_t *bad_sequences);

#ifdef __cplusplus
}
#endif
#endif /* KILN_H */
