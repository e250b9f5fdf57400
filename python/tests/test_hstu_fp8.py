"""kiln's fp8 (e4m3) HSTU forward on the GPU (sm_80 or newer: the fp8 wgmma
kernel on sm_90, the portable widening one elsewhere).

- float8_e4m3fn q, k, v with descale_q/k/v per tensor, per sequence or per
  sequence and head: out (bf16 or fp16) against a float64 reference computed
  from the dequantized inputs (fp8 value times its descale); inputs scaled
  by a different factor per sequence and head make the per-sequence factors
  differ by up to 16x, and reading the first factor everywhere must fail;
- quant_mode 0, 3, 4 and 5 on bf16/fp16 q, k, v: the forward against the
  float64 reference of the quantized inputs (as above) and against kiln's
  own 16-bit output, and the backward equal to kiln's 16-bit backward at
  the dequantized inputs (straight-through);
- quant_mode 1 and 2 (NVIDIA's per-token and block scales, which kiln
  computes at 16 bits): out equal, bit for bit, to kiln's 16-bit output at
  NVIDIA's dequantized inputs (_reference.nvidia_quant_dequant), and within
  the 16-bit tolerance of tests/test_hstu.py (2x the error torch makes in
  q's dtype) of the float64 reference over those inputs; the backward as
  above; no host sync;
- quant_mode with NVIDIA's arbitrary mask (func), which kiln's fp8 kernels
  do not take: every mode computes at 16 bits, so out and the gradients
  equal, bit for bit, kiln's 16-bit ones at the dequantized inputs with the
  same func (and out differs from the one without func).

Tolerances.  Against a float64 reference of the values the kernel reads,
per sequence b: max |out - ref| over b <= 0.12 * scale_b, where scale_b =
max(max |ref| over b, 1e-2 * max |ref| over the batch); 0.12 is
tests/test_hstu_fp8_gpu.c's TOL_EXACT: the kernel rounds P = silu(s) to e4m3
for its second product (up to 2^-4 relative per value).  quant_mode
against the unquantized 16-bit output adds the quantization of q, k, v
(each value off by up to 2^-4 relative), which a sequence of one or two keys
does not average out: that comparison takes 0.12 * max |ref| over the whole
output.

Every test skips without CUDA or on a GPU older than sm_80.
"""

import pytest
import torch

import kiln
from _reference import dequantize, hstu_reference, make_batch, make_func, nvidia_quant_dequant
from conftest import HAS_CUDA

E4 = getattr(torch, "float8_e4m3fn", None)
BF, FP = torch.bfloat16, torch.float16
DEV = "cuda"
TOL = 0.12
SCALE_FLOOR = 1e-2


def _sm80():
    return HAS_CUDA and torch.cuda.get_device_capability() >= (8, 0)


pytestmark = [
    pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU"),
    pytest.mark.skipif(HAS_CUDA and not _sm80(), reason="kiln needs an sm_80 or newer GPU"),
    pytest.mark.skipif(E4 is None, reason="no float8 in torch"),
]


def _has_bwd():
    try:
        from kiln import _capi

        return _capi.has_symbol("kiln_hstu_bwd")
    except OSError:
        return False


requires_bwd = pytest.mark.skipif(not _has_bwd(), reason="libkiln.so has no kiln_hstu_bwd")


def _case(name, lengths, H=2, D=128, lengths_k=None, window=(-1, -1), n_ctx=None,
          n_tgt=None, group=1, rab_heads=None, delta=False, alpha=1.0, scaling=-1,
          dtype=BF):
    return pytest.param(dict(lengths=lengths, H=H, D=D, lengths_k=lengths_k, window=window,
                             n_ctx=n_ctx, n_tgt=n_tgt, group=group, rab_heads=rab_heads,
                             delta=delta, alpha=alpha, scaling=scaling, dtype=dtype),
                        id=name)


RAGGED = [0, 1, 37, 0, 130, 1, 64]
CASES = [
    _case("none_d128", RAGGED),
    _case("causal_d64", RAGGED, D=64, window=(-1, 0)),
    _case("local_d256", [50, 9, 130], D=256, window=(7, 3)),
    _case("local_causal", RAGGED, window=(20, 0)),
    _case("ctx_tgt_groups_rab", [100, 57, 3], window=(-1, 0), n_ctx=[9, 0, 1],
          n_tgt=[31, 20, 1], group=3, rab_heads=2),
    _case("delta_causal", [5, 1, 0, 60], lengths_k=[9, 1, 3, 128], delta=True,
          window=(-1, 0)),
    _case("rab_shared_alpha_scaling", [33, 70], H=4, rab_heads=1, alpha=0.125,
          scaling=50),
    _case("fp16_causal_rab", RAGGED, D=64, window=(-1, 0), rab_heads=2, dtype=FP),
    _case("fp16_d256_delta", [5, 60], D=256, lengths_k=[9, 128], delta=True, dtype=FP),
]


def _make(c, seed=0):
    q, k, v, oq, ok = make_batch(c["lengths"], c["H"], c["D"], lengths_k=c["lengths_k"],
                                 dtype=c["dtype"], device=DEV, seed=seed)
    B = len(c["lengths"])
    mq = max(c["lengths"] + [0])
    mk = max((c["lengths_k"] or c["lengths"]) + [0])
    kw = dict(window_size=c["window"], alpha=c["alpha"], scaling_seqlen=c["scaling"],
              is_delta_q=c["delta"])
    for key, name in (("n_ctx", "num_contexts"), ("n_tgt", "num_targets")):
        if c[key] is not None:
            kw[name] = torch.tensor(c[key], dtype=torch.int32, device=DEV)
    if c["n_tgt"] is not None:
        kw["target_group_size"] = c["group"]
    if c["rab_heads"] is not None:
        g = torch.Generator().manual_seed(seed + 7)
        rab = torch.rand((B, c["rab_heads"], mk, mk), generator=g) * 2 - 1
        kw["rab"] = rab.to(device=DEV, dtype=c["dtype"])
    return q, k, v, oq, (ok if c["lengths_k"] is not None else oq), mq, mk, kw


def _check_per_sequence(name, out, ref, offsets):
    assert out.shape == ref.shape
    out, ref = out.double(), ref.double()
    assert torch.isfinite(out).all(), f"{name}: non-finite output"
    o = [int(x) for x in offsets.tolist()]
    top = ref.abs().max().item() if ref.numel() else 0.0
    for b in range(len(o) - 1):
        s, e = o[b], o[b + 1]
        if e <= s:
            continue
        rb = ref[s:e]
        scale = max(rb.abs().max().item(), SCALE_FLOOR * top)
        err = (out[s:e] - rb).abs().max().item()
        assert err <= TOL * scale + 1e-6, (
            f"{name}: sequence {b}: max error {err:.3e} exceeds {TOL} x {scale:.3e}")


def _check_global(name, out, ref):
    out, ref = out.double(), ref.double()
    assert torch.isfinite(out).all(), f"{name}: non-finite output"
    top = ref.abs().max().item() if ref.numel() else 0.0
    err = (out - ref).abs().max().item() if ref.numel() else 0.0
    assert err <= TOL * top + 1e-6, f"{name}: max error {err:.3e} exceeds {TOL} x {top:.3e}"


def _quantize(x):
    from kiln.compat import hstu_attn_interface as nv

    return nv.quantize_for_head_batch_tensor(x, None, quant_mode=5)


# ------------------------------------------------- e4m3 inputs, descale_*
@pytest.mark.parametrize("out_dtype", [BF, FP])
@pytest.mark.parametrize("c", CASES)
def test_fp8_inputs_match_the_dequantized_reference(c, out_dtype):
    q, k, v, oq, ok, mq, mk, kw = _make(c)
    (q8, dq), (k8, dk), (v8, dv) = _quantize(q), _quantize(k), _quantize(v)
    if kw.get("rab") is not None:
        kw["rab"] = kw["rab"].to(out_dtype)
    out = kiln.hstu_attn_varlen_func(q8, k8, v8, oq, ok, mq, mk, descale_q=dq,
                                     descale_k=dk, descale_v=dv, out_dtype=out_dtype, **kw)
    assert out.dtype == out_dtype and out.shape == q.shape and out.device == q.device
    ref = hstu_reference(q8.double() * dq.double(), k8.double() * dk.double(),
                         v8.double() * dv.double(), oq, ok, mq, mk, **kw)
    _check_per_sequence("out", out, ref, oq)


def test_fp8_without_descales_and_default_out_dtype():
    c = CASES[1].values[0]
    q, k, v, oq, ok, mq, mk, kw = _make(c, seed=3)
    q8, k8, v8 = ((t * 4).to(E4) for t in (q, k, v))  # descale None: 1.0
    out = kiln.hstu_attn_varlen_func(q8, k8, v8, oq, ok, mq, mk, **kw)
    assert out.dtype == BF
    ref = hstu_reference(q8.double(), k8.double(), v8.double(), oq, ok, mq, mk, **kw)
    _check_per_sequence("out", out, ref, oq)
    # a descale is a real factor: descale_v = 2 doubles the output
    two = torch.full((1,), 2.0, dtype=torch.float32, device=DEV)
    out2 = kiln.hstu_attn_varlen_func(q8, k8, v8, oq, ok, mq, mk, descale_v=two, **kw)
    _check_per_sequence("out(descale_v=2)", out2, 2 * ref, oq)


def test_fp8_argument_errors_on_the_gpu():
    q, _, _, oq, _, mq, _, _ = _make(CASES[1].values[0])
    q8 = q.to(E4)
    with pytest.raises(ValueError, match="descale_q must be a CUDA tensor"):
        kiln.hstu_attn_varlen_func(q8, q8, q8, oq, oq, mq, mq,
                                   descale_q=torch.ones(1))
    with pytest.raises(kiln.Unsupported, match="backward") as ei:
        kiln.hstu_attn_varlen_func(q8.requires_grad_(), q8, q8, oq, oq, mq, mq)
    assert ei.value.argument == "q"


def _spread(x, off, seed):
    """x with each (sequence, head) block scaled by its own factor in
    [1/4, 4]: per-sequence and per-head descales then differ by up to 16x,
    so a kernel reading the wrong one fails by far."""
    g = torch.Generator().manual_seed(seed)
    B, H = off.shape[0] - 1, x.shape[1]
    f = torch.pow(4.0, torch.rand((B, H), generator=g) * 2 - 1)
    o = [int(t) for t in off.tolist()]
    y = x.clone()
    for b in range(B):
        y[o[b]:o[b + 1]] *= f[b].to(device=x.device, dtype=x.dtype)[None, :, None]
    return y


def _quantized(x, off, mode):
    from kiln.compat import hstu_attn_interface as nv

    if mode == 0:
        return x.to(E4), None
    return nv.quantize_for_head_batch_tensor(x, off, quant_mode=mode)


# ------------------------------------------------ quant_mode 0, 3, 4, 5
@pytest.mark.parametrize("mode", [0, 3, 4, 5])
@pytest.mark.parametrize("c", CASES)
def test_quant_mode_forward_matches_16_bit(c, mode):
    q, k, v, oq, ok, mq, mk, kw = _make(c, seed=1)
    if mode in (3, 4):
        q, k, v = _spread(q, oq, 1), _spread(k, ok, 2), _spread(v, ok, 3)
    with torch.no_grad():
        out = kiln.hstu_attn_varlen_func(q, k, v, oq, ok, mq, mk, quant_mode=mode, **kw)
        out16 = kiln.hstu_attn_varlen_func(q, k, v, oq, ok, mq, mk, **kw)
    assert out.dtype == q.dtype and out.shape == q.shape
    _check_global("out vs 16-bit", out, out16)
    # the kernel's own accuracy on the values it read (the same quantization)
    (q8, dq), (k8, dk), (v8, dv) = (_quantized(x, o, mode) for x, o in
                                    ((q, oq), (k, ok), (v, ok)))
    ref = hstu_reference(dequantize(q8, dq, oq), dequantize(k8, dk, ok),
                         dequantize(v8, dv, ok), oq, ok, mq, mk, **kw)
    _check_per_sequence("out vs quantized reference", out, ref, oq)


@pytest.mark.parametrize("layout", ["per_sequence", "per_head", "per_head_strided"])
@pytest.mark.parametrize("c", [CASES[i] for i in (0, 4, 5, 8)])
def test_fp8_inputs_with_per_sequence_descales(c, layout):
    q, k, v, oq, ok, mq, mk, kw = _make(c, seed=6)
    q, k, v = _spread(q, oq, 4), _spread(k, ok, 5), _spread(v, ok, 6)
    mode = 4 if layout == "per_sequence" else 3
    (q8, dq), (k8, dk), (v8, dv) = (_quantized(x, o, mode) for x, o in
                                    ((q, oq), (k, ok), (v, ok)))
    if layout == "per_head_strided":  # (B, H) views of (H, B) tensors
        dq, dk, dv = (d.t().contiguous().t() for d in (dq, dk, dv))
        assert dq.stride() == (1, dq.shape[0])
    if kw.get("rab") is not None:
        kw["rab"] = kw["rab"].to(BF)
    out = kiln.hstu_attn_varlen_func(q8, k8, v8, oq, ok, mq, mk, descale_q=dq,
                                     descale_k=dk, descale_v=dv, **kw)
    ref = hstu_reference(dequantize(q8, dq, oq), dequantize(k8, dk, ok),
                         dequantize(v8, dv, ok), oq, ok, mq, mk, **kw)
    _check_per_sequence("out", out, ref, oq)
    # the negative control: the first factor for every sequence and head
    flat = hstu_reference(*(dequantize(x8, d.reshape(-1)[:1], o) for x8, d, o in
                            ((q8, dq, oq), (k8, dk, ok), (v8, dv, ok))), oq, ok, mq, mk,
                          **kw)
    with pytest.raises(AssertionError):
        _check_per_sequence("flat descales", out, flat, oq)


def _spread_rows(x, seed):
    """x with each row scaled by its own factor in [1/16, 16]: per-row and
    per-block scales then differ by far."""
    g = torch.Generator().manual_seed(seed)
    f = torch.pow(16.0, torch.rand((x.shape[0], 1, 1), generator=g) * 2 - 1)
    return (x.float() * f.to(x.device)).to(x.dtype)


def _at(x, off, mode, role, has_rab):
    """The point the forward computes at: e4m3 times its factor, in x's
    dtype (NVIDIA's quantization, written out, for modes 1 and 2)."""
    if mode in (1, 2):
        return nvidia_quant_dequant(x.detach(), off, mode, role, has_rab=has_rab)[1]
    return dequantize(*_quantized(x.detach(), off, mode), off).float().to(x.dtype)


def _check_16_bit(name, out, ref64, lowp, factor=2):
    """tests/test_hstu.py's criterion: kiln's max error against the float64
    reference at most factor x torch's own in the input dtype, plus a floor."""
    e = (out.double() - ref64).abs().max().item() if out.numel() else 0.0
    b = (lowp.double() - ref64).abs().max().item() if out.numel() else 0.0
    floor = 1e-6 * (1.0 + (ref64.abs().max().item() if ref64.numel() else 0.0))
    assert e <= factor * b + floor, (
        f"{name}: max error {e:.3e} exceeds {factor} x the torch {out.dtype} error {b:.3e}")


# ------------------------------------------------ quant_mode 1, 2 (16-bit)
@pytest.mark.parametrize("mode", [1, 2])
@pytest.mark.parametrize("c", CASES)
def test_quant_mode_1_2_is_the_16_bit_forward_at_nvidias_quantization(c, mode):
    q, k, v, oq, ok, mq, mk, kw = _make(c, seed=1)
    q, k, v = _spread_rows(q, 1), _spread_rows(k, 2), _spread_rows(v, 3)
    has_rab = kw.get("rab") is not None
    at = [_at(x, o, mode, r, has_rab) for x, o, r in ((q, oq, "q"), (k, ok, "k"),
                                                      (v, ok, "v"))]
    with torch.no_grad():
        out = kiln.hstu_attn_varlen_func(q, k, v, oq, ok, mq, mk, quant_mode=mode, **kw)
        out16 = kiln.hstu_attn_varlen_func(*at, oq, ok, mq, mk, **kw)
        raw16 = kiln.hstu_attn_varlen_func(q, k, v, oq, ok, mq, mk, **kw)
    assert out.dtype == q.dtype and out.shape == q.shape
    assert torch.equal(out, out16), "not the 16-bit forward at NVIDIA's quantization"
    ref = hstu_reference(*at, oq, ok, mq, mk, dtype=torch.float64, **kw)
    low = hstu_reference(*at, oq, ok, mq, mk, dtype=q.dtype, **kw)
    _check_16_bit("out vs float64 reference at the dequantized inputs", out, ref, low)
    _check_global("out vs unquantized 16-bit", out, raw16)  # the quantization error


@requires_bwd
@pytest.mark.parametrize("mode", [0, 1, 2, 3, 5])
@pytest.mark.parametrize("c", [CASES[i] for i in (1, 4, 5, 7)])
def test_quant_mode_backward_is_the_16_bit_backward_at_the_dequantized_inputs(c, mode):
    q, k, v, oq, ok, mq, mk, kw = _make(c, seed=2)
    leaves = [t.requires_grad_() for t in (q, k, v)]
    has_rab = kw.get("rab") is not None
    if has_rab:
        leaves.append(kw["rab"].requires_grad_())
    out = kiln.hstu_attn_varlen_func(q, k, v, oq, ok, mq, mk, quant_mode=mode,
                                     has_drab=has_rab, deterministic=True, **kw)
    # the point the forward computed at: e4m3 times its factor, in q's dtype
    at = [_at(x, o, mode, r, has_rab).requires_grad_() for x, o, r in
          ((q, oq, "q"), (k, ok, "k"), (v, ok, "v"))]
    rkw = dict(kw)
    if has_rab:
        rkw["rab"] = kw["rab"].detach().clone().requires_grad_()
        at.append(rkw["rab"])
    out16 = kiln.hstu_attn_varlen_func(*at[:3], oq, ok, mq, mk, has_drab=has_rab,
                                       deterministic=True, **rkw)
    _check_global("out", out.detach(), out16.detach())
    _assert_same_grads(out, leaves, out16, at, 5, "the 16-bit backward")


def _assert_same_grads(out, leaves, out16, at, seed, what):
    """The gradients of out (to leaves) and of out16 (to at) for one random
    dout are bit-identical."""
    gen = torch.Generator(device=DEV).manual_seed(seed)
    g = torch.rand(out.shape, generator=gen, device=DEV).to(out.dtype)
    got = torch.autograd.grad(out, leaves, g)
    want = torch.autograd.grad(out16, at, g)
    for name, a, b in zip(("dq", "dk", "dv", "drab"), got, want):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert torch.equal(a, b), f"{name} differs from {what}"


# ---------------------------------------------- quant_mode with func (16-bit)
FUNC_CASE = _case("func_delta_rab", [5, 1, 0, 60, 37], lengths_k=[9, 1, 3, 128, 37],
                  delta=True, rab_heads=2)


@requires_bwd
@pytest.mark.parametrize("mode", [0, 1, 3, 5])
def test_quant_mode_with_func_is_the_16_bit_forward_and_backward(mode):
    c = FUNC_CASE.values[0]
    q, k, v, oq, ok, mq, mk, kw = _make(c, seed=9)
    if mode == 3:
        q, k, v = _spread(q, oq, 7), _spread(k, ok, 8), _spread(v, ok, 9)
    kw["func"] = make_func(c["lengths"], 3, lengths_k=c["lengths_k"], seed=9, device=DEV)
    leaves = [t.requires_grad_() for t in (q, k, v)]
    leaves.append(kw["rab"].requires_grad_())
    out = kiln.hstu_attn_varlen_func(q, k, v, oq, ok, mq, mk, quant_mode=mode,
                                     has_drab=True, deterministic=True, **kw)
    assert out.dtype == q.dtype and out.shape == q.shape
    at = [_at(x, o, mode, r, True).requires_grad_() for x, o, r in
          ((q, oq, "q"), (k, ok, "k"), (v, ok, "v"))]
    rkw = dict(kw, rab=kw["rab"].detach().clone().requires_grad_())
    at.append(rkw["rab"])
    out16 = kiln.hstu_attn_varlen_func(*at[:3], oq, ok, mq, mk, has_drab=True,
                                       deterministic=True, **rkw)
    assert torch.equal(out, out16), "not the 16-bit forward with func at the dequantized inputs"
    # the mask is applied: without func the same inputs give another output
    pt = [x.detach() for x in at[:3]]
    ref_kw = dict(rkw, rab=rkw["rab"].detach())
    with torch.no_grad():
        nofunc = kiln.hstu_attn_varlen_func(*pt, oq, ok, mq, mk,
                                            **{n: t for n, t in ref_kw.items() if n != "func"})
    assert not torch.equal(out, nofunc), "func had no effect"
    ref = hstu_reference(*pt, oq, ok, mq, mk, dtype=torch.float64, **ref_kw)
    low = hstu_reference(*pt, oq, ok, mq, mk, dtype=q.dtype, **ref_kw)
    _check_16_bit("out vs float64 reference with func", out.detach(), ref, low)
    _assert_same_grads(out, leaves, out16, at, 6, "the 16-bit backward with func")


def test_nvidia_compat_quant_mode_5():
    from kiln.compat import hstu_attn_interface as nv

    c = CASES[5].values[0]  # delta-q: NVIDIA's cu_seqlens_k != cu_seqlens_q
    q, k, v, oq, ok, mq, mk, kw = _make(c, seed=4)
    with torch.no_grad():
        a = nv.hstu_attn_varlen_func(q, k, v, oq, ok, mq, mk, window_size=(-1, 0),
                                     quant_mode=5)
        b = kiln.hstu_attn_varlen_func(q, k, v, oq, ok, mq, mk, quant_mode=5, **kw)
    assert torch.equal(a, b)


@requires_bwd
@pytest.mark.parametrize("mode", [5, 1, 2])
def test_quant_mode_no_host_sync(mode):
    c = CASES[4].values[0]
    q, k, v, oq, ok, mq, mk, kw = _make(c)
    leaves = [t.requires_grad_() for t in (q, k, v)]
    kiln.hstu_attn_varlen_func(q, k, v, oq, ok, mq, mk, quant_mode=mode, **kw)  # warm up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = kiln.hstu_attn_varlen_func(q, k, v, oq, ok, mq, mk, quant_mode=mode, **kw)
        torch.autograd.grad(out, leaves, torch.ones_like(out))
    finally:
        torch.cuda.set_sync_debug_mode("default")
