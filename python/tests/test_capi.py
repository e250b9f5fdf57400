"""The ctypes binding (CPU only: no GPU, no kernel launch).

- importing kiln loads neither torch nor libkiln.so;
- the ctypes structures have the sizes the library's *_init() functions write;
- where libkiln.so is looked for ($KILN_LIB, the bundled copy, the build tree);
- C-level failures surface as kiln.KilnError with the status name and
  kiln_last_error();
- one engine per process, created once even when threads race for it.
"""

import ctypes
import os
import pathlib
import shutil
import subprocess
import sys
import threading

import pytest

from conftest import requires_library

PKG = pathlib.Path(__file__).resolve().parent.parent  # python/


def _run(code, env=None, path=PKG):
    e = dict(os.environ)
    e["PYTHONPATH"] = str(path)
    e.update(env or {})
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=e, timeout=120, cwd=str(path))
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_import_kiln_is_lazy():
    out = _run("import sys, kiln; import kiln._capi as c; "
               "print('torch' in sys.modules, c._lib is None, kiln.__version__)")
    assert out == "False True 0.1.0"


def test_import_hstu_without_gpu_registers_ops():
    out = _run("import kiln, torch; kiln.hstu_attn_varlen_func; import kiln.compat.hstu; "
               "print(hasattr(torch.ops.kiln, 'hstu_fwd'), "
               "hasattr(torch.ops.kiln, 'hstu_bwd_qkvpacked'))",
               env={"CUDA_VISIBLE_DEVICES": ""})
    assert out == "True True"


@requires_library
def test_struct_sizes_match_the_library():
    import kiln
    from kiln import _capi

    got = kiln.library_struct_sizes()
    assert got["kiln_engine_options"] == ctypes.sizeof(_capi.EngineOptions)
    assert got["kiln_hstu_fwd_params"] == ctypes.sizeof(_capi.HstuFwdParams)
    if _capi.has_symbol("kiln_hstu_bwd_params_init"):
        assert got["kiln_hstu_bwd_params"] == ctypes.sizeof(_capi.HstuBwdParams)
    else:
        pytest.skip("this libkiln has no backward yet")


@requires_library
def test_fwd_params_defaults_from_the_library():
    from kiln import _capi

    p = _capi._fwd_params_init()
    assert p.dtype == _capi.KILN_DTYPE_BF16
    assert (p.window_left, p.window_right) == (-1, -1)
    assert p.alpha == 1.0 and p.target_group_size == 1 and p.rab_heads == 1


def test_library_path_order(tmp_path):
    # $KILN_LIB first, and an error when it names nothing.
    out = _run("import kiln._capi as c\ntry:\n c.library_path()\nexcept OSError as e:\n"
               " print('OSError', 'KILN_LIB' in str(e))",
               env={"KILN_LIB": str(tmp_path / "nope.so")})
    assert out == "OSError True"
    fake = tmp_path / "libkiln-custom.so"
    fake.write_bytes(b"")
    assert _run("import kiln._capi as c; print(c.library_path())",
                env={"KILN_LIB": str(fake)}) == str(fake)
    # A copy bundled in the package comes next.
    pkg = tmp_path / "site"
    shutil.copytree(PKG / "kiln", pkg / "kiln",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "kiln" / "lib").mkdir(exist_ok=True)
    bundled = pkg / "kiln" / "lib" / "libkiln.so.0"
    bundled.write_bytes(b"")
    env = {k: v for k, v in os.environ.items() if k != "KILN_LIB"}
    r = subprocess.run([sys.executable, "-c",
                        "import kiln._capi as c; print(c.library_path())"],
                       capture_output=True, text=True, env=dict(env, PYTHONPATH=str(pkg)),
                       cwd=str(tmp_path))
    assert r.stdout.strip() == str(bundled), r.stderr


@requires_library
def test_c_failure_raises_kiln_error_with_status_and_detail():
    import kiln
    from kiln import _capi

    p = _capi._fwd_params_init()
    p.head_dim = 48
    p.batch = 1
    eng = kiln.Engine(cache_dir=None, flags=kiln.KILN_ENGINE_NO_DISK_CACHE)
    try:
        st = _capi.library().kiln_hstu_fwd(eng.handle, ctypes.byref(p), None)
        with pytest.raises(kiln.KilnError) as ei:
            _capi._check(st, "kiln_hstu_fwd")
    finally:
        eng.close()
    e = ei.value
    assert e.status == 1 and e.status_name == "KILN_EBADARG"
    assert "head_dim" in e.detail and "48" in e.detail
    assert str(e).startswith("kiln_hstu_fwd: KILN_EBADARG (1): ")
    import pickle

    e2 = pickle.loads(pickle.dumps(e))
    assert (e2.status_name, e2.detail) == (e.status_name, e.detail)


@requires_library
def test_bwd_workspace_size_contract():
    from kiln import _capi

    if not _capi.has_symbol("kiln_hstu_bwd_workspace_size"):
        pytest.skip("this libkiln has no backward yet")
    p = _capi._bwd_params_init()
    p.fwd.batch, p.fwd.num_heads, p.fwd.head_dim = 2, 3, 64
    p.fwd.total_q, p.fwd.total_k, p.fwd.max_seqlen_k = 100, 100, 60
    n = _capi.hstu_bwd_workspace_size(p)
    assert n >= 100 * 3 * 64 * 4  # fp32 dq accumulator unless deterministic
    p.deterministic = 1
    assert _capi.hstu_bwd_workspace_size(p) < n


@requires_library
def test_default_engine_is_one_per_process_under_threads(tmp_path, monkeypatch):
    from kiln import _capi

    monkeypatch.setenv("KILN_CACHE_DIR", str(tmp_path))
    old = _capi.set_default_engine(None)
    try:
        seen, barrier = [], threading.Barrier(8)

        def grab():
            barrier.wait()
            seen.append(_capi.default_engine())

        ts = [threading.Thread(target=grab) for _ in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert len(seen) == 8 and all(e is seen[0] for e in seen)
        assert seen[0].cache_stats()["path"].startswith(str(tmp_path))
    finally:
        mine = _capi.set_default_engine(old)
        if mine is not None:
            mine.close()
    with pytest.raises(TypeError, match="Engine"):
        _capi.set_default_engine("engine")
