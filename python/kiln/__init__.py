"""kiln: JIT-compiled GPU attention kernels, from Python.

    import kiln
    out = kiln.hstu_attn_varlen_func(q, k, v, seq_offsets, seq_offsets,
                                     max_seqlen, max_seqlen, window_size=(-1, 0))

The torch functions (hstu_attn_varlen_func, hstu_attn_qkvpacked_func) are
differentiable torch.library custom ops (kiln::hstu_fwd, kiln::hstu_bwd, ...)
that work under torch.compile and CUDA graph capture; they share one engine per
process (kiln.default_engine(), created on first use).  Drop-in modules with
the peers' exact names and signatures:

    kiln.compat.hstu_attn_interface   NVIDIA recsys-examples' hstu_attn_interface
    kiln.compat.hstu                  FBGEMM's `hstu` package

The ctypes binding of libkiln.so (Engine, hstu_fwd, ...) lives in kiln._capi;
importing kiln imports neither torch nor the library: both are loaded on first
use.  Where libkiln.so is looked for: kiln._capi.library_path().
"""

from ._capi import (  # noqa: F401
    Engine,
    KilnError,
    default_engine,
    set_default_engine,
    hstu_fwd,
    hstu_fwd_key,
    hstu_fwd_params,
    hstu_bwd,
    hstu_bwd_key,
    hstu_bwd_params,
    hstu_bwd_workspace_size,
    library,
    library_path,
    library_struct_sizes,
    version,
    KILN_ENGINE_NO_COMPILE,
    KILN_ENGINE_NO_DISK_CACHE,
    KILN_ENGINE_DEBUG_CHECKS,
)

__version__ = "0.1.0"

__all__ = [
    "Engine", "KilnError", "Unsupported", "default_engine", "set_default_engine",
    "hstu_attn_varlen_func", "hstu_attn_qkvpacked_func",
    "hstu_fwd", "hstu_fwd_key", "hstu_fwd_params", "hstu_bwd", "hstu_bwd_key",
    "hstu_bwd_params", "hstu_bwd_workspace_size", "library", "library_path",
    "library_struct_sizes", "version", "KILN_ENGINE_NO_COMPILE",
    "KILN_ENGINE_NO_DISK_CACHE", "KILN_ENGINE_DEBUG_CHECKS",
]

# Names served by kiln.hstu, which imports torch: loaded on first access.
_LAZY = {
    "hstu_attn_varlen_func": "hstu",
    "hstu_attn_qkvpacked_func": "hstu",
    "Unsupported": "hstu",
    "hstu": None,
    "compat": None,
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        mod = importlib.import_module(f".{_LAZY[name] or name}", __name__)
        val = mod if _LAZY[name] is None else getattr(mod, name)
        globals()[name] = val
        return val
    raise AttributeError(f"module 'kiln' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
