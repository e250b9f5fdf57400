/* kernels.c -- the in-memory kernel table, single-flight builds, and the
 * miss path: cache lookup, NVRTC compile, store, load.
 *
 * The table is open addressing over KILN_SLOTS slots, insert-only for the
 * engine's life.  A reader probes without a lock: a slot's hash and ident are
 * written before its state leaves EMPTY (release), and a READY slot's fields
 * never change.  Claiming a slot, and every state change, happens under the
 * engine mutex; waiters sleep on the engine's condition variable. */
#include <stdio.h>
#include <string.h>

#include "dispatch/key.h"
#include "runtime/engine.h"
#include "runtime/nvrtc.h"

static size_t slot_index(const uint8_t hash[16])
{
    uint64_t h;
    memcpy(&h, hash, 8);
    return (size_t)(h & (KILN_SLOTS - 1));
}

/* Lock-free probe; NULL if the ident is not in the table. */
static kiln_slot *probe(kiln_engine *e, const kiln_ident *id)
{
    size_t i = slot_index(id->hash);
    for (size_t n = 0; n < KILN_SLOTS; n++, i = (i + 1) & (KILN_SLOTS - 1)) {
        kiln_slot *s = &e->slots[i];
        int st = atomic_load_explicit(&s->state, memory_order_acquire);
        if (st == KILN_SLOT_EMPTY) return NULL;
        if (memcmp(s->ident, id->bytes, KILN_IDENT_BYTES) == 0) return s;
    }
    return NULL;
}

/* Under e->mu: the slot for id, claiming an empty one if absent. */
static kiln_slot *claim(kiln_engine *e, const kiln_ident *id)
{
    size_t i = slot_index(id->hash);
    for (size_t n = 0; n < KILN_SLOTS; n++, i = (i + 1) & (KILN_SLOTS - 1)) {
        kiln_slot *s = &e->slots[i];
        int st = atomic_load_explicit(&s->state, memory_order_relaxed);
        if (st == KILN_SLOT_EMPTY) {
            memcpy(s->hash, id->hash, 16);
            memcpy(s->ident, id->bytes, KILN_IDENT_BYTES);
            atomic_store_explicit(&s->state, KILN_SLOT_IDLE, memory_order_release);
            return s;
        }
        if (memcmp(s->ident, id->bytes, KILN_IDENT_BYTES) == 0) return s;
    }
    return NULL;
}

static kiln_status compile_and_store(kiln_engine *e, const kiln_key *key,
                                     const kiln_ident *id, void **cubin,
                                     size_t *len)
{
    char text[160], prelude[1024], options[256], mask[64], arch[16], digest[33];
    kiln__key_format(key, text, sizeof text);
    KILN_FAIL_IF(e->flags & KILN_ENGINE_NO_COMPILE, KILN_ENOTFOUND,
                 "kernel %s is not in the cache and compiling is off "
                 "(KILN_ENGINE_NO_COMPILE)",
                 text);
    kiln__key_prelude(key, prelude, sizeof prelude);
    kiln__key_options(key, options, sizeof options);
    kiln_compiled c;
    KILN_LOGI(&e->log, "compiling %s", text);
    kiln_status s = kiln__nvrtc_compile(prelude, options, &c);
    if (s != KILN_OK) {
        char msg[4096];
        snprintf(msg, sizeof msg, "%s", kiln_last_error());
        /* One warning per incident: a broken NVRTC fails every miss. */
        if (!atomic_exchange(&e->warned_nvrtc, 1))
            KILN_LOGW(&e->log, "compiling %s: %s", text, msg);
        return kiln__fail(s, "compiling %s: %s", text, msg);
    }
    if (atomic_load_explicit(&e->warned_nvrtc, memory_order_relaxed))
        atomic_store(&e->warned_nvrtc, 0);
    atomic_fetch_add_explicit(&e->compiles, 1, memory_order_relaxed);
    KILN_LOGI(&e->log, "compiled %s in %.0f ms: %zu bytes, %d registers, %d spill bytes",
              text, c.ms, c.len, c.regs, c.spills);
    if (c.spills > 0)
        KILN_LOGW(&e->log, "%s spills %d bytes to local memory", text, c.spills);
    if (e->cache) {
        kiln__mask_format(key->mask, mask, sizeof mask);
        kiln__arch_format(key->arch, key->arch_a, arch, sizeof arch);
        kiln__hex(id->bytes + KILN_KEY_BYTES + 2, 16, digest);
        kiln_cache_put_args a;
        memset(&a, 0, sizeof a);
        memcpy(a.hash, id->hash, 16);
        a.ident = id->bytes;
        a.ident_len = KILN_IDENT_BYTES;
        a.f.key = text;
        a.f.family = kiln__family_name(key->family);
        a.f.arch = arch;
        a.f.dtype = kiln__dtype_name(key->dtype);
        a.f.mask = mask;
        a.f.head_dim = key->head_dim;
        a.f.rab = key->rab;
        a.f.block_m = key->block_m;
        a.f.block_n = key->block_n;
        a.f.warps = key->warps;
        a.f.template_digest = digest;
        a.f.nvrtc = kiln__engine_nvrtc(e);
        a.f.options = options;
        a.cubin = c.cubin;
        a.cubin_len = c.len;
        a.prelude = prelude;
        a.log = c.log;
        a.compile_ms = c.ms;
        a.regs = c.regs;
        a.smem = c.smem;
        a.spills = c.spills;
        kiln__cache_put(e->cache, &a); /* best effort by contract */
    }
    kiln__free(c.log);
    *cubin = c.cubin;
    *len = c.len;
    return KILN_OK;
}

/* Bytes for the slot: kept ones, the cache's (verified), or a fresh build. */
static kiln_status obtain(kiln_engine *e, kiln_slot *s, const kiln_key *key,
                          const kiln_ident *id, void **cubin, size_t *len)
{
    if (s->cubin) {
        *cubin = s->cubin;
        *len = s->cubin_len;
        s->cubin = NULL;
        return KILN_OK;
    }
    if (e->cache) {
        kiln_status st = kiln__cache_get(e->cache, id->hash, id->bytes,
                                         KILN_IDENT_BYTES, cubin, len);
        if (st == KILN_OK) {
            atomic_fetch_add_explicit(&e->disk_hits, 1, memory_order_relaxed);
            return KILN_OK;
        }
        if (st != KILN_ENOTFOUND) return st;
        kiln__clear_error();
    }
    return compile_and_store(e, key, id, cubin, len);
}

static kiln_status load_module(kiln_engine *e, kiln_slot *s, const kiln_key *key,
                               const void *cubin, size_t len)
{
    const kiln_cu_api *cu;
    KILN_TRY(kiln__cu(&cu));
    const char *why = kiln__elf_check(cubin, len);
    KILN_FAIL_IF(why, KILN_EINTERNAL, "refusing to load a damaged cubin: %s", why);
    CUlibrary lib;
    KILN_CU_TRY(cu, cu->LibraryLoadData(&lib, cubin, NULL, NULL, 0, NULL, NULL, 0),
                "cuLibraryLoadData");
    const char *names[KILN_MAX_ENTRIES];
    int n = kiln__key_entries(key, names);
    for (int i = 0; i < n; i++) {
        CUresult r = cu->LibraryGetKernel(&s->kern[i], lib, names[i]);
        if (r != 0) {
            cu->LibraryUnload(lib);
            char what[96];
            snprintf(what, sizeof what, "cuLibraryGetKernel(%s)", names[i]);
            return kiln__cu_fail(cu, r, what);
        }
    }
    s->lib = lib;
    (void)e;
    return KILN_OK;
}

kiln_status kiln__launch(const kiln_cu_api *cu, kiln_slot *s, int entry, CUdevice dev,
                         const unsigned grid[3], const unsigned block[3], unsigned smem,
                         void *stream, void *params)
{
    uint64_t bit = 1ull << dev;
    if (smem > 48 * 1024 &&
        !(atomic_load_explicit(&s->smem_set[entry], memory_order_acquire) & bit)) {
        KILN_CU_TRY(cu, cu->KernelSetAttribute(KILN_CU_FUNC_ATTR_MAX_DYNAMIC_SMEM,
                                               (int)smem, s->kern[entry], dev),
                    "cuKernelSetAttribute(max dynamic shared memory)");
        atomic_fetch_or_explicit(&s->smem_set[entry], bit, memory_order_release);
    }
    void *args[] = {params};
    KILN_CU_TRY(cu, cu->LaunchKernel((CUfunction)s->kern[entry], grid[0], grid[1], grid[2],
                                     block[0], block[1], block[2], smem, (CUstream)stream,
                                     args, NULL),
                "cuLaunchKernel");
    return KILN_OK;
}

kiln_status kiln__kernel_get(kiln_engine *e, const kiln_key *key, int load,
                             kiln_slot **slot_out)
{
    kiln_ident id;
    kiln__ident_build(key, kiln__engine_nvrtc(e), &id);
    kiln_slot *s = probe(e, &id);
    if (s && atomic_load_explicit(&s->state, memory_order_acquire) == KILN_SLOT_READY) {
        *slot_out = s;
        return KILN_OK;
    }
    /* A miss: an engine that started without NVRTC looks for it again. */
    if (kiln__engine_nvrtc_recheck(e)) kiln__ident_build(key, kiln__engine_nvrtc(e), &id);
    pthread_mutex_lock(&e->mu);
    for (;;) {
        s = claim(e, &id);
        if (!s) {
            pthread_mutex_unlock(&e->mu);
            return kiln__fail(KILN_ENOMEM, "kernel table full (%d kernels)",
                              KILN_SLOTS);
        }
        int st = atomic_load_explicit(&s->state, memory_order_relaxed);
        if (st == KILN_SLOT_READY || (!load && st == KILN_SLOT_IDLE && s->stored)) {
            pthread_mutex_unlock(&e->mu);
            *slot_out = s;
            return KILN_OK;
        }
        if (st != KILN_SLOT_BUSY) break;
        pthread_cond_wait(&e->cv, &e->mu);
    }
    atomic_store_explicit(&s->state, KILN_SLOT_BUSY, memory_order_relaxed);
    pthread_mutex_unlock(&e->mu);

    void *cubin = NULL;
    size_t len = 0;
    kiln_status st = obtain(e, s, key, &id, &cubin, &len);
    int keep = 0;
    if (st == KILN_OK && load) {
        st = load_module(e, s, key, cubin, len);
    } else if (st == KILN_OK) {
        /* Without a writable cache a prewarmed kernel would be lost: keep
         * its bytes until a launch loads them. */
        keep = !e->cache || !*kiln__cache_path(e->cache);
    }

    pthread_mutex_lock(&e->mu);
    if (keep) {
        s->cubin = cubin;
        s->cubin_len = len;
        cubin = NULL;
    }
    s->failed = st;
    if (st == KILN_OK) s->stored = 1;
    atomic_store_explicit(&s->state,
                          st == KILN_OK && load ? KILN_SLOT_READY : KILN_SLOT_IDLE,
                          memory_order_release);
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    kiln__free(cubin);
    if (st == KILN_OK) *slot_out = s;
    return st;
}
