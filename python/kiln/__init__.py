"""kiln: JIT-compiled GPU attention kernels (Python side).

Minimal for now: the ctypes binding that the benchmarks need.  See _capi.py.
"""

from ._capi import (  # noqa: F401
    Engine,
    KilnError,
    hstu_fwd,
    hstu_fwd_key,
    hstu_fwd_params,
    library,
    library_path,
    version,
    KILN_ENGINE_NO_COMPILE,
    KILN_ENGINE_NO_DISK_CACHE,
    KILN_ENGINE_DEBUG_CHECKS,
)
