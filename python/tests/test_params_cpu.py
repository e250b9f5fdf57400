"""What kiln's torch ops hand to the C library (CPU only).

kiln_hstu_fwd / kiln_hstu_bwd are replaced by recorders, so these tests look
at the parameter structs the real ops build: pointers and strides of packed
qkv views (no copy), copies made for layouts the kernels cannot read, offsets
type, masks, rab and drab strides, the workspace size, the stream.
"""

import ctypes
import types

import pytest
import torch

from conftest import requires_library

pytestmark = requires_library

BF = torch.bfloat16


class Recorder:
    def __init__(self, real):
        self.real = real
        self.fwd, self.bwd = [], []

    def __getattr__(self, name):
        return getattr(self.real, name)

    def kiln_hstu_fwd(self, engine, pp, stream):
        self.fwd.append((type(pp._obj).from_buffer_copy(pp._obj), stream.value))
        return 0

    def kiln_hstu_bwd(self, engine, pp, stream):
        self.bwd.append((type(pp._obj).from_buffer_copy(pp._obj), stream.value))
        return 0


@pytest.fixture
def rec(monkeypatch):
    import kiln.hstu as kh
    from kiln import _capi

    r = Recorder(_capi.library())
    ns = types.SimpleNamespace(**{n: getattr(_capi, n) for n in dir(_capi)
                                  if not n.startswith("__")})
    ns.library = lambda: r
    ns.default_engine = lambda: types.SimpleNamespace(handle=ctypes.c_void_p(1))
    monkeypatch.setattr(kh, "_capi", ns)
    monkeypatch.setattr(kh, "_check_device", lambda name, t, dev: None)
    monkeypatch.setattr(kh, "_stream", lambda device: 0x1234)

    class NoDevice:
        def __init__(self, device):
            pass

        def __enter__(self):
            pass

        def __exit__(self, *a):
            pass

    monkeypatch.setattr(kh, "_on_device", NoDevice)
    if not _capi.has_symbol("kiln_hstu_bwd"):
        pytest.skip("this libkiln has no backward yet")
    return r


def test_packed_qkv_views_are_passed_without_copy(rec):
    import kiln

    L, H, D = 20, 2, 64
    qkv = torch.randn(L, 3, H, D, dtype=BF).requires_grad_()
    off = torch.tensor([0, 5, 20], dtype=torch.int32)
    nt = torch.tensor([1, 4], dtype=torch.int32)
    out = kiln.hstu_attn_qkvpacked_func(qkv, off, off, 15, 15, num_targets=nt,
                                        target_group_size=3, window_size=(-1, 0),
                                        alpha=0.25)
    (p, stream), = rec.fwd
    base, es = qkv.data_ptr(), qkv.element_size()
    assert (p.q, p.k, p.v) == (base, base + H * D * es, base + 2 * H * D * es)
    for s in ("q", "k", "v"):
        assert (getattr(p, s + "_row_stride"), getattr(p, s + "_head_stride")) == (3 * H * D, D)
    assert p.out == out.data_ptr() and (p.out_row_stride, p.out_head_stride) == (H * D, D)
    assert (p.dtype, p.head_dim, p.num_heads, p.batch) == (2, D, H, 2)
    assert (p.total_q, p.total_k) == (L, L)
    assert p.seq_offsets_q == off.data_ptr() and p.seq_offsets_k == 0
    assert p.offsets_type == 0 and (p.max_seqlen_q, p.max_seqlen_k) == (15, 15)
    assert (p.window_left, p.window_right) == (-1, 0)
    assert p.num_targets == nt.data_ptr() and p.num_contexts == 0
    assert p.target_group_size == 3 and p.alpha == 0.25 and p.scaling_seqlen == 0.0
    assert p.rab == 0 and p.is_delta_q == 0 and stream == 0x1234

    out.backward(torch.ones_like(out))
    (b, _), = rec.bwd
    assert b.fwd.q == p.q and b.fwd.k == p.k
    dqkv = qkv.grad
    # dq, dk, dv were written straight into one (L, 3, H, D) tensor: the
    # pointers the recorder saw are its three slices (same storage offsets).
    assert (b.dq_row_stride, b.dq_head_stride) == (3 * H * D, D)
    assert b.dk - b.dq == H * D * 2 and b.dv - b.dk == H * D * 2
    assert dqkv.shape == qkv.shape
    assert (b.dout_row_stride, b.dout_head_stride) == (H * D, D)
    assert b.drab == 0 and b.deterministic == 0
    assert b.workspace_bytes >= L * H * D * 4 and b.workspace % 16 == 0


def test_layouts_kiln_cannot_read_are_copied(rec):
    import kiln

    L, H, D = 12, 2, 32
    off = torch.tensor([0, 12], dtype=torch.int64)
    wide = torch.randn(L, H, D + 2, dtype=BF)
    odd = wide[..., :D]                      # row stride 68, head stride 34
    flat = torch.randn(L * H * D + 1, dtype=BF)
    mis = flat[1:].view(L, H, D)             # 2 bytes off 16-byte alignment
    tr = torch.randn(H, L, D, dtype=BF).transpose(0, 1)  # heads outermost: fine
    kiln.hstu_attn_varlen_func(odd, mis, tr, off, off, 12, 12)
    (p, _), = rec.fwd
    assert p.q != odd.data_ptr() and (p.q_row_stride, p.q_head_stride) == (H * D, D)
    assert p.k != mis.data_ptr() and p.k % 16 == 0
    assert p.v == tr.data_ptr() and (p.v_row_stride, p.v_head_stride) == (D, L * D)
    assert p.offsets_type == 1


def test_delta_q_rab_and_drab(rec):
    import kiln

    H, D = 4, 64
    q = torch.randn(6, H, D, dtype=BF)
    k = torch.randn(15, H, D, dtype=BF)
    oq = torch.tensor([0, 2, 6], dtype=torch.int32)
    ok = torch.tensor([0, 7, 15], dtype=torch.int32)
    rab = torch.randn(2, 2, 9, 9).requires_grad_()      # float32: cast to bf16
    q.requires_grad_()
    out = kiln.hstu_attn_varlen_func(q, k, k, oq, ok, 4, 8, window_size=(3, 1), rab=rab,
                                     has_drab=True, is_delta_q=True, scaling_seqlen=100,
                                     deterministic=True)
    (p, _), = rec.fwd
    assert p.seq_offsets_k == ok.data_ptr() and p.is_delta_q == 1
    assert (p.window_left, p.window_right) == (3, 1) and p.scaling_seqlen == 100.0
    assert p.rab_heads == 2 and (p.rab_batch_stride, p.rab_head_stride,
                                 p.rab_row_stride) == (162, 81, 9)
    out.backward(torch.ones_like(out))
    (b, _), = rec.bwd
    assert b.drab != 0 and (b.drab_batch_stride, b.drab_head_stride,
                            b.drab_row_stride) == (162, 81, 9)
    assert b.deterministic == 1
    assert rab.grad is not None and rab.grad.dtype == torch.float32
    assert rab.grad.shape == rab.shape


def test_func_pointer_count_and_stride(rec):
    """NVIDIA's func: its data pointer, n_func and the stride between its
    rows reach kiln_hstu_fwd_params (forward and backward) without a copy;
    a layout the kernels cannot read (last dimension not contiguous) is
    copied first."""
    import kiln

    L, H, D = 12, 2, 64
    q = torch.randn(L, H, D, dtype=BF).requires_grad_()
    off = torch.tensor([0, 5, 12], dtype=torch.int32)
    big = torch.zeros(1, 3, L + 300, dtype=torch.int32)
    func = big[:, :, :L + 256]                   # NVIDIA's (1, 3, total_q + 256)
    out = kiln.hstu_attn_varlen_func(q, q, q, off, off, 7, 7, func=func)
    (p, _), = rec.fwd
    assert (p.func, p.n_func, p.func_stride) == (func.data_ptr(), 3, L + 300)
    assert (p.window_left, p.window_right) == (-1, -1)
    out.backward(torch.ones_like(out))
    (b, _), = rec.bwd
    assert (b.fwd.func, b.fwd.n_func, b.fwd.func_stride) == (func.data_ptr(), 3, L + 300)
    rec.fwd.clear()
    one = torch.zeros(1, 1, L, dtype=torch.int32)  # n_func 1: its length is the stride
    kiln.hstu_attn_qkvpacked_func(torch.randn(L, 3, H, D, dtype=BF), off, off, 7, 7,
                                  func=one)
    (p, _), = rec.fwd
    assert (p.func, p.n_func, p.func_stride) == (one.data_ptr(), 1, L)
    rec.fwd.clear()
    tr = torch.zeros(1, L + 256, 5, dtype=torch.int32).transpose(1, 2)  # columns strided
    kiln.hstu_attn_varlen_func(q.detach(), q.detach(), q.detach(), off, off, 7, 7, func=tr)
    (p, _), = rec.fwd
    assert p.func != tr.data_ptr() and (p.n_func, p.func_stride) == (5, L + 256)
    rec.fwd.clear()
    kiln.hstu_attn_varlen_func(q.detach(), q.detach(), q.detach(), off, off, 7, 7)
    (p, _), = rec.fwd
    assert (p.func, p.n_func, p.func_stride) == (0, 0, 0)


def test_single_head_odd_head_stride_is_normalized(rec):
    import kiln

    L, D = 9, 128
    base = torch.randn(L, 1, D, dtype=BF)
    q = base.as_strided((L, 1, D), (D, 3, 1))  # head stride irrelevant for 1 head
    off = torch.tensor([0, 9], dtype=torch.int32)
    kiln.hstu_attn_varlen_func(q, q, q, off, off, 9, 9)
    (p, _), = rec.fwd
    assert p.q == q.data_ptr() and (p.q_row_stride, p.q_head_stride) == (D, D)


def test_empty_inputs_launch_nothing(rec):
    import kiln

    q = torch.zeros(0, 2, 64, dtype=BF)
    off = torch.zeros(3, dtype=torch.int32)
    out = kiln.hstu_attn_varlen_func(q, q, q, off, off, 0, 0)
    assert out.shape == (0, 2, 64) and rec.fwd == []
    k = torch.zeros(0, 2, 64, dtype=BF)
    q2 = torch.randn(4, 2, 64, dtype=BF)
    out = kiln.hstu_attn_varlen_func(q2, k, k, torch.tensor([0, 4], dtype=torch.int32),
                                     torch.tensor([0, 0], dtype=torch.int32), 4, 4)
    assert torch.all(out == 0) and rec.fwd == []


# ------------------------------------------------------------------- fp8
E4 = getattr(torch, "float8_e4m3fn", None)
needs_fp8 = pytest.mark.skipif(E4 is None, reason="no float8 in torch")


@needs_fp8
def test_fp8_params_dtype_out_dtype_descales_and_16_element_strides(rec):
    import kiln

    L, H, D = 20, 2, 64
    off = torch.tensor([0, 5, 20], dtype=torch.int32)
    q8 = torch.randn(L, H, D).to(E4)
    k8 = torch.randn(L, H, D).to(E4)
    # head stride 72 elements: a multiple of 8 (fine for 16-bit), not of 16
    v8 = torch.randn(L, H, D + 8).to(E4)[..., :D]
    dq, dv = torch.tensor([0.5]), torch.tensor([3.0])
    rab = torch.randn(2, 1, 15, 15)  # float32: cast to the out dtype
    out = kiln.hstu_attn_varlen_func(q8, k8, v8, off, off, 15, 15, window_size=(-1, 0),
                                     rab=rab, descale_q=dq, descale_v=dv,
                                     out_dtype=torch.float16)
    (p, stream), = rec.fwd
    assert out.dtype == torch.float16 and p.out == out.data_ptr()
    assert (p.dtype, p.out_dtype) == (3, 1) and (p.head_dim, p.num_heads) == (D, H)
    assert (p.descale_q, p.descale_k, p.descale_v) == (dq.data_ptr(), 0, dv.data_ptr())
    assert p.q == q8.data_ptr() and (p.q_row_stride, p.q_head_stride) == (H * D, D)
    assert p.k == k8.data_ptr()
    assert p.v != v8.data_ptr() and (p.v_row_stride, p.v_head_stride) == (H * D, D)
    assert p.rab not in (0, rab.data_ptr()) and p.rab % 2 == 0
    assert (p.window_left, p.window_right) == (-1, 0) and stream == 0x1234
    assert rec.bwd == []
    kiln.hstu_attn_varlen_func(q8, k8, k8, off, off, 15, 15)
    assert (rec.fwd[-1][0].out_dtype, rec.fwd[-1][0].descale_k) == (2, 0)  # bf16 default


@needs_fp8
def test_quant_mode_5_params_forward_fp8_backward_16_bit(rec):
    import kiln

    L, H, D = 12, 2, 128
    off = torch.tensor([0, 12], dtype=torch.int64)
    q, k, v = (torch.randn(L, H, D, dtype=BF).requires_grad_() for _ in range(3))
    out = kiln.hstu_attn_varlen_func(q, k, v, off, off, 12, 12, quant_mode=5)
    (p, _), = rec.fwd
    assert out.dtype == BF and p.out == out.data_ptr()
    assert (p.dtype, p.out_dtype) == (3, 2)
    ds = (p.descale_q, p.descale_k, p.descale_v)
    assert all(ds) and len(set(ds)) == 3 and all(d % 4 == 0 for d in ds)
    assert p.q not in (q.data_ptr(), 0) and p.offsets_type == 1
    out.backward(torch.ones_like(out))
    (b, _), = rec.bwd
    assert (b.fwd.dtype, b.fwd.out_dtype) == (2, 0)
    assert (b.fwd.descale_q, b.fwd.descale_k, b.fwd.descale_v) == (0, 0, 0)
    # the backward runs at the dequantized inputs, new 16-bit tensors
    assert b.fwd.q not in (q.data_ptr(), p.q, 0)
    assert (b.fwd.q_row_stride, b.fwd.q_head_stride) == (H * D, D)
    assert q.grad is not None and q.grad.dtype == BF
    # per-sequence-and-head descales (quant_mode 3) reach the struct as (H, 1)
    rec.fwd.clear()
    kiln.hstu_attn_varlen_func(q, k, v, off, off, 12, 12, quant_mode=3)
    (p, _), = rec.fwd
    assert (p.descale_batch_stride, p.descale_head_stride) == (H, 1) and all(
        (p.descale_q, p.descale_k, p.descale_v))
    rec.fwd.clear()
    kiln.hstu_attn_varlen_func(q, k, v, off, off, 12, 12, quant_mode=0)
    (p, _), = rec.fwd
    assert (p.descale_q, p.descale_k, p.descale_v, p.descale_batch_stride) == (0, 0, 0, 0)


# ------------------------------------------------------------- _capi fp8
def test_capi_descale_checks_name_the_argument():
    from kiln import _capi

    dev = torch.device("cuda", 0)
    _capi._check_descale("descale_q", None, dev)
    with pytest.raises(TypeError, match="descale_q.*torch.Tensor"):
        _capi._check_descale("descale_q", 1.0, dev)
    with pytest.raises(TypeError, match="descale_k.*float32"):
        _capi._check_descale("descale_k", torch.ones(1, dtype=torch.float64), dev)
    with pytest.raises(ValueError, match=r"descale_v.*one element.*\(2, 2, 2\)"):
        _capi._check_descale("descale_v", torch.ones(2, 2, 2), dev)
    with pytest.raises(ValueError, match="descale_q.*cpu.*cuda:0"):
        _capi._check_descale("descale_q", torch.ones(1), dev)


@pytest.fixture
def capi_cpu(monkeypatch):
    """kiln._capi.hstu_fwd_params with its CUDA-device view checks off."""
    from kiln import _capi

    monkeypatch.setattr(_capi, "_check_view", lambda *a: None)
    monkeypatch.setattr(_capi, "_check_index", lambda *a: None)
    return _capi


@needs_fp8
def test_capi_fwd_params_fp8(capi_cpu, monkeypatch):
    _capi = capi_cpu
    L, H, D = 8, 2, 64
    q8 = torch.zeros(L, H, D).to(E4)
    off = torch.tensor([0, 8], dtype=torch.int32)
    for odt, code in ((torch.float16, 1), (BF, 2)):
        out = torch.empty(L, H, D, dtype=odt)
        p = _capi.hstu_fwd_params(q8, q8, q8, out, off, 8)
        assert (p.dtype, p.out_dtype) == (3, code)
        assert (p.descale_q, p.descale_k, p.descale_v) == (0, 0, 0)
    with pytest.raises(TypeError, match="out.*float32"):
        _capi.hstu_fwd_params(q8, q8, q8, torch.empty(L, H, D), off, 8)
    d = torch.ones(1)
    with pytest.raises(ValueError, match="descale_k.*cpu"):  # q on the CPU here
        _capi.hstu_fwd_params(q8, q8, q8, torch.empty(L, H, D, dtype=BF), off, 8,
                              descale_k=d)
    with pytest.raises(TypeError, match="descale_v.*float32"):
        _capi.hstu_fwd_params(q8, q8, q8, torch.empty(L, H, D, dtype=BF), off, 8,
                              descale_v=d.half())
    monkeypatch.setattr(_capi, "_check_descale", lambda *a: None)
    with pytest.raises(ValueError, match=r"descale_q has shape \(3,\).*\(1,\) or \(1, 2\)"):
        _capi.hstu_fwd_params(q8, q8, q8, torch.empty(L, H, D, dtype=BF), off, 8,
                              descale_q=torch.ones(3))
    dq, dv = torch.ones(1), torch.ones(1)
    p = _capi.hstu_fwd_params(q8, q8, q8, torch.empty(L, H, D, dtype=BF), off, 8,
                              descale_q=dq, descale_v=dv)
    assert (p.descale_q, p.descale_k, p.descale_v) == (dq.data_ptr(), 0, dv.data_ptr())
    assert (p.descale_batch_stride, p.descale_head_stride) == (0, 0)
    # (B, H) descales: their strides go to the struct
    bh = torch.ones(2, 1).t()  # (1, 2) with strides (1, 1)
    p = _capi.hstu_fwd_params(q8, q8, q8, torch.empty(L, H, D, dtype=BF), off, 8,
                              descale_k=bh)
    assert (p.descale_k, p.descale_batch_stride, p.descale_head_stride) == (
        bh.data_ptr(), 1, 1)


def test_descale_layout_names_the_argument():
    from kiln import _capi

    lay = _capi.descale_layout
    n = (None, None, None)
    assert lay(zip(("descale_q", "descale_k", "descale_v"), n), 3, 4) == (0, 0)
    one, per_b, per_bh = torch.ones(1), torch.ones(3), torch.ones(3, 4)
    assert lay([("descale_q", one), ("descale_k", torch.ones(()))], 3, 4) == (0, 0)
    assert lay([("descale_q", per_b), ("descale_v", per_b)], 3, 4) == (1, 0)
    assert lay([("descale_q", per_bh)], 3, 4) == (4, 1)
    assert lay([("descale_q", torch.ones(4, 3).t())], 3, 4) == (1, 3)  # any strides
    assert lay([("descale_q", torch.ones(6)[::2])], 3, 4) == (2, 0)
    assert lay([("descale_q", torch.ones(1))], 1, 1) == (0, 0)  # B = H = 1: one element
    with pytest.raises(ValueError, match=r"descale_k has shape \(4,\).*\(3,\) or \(3, 4\)"):
        lay([("descale_k", torch.ones(4))], 3, 4)
    with pytest.raises(ValueError, match=r"descale_v has shape \(3, 5\)"):
        lay([("descale_v", torch.ones(3, 5))], 3, 4)
    with pytest.raises(ValueError, match="descale_k .* laid out unlike descale_q"):
        lay([("descale_q", per_b), ("descale_k", per_bh)], 3, 4)
    with pytest.raises(ValueError, match="descale_v .* laid out unlike descale_q"):
        lay([("descale_q", one), ("descale_v", per_b)], 3, 4)


def test_capi_fwd_params_16_bit_rejects_descales(capi_cpu):
    _capi = capi_cpu
    q = torch.zeros(8, 2, 64, dtype=BF)
    off = torch.tensor([0, 8], dtype=torch.int32)
    p = _capi.hstu_fwd_params(q, q, q, q.clone(), off, 8)
    assert (p.dtype, p.out_dtype, p.descale_q) == (2, 0, 0)
    with pytest.raises(ValueError, match="descale_q.*float8_e4m3fn"):
        _capi.hstu_fwd_params(q, q, q, q.clone(), off, 8, descale_q=torch.ones(1))
