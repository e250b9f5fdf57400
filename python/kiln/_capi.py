"""ctypes binding of libkiln.so (the C API of include/kiln.h).

No compile step: the shared library is opened with ctypes on first use, so
importing this module never fails on a machine without the library or a GPU.

Where the library is looked for, in order:
  1. $KILN_LIB (a path to libkiln.so; an error if it does not exist);
  2. a copy bundled in the package, kiln/lib/libkiln.so* (a wheel that
     carries the library);
  3. ../../build/libkiln.so relative to this package (the repository's build,
     for a source checkout or an editable install);
  4. ctypes.util.find_library("kiln") (an installed libkiln.so).

The structures below mirror include/kiln.h field by field (same order, same C
types).  Their sizes are checked twice: at import against values computed by
hand for LP64 (x86-64 / aarch64 Linux; see the offset tables below), and at
run time against the struct_size that the library's *_init() functions write,
which is the C compiler's sizeof.

Torch is imported lazily, only by the functions that take tensors.
"""

import ctypes
import ctypes.util
import os
import pathlib
import threading

__all__ = [
    "KilnError",
    "Engine",
    "EngineOptions",
    "HstuFwdParams",
    "HstuBwdParams",
    "CacheStats",
    "default_engine",
    "hstu_fwd",
    "hstu_fwd_key",
    "hstu_fwd_params",
    "hstu_bwd",
    "hstu_bwd_params",
    "hstu_bwd_key",
    "hstu_bwd_workspace_size",
    "library",
    "library_path",
    "library_struct_sizes",
    "version",
    "status_name",
    "KILN_OK",
    "KILN_ENGINE_NO_DISK_CACHE",
    "KILN_ENGINE_NO_COMPILE",
    "KILN_ENGINE_DEBUG_CHECKS",
    "KILN_DTYPE_FP16",
    "KILN_DTYPE_BF16",
    "KILN_DTYPE_E4M3",
    "KILN_INDEX_INT32",
    "KILN_INDEX_INT64",
]

# ----------------------------------------------------------------- constants
# Values from include/kiln.h; never renumbered there.
KILN_OK = 0
KILN_STATUS_NAMES = {
    0: "KILN_OK",
    1: "KILN_EBADARG",
    2: "KILN_ENOMEM",
    3: "KILN_EUNSUPPORTED",
    4: "KILN_ENODEV",
    5: "KILN_ECOMPILE",
    6: "KILN_ECUDA",
    7: "KILN_ECACHE",
    8: "KILN_ENOTFOUND",
    9: "KILN_EIO",
    10: "KILN_EINTERNAL",
}
KILN_LOG_ERROR, KILN_LOG_WARN, KILN_LOG_INFO, KILN_LOG_DEBUG = 0, 1, 2, 3
KILN_ENGINE_NO_DISK_CACHE = 1 << 0
KILN_ENGINE_NO_COMPILE = 1 << 1
KILN_ENGINE_DEBUG_CHECKS = 1 << 2
KILN_DTYPE_FP16, KILN_DTYPE_BF16, KILN_DTYPE_E4M3 = 1, 2, 3
KILN_INDEX_INT32, KILN_INDEX_INT64 = 0, 1
KILN_HSTU_FUNC_MAX = 255  # the largest n_func of kiln_hstu_fwd_params.func

# ---------------------------------------------------------------- structures
c_u32, c_i64, c_u64 = ctypes.c_uint32, ctypes.c_int64, ctypes.c_uint64
c_int, c_float = ctypes.c_int, ctypes.c_float

# void (*log_fn)(int level, const char *line, void *user)
LOG_FN = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


class EngineOptions(ctypes.Structure):
    """kiln_engine_options."""

    _fields_ = [
        ("struct_size", c_u32),
        ("cache_dir", ctypes.c_char_p),
        ("ro_layers", ctypes.c_char_p),
        ("log_level", c_int),
        ("flags", c_u32),
        ("log_fn", LOG_FN),
        ("log_user", ctypes.c_void_p),
    ]


class HstuFwdParams(ctypes.Structure):
    """kiln_hstu_fwd_params."""

    _fields_ = [
        ("struct_size", c_u32),
        ("dtype", c_int),
        ("head_dim", c_int),
        ("num_heads", c_int),
        ("batch", c_int),
        ("total_q", c_i64),
        ("total_k", c_i64),
        ("q", c_u64),
        ("k", c_u64),
        ("v", c_u64),
        ("out", c_u64),
        ("q_row_stride", c_i64),
        ("q_head_stride", c_i64),
        ("k_row_stride", c_i64),
        ("k_head_stride", c_i64),
        ("v_row_stride", c_i64),
        ("v_head_stride", c_i64),
        ("out_row_stride", c_i64),
        ("out_head_stride", c_i64),
        ("seq_offsets_q", c_u64),
        ("seq_offsets_k", c_u64),
        ("offsets_type", c_int),
        ("max_seqlen_q", c_int),
        ("max_seqlen_k", c_int),
        ("window_left", c_int),
        ("window_right", c_int),
        ("num_contexts", c_u64),
        ("num_targets", c_u64),
        ("target_group_size", c_int),
        ("alpha", c_float),
        ("scaling_seqlen", c_float),
        ("rab", c_u64),
        ("rab_heads", c_int),
        ("rab_batch_stride", c_i64),
        ("rab_head_stride", c_i64),
        ("rab_row_stride", c_i64),
        ("is_delta_q", c_int),
        ("out_dtype", c_int),  # e4m3: KILN_DTYPE_FP16 / _BF16; else 0
        ("descale_q", c_u64),  # e4m3: device float* (0: 1.0)
        ("descale_k", c_u64),
        ("descale_v", c_u64),
        ("func", c_u64),  # NVIDIA's arbitrary mask: int32 device pointer, or 0
        ("n_func", c_int),
        ("func_stride", c_i64),
        ("descale_batch_stride", c_i64),  # e4m3: descale element of (b, h) is
        ("descale_head_stride", c_i64),   # b * batch_stride + h * head_stride
    ]


class HstuBwdParams(ctypes.Structure):
    """kiln_hstu_bwd_params."""

    _fields_ = [
        ("struct_size", c_u32),
        ("fwd", HstuFwdParams),
        ("dout", c_u64),
        ("dout_row_stride", c_i64),
        ("dout_head_stride", c_i64),
        ("dq", c_u64),
        ("dk", c_u64),
        ("dv", c_u64),
        ("dq_row_stride", c_i64),
        ("dq_head_stride", c_i64),
        ("dk_row_stride", c_i64),
        ("dk_head_stride", c_i64),
        ("dv_row_stride", c_i64),
        ("dv_head_stride", c_i64),
        ("drab", c_u64),
        ("drab_batch_stride", c_i64),
        ("drab_head_stride", c_i64),
        ("drab_row_stride", c_i64),
        ("deterministic", c_int),
        ("workspace", c_u64),
        ("workspace_bytes", c_u64),
    ]


class CacheStats(ctypes.Structure):
    """kiln_cache_stats."""

    _fields_ = [
        ("path", ctypes.c_char_p),
        ("writable", c_int),
        ("entries", c_i64),
        ("bytes", c_i64),
        ("file_bytes", c_i64),
        ("hits", c_i64),
        ("ro_layers", c_int),
        ("mem_hits", c_i64),
        ("disk_hits", c_i64),
        ("compiles", c_i64),
        ("rejected", c_i64),
    ]


# Layouts computed by hand for LP64 (int 4, pointers and int64 8, each field at
# the next multiple of its size, the struct padded to a multiple of 8).
#
# kiln_engine_options: struct_size 0, [pad 4], cache_dir 8, ro_layers 16,
#   log_level 24, flags 28, log_fn 32, log_user 40 -> 48 bytes.
# kiln_hstu_fwd_params: struct_size 0, dtype 4, head_dim 8, num_heads 12,
#   batch 16, [pad 4], total_q 24, total_k 32, q 40, k 48, v 56, out 64,
#   q_row_stride 72 ... out_head_stride 128, seq_offsets_q 136,
#   seq_offsets_k 144, offsets_type 152, max_seqlen_q 156, max_seqlen_k 160,
#   window_left 164, window_right 168, [pad 4], num_contexts 176,
#   num_targets 184, target_group_size 192, alpha 196, scaling_seqlen 200,
#   [pad 4], rab 208, rab_heads 216, [pad 4], rab_batch_stride 224,
#   rab_head_stride 232, rab_row_stride 240, is_delta_q 248, out_dtype 252,
#   descale_q 256, descale_k 264, descale_v 272, func 280, n_func 288, [pad 4],
#   func_stride 296, descale_batch_stride 304, descale_head_stride 312
#   -> 320 bytes.
# kiln_hstu_bwd_params: struct_size 0, [pad 4], fwd 8 (320 bytes), dout 328,
#   dout_row_stride 336, dout_head_stride 344, dq 352, dk 360, dv 368,
#   dq_row_stride 376, dq_head_stride 384, dk_row_stride 392,
#   dk_head_stride 400, dv_row_stride 408, dv_head_stride 416, drab 424,
#   drab_batch_stride 432, drab_head_stride 440, drab_row_stride 448,
#   deterministic 456, [pad 4], workspace 464, workspace_bytes 472
#   -> 480 bytes.
# kiln_cache_stats: path 0, writable 8, [pad 4], entries 16, bytes 24,
#   file_bytes 32, hits 40, ro_layers 48, [pad 4], mem_hits 56, disk_hits 64,
#   compiles 72, rejected 80 -> 88 bytes.
_EXPECTED_LAYOUT = {
    EngineOptions: (48, {"cache_dir": 8, "log_level": 24, "flags": 28,
                         "log_fn": 32, "log_user": 40}),
    HstuFwdParams: (320, {"total_q": 24, "q": 40, "out": 64,
                          "q_row_stride": 72, "out_head_stride": 128,
                          "seq_offsets_q": 136, "offsets_type": 152,
                          "window_right": 168, "num_contexts": 176,
                          "num_targets": 184, "target_group_size": 192,
                          "alpha": 196, "scaling_seqlen": 200, "rab": 208,
                          "rab_heads": 216, "rab_batch_stride": 224,
                          "rab_row_stride": 240, "is_delta_q": 248,
                          "out_dtype": 252, "descale_q": 256, "descale_v": 272,
                          "func": 280, "n_func": 288, "func_stride": 296,
                          "descale_batch_stride": 304, "descale_head_stride": 312}),
    HstuBwdParams: (480, {"fwd": 8, "dout": 328, "dout_head_stride": 344,
                          "dq": 352, "dv": 368, "dq_row_stride": 376,
                          "dv_head_stride": 416, "drab": 424,
                          "drab_row_stride": 448, "deterministic": 456,
                          "workspace": 464, "workspace_bytes": 472}),
    CacheStats: (88, {"writable": 8, "entries": 16, "ro_layers": 48,
                      "mem_hits": 56, "rejected": 80}),
}


def _check_layouts():
    if ctypes.sizeof(ctypes.c_void_p) != 8 or ctypes.sizeof(ctypes.c_int) != 4:
        return  # not LP64: the hand-computed numbers do not apply
    for cls, (size, offsets) in _EXPECTED_LAYOUT.items():
        got = ctypes.sizeof(cls)
        if got != size:
            raise ImportError(
                f"kiln._capi: ctypes.sizeof({cls.__name__}) is {got}, expected "
                f"{size}: the binding no longer mirrors include/kiln.h")
        for name, off in offsets.items():
            got = getattr(cls, name).offset
            if got != off:
                raise ImportError(
                    f"kiln._capi: {cls.__name__}.{name} is at offset {got}, "
                    f"expected {off}: the binding no longer mirrors include/kiln.h")


_check_layouts()

# ------------------------------------------------------------------- library


class KilnError(RuntimeError):
    """A kiln call returned a status other than KILN_OK.

    status: the kiln_status value; status_name: its name ("KILN_EBADARG");
    detail: kiln_last_error() of the failing call; call: the C function.
    """

    def __init__(self, status, name, detail, call):
        self.status = status
        self.status_name = name
        self.detail = detail
        self.call = call
        msg = f"{call}: {name} ({status})"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)

    def __reduce__(self):  # picklable (multiprocessing, torch.compile workers)
        return (KilnError, (self.status, self.status_name, self.detail, self.call))


_lib = None
_lib_path = None
_lib_lock = threading.Lock()


def _bundled_library():
    """kiln/lib/libkiln.so, else the highest-versioned kiln/lib/libkiln.so.*"""
    d = pathlib.Path(__file__).resolve().parent / "lib"
    if not d.is_dir():
        return None
    plain = d / "libkiln.so"
    if plain.exists():
        return str(plain)
    cands = sorted(d.glob("libkiln.so.*"), key=lambda p: (len(p.name), p.name))
    return str(cands[-1]) if cands else None


def library_path():
    """The path that library() loads (without loading it)."""
    env = os.environ.get("KILN_LIB")
    if env:
        if not os.path.exists(env):
            raise OSError(f"KILN_LIB={env!r} does not exist")
        return env
    bundled = _bundled_library()
    if bundled:
        return bundled
    here = pathlib.Path(__file__).resolve().parent
    cand = here.parent.parent / "build" / "libkiln.so"
    if cand.exists():
        return str(cand)
    found = ctypes.util.find_library("kiln")
    if found:
        return found
    raise OSError(
        "libkiln.so not found: set KILN_LIB=/path/to/libkiln.so, build it "
        f"('make' so that {cand} exists), bundle it as kiln/lib/libkiln.so, or "
        "install it where ctypes.util.find_library('kiln') looks")


def _proto(lib, name, restype, *argtypes, optional=False):
    try:
        fn = getattr(lib, name)
    except AttributeError:
        if optional:
            return
        raise
    fn.restype = restype
    fn.argtypes = list(argtypes)


def has_symbol(name):
    """Whether the loaded library exports `name` (e.g. "kiln_hstu_bwd")."""
    try:
        getattr(library(), name)
        return True
    except AttributeError:
        return False


def library():
    """The loaded libkiln (ctypes.CDLL), with prototypes set.  Thread-safe."""
    global _lib, _lib_path
    if _lib is not None:
        return _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        path = library_path()
        lib = ctypes.CDLL(path)
        P, VP, CP = ctypes.POINTER, ctypes.c_void_p, ctypes.c_char_p
        _proto(lib, "kiln_version_number", ctypes.c_uint)
        _proto(lib, "kiln_version_string", CP)
        _proto(lib, "kiln_status_name", CP, c_int)
        _proto(lib, "kiln_status_string", CP, c_int)
        _proto(lib, "kiln_last_error", CP)
        _proto(lib, "kiln_engine_options_init", c_int, P(EngineOptions))
        _proto(lib, "kiln_engine_create", c_int, P(EngineOptions), P(VP))
        _proto(lib, "kiln_engine_destroy", c_int, VP)
        _proto(lib, "kiln_prewarm", c_int, VP, CP, CP)
        _proto(lib, "kiln_key_canonical", c_int, CP, CP, CP, ctypes.c_size_t)
        _proto(lib, "kiln_cache_stats_get", c_int, VP, P(CacheStats))
        _proto(lib, "kiln_hstu_fwd_params_init", c_int, P(HstuFwdParams))
        _proto(lib, "kiln_hstu_fwd", c_int, VP, P(HstuFwdParams), VP)
        _proto(lib, "kiln_hstu_fwd_key", c_int, P(HstuFwdParams), CP, CP,
               ctypes.c_size_t)
        # The backward entry points: optional, so that a library built before
        # they existed still serves the forward.
        _proto(lib, "kiln_hstu_bwd_params_init", c_int, P(HstuBwdParams),
               optional=True)
        _proto(lib, "kiln_hstu_bwd_workspace_size", c_int, P(HstuBwdParams),
               P(c_u64), optional=True)
        _proto(lib, "kiln_hstu_bwd", c_int, VP, P(HstuBwdParams), VP,
               optional=True)
        _proto(lib, "kiln_hstu_bwd_key", c_int, P(HstuBwdParams), CP, CP,
               ctypes.c_size_t, optional=True)
        _lib, _lib_path = lib, path
        return lib


def status_name(status):
    try:
        return library().kiln_status_name(status).decode()
    except OSError:
        return KILN_STATUS_NAMES.get(status, "KILN_UNKNOWN")


def _check(status, call):
    if status == KILN_OK:
        return
    lib = library()
    # kiln_last_error is valid until the next kiln call on this thread: copy
    # it (ctypes c_char_p returns bytes) before asking for the status name.
    detail = (lib.kiln_last_error() or b"").decode(errors="replace")
    name = lib.kiln_status_name(status).decode()
    raise KilnError(status, name, detail, call)


def version():
    """(version string, version number) of the loaded library."""
    lib = library()
    return lib.kiln_version_string().decode(), int(lib.kiln_version_number())


def library_struct_sizes():
    """{struct name: sizeof as the library reports it (the struct_size its
    *_init() writes)}.  Structures whose _init the library lacks are left out.
    Touches no GPU."""
    lib = library()
    out = {}
    for cname, cls, init in (
            ("kiln_engine_options", EngineOptions, "kiln_engine_options_init"),
            ("kiln_hstu_fwd_params", HstuFwdParams, "kiln_hstu_fwd_params_init"),
            ("kiln_hstu_bwd_params", HstuBwdParams, "kiln_hstu_bwd_params_init")):
        if not has_symbol(init):
            continue
        s = cls()
        _check(getattr(lib, init)(ctypes.byref(s)), init)
        out[cname] = int(s.struct_size)
    return out


# -------------------------------------------------------------------- engine


class Engine:
    """A kiln_engine: create on construction, destroy on close()/exit/GC.

    cache_dir / ro_layers: None means the library's defaults ($KILN_CACHE_DIR,
    $KILN_CACHE_RO, ...).  log_level: None keeps the default (-1: $KILN_LOG).
    flags: KILN_ENGINE_* bits.
    """

    def __init__(self, cache_dir=None, ro_layers=None, log_level=None, flags=0):
        lib = library()
        opts = EngineOptions()
        _check(lib.kiln_engine_options_init(ctypes.byref(opts)),
               "kiln_engine_options_init")
        if opts.struct_size != ctypes.sizeof(EngineOptions):
            raise RuntimeError(
                f"kiln_engine_options: the library says struct_size "
                f"{opts.struct_size}, ctypes has {ctypes.sizeof(EngineOptions)}: "
                "python/kiln/_capi.py does not match this libkiln")
        # Keep the encoded strings alive while the library copies them.
        self._keep = []
        if cache_dir is not None:
            b = os.fsencode(cache_dir)
            self._keep.append(b)
            opts.cache_dir = b
        if ro_layers is not None:
            b = os.fsencode(ro_layers)
            self._keep.append(b)
            opts.ro_layers = b
        if log_level is not None:
            opts.log_level = int(log_level)
        opts.flags = int(flags)
        handle = ctypes.c_void_p()
        _check(lib.kiln_engine_create(ctypes.byref(opts), ctypes.byref(handle)),
               "kiln_engine_create")
        self._handle = handle

    @property
    def handle(self):
        if self._handle is None or not self._handle.value:
            raise ValueError("kiln Engine is closed")
        return self._handle

    def close(self):
        h, self._handle = getattr(self, "_handle", None), None
        if h is not None and h.value and _lib is not None:
            _check(_lib.kiln_engine_destroy(h), "kiln_engine_destroy")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def prewarm(self, key, arch=None):
        _check(library().kiln_prewarm(self.handle, key.encode(),
                                      arch.encode() if arch else None),
               f"kiln_prewarm({key!r})")

    def cache_stats(self):
        """This engine's cache statistics as a dict."""
        st = CacheStats()
        _check(library().kiln_cache_stats_get(self.handle, ctypes.byref(st)),
               "kiln_cache_stats_get")
        d = {name: getattr(st, name) for name, _ in CacheStats._fields_}
        d["path"] = (st.path or b"").decode(errors="replace")
        return d


_default_engine = None
_default_engine_lock = threading.Lock()


def default_engine():
    """The process-wide engine that kiln's torch functions use: created on
    first use (thread-safe) with the default options (cache at
    $KILN_CACHE_DIR, else $XDG_CACHE_HOME/kiln, else ~/.cache/kiln).  Creating
    it touches no GPU."""
    global _default_engine
    e = _default_engine
    if e is not None:
        return e
    with _default_engine_lock:
        if _default_engine is None:
            _default_engine = Engine()
        return _default_engine


def set_default_engine(engine):
    """Replace the process-wide engine (e.g. one with KILN_ENGINE_NO_COMPILE);
    returns the previous one (None if none was created).  The caller keeps
    the old engine alive until kernels launched through it have completed."""
    global _default_engine
    if engine is not None and not isinstance(engine, Engine):
        raise TypeError(f"kiln: engine must be a kiln.Engine, got {type(engine)}")
    with _default_engine_lock:
        old, _default_engine = _default_engine, engine
    return old


# ---------------------------------------------------------------- HSTU fwd


def _torch_dtype_code(t):
    import torch

    codes = {torch.float16: KILN_DTYPE_FP16, torch.bfloat16: KILN_DTYPE_BF16}
    e4m3 = getattr(torch, "float8_e4m3fn", None)
    if e4m3 is not None:
        codes[e4m3] = KILN_DTYPE_E4M3
    if t.dtype not in codes:
        raise TypeError(f"kiln: dtype {t.dtype} is not float16, bfloat16 or "
                        "float8_e4m3fn")
    return codes[t.dtype]


def _check_view(name, t, device):
    if t.dim() != 3:
        raise ValueError(f"kiln: {name} must be (rows, heads, dim), got shape "
                         f"{tuple(t.shape)}")
    if device is not None and (not t.is_cuda or t.device != device):
        raise ValueError(f"kiln: {name} is on {t.device}, expected {device}")
    if t.shape[2] > 1 and t.stride(2) != 1:
        raise ValueError(f"kiln: {name}'s last dimension must be contiguous "
                         f"(strides {t.stride()})")


def _check_index(name, t, device, dtypes):
    if device is not None and (not t.is_cuda or t.device != device):
        raise ValueError(f"kiln: {name} is on {t.device}, expected {device}")
    if t.dtype not in dtypes:
        raise TypeError(f"kiln: {name} has dtype {t.dtype}, expected one of "
                        f"{[str(d) for d in dtypes]}")
    if t.dim() != 1 or (t.numel() > 1 and t.stride(0) != 1):
        raise ValueError(f"kiln: {name} must be a contiguous 1-D tensor")


def _check_descale(name, t, device=None):
    """descale_q/k/v: None (0 in the struct: 1.0) or a float32 tensor of one
    element, or of shape (B,) or (B, H) (checked against B and H by
    descale_layout); on `device` (q's) unless that is None (the caller checks
    the devices of all its tensors together)."""
    import torch

    if t is None:
        return
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"kiln: {name} must be None or a torch.Tensor, got "
                        f"{type(t).__name__}")
    if t.dtype != torch.float32:
        raise TypeError(f"kiln: {name} has dtype {t.dtype}; it must be torch.float32")
    if t.dim() > 2 or (t.numel() != 1 and t.dim() == 0):
        raise ValueError(f"kiln: {name} must have one element, or shape (batch,) or "
                         f"(batch, heads); got shape {tuple(t.shape)}")
    if device is not None and (not t.is_cuda or t.device != device):
        raise ValueError(f"kiln: {name} is on {t.device}, expected {device}")


def descale_layout(descales, batch, heads):
    """(batch_stride, head_stride) in elements of the descale tensors
    [(name, tensor or None), ...]: (0, 0) for one element each (one factor
    per tensor), (stride, 0) for shape (batch,) (one per sequence), the
    tensor's strides for (batch, heads) (one per sequence and head).  All
    given tensors must share the layout: the C struct has one pair."""
    layout, first = None, None
    for name, t in descales:
        if t is None:
            continue
        shape = tuple(t.shape)
        if t.numel() == 1:
            lay = (0, 0)
        elif t.dim() == 1 and shape[0] == batch:
            lay = (t.stride(0), 0)
        elif t.dim() == 2 and shape == (batch, heads):
            lay = (t.stride(0), t.stride(1))
        else:
            raise ValueError(f"kiln: {name} has shape {shape}; it must have one element, "
                             f"or shape ({batch},) or ({batch}, {heads}) (batch, heads)")
        if any(x < 0 for x in lay):
            raise ValueError(f"kiln: {name} has negative strides {t.stride()}")
        if layout is None:
            layout, first = lay, name
        elif lay != layout:
            raise ValueError(f"kiln: {name} (shape {shape}, strides {t.stride()}) is laid "
                             f"out unlike {first}: the three descales share one layout")
    return layout or (0, 0)


def _fwd_params_init():
    p = HstuFwdParams()
    _check(library().kiln_hstu_fwd_params_init(ctypes.byref(p)),
           "kiln_hstu_fwd_params_init")
    if p.struct_size != ctypes.sizeof(HstuFwdParams):
        raise RuntimeError(
            f"kiln_hstu_fwd_params: the library says struct_size {p.struct_size}, "
            f"ctypes has {ctypes.sizeof(HstuFwdParams)}: python/kiln/_capi.py "
            "does not match this libkiln")
    return p


def hstu_fwd_params(q, k, v, out, seq_offsets, max_seqlen, *, alpha=1.0,
                    scaling_seqlen=0.0, causal=False, window=(-1, -1),
                    num_contexts=None, num_targets=None, target_group_size=1,
                    seq_offsets_k=None, max_seqlen_k=None, rab=None,
                    is_delta_q=False, descale_q=None, descale_k=None,
                    descale_v=None):
    """Fill a kiln_hstu_fwd_params from torch tensors (no GPU work).

    q (total_q, H, D), k and v (total_k, H, D), out (total_q, H, D): last dim
    contiguous, strides taken from the tensors.  seq_offsets: int32 or int64,
    B+1 entries.  causal=True is window (-1, 0); otherwise window=(left, right).
    num_contexts / num_targets: int32[B] or None.  rab: (B, rab_heads,
    max_seqlen_k, max_seqlen_k) or None.

    fp8 (forward only; fp8 tensor cores on sm_90a, widened to 16 bits on
    other sm_80+ GPUs): q, k, v torch.float8_e4m3fn; out float16 or
    bfloat16 (its dtype sets params.out_dtype; rab in the same dtype);
    descale_q/k/v: None (1.0) or float32 CUDA tensors on q's device of one
    element (q = descale_q * q_fp8, ...), of shape (B,) (one factor per
    sequence) or (B, H) (per sequence and head), all three alike.  With
    16-bit q they must be None.
    """
    import torch

    p = _fwd_params_init()
    dev = q.device
    for name, t in (("q", q), ("k", k), ("v", v), ("out", out)):
        _check_view(name, t, dev)
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"kiln: q, k, v dtypes differ ({q.dtype}, {k.dtype}, "
                        f"{v.dtype})")
    idx_types = (torch.int32, torch.int64)
    _check_index("seq_offsets", seq_offsets, dev, idx_types)
    if seq_offsets_k is not None:
        _check_index("seq_offsets_k", seq_offsets_k, dev, (seq_offsets.dtype,))
    p.dtype = _torch_dtype_code(q)
    descales = (("descale_q", descale_q), ("descale_k", descale_k),
                ("descale_v", descale_v))
    if p.dtype == KILN_DTYPE_E4M3:
        if out.dtype not in (torch.float16, torch.bfloat16):
            raise TypeError(f"kiln: out has dtype {out.dtype}; with float8_e4m3fn q, k, v "
                            "it must be torch.float16 or torch.bfloat16")
        p.out_dtype = KILN_DTYPE_FP16 if out.dtype == torch.float16 else KILN_DTYPE_BF16
        for name, t in descales:
            _check_descale(name, t, dev)
        p.descale_q, p.descale_k, p.descale_v = (
            t.data_ptr() if t is not None else 0 for _, t in descales)
        p.descale_batch_stride, p.descale_head_stride = descale_layout(
            descales, int(seq_offsets.numel()) - 1, int(q.shape[1]))
    else:
        for name, t in descales:
            if t is not None:
                raise ValueError(f"kiln: {name} applies to float8_e4m3fn q, k, v only; q "
                                 f"has dtype {q.dtype}")
    p.head_dim = int(q.shape[2])
    p.num_heads = int(q.shape[1])
    p.batch = int(seq_offsets.numel()) - 1
    p.total_q, p.total_k = int(q.shape[0]), int(k.shape[0])
    p.q, p.k, p.v, p.out = q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr()
    p.q_row_stride, p.q_head_stride = q.stride(0), q.stride(1)
    p.k_row_stride, p.k_head_stride = k.stride(0), k.stride(1)
    p.v_row_stride, p.v_head_stride = v.stride(0), v.stride(1)
    p.out_row_stride, p.out_head_stride = out.stride(0), out.stride(1)
    p.seq_offsets_q = seq_offsets.data_ptr()
    p.seq_offsets_k = seq_offsets_k.data_ptr() if seq_offsets_k is not None else 0
    p.offsets_type = (KILN_INDEX_INT64 if seq_offsets.dtype == torch.int64
                      else KILN_INDEX_INT32)
    p.max_seqlen_q = int(max_seqlen)
    p.max_seqlen_k = int(max_seqlen if max_seqlen_k is None else max_seqlen_k)
    if causal:
        p.window_left, p.window_right = -1, 0
    else:
        p.window_left, p.window_right = int(window[0]), int(window[1])
    if num_contexts is not None:
        _check_index("num_contexts", num_contexts, dev, (torch.int32,))
        p.num_contexts = num_contexts.data_ptr()
    if num_targets is not None:
        _check_index("num_targets", num_targets, dev, (torch.int32,))
        p.num_targets = num_targets.data_ptr()
    p.target_group_size = int(target_group_size)
    p.alpha = float(alpha)
    p.scaling_seqlen = float(scaling_seqlen)
    if rab is not None:
        if rab.dim() != 4 or not rab.is_cuda or rab.device != dev:
            raise ValueError("kiln: rab must be a 4-D CUDA tensor (B, rab_heads, "
                             f"max_seqlen_k, max_seqlen_k) on {dev}")
        if rab.shape[3] > 1 and rab.stride(3) != 1:
            raise ValueError("kiln: rab's last dimension must be contiguous")
        p.rab = rab.data_ptr()
        p.rab_heads = int(rab.shape[1])
        p.rab_batch_stride = rab.stride(0)
        p.rab_head_stride = rab.stride(1)
        p.rab_row_stride = rab.stride(2)
    p.is_delta_q = 1 if is_delta_q else 0
    return p


def _stream_handle(stream, device):
    import torch

    if stream is None:
        return torch.cuda.current_stream(device).cuda_stream
    if isinstance(stream, int):
        return stream
    return stream.cuda_stream  # torch.cuda.Stream / ExternalStream


def hstu_fwd(engine, q, k, v, out, seq_offsets, max_seqlen, *, alpha=1.0,
             scaling_seqlen=0.0, causal=False, window=(-1, -1),
             num_contexts=None, num_targets=None, target_group_size=1,
             seq_offsets_k=None, max_seqlen_k=None, rab=None, is_delta_q=False,
             descale_q=None, descale_k=None, descale_v=None, stream=None):
    """HSTU forward into out (asynchronous, on `stream`, default the current
    torch stream of q's device).  Arguments as hstu_fwd_params (fp8: e4m3
    q, k, v with descale_*, out float16 or bfloat16).  Raises KilnError on
    failure, with the status name and kiln_last_error()."""
    import torch

    p = hstu_fwd_params(q, k, v, out, seq_offsets, max_seqlen, alpha=alpha,
                        scaling_seqlen=scaling_seqlen, causal=causal,
                        window=window, num_contexts=num_contexts,
                        num_targets=num_targets,
                        target_group_size=target_group_size,
                        seq_offsets_k=seq_offsets_k, max_seqlen_k=max_seqlen_k,
                        rab=rab, is_delta_q=is_delta_q, descale_q=descale_q,
                        descale_k=descale_k, descale_v=descale_v)
    # kiln launches in the context current on this thread: make q's device
    # (its primary context, which torch uses) current for the call.
    with torch.cuda.device(q.device):
        s = _stream_handle(stream, q.device)
        _check(library().kiln_hstu_fwd(engine.handle, ctypes.byref(p),
                                       ctypes.c_void_p(s)),
               "kiln_hstu_fwd")
    return out


def hstu_fwd_key(q, k, v, out, seq_offsets, max_seqlen, arch=None, **kw):
    """The kernel key kiln_hstu_fwd would use for these arguments (keywords
    as hstu_fwd_params, descale_q/k/v included)."""
    import torch

    p = hstu_fwd_params(q, k, v, out, seq_offsets, max_seqlen, **kw)
    buf = ctypes.create_string_buffer(512)
    with torch.cuda.device(q.device):  # arch None: the current device's
        _check(library().kiln_hstu_fwd_key(ctypes.byref(p),
                                           arch.encode() if arch else None,
                                           buf, ctypes.sizeof(buf)),
               "kiln_hstu_fwd_key")
    return buf.value.decode()


# ---------------------------------------------------------------- HSTU bwd


def _need_bwd():
    if not has_symbol("kiln_hstu_bwd"):
        raise KilnError(3, "KILN_EUNSUPPORTED",
                        f"{library_path()} has no kiln_hstu_bwd (rebuild it)",
                        "kiln_hstu_bwd")


def _bwd_params_init():
    _need_bwd()
    p = HstuBwdParams()
    _check(library().kiln_hstu_bwd_params_init(ctypes.byref(p)),
           "kiln_hstu_bwd_params_init")
    if p.struct_size != ctypes.sizeof(HstuBwdParams):
        raise RuntimeError(
            f"kiln_hstu_bwd_params: the library says struct_size {p.struct_size}, "
            f"ctypes has {ctypes.sizeof(HstuBwdParams)}: python/kiln/_capi.py "
            "does not match this libkiln")
    return p


def hstu_bwd_params(fwd, dout, dq, dk, dv, *, drab=None, deterministic=False,
                    workspace=None):
    """Fill a kiln_hstu_bwd_params (no GPU work).

    fwd: the HstuFwdParams of the forward (hstu_fwd_params(); its out is not
    read).  dout (total_q, H, D); dq, dk, dv shaped like q, k, v; drab shaped
    like rab or None; workspace: a uint8 CUDA tensor of at least
    hstu_bwd_workspace_size() bytes, or None to set it later.
    """
    p = _bwd_params_init()
    p.fwd = fwd
    p.dout = dout.data_ptr()
    p.dout_row_stride, p.dout_head_stride = dout.stride(0), dout.stride(1)
    p.dq, p.dk, p.dv = dq.data_ptr(), dk.data_ptr(), dv.data_ptr()
    p.dq_row_stride, p.dq_head_stride = dq.stride(0), dq.stride(1)
    p.dk_row_stride, p.dk_head_stride = dk.stride(0), dk.stride(1)
    p.dv_row_stride, p.dv_head_stride = dv.stride(0), dv.stride(1)
    if drab is not None:
        p.drab = drab.data_ptr()
        p.drab_batch_stride = drab.stride(0)
        p.drab_head_stride = drab.stride(1)
        p.drab_row_stride = drab.stride(2)
    p.deterministic = 1 if deterministic else 0
    if workspace is not None:
        p.workspace = workspace.data_ptr()
        p.workspace_bytes = workspace.numel() * workspace.element_size()
    return p


def hstu_bwd_workspace_size(p):
    """Scratch bytes kiln_hstu_bwd needs for the HstuBwdParams p."""
    _need_bwd()
    n = c_u64()
    _check(library().kiln_hstu_bwd_workspace_size(ctypes.byref(p), ctypes.byref(n)),
           "kiln_hstu_bwd_workspace_size")
    return int(n.value)


def hstu_bwd(engine, p, stream=None, device=None):
    """Launch HSTU backward for the HstuBwdParams p on `stream` (default: the
    current torch stream of `device`).  Raises KilnError on failure."""
    _need_bwd()
    import torch

    with torch.cuda.device(device):
        s = _stream_handle(stream, device)
        _check(library().kiln_hstu_bwd(engine.handle, ctypes.byref(p),
                                       ctypes.c_void_p(s)),
               "kiln_hstu_bwd")


def hstu_bwd_key(p, arch=None):
    """The kernel key kiln_hstu_bwd would use for the HstuBwdParams p (arch
    None: the current device's), e.g. for `kiln prewarm`."""
    if not has_symbol("kiln_hstu_bwd_key"):
        raise KilnError(3, "KILN_EUNSUPPORTED",
                        f"{library_path()} has no kiln_hstu_bwd_key (rebuild it)",
                        "kiln_hstu_bwd_key")
    buf = ctypes.create_string_buffer(512)
    _check(library().kiln_hstu_bwd_key(ctypes.byref(p), arch.encode() if arch else None,
                                       buf, ctypes.sizeof(buf)),
           "kiln_hstu_bwd_key")
    return buf.value.decode()
