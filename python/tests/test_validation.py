"""Argument checking, signatures and the pure-torch helpers (CPU only).

Every check of kiln's torch functions runs before any CUDA call, the device
check last, so CPU tensors reach each one: a wrong type or dtype raises
TypeError, a wrong shape or value ValueError, an unimplemented feature
kiln.Unsupported (NotImplementedError), each naming the argument.
"""

import inspect

import pytest
import torch

import kiln
from kiln.compat import hstu as fb
from kiln.compat import hstu_attn_interface as nv

BF = torch.bfloat16


def _inputs(L=10, H=2, D=64, dtype=BF, B=2):
    q = torch.zeros(L, H, D, dtype=dtype)
    off = torch.tensor([0, 4, L][: B + 1] if B == 2 else [0] + [L] * B, dtype=torch.int32)
    return q, q.clone(), q.clone(), off


def call(**over):
    q, k, v, off = _inputs()
    kw = dict(q=q, k=k, v=v, seq_offsets_q=off, seq_offsets_k=off, max_seqlen_q=6,
              max_seqlen_k=6)
    kw.update(over)
    return kiln.hstu_attn_varlen_func(**kw)


def expect(exc, words, **over):
    with pytest.raises(exc) as ei:
        call(**over)
    for w in words:
        assert w in str(ei.value), f"{w!r} not in {str(ei.value)!r}"
    return ei.value


q0, k0, v0, off0 = _inputs()

BAD = [
    # (exception, words in the message, overrides)
    (TypeError, ["q", "torch.Tensor"], dict(q=[1, 2])),
    (ValueError, ["q", "3-D"], dict(q=q0[0])),
    (ValueError, ["v", "3-D"], dict(v=v0[None])),
    (TypeError, ["q", "float32"], dict(q=q0.float(), k=k0.float(), v=v0.float())),
    (TypeError, ["k", "float16"], dict(k=k0.half())),
    (TypeError, ["v", "float16"], dict(v=v0.half())),
    (ValueError, ["head dim 48"], dict(q=q0[..., :48], k=k0[..., :48], v=v0[..., :48])),
    (ValueError, ["k", "heads"], dict(k=k0[:, :1])),
    (ValueError, ["v", "head dim"], dict(v=v0[..., :32])),
    (ValueError, ["v", "rows"], dict(v=v0[:7])),
    (TypeError, ["seq_offsets_q", "int32"], dict(seq_offsets_q=off0.float())),
    (ValueError, ["seq_offsets_q", "1-D"], dict(seq_offsets_q=off0[None])),
    (ValueError, ["seq_offsets_q", "batch + 1"],
     dict(seq_offsets_q=off0[:0], seq_offsets_k=None)),
    (ValueError, ["seq_offsets_k", "entries"], dict(seq_offsets_k=off0[:2])),
    (TypeError, ["seq_offsets_k", "int32"], dict(seq_offsets_k=off0.double())),
    (TypeError, ["max_seqlen_q", "int"], dict(max_seqlen_q=6.0)),
    (TypeError, ["max_seqlen_k", "int"], dict(max_seqlen_k=torch.tensor(6))),
    (ValueError, ["max_seqlen_q", ">= 0"], dict(max_seqlen_q=-1)),
    (ValueError, ["max_seqlen_q", "max_seqlen_k"], dict(max_seqlen_q=7)),
    (TypeError, ["window_size"], dict(window_size=3)),
    (ValueError, ["window_size", "2 entries"], dict(window_size=(1, 2, 3))),
    (ValueError, ["window_size", "-1"], dict(window_size=(-2, 0))),
    (TypeError, ["window_size[0]", "int"], dict(window_size=(1.5, 0))),
    (TypeError, ["num_contexts", "int32"],
     dict(num_contexts=torch.zeros(2, dtype=torch.int64), window_size=(-1, 0))),
    (ValueError, ["num_contexts", "(2,)"],
     dict(num_contexts=torch.zeros(3, dtype=torch.int32), window_size=(-1, 0))),
    (ValueError, ["num_contexts", "causal"], dict(num_contexts=torch.zeros(2, dtype=torch.int32))),
    (ValueError, ["num_targets", "causal"],
     dict(num_targets=torch.zeros(2, dtype=torch.int32), window_size=(3, 0))),
    (ValueError, ["target_group_size", ">= 1"], dict(target_group_size=0)),
    (TypeError, ["target_group_size", "int"], dict(target_group_size=1.5)),
    (TypeError, ["alpha", "real"], dict(alpha="x")),
    (ValueError, ["alpha", "finite"], dict(alpha=float("nan"))),
    (ValueError, ["scaling_seqlen"], dict(scaling_seqlen=0)),
    (TypeError, ["scaling_seqlen"], dict(scaling_seqlen="6")),
    (ValueError, ["rab", "4-D"], dict(rab=torch.zeros(2, 6, 6, dtype=BF))),
    (TypeError, ["rab", "dtype"], dict(rab=torch.zeros(2, 1, 6, 6, dtype=torch.int32))),
    (ValueError, ["rab", "batch"], dict(rab=torch.zeros(3, 1, 6, 6, dtype=BF))),
    (ValueError, ["rab", "heads"], dict(rab=torch.zeros(2, 3, 6, 6, dtype=BF))),
    (ValueError, ["rab", "max_seqlen_k"], dict(rab=torch.zeros(2, 1, 5, 6, dtype=BF))),
    (ValueError, ["has_drab", "rab"], dict(has_drab=True)),
    (TypeError, ["has_drab", "bool"], dict(has_drab=1)),
    (ValueError, ["is_delta_q", "num_targets"],
     dict(is_delta_q=True, num_targets=torch.zeros(2, dtype=torch.int32),
          window_size=(-1, 0))),
    (TypeError, ["is_delta_q", "bool"], dict(is_delta_q="yes")),
    (TypeError, ["seqused_q", "int32"], dict(seqused_q=torch.zeros(2))),
    (ValueError, ["seqused_k", "(2,)"], dict(seqused_k=torch.zeros(5, dtype=torch.int32))),
    # NVIDIA's arbitrary mask: int32 (1, odd n_func, >= total_q), a mask of its own
    (TypeError, ["func", "torch.Tensor"], dict(func=[[0]])),
    (TypeError, ["func", "int32"], dict(func=torch.zeros(1, 3, 266))),
    (ValueError, ["func", "3-D"], dict(func=torch.zeros(3, 266, dtype=torch.int32))),
    (ValueError, ["func", "one func head"], dict(func=torch.zeros(2, 3, 266, dtype=torch.int32))),
    (ValueError, ["func", "n_func = 2", "odd"], dict(func=torch.zeros(1, 2, 266, dtype=torch.int32))),
    (ValueError, ["func", "n_func = 257"], dict(func=torch.zeros(1, 257, 266, dtype=torch.int32))),
    (ValueError, ["func", "9 columns", "10 rows"], dict(func=torch.zeros(1, 3, 9, dtype=torch.int32))),
    (ValueError, ["func", "window_size", "(-1, 0)"],
     dict(func=torch.zeros(1, 3, 266, dtype=torch.int32), window_size=(-1, 0))),
    (ValueError, ["func", "num_contexts"],
     dict(func=torch.zeros(1, 3, 266, dtype=torch.int32),
          num_contexts=torch.zeros(2, dtype=torch.int32))),
    (ValueError, ["func", "num_targets"],
     dict(func=torch.zeros(1, 3, 266, dtype=torch.int32),
          num_targets=torch.zeros(2, dtype=torch.int32))),
    (ValueError, ["q", "CUDA"], dict()),  # every other check passed: the device one
]


@pytest.mark.parametrize("exc,words,over", BAD,
                         ids=[f"{i}-{'-'.join(b[1])}" for i, b in enumerate(BAD)])
def test_bad_argument_names_it(exc, words, over):
    e = expect(exc, words, **over)
    assert str(e).startswith("kiln: ")


UNSUPPORTED = [
    ("descale_do", dict(descale_do=torch.ones(1))),
    # func with float8_e4m3fn q, k, v: in FP8_BAD below (quant_mode takes func)
]


@pytest.mark.parametrize("arg,over", UNSUPPORTED, ids=[u[0] + str(i) for i, u in
                                                       enumerate(UNSUPPORTED)])
def test_unsupported_features_raise_not_implemented(arg, over):
    e = expect(NotImplementedError, [arg], **over)
    assert isinstance(e, kiln.Unsupported) and e.argument == arg


def test_quant_mode_1_and_2_are_not_unsupported():
    # per-token (1) and block (2) scales: quantized as NVIDIA's, computed at
    # 16 bits; every argument check passes (on to the device check), with
    # rab (mode 2's block sizes depend on it), packed or not, fp16 or bf16
    import kiln.hstu as kh

    for qm in (1, 2):
        assert kh._check_quant_mode(qm) == qm
        e = expect(ValueError, ["q", "CUDA"], quant_mode=qm)
        assert not isinstance(e, NotImplementedError)
        expect(ValueError, ["CUDA"], quant_mode=qm, q=q0.half(), k=k0.half(), v=v0.half())
        expect(ValueError, ["CUDA"], quant_mode=qm, rab=torch.zeros(2, 1, 6, 6), has_drab=True)
        expect(ValueError, ["CUDA"], quant_mode=qm, window_size=(-1, 0),
               num_targets=torch.ones(2, dtype=torch.int32))
        expect(ValueError, ["CUDA"], quant_mode=qm, q=q0[..., :32], k=k0[..., :32],
               v=v0[..., :32])  # 16-bit compute: head dim 32 too


def test_quant_mode_takes_func():
    # every quant_mode with func passes the argument checks (on to the device
    # check): kiln computes it at 16 bits at the dequantized values
    func = torch.zeros(1, 3, 266, dtype=torch.int32)
    for qm in (0, 1, 2, 3, 4, 5):
        e = expect(ValueError, ["q", "CUDA"], quant_mode=qm, func=func)
        assert not isinstance(e, NotImplementedError)
    expect(ValueError, ["CUDA"], quant_mode=3, func=func, rab=torch.zeros(2, 1, 6, 6),
           has_drab=True)
    expect(ValueError, ["CUDA"], quant_mode=5, func=func,
           seqused_q=torch.ones(2, dtype=torch.int32))
    # the func checks still apply with quant_mode
    expect(ValueError, ["func", "window_size"], quant_mode=5, func=func, window_size=(-1, 0))
    with pytest.raises(ValueError, match="CUDA"):
        kiln.hstu_attn_qkvpacked_func(torch.zeros(10, 3, 2, 64, dtype=BF), off0, off0, 6, 6,
                                      func=func, quant_mode=2)


def test_quant_mode_values_and_types():
    # -1 (NVIDIA's default), None (FBGEMM allows it) and 0 to 5 go on to the
    # device check; other ints are ValueError, other types TypeError.
    for qm in (-1, None, 0, 1, 2, 3, 4, 5):
        expect(ValueError, ["CUDA"], quant_mode=qm)
    expect(ValueError, ["CUDA"], quant_mode=3, q=q0.half(), k=k0.half(), v=v0.half())
    for qm in (-2, 6, 100):
        expect(ValueError, ["quant_mode", str(qm), "-1 or 0 to 5"], quant_mode=qm)
    for qm in ("5", 5.0, True):
        expect(TypeError, ["quant_mode", "int"], quant_mode=qm)


# ------------------------------------------------------------ fp8 arguments
E4M3 = getattr(torch, "float8_e4m3fn", None)
E5M2 = getattr(torch, "float8_e5m2", None)
needs_e4m3 = pytest.mark.skipif(E4M3 is None, reason="no float8 in torch")


def _f8(t=q0):
    return t.to(E4M3)


def _d(x=0.5, **kw):
    return torch.full((1,), x, dtype=torch.float32, **kw)


FP8_BAD = [
    # (exception, argument, words in the message, overrides) on float8_e4m3fn q, k, v
    (TypeError, "k", ["k", "bfloat16", "one dtype"], dict(k=k0)),
    (TypeError, "v", ["v", "float16"], dict(v=v0.half())),
    (TypeError, "k", ["k", "float8_e5m2"], dict(k=k0.to(E5M2) if E5M2 else None)),
    (ValueError, "q", ["head dim 32", "64, 128, 256", "float8_e4m3fn"],
     dict(q=_f8(q0[..., :32]) if E4M3 else None, k=_f8(k0[..., :32]) if E4M3 else None,
          v=_f8(v0[..., :32]) if E4M3 else None)),
    (TypeError, "descale_q", ["descale_q", "float32"], dict(descale_q=torch.ones(1).double())),
    (TypeError, "descale_k", ["descale_k", "float32"],
     dict(descale_k=torch.ones(1, dtype=torch.float16))),
    (TypeError, "descale_v", ["descale_v", "torch.Tensor"], dict(descale_v=0.5)),
    (ValueError, "descale_q", ["descale_q", "one element", "(3,)", "(2,) or (2, 2)"],
     dict(descale_q=torch.ones(3))),
    (ValueError, "descale_q", ["descale_q", "one element", "(2, 2, 1)"],
     dict(descale_q=torch.ones(2, 2, 1))),
    (ValueError, "descale_k", ["descale_k", "laid out unlike descale_q"],
     dict(descale_q=torch.ones(2), descale_k=torch.ones(2, 2))),
    (ValueError, "descale_k", ["descale_k", "one element"], dict(descale_k=torch.ones(0))),
    (ValueError, "descale_v", ["descale_v", "one element", "(1, 2)"],
     dict(descale_v=torch.ones(1, 2))),
    (TypeError, "out_dtype", ["out_dtype", "float32"], dict(out_dtype=torch.float32)),
    (TypeError, "out_dtype", ["out_dtype"], dict(out_dtype=E4M3)),
    (ValueError, "quant_mode", ["quant_mode=5", "float8_e4m3fn"], dict(quant_mode=5)),
    (kiln.Unsupported, "has_drab", ["has_drab", "forward only"],
     dict(rab=torch.zeros(2, 1, 6, 6, dtype=BF), has_drab=True)),
    (ValueError, "quant_mode", ["quant_mode=1", "float8_e4m3fn"], dict(quant_mode=1)),
    (ValueError, "quant_mode", ["quant_mode=2", "float8_e4m3fn"], dict(quant_mode=2)),
    (ValueError, "quant_mode", ["quant_mode=3", "float8_e4m3fn"], dict(quant_mode=3)),
    (kiln.Unsupported, "descale_do", ["descale_do", "forward only"],
     dict(descale_do=torch.ones(1))),
    # the e4m3 kernels have no func mask (16-bit inputs with quant_mode take one)
    (kiln.Unsupported, "func", ["func", "float8_e4m3fn", "quant_mode 0 to 5"],
     dict(func=torch.zeros(1, 3, 266, dtype=torch.int32))),
    (kiln.Unsupported, "func", ["func", "float8_e4m3fn"],
     dict(func=torch.zeros(1, 3, 266, dtype=torch.int32), descale_q=_d(), descale_k=_d(),
          descale_v=_d())),
    (ValueError, "q", ["q", "CUDA"], dict()),  # every other check passed
    (ValueError, "q", ["q", "CUDA"],          # valid fp8 arguments, all given
     dict(descale_q=_d(), descale_k=_d(2.0), descale_v=_d().reshape(()),
          out_dtype=torch.float16, rab=torch.zeros(2, 1, 6, 6))),
    (ValueError, "q", ["q", "CUDA"],          # per sequence
     dict(descale_q=torch.ones(2), descale_v=torch.ones(2))),
    (ValueError, "q", ["q", "CUDA"],          # per sequence and head, any strides
     dict(descale_q=torch.ones(2, 2).t(), descale_k=torch.ones(2, 2).t())),
]


@needs_e4m3
@pytest.mark.parametrize("exc,arg,words,over", FP8_BAD,
                         ids=[f"{i}-{b[1]}" for i, b in enumerate(FP8_BAD)])
def test_fp8_bad_argument_names_it(exc, arg, words, over):
    if any(v is None for n, v in over.items() if n in ("q", "k", "v")):
        pytest.skip("float8 dtype missing in this torch")
    kw = dict(q=_f8(), k=_f8(k0), v=_f8(v0))
    kw.update(over)
    e = expect(exc, words, **kw)
    assert str(e).startswith("kiln: ")
    if isinstance(e, kiln.Unsupported):
        assert e.argument == arg


@needs_e4m3
def test_fp8_e5m2_is_unsupported_naming_q():
    if E5M2 is None:
        pytest.skip("no float8_e5m2 in torch")
    q = q0.to(E5M2)
    e = expect(kiln.Unsupported, ["q", "float8_e5m2", "float8_e4m3fn"], q=q, k=q, v=q)
    assert e.argument == "q"


@needs_e4m3
@pytest.mark.parametrize("which", ["q", "k", "v"])
def test_fp8_with_grad_requested_is_unsupported_naming_q(which):
    kw = dict(q=_f8(), k=_f8(k0), v=_f8(v0))
    kw[which] = kw[which].requires_grad_()
    e = expect(kiln.Unsupported, ["q", "backward", "no_grad"], **kw)
    assert e.argument == "q" and isinstance(e, NotImplementedError)
    with torch.no_grad():  # forward only: allowed, on to the device check
        expect(ValueError, ["q", "CUDA"], **kw)
    # rab requiring grad without has_drab gets no gradient, as on 16-bit inputs
    with pytest.raises(ValueError, match="CUDA"):
        call(q=_f8(), k=_f8(k0), v=_f8(v0),
             rab=torch.zeros(2, 1, 6, 6, requires_grad=True))


@pytest.mark.parametrize("name", ["descale_q", "descale_k", "descale_v"])
def test_descale_with_16_bit_inputs_is_a_value_error(name):
    e = expect(ValueError, [name, "float8_e4m3fn", "bfloat16"], **{name: _d()})
    assert not isinstance(e, NotImplementedError)
    for qm in (5, 1, 2):
        expect(ValueError, [name, f"quant_mode={qm} computes its own scales"],
               quant_mode=qm, **{name: _d()})


def test_out_dtype_with_16_bit_inputs_must_be_q_dtype():
    expect(TypeError, ["out_dtype", "float8_e4m3fn"], out_dtype=torch.float16)
    expect(ValueError, ["CUDA"], out_dtype=BF)  # q's dtype: fine
    expect(ValueError, ["CUDA"], out_dtype=None)


@needs_e4m3
@pytest.mark.parametrize("name", ["descale_q", "descale_k", "descale_v"])
def test_descale_device_is_checked(monkeypatch, name):
    import kiln.hstu as kh

    real = kh._check_device
    cuda0 = torch.device("cuda", 0)

    def only_descales(n, t, dev):  # pretend q and the rest are on cuda:0
        if n.startswith("descale"):
            real(n, t, cuda0)

    monkeypatch.setattr(kh, "_check_device", only_descales)
    expect(ValueError, [name, "CUDA"], q=_f8(), k=_f8(k0), v=_f8(v0), **{name: _d()})


@needs_e4m3
def test_fp8_is_for_hstu_attn_varlen_func_only():
    qkv = torch.zeros(10, 3, 2, 64, dtype=BF).to(E4M3)
    with pytest.raises(kiln.Unsupported, match="hstu_attn_varlen_func") as ei:
        kiln.hstu_attn_qkvpacked_func(qkv, off0, off0, 6, 6)
    assert ei.value.argument == "qkv[:, 0]"
    q = _f8()
    with pytest.raises(kiln.Unsupported) as ei:
        nv.hstu_attn_varlen_func(q, q, q, off0, off0, 6, 6)
    assert ei.value.argument == "q"
    with pytest.raises(kiln.Unsupported) as ei:
        fb.hstu_attn_varlen_func(q, q, q, off0, off0, None, None, 6, 6, -1, None, None)
    assert ei.value.argument == "q"


def test_quant_mode_in_the_compat_modules():
    q, k, v, off = _inputs()
    # 0, 3, 4, 5 run kiln's fp8 forward, 1 and 2 its 16-bit one on the
    # dequantized values (on to the device check here): in NVIDIA's and
    # FBGEMM's varlen and both packed; other values are ValueError.
    qkv = torch.zeros(10, 3, 2, 64, dtype=BF)
    calls = (lambda qm: nv.hstu_attn_varlen_func(q, k, v, off, off, 6, 6, quant_mode=qm),
             lambda qm: fb.hstu_attn_varlen_func(q, k, v, off, off, None, None, 6, 6, -1,
                                                 None, None, quant_mode=qm),
             lambda qm: nv.hstu_attn_qkvpacked_func(qkv, off, off, 6, 6, quant_mode=qm),
             lambda qm: kiln.hstu_attn_qkvpacked_func(qkv, off, off, 6, 6, quant_mode=qm))
    for f in calls:
        for qm in (0, 1, 2, 3, 4, 5):
            with pytest.raises(ValueError, match="CUDA"):
                f(qm)
        with pytest.raises(ValueError, match="quant_mode"):
            f(6)


def test_compat_spellings_in_messages():
    q, k, v, off = _inputs()
    with pytest.raises(TypeError, match="cu_seqlens_q"):
        nv.hstu_attn_varlen_func(q, k, v, off.float(), off, 6, 6)
    with pytest.raises(ValueError, match="cu_seqlens_k"):
        nv.hstu_attn_varlen_func(q, k, v, off, off[:2], 6, 6)
    with pytest.raises(TypeError, match="func"):
        nv.hstu_attn_qkvpacked_func(torch.zeros(10, 3, 2, 64, dtype=BF), off, off, 6, 6,
                                    func=torch.zeros(1))
    with pytest.raises(ValueError, match="qkv"):
        nv.hstu_attn_qkvpacked_func(q, off, off, 6, 6)
    with pytest.raises(ValueError, match=r"qkv\[:, 0\].*head dim 48"):
        nv.hstu_attn_qkvpacked_func(torch.zeros(10, 3, 2, 48, dtype=BF), off, off, 6, 6)
    for name in ("kv_cache", "page_offsets", "page_ids", "last_page_lens"):
        with pytest.raises(NotImplementedError, match=name):
            fb.hstu_attn_varlen_func(q, k, v, off, off, None, None, 6, 6, -1, None, None,
                                     **{name: torch.zeros(1)})
    with pytest.raises(ValueError, match="quant_mode"):
        fb.hstu_attn_varlen_func(q, k, v, off, off, None, None, 6, 6, -1, None, None,
                                 quant_mode=7)


# ------------------------------------------------------------- signatures
def _sig(f):
    return [(p.name, p.default if p.default is not inspect.Parameter.empty else "<req>",
             p.kind.name) for p in inspect.signature(f).parameters.values()]


def _plain(names_defaults):
    return [(n, d, "POSITIONAL_OR_KEYWORD") for n, d in names_defaults]


R = "<req>"
NV_VARLEN = _plain([("q", R), ("k", R), ("v", R), ("cu_seqlens_q", R), ("cu_seqlens_k", R),
                    ("max_seqlen_q", R), ("max_seqlen_k", R), ("num_contexts", None),
                    ("num_targets", None), ("target_group_size", 1),
                    ("window_size", (-1, -1)), ("alpha", 1.0), ("rab", None),
                    ("has_drab", False), ("func", None), ("quant_mode", -1),
                    ("scaling_seqlen", -1)])
NV_PACKED = _plain([("qkv", R), ("cu_seqlens_q", R), ("cu_seqlens_k", R),
                    ("max_seqlen_q", R), ("max_seqlen_k", R), ("num_contexts", None),
                    ("num_targets", None), ("target_group_size", 1),
                    ("window_size", (-1, -1)), ("alpha", 1.0), ("rab", None),
                    ("has_drab", False), ("func", None), ("quant_mode", -1),
                    ("scaling_seqlen", -1)])
FB_VARLEN = _plain([("q", R), ("k", R), ("v", R), ("cu_seqlens_q", R), ("cu_seqlens_k", R),
                    ("seqused_q", R), ("seqused_k", R), ("max_seqlen_q", R),
                    ("max_seqlen_k", R), ("scaling_seqlen", R), ("num_contexts", R),
                    ("num_targets", R), ("target_group_size", 1),
                    ("window_size", (-1, -1)), ("alpha", 1.0), ("rab", None),
                    ("has_drab", False), ("kv_cache", None), ("page_offsets", None),
                    ("page_ids", None), ("last_page_lens", None), ("func", None),
                    ("quant_mode", -1)])
FB_PACKED = _plain([("qkv", R), ("cu_seqlens_q", R), ("cu_seqlens_k", R), ("seqused_q", R),
                    ("seqused_k", R), ("max_seqlen_q", R), ("max_seqlen_k", R),
                    ("scaling_seqlen", -1), ("num_contexts", None), ("num_targets", None),
                    ("target_group_size", 1), ("window_size", (-1, -1)), ("alpha", 1.0),
                    ("rab", None), ("has_drab", False), ("func", None)])
# NVIDIA's original Hopper hstu_attn_varlen_func, then its later additions as keywords.
KILN_VARLEN = _plain([("q", R), ("k", R), ("v", R), ("seq_offsets_q", R),
                      ("seq_offsets_k", R), ("max_seqlen_q", R), ("max_seqlen_k", R),
                      ("num_contexts", None), ("num_targets", None),
                      ("target_group_size", 1), ("window_size", (-1, -1)), ("alpha", 1.0),
                      ("rab", None), ("has_drab", False), ("is_delta_q", False),
                      ("descale_q", None), ("descale_k", None), ("descale_v", None),
                      ("descale_do", None)])


def test_signatures_match_the_originals():
    assert _sig(nv.hstu_attn_varlen_func) == NV_VARLEN
    assert _sig(nv.hstu_attn_qkvpacked_func) == NV_PACKED
    assert _sig(fb.hstu_attn_varlen_func) == FB_VARLEN
    assert _sig(fb.hstu_attn_qkvpacked_func) == FB_PACKED
    got = _sig(kiln.hstu_attn_varlen_func)
    assert got[:len(KILN_VARLEN)] == KILN_VARLEN
    extra = {n: (d, kind) for n, d, kind in got[len(KILN_VARLEN):]}
    for name, default in (("func", None), ("quant_mode", -1), ("scaling_seqlen", -1)):
        assert extra[name] == (default, "KEYWORD_ONLY")
    assert _sig(kiln.hstu_attn_qkvpacked_func)[:len(NV_PACKED)] == NV_PACKED


def test_compat_modules_export_the_seven_names():
    seven = {"hstu_attn_varlen_func", "hstu_attn_qkvpacked_func",
             "get_bm_and_bn_block_size_fwd", "get_bm_and_bn_block_size_bwd",
             "quantize_for_two_directions", "quantize_for_block_scale",
             "quantize_for_head_batch_tensor"}
    for mod in (nv, fb):
        for name in seven:
            assert callable(getattr(mod, name)), (mod.__name__, name)
    assert seven <= set(nv.__all__) and seven <= set(fb.__all__)
    assert callable(fb.cuda_hstu_attn_varlen) and callable(fb.HstuAttnVarlenFunc.apply)


# ---------------------------------------------------------- fp8 helpers
def test_block_sizes():
    rab = torch.zeros(1)
    assert nv.get_bm_and_bn_block_size_fwd(rab, 64) == (128, 128)
    assert nv.get_bm_and_bn_block_size_fwd(rab, 128) == (128, 64)
    assert nv.get_bm_and_bn_block_size_fwd(rab, 256) == (128, 64)
    assert nv.get_bm_and_bn_block_size_fwd(None, 64) == (128, 128)
    assert nv.get_bm_and_bn_block_size_fwd(None, 128) == (128, 128)
    assert nv.get_bm_and_bn_block_size_fwd(None, 256) == (128, 64)
    assert nv.get_bm_and_bn_block_size_bwd() == (64, 128)


E4 = getattr(torch, "float8_e4m3fn", None)
needs_fp8 = pytest.mark.skipif(E4 is None, reason="no float8 in torch")


def _x(lens, H=2, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = ((torch.rand(sum(lens), H, D, generator=g) * 2 - 1) * 3).to(BF)
    off = torch.tensor([0] + list(torch.tensor(lens).cumsum(0)), dtype=torch.int32)
    return x, off


@needs_fp8
def test_quantize_for_two_directions():
    lens = [130, 5, 0, 256]
    x, off = _x(lens)
    xq, xd, xtq, xtd, cu = nv.quantize_for_two_directions(x, off)
    T, H, D = x.shape
    assert xq.dtype == E4 and xq.shape == x.shape
    assert xd.shape == (H, T + 128) and xd.dtype == torch.float32 and xd.is_contiguous()
    assert torch.all(xd[:, T:] == 0)
    row = (x.abs().amax(-1).float() / 448.0).clamp_min(1e-6)
    torch.testing.assert_close(xd[:, :T], row.t())
    torch.testing.assert_close(xq.float(), (x / row[..., None]).to(E4).float())
    assert cu.dtype == torch.int32 and cu.tolist() == [0, 2, 3, 3, 5]
    assert xtd.shape == (5, H, D)
    s, b = 0, 0
    for n in lens:
        for j in range(0, n, 128):
            blk = x[s + j:s + min(n, j + 128)]
            want = (blk.abs().amax(0) / 448.0).float().clamp_min(1e-6)
            torch.testing.assert_close(xtd[b], want)
            torch.testing.assert_close(xtq[s + j:s + min(n, j + 128)].float(),
                                       (blk / want).to(E4).float())
            b += 1
        s += n


@needs_fp8
def test_quantize_for_block_scale():
    lens = [70, 0, 64, 3]
    x, off = _x(lens, seed=1)
    xq, xd, cu = nv.quantize_for_block_scale(x, off, block_size=64)
    assert cu.tolist() == [0, 2, 2, 3, 4] and cu.dtype == torch.int32
    assert xd.shape == (2, 4) and xd.is_contiguous() and xq.dtype == E4
    s, b = 0, 0
    for n in lens:
        for j in range(0, n, 64):
            blk = x[s + j:s + min(n, j + 64)]
            want = (blk.abs().amax(dim=(0, 2)).float() / 448.0).clamp_min(1e-6)
            torch.testing.assert_close(xd[:, b], want)
            torch.testing.assert_close(xq[s + j:s + min(n, j + 64)].float(),
                                       (blk / want[None, :, None]).to(E4).float())
            b += 1
        s += n


@needs_fp8
@pytest.mark.parametrize("mode", [3, 4, 5])
def test_quantize_for_head_batch_tensor(mode):
    lens = [9, 1, 20]
    x, off = _x(lens, seed=2)
    xq, xd = nv.quantize_for_head_batch_tensor(x, off, quant_mode=mode)
    assert xq.dtype == E4 and xq.shape == x.shape and xd.dtype == torch.float32
    if mode == 5:
        want = (x.abs().amax() / 448.0).float().clamp_min(1e-6).reshape(1)
        torch.testing.assert_close(xd, want)
        torch.testing.assert_close(xq.float(), (x / want).to(E4).float())
        return
    s = 0
    for b, n in enumerate(lens):
        seg = x[s:s + n]
        if mode == 3:
            want = (seg.abs().amax(dim=(0, 2)) / 448.0).float().clamp_min(1e-6)
            torch.testing.assert_close(xd[b], want)
            torch.testing.assert_close(xq[s:s + n].float(),
                                       (seg / want[None, :, None]).to(E4).float())
        else:
            want = (seg.abs().amax() / 448.0).float().clamp_min(1e-6)
            torch.testing.assert_close(xd[b], want)
            torch.testing.assert_close(xq[s:s + n].float(), (seg / want).to(E4).float())
        s += n
    with pytest.raises(ValueError, match="quant_mode"):
        nv.quantize_for_head_batch_tensor(x, off, quant_mode=2)
    with pytest.raises(ValueError, match="3-D"):
        nv.quantize_for_head_batch_tensor(x[0], off)
