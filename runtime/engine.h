/* engine.h -- the engine's private state.  Internal. */
#ifndef KILN_ENGINE_H
#define KILN_ENGINE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "cache/cache.h"
#include "dispatch/key.h"
#include "runtime/cuda.h"
#include "runtime/error.h"

#define KILN_SLOTS 4096 /* power of two; kernels one engine can hold */
#define KILN_MAX_DEVICES 64

enum kiln_slot_state {
    KILN_SLOT_EMPTY = 0, /* never used */
    KILN_SLOT_BUSY,      /* one thread is compiling/loading; others wait */
    KILN_SLOT_READY,     /* loaded: kern is valid, fields immutable */
    KILN_SLOT_IDLE       /* known but not loaded (stored by prewarm, or failed) */
};

typedef struct kiln_slot {
    _Atomic int state;
    uint8_t hash[16];
    uint8_t ident[KILN_IDENT_BYTES];
    CUlibrary lib;
    CUkernel kern[KILN_MAX_ENTRIES]; /* kiln__key_entries() order */
    /* per entry: devices on which the dynamic shared memory limit was raised */
    _Atomic uint64_t smem_set[KILN_MAX_ENTRIES];
    /* memory-only mode: a prewarmed cubin kept until it is loaded */
    void *cubin;
    size_t cubin_len;
    int stored;          /* compiled and handed to the cache */
    kiln_status failed;  /* last failure of a load/compile, for waiters */
} kiln_slot;

typedef struct kiln_devinfo {
    _Atomic int known;
    int arch, arch_a;
    int sm_count;              /* 0 when the driver would not say */
    CUdeviceptr debug_counter; /* KILN_ENGINE_DEBUG_CHECKS only */
} kiln_devinfo;

struct kiln_engine {
    kiln_logger log;
    uint32_t flags;
    int fwd_impl; /* $KILN_FWD_IMPL: -1 default, 0 mma, 1 wgmma (where valid) */
    int bwd_impl; /* $KILN_BWD_IMPL: likewise for the backward */
    int bwd_blocks;   /* $KILN_BWD_GRID=blocks: the Hopper backward at head
                         dim 128 gets a block per work item instead of
                         its persistent grid */
    kiln_cache *cache; /* NULL with KILN_ENGINE_NO_DISK_CACHE */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    kiln_slot *slots;
    /* The NVRTC version in identities: NULL until resolved, then one of the
     * two buffers (each written once before it is published). */
    _Atomic(const char *) nvrtc;
    char nvrtc_real[24];     /* the loaded (or remembered) NVRTC's */
    char nvrtc_fallback[24]; /* served while NVRTC is absent ("none" or last) */
    _Atomic int nvrtc_absent; /* resolved without NVRTC: misses look again */
    /* one warning per incident: set when warned, cleared by a recovery */
    _Atomic int warned_nvrtc, warned_cu;
    kiln_devinfo dev[KILN_MAX_DEVICES];
    _Atomic int64_t mem_hits, disk_hits, compiles;
};

/* Find or build the kernel for key (single flight).  With load == 0 the
 * kernel is only compiled and stored (prewarm, no GPU needed).  On success
 * with load, *slot_out is a READY slot. */
kiln_status kiln__kernel_get(kiln_engine *e, const kiln_key *key, int load,
                             kiln_slot **slot_out);

/* The NVRTC version used in identities (memoized through the cache). */
const char *kiln__engine_nvrtc(kiln_engine *e);
/* Miss path only: if the engine resolved without NVRTC, try loading it again
 * (rate-limited by nvrtc.c).  1 if the version in identities changed. */
int kiln__engine_nvrtc_recheck(kiln_engine *e);

/* Raise entry's dynamic shared memory limit on dev once, then launch it. */
kiln_status kiln__launch(const kiln_cu_api *cu, kiln_slot *s, int entry, CUdevice dev,
                         const unsigned grid[3], const unsigned block[3], unsigned smem,
                         void *stream, void *params);

/* The device word kernels count invalid sequences in (debug checks). */
kiln_status kiln__debug_counter(kiln_engine *e, const kiln_cu_api *cu, kiln_devinfo *di,
                                uint64_t *out);

/* The driver and the current device for a launch.  Without a usable device,
 * check(params) (a plan for sm_80) runs first so that a bad argument is still
 * reported as one; *nothing is set when that plan has nothing to launch. */
kiln_status kiln__acquire(kiln_engine *e, kiln_status (*check)(const void *, int *),
                          const void *params, const kiln_cu_api **cu, CUdevice *dev,
                          kiln_devinfo **di, int *nothing);

/* Parse arch, or read the current device's when arch is NULL. */
kiln_status kiln__arch_or_current(const char *arch, int *a, int *aa);

/* The current context's device, making device 0's primary context current if
 * there is none; fills arch.  */
kiln_status kiln__current_device(kiln_engine *e, const kiln_cu_api *cu,
                                 CUdevice *dev, kiln_devinfo **info);

#endif
