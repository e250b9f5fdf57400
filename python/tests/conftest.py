"""Shared fixtures of kiln's Python tests.

The tests run against the package in this checkout (python/ goes first on
sys.path) unless KILN_TEST_INSTALLED=1 asks for the installed one.  GPU tests
skip without CUDA; the CPU tests need torch and, for the library checks,
libkiln.so (kiln._capi.library_path()).
"""

import os
import pathlib
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
if os.environ.get("KILN_TEST_INSTALLED") != "1":
    sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

torch = pytest.importorskip("torch")

from _reference import dequantize, hstu_reference, hstu_reference_bwd  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")


def _library_ok():
    try:
        import kiln

        kiln.library()
        return True
    except OSError:
        return False


requires_library = pytest.mark.skipif(not _library_ok(), reason="libkiln.so not found")


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Keep test kernels out of the user's cache unless KILN_CACHE_DIR is set."""
    if "KILN_CACHE_DIR" not in os.environ:
        os.environ["KILN_CACHE_DIR"] = str(tmp_path_factory.mktemp("kiln-cache"))
    yield


def _ref_kwargs(seq_offsets_k, max_seqlen_q, max_seqlen_k, num_contexts, num_targets,
                target_group_size, window_left, window_right, alpha, scaling_seqlen, rab,
                is_delta_q):
    return dict(num_contexts=num_contexts, num_targets=num_targets,
                target_group_size=target_group_size, window_size=(window_left, window_right),
                alpha=alpha, rab=rab, is_delta_q=is_delta_q,
                scaling_seqlen=scaling_seqlen if scaling_seqlen else -1)


@pytest.fixture
def cpu_kiln(monkeypatch):
    """kiln.hstu with its C calls replaced by the float64 reference, and
    CPU tensors allowed: exercises every piece of Python plumbing (argument
    mapping, custom ops, autograd, packed qkv, seqused, torch.compile, the fp8
    paths) on a machine without a GPU.  The fp8 forward computes the
    reference of the dequantized inputs (fp8 value times its descale) and
    records its calls in kh._fp8_calls (a list of dicts)."""
    import kiln.hstu as kh

    def fwd_impl(q, k, v, out, so_q, so_k, mq, mk, nc, nt, tgs, wl, wr, alpha, scal, rab,
                 dlt, func=None):
        if q.shape[0] == 0 or so_q.shape[0] <= 1:
            return out
        if k.shape[0] == 0:
            return out.zero_()
        if func is not None:  # what the C library is given
            assert func.dtype == torch.int32 and func.dim() == 3
            assert func.shape[2] >= q.shape[0]
        ref = hstu_reference(q, k, v, so_q, so_k, mq, mk, func=func,
                             **_ref_kwargs(so_k, mq, mk, nc, nt, tgs, wl, wr, alpha, scal,
                                           rab, dlt))
        out.copy_(ref)
        return out

    def bwd_impl(dout, q, k, v, dq, dk, dv, so_q, so_k, mq, mk, nc, nt, tgs, wl, wr, alpha,
                 scal, rab, drab, dlt, det, func=None):
        g = hstu_reference_bwd(dout, q, k, v, so_q, so_k, mq, mk, func=func,
                               **_ref_kwargs(so_k, mq, mk, nc, nt, tgs, wl, wr, alpha,
                                             scal, rab, dlt))
        for dst, src in zip((dq, dk, dv), g[:3]):
            dst.copy_(src)
        if drab is not None:
            drab.copy_(g[3])

    calls = []

    def fwd_fp8_impl(q, k, v, out, dq, dk, dv, so_q, so_k, mq, mk, nc, nt, tgs, wl, wr,
                     alpha, scal, rab, dlt):
        e4 = torch.float8_e4m3fn
        assert q.dtype == k.dtype == v.dtype == e4, (q.dtype, k.dtype, v.dtype)
        assert out.dtype in (torch.float16, torch.bfloat16)
        assert rab is None or rab.dtype == out.dtype, "rab must come in out's dtype"
        for d in (dq, dk, dv):
            assert d is None or (d.dtype == torch.float32 and d.dim() <= 2)
        calls.append(dict(q=q, k=k, v=v, descales=(dq, dk, dv), out_dtype=out.dtype,
                          rab=rab))
        sk = so_q if so_k is None else so_k
        return fwd_impl(dequantize(q, dq, so_q), dequantize(k, dk, sk),
                        dequantize(v, dv, sk), out, so_q, so_k, mq, mk, nc, nt, tgs, wl, wr,
                        alpha, scal, rab, dlt)

    monkeypatch.setattr(kh, "_fwd_impl", fwd_impl)
    monkeypatch.setattr(kh, "_fwd_fp8_impl", fwd_fp8_impl)
    monkeypatch.setattr(kh, "_fp8_calls", calls, raising=False)
    monkeypatch.setattr(kh, "_bwd_impl", bwd_impl)
    monkeypatch.setattr(kh, "_check_device", lambda name, t, dev: None)
    return kh
