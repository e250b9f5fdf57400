"""CPU tests of kiln's torch plumbing (no GPU, no kernel launch).

The fixture cpu_kiln swaps the two C calls for the float64 reference, so these
check what the Python side does: argument mapping to the ops, autograd
(dq, dk, dv, drab routed to the right inputs), packed qkv, delta-q semantics of
the compat modules, FBGEMM's seqused, torch.compile(fullgraph=True) and the
custom ops' fake implementations (torch.library.opcheck).
"""

import pytest
import torch

from _reference import (dequantize, func_mask, hstu_reference, hstu_reference_bwd, make_batch,
                        make_func, nvidia_block_sizes_fwd, nvidia_quant_dequant)

F64 = torch.float64

CASES = [
    # name, lengths_q, lengths_k, H, kwargs
    ("none", [5, 0, 1, 9], None, 2, dict()),
    ("causal", [7, 3, 0, 12], None, 2, dict(window_size=(-1, 0))),
    ("local", [11, 4, 1], None, 3, dict(window_size=(3, 2))),
    ("causal_local", [10, 6], None, 2, dict(window_size=(4, 0))),
    ("ctx_tgt_group", [12, 9, 5], None, 2,
     dict(window_size=(-1, 0), num_contexts=[3, 0, 1], num_targets=[4, 2, 0],
          target_group_size=2)),
    ("delta_causal", [3, 1, 0, 5], [8, 1, 4, 5], 2,
     dict(window_size=(-1, 0), is_delta_q=True)),
    ("rab_shared_head", [6, 8], None, 4, dict(window_size=(-1, 0), rab_heads=1)),
    ("rab_two_heads", [6, 2, 7], None, 4, dict(rab_heads=2, alpha=0.3,
                                                scaling_seqlen=5)),
]


def _build(lq, lk, H, kw, D=32, dtype=F64, seed=0):
    q, k, v, oq, ok = make_batch(lq, H, D, lengths_k=lk, dtype=dtype, device="cpu",
                                 seed=seed)
    kw = dict(kw)
    B = len(lq)
    for name in ("num_contexts", "num_targets"):
        if name in kw:
            kw[name] = torch.tensor(kw[name], dtype=torch.int32)
    hr = kw.pop("rab_heads", None)
    rab = None
    if hr is not None:
        L = max(lk or lq)
        g = torch.Generator().manual_seed(seed + 1)
        rab = (torch.rand((B, hr, L, L), generator=g, dtype=torch.float64) * 2 - 1).to(dtype)
        kw["rab"] = rab
    mq, mk = max(lq), max(lk or lq)
    return q, k, v, oq, (ok if lk is not None else oq), mq, mk, kw


@pytest.mark.parametrize("name,lq,lk,H,kw", CASES, ids=[c[0] for c in CASES])
def test_reference_backward_formulas_match_autograd(name, lq, lk, H, kw):
    """The hand-written backward (kiln.h's formulas) equals autograd of the
    forward reference, drab included: the reference itself is consistent."""
    q, k, v, oq, ok, mq, mk, kw = _build(lq, lk, H, kw)
    q.requires_grad_(), k.requires_grad_(), v.requires_grad_()
    if kw.get("rab") is not None:
        kw["rab"].requires_grad_()
    out = hstu_reference(q, k, v, oq, ok, mq, mk, **kw)
    g = torch.rand_like(out)
    want = torch.autograd.grad(out, [q, k, v] + ([kw["rab"]] if "rab" in kw else []), g)
    got = hstu_reference_bwd(g, q.detach(), k.detach(), v.detach(), oq, ok, mq, mk,
                             **_detached(kw))
    for w, x in zip(want, got):
        torch.testing.assert_close(x, w, rtol=1e-10, atol=1e-12)


def _detached(kw, rab_dtype=None):
    """kw with its tensors detached (rab cast to rab_dtype if given)."""
    return {n: (t.detach().to(rab_dtype) if n == "rab" and rab_dtype is not None else
                (t.detach() if torch.is_tensor(t) else t))
            for n, t in kw.items()}


def _check_fwd(out, q, k, v, oq, ok, mq, mk, kw):
    """out against the float64 reference of the same arguments; returns it."""
    ref = hstu_reference(q.detach(), k.detach(), v.detach(), oq, ok, mq, mk, **_detached(kw))
    torch.testing.assert_close(out.double(), ref, rtol=2e-2, atol=2e-2)
    return ref


def _check_grads(out, leaves, q, k, v, oq, ok, mq, mk, kw):
    """The gradients of leaves (q, k, v[, rab]) for a random dout against
    the float64 reference backward (rab as bf16, as kiln reads it)."""
    g = torch.rand_like(out)
    grads = torch.autograd.grad(out, leaves, g)
    want = hstu_reference_bwd(g, q.detach(), k.detach(), v.detach(), oq, ok, mq, mk,
                              **_detached(kw, torch.bfloat16))
    for got, w, leaf in zip(grads, want, leaves):
        assert got.dtype == leaf.dtype and got.shape == leaf.shape
        torch.testing.assert_close(got.double(), w, rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("name,lq,lk,H,kw", CASES, ids=[c[0] for c in CASES])
def test_varlen_forward_and_grads_route(cpu_kiln, name, lq, lk, H, kw):
    import kiln

    q, k, v, oq, ok, mq, mk, kw = _build(lq, lk, H, kw, dtype=torch.bfloat16)
    has_rab = kw.get("rab") is not None
    leaves = [q.requires_grad_(), k.requires_grad_(), v.requires_grad_()]
    if has_rab:
        kw["rab"] = kw["rab"].float().requires_grad_()  # cast to bf16 inside
        leaves.append(kw["rab"])
    out = kiln.hstu_attn_varlen_func(q, k, v, oq, ok, mq, mk, has_drab=has_rab,
                                     **{n: t for n, t in kw.items()})
    assert out.shape == q.shape and out.dtype == q.dtype and out.is_contiguous()
    _check_fwd(out, q, k, v, oq, ok, mq, mk, kw)
    _check_grads(out, leaves, q, k, v, oq, ok, mq, mk, kw)


def test_has_drab_false_gives_rab_no_grad(cpu_kiln):
    import kiln

    q, k, v, oq, _, mq, _, kw = _build([4, 5], None, 2, dict(rab_heads=2),
                                       dtype=torch.float16)
    rab = kw["rab"].requires_grad_()
    q.requires_grad_()
    out = kiln.hstu_attn_varlen_func(q, k, v, oq, oq, mq, mq, rab=rab, has_drab=False)
    out.sum().backward()
    assert rab.grad is None and q.grad is not None


def test_qkvpacked_matches_varlen_and_returns_one_dqkv(cpu_kiln):
    import kiln

    torch.manual_seed(0)
    L, H, D = 17, 2, 64
    qkv = (torch.rand(L, 3, H, D) * 2 - 1).to(torch.bfloat16).requires_grad_()
    off = torch.tensor([0, 5, 5, 17], dtype=torch.int32)
    nt = torch.tensor([2, 0, 3], dtype=torch.int32)
    kw = dict(num_targets=nt, window_size=(-1, 0), alpha=0.5)
    out_p = kiln.hstu_attn_qkvpacked_func(qkv, off, off, 12, 12, **kw)
    g = torch.rand_like(out_p)
    (dqkv,) = torch.autograd.grad(out_p, qkv, g)
    q, k, v = (qkv.detach()[:, i].clone().requires_grad_() for i in range(3))
    out_v = kiln.hstu_attn_varlen_func(q, k, v, off, off, 12, 12, **kw)
    dq, dk, dv = torch.autograd.grad(out_v, (q, k, v), g)
    torch.testing.assert_close(out_p, out_v, rtol=0, atol=0)
    torch.testing.assert_close(dqkv, torch.stack([dq, dk, dv], 1), rtol=0, atol=0)


def test_nvidia_compat_delta_q_follows_offsets_identity(cpu_kiln):
    from kiln.compat import hstu_attn_interface as nv

    q, k, v, oq, ok, mq, mk, _ = _build([2, 3], [5, 3], 2, {}, dtype=torch.bfloat16)
    out = nv.hstu_attn_varlen_func(q, k, v, oq, ok, mq, mk, window_size=(-1, 0))
    ref = hstu_reference(q, k, v, oq, ok, mq, mk, window_size=(-1, 0), is_delta_q=True)
    torch.testing.assert_close(out.double(), ref, rtol=2e-2, atol=2e-2)
    # Same lengths through two different tensors: delta is a no-op.
    q, k, v, oq, _, mq, _, _ = _build([4, 6], None, 2, {}, dtype=torch.bfloat16)
    out2 = nv.hstu_attn_varlen_func(q, k, v, oq, oq.clone(), mq, mq, window_size=(-1, 0))
    out3 = nv.hstu_attn_varlen_func(q, k, v, oq, oq, mq, mq, window_size=(-1, 0))
    torch.testing.assert_close(out2, out3, rtol=0, atol=0)


def test_fbgemm_seqused_gathers_used_rows(cpu_kiln):
    from kiln.compat import hstu as fb

    H, D = 2, 32
    seg_q, seg_k = [6, 4, 7], [8, 4, 9]
    used_q, used_k = [3, 4, 0], [5, 4, 2]
    q, k, v, cq, ck = make_batch(seg_q, H, D, lengths_k=seg_k, dtype=torch.bfloat16,
                                 device="cpu", seed=3)
    uq = torch.tensor(used_q, dtype=torch.int32)
    uk = torch.tensor(used_k, dtype=torch.int32)
    leaves = [t.requires_grad_() for t in (q, k, v)]
    out = fb.hstu_attn_varlen_func(q, k, v, cq, ck, uq, uk, 7, 9, -1, None, None,
                                   window_size=(-1, 0))
    g = torch.rand_like(out)
    dq, dk, dv = torch.autograd.grad(out, leaves, g)

    # The same thing by hand: keep the used rows, run the reference (delta-q,
    # since used lengths differ), scatter back.
    def pick(x, seg, used):
        rows, s = [], 0
        for n, u in zip(seg, used):
            rows += list(range(s, s + u))
            s += n
        return rows

    rq, rk = pick(q, seg_q, used_q), pick(k, seg_k, used_k)
    qc, kc, vc = (t.detach()[r].clone().requires_grad_()
                  for t, r in ((q, rq), (k, rk), (v, rk)))
    ocq = torch.tensor([0] + list(torch.tensor(used_q).cumsum(0)), dtype=torch.int32)
    ock = torch.tensor([0] + list(torch.tensor(used_k).cumsum(0)), dtype=torch.int32)
    ref_c = hstu_reference(qc, kc, vc, ocq, ock, 7, 9, window_size=(-1, 0), is_delta_q=True)
    ref = torch.zeros_like(out, dtype=F64)
    ref[rq] = ref_c
    torch.testing.assert_close(out.double(), ref, rtol=2e-2, atol=2e-2)
    gq, gk, gv = torch.autograd.grad(ref_c, (qc, kc, vc), g[rq].double())
    for got, want, rows in ((dq, gq, rq), (dk, gk, rk), (dv, gv, rk)):
        full = torch.zeros_like(got, dtype=F64)
        full[rows] = want.double()
        torch.testing.assert_close(got.double(), full, rtol=3e-2, atol=3e-2)


def test_compile_fullgraph_forward_backward(cpu_kiln):
    import kiln

    q, k, v, oq, _, mq, _, kw = _build([5, 7, 1], None, 2, dict(rab_heads=1),
                                       dtype=torch.bfloat16)
    rab = kw["rab"]

    def f(q, k, v, rab):
        o = kiln.hstu_attn_varlen_func(q, k, v, oq, oq, mq, mq, window_size=(-1, 0),
                                       alpha=0.7, rab=rab, has_drab=True)
        return (o.float() * 2).sum()

    cf = torch.compile(f, fullgraph=True, backend="aot_eager")
    args = [t.clone().requires_grad_() for t in (q, k, v, rab)]
    args2 = [t.clone().requires_grad_() for t in (q, k, v, rab)]
    eager = f(*args)
    comp = cf(*args2)
    torch.testing.assert_close(comp, eager)
    ge = torch.autograd.grad(eager, args)
    gc = torch.autograd.grad(comp, args2)
    for a, b in zip(ge, gc):
        torch.testing.assert_close(a, b)


def test_opcheck_fake_and_autograd_registration(cpu_kiln):
    q, k, v, oq, _, mq, _, kw = _build([3, 5], None, 2, dict(rab_heads=2),
                                       dtype=torch.bfloat16)
    rab = kw["rab"].requires_grad_()
    args = (q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), oq, None, mq, mq,
            None, None, 1, -1, 0, 1.0, 0.0, rab, True, False, False)
    torch.library.opcheck(torch.ops.kiln.hstu_fwd.default, args)
    g = torch.rand_like(q)
    bargs = (g, q.detach(), k.detach(), v.detach(), oq, None, mq, mq, None, None, 1, -1, 0,
             1.0, 0.0, rab.detach(), True, False, False)
    torch.library.opcheck(torch.ops.kiln.hstu_bwd.default, bargs)
    qkv = torch.stack([q.detach(), k.detach(), v.detach()], 1).requires_grad_()
    pargs = (qkv, oq, None, mq, mq, None, None, 1, -1, 0, 1.0, 0.0, None, False, False,
             False)
    torch.library.opcheck(torch.ops.kiln.hstu_fwd_qkvpacked.default, pargs)


# ------------------------------------------------------------------- func
FUNC_CASES = [
    # name, lengths_q, lengths_k, H, n_func, pad, kwargs
    ("func_n1", [5, 0, 1, 9], None, 2, 1, 256, dict()),
    ("func_n3_rab", [7, 3, 0, 12], None, 2, 3, 0, dict(rab_heads=1)),
    ("func_n5_delta_rab", [3, 1, 0, 5], [8, 1, 4, 5], 4, 5, 9,
     dict(is_delta_q=True, rab_heads=2, alpha=0.6)),
]


def test_func_mask_by_hand():
    """[0, F0) U [F1, F2) U ...: empty, overlapping, negative and past-the-end
    values, each row its own global column."""
    rows = [(2, 4, 6), (0, 3, 2), (-5, 1, 100), (7, 0, 0), (1, 0, 3)]
    f = torch.tensor(rows, dtype=torch.int32).t()[None]  # (1, 3, 5)
    want = ["110011", "000000", "011111", "111111", "111000"]
    m = func_mask(f, 0, 5, 6)
    assert ["".join("1" if x else "0" for x in r) for r in m.tolist()] == want
    m = func_mask(f, 2, 3, 6)  # rows 2.. of the batch
    assert ["".join("1" if x else "0" for x in r) for r in m.tolist()] == want[2:]
    assert func_mask(f[:, :1], 0, 5, 6).sum(1).tolist() == [2, 0, 0, 6, 1]


def _func_build(lq, lk, H, nf, pad, kw, dtype):
    q, k, v, oq, ok, mq, mk, kw = _build(lq, lk, H, kw, dtype=dtype)
    kw["func"] = make_func(lq, nf, lengths_k=lk, pad=pad, seed=len(lq) + nf, device="cpu")
    return q, k, v, oq, ok, mq, mk, kw


@pytest.mark.parametrize("name,lq,lk,H,nf,pad,kw", FUNC_CASES, ids=[c[0] for c in FUNC_CASES])
def test_func_reference_backward_matches_autograd(name, lq, lk, H, nf, pad, kw):
    q, k, v, oq, ok, mq, mk, kw = _func_build(lq, lk, H, nf, pad, kw, F64)
    leaves = [q.requires_grad_(), k.requires_grad_(), v.requires_grad_()]
    if kw.get("rab") is not None:
        leaves.append(kw["rab"].requires_grad_())
    out = hstu_reference(q, k, v, oq, ok, mq, mk, **kw)
    g = torch.rand_like(out)
    want = torch.autograd.grad(out, leaves, g)
    got = hstu_reference_bwd(g, q.detach(), k.detach(), v.detach(), oq, ok, mq, mk,
                             **_detached(kw))
    for w, x in zip(want, got):
        torch.testing.assert_close(x, w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name,lq,lk,H,nf,pad,kw", FUNC_CASES, ids=[c[0] for c in FUNC_CASES])
def test_func_forward_and_grads_route(cpu_kiln, name, lq, lk, H, nf, pad, kw):
    import kiln

    q, k, v, oq, ok, mq, mk, kw = _func_build(lq, lk, H, nf, pad, kw, torch.bfloat16)
    has_rab = kw.get("rab") is not None
    leaves = [q.requires_grad_(), k.requires_grad_(), v.requires_grad_()]
    if has_rab:
        kw["rab"] = kw["rab"].float().requires_grad_()
        leaves.append(kw["rab"])
    out = kiln.hstu_attn_varlen_func(q, k, v, oq, ok, mq, mk, has_drab=has_rab, **kw)
    ref = _check_fwd(out, q, k, v, oq, ok, mq, mk, kw)
    # the mask matters: without func the result differs
    plain = hstu_reference(q.detach(), k.detach(), v.detach(), oq, ok, mq, mk,
                           **_detached({n: t for n, t in kw.items() if n != "func"}))
    assert (plain - ref).abs().max() > 1e-3
    _check_grads(out, leaves, q, k, v, oq, ok, mq, mk, kw)


def _used_rows(seg, used):
    """Rows of the first used[i] of each sequence of seg[i] rows."""
    rows, s = [], 0
    for n, m in zip(seg, used):
        rows += list(range(s, s + m))
        s += n
    return rows


def test_func_packed_and_compat_modules(cpu_kiln):
    """func through the packed qkv op, NVIDIA's module (delta-q from the
    offsets) and FBGEMM's, whose seqused gathers func's columns with the
    query rows."""
    import kiln
    from kiln.compat import hstu as fb
    from kiln.compat import hstu_attn_interface as nv

    torch.manual_seed(1)
    L, H, D = 17, 2, 32
    qkv = (torch.rand(L, 3, H, D) * 2 - 1).to(torch.bfloat16).requires_grad_()
    off = torch.tensor([0, 5, 5, 17], dtype=torch.int32)
    func = make_func([5, 0, 12], 3, seed=4, device="cpu")
    out_p = nv.hstu_attn_qkvpacked_func(qkv, off, off, 12, 12, func=func, alpha=0.5)
    g = torch.rand_like(out_p)
    (dqkv,) = torch.autograd.grad(out_p, qkv, g)
    q, k, v = (qkv.detach()[:, i].clone().requires_grad_() for i in range(3))
    out_v = kiln.hstu_attn_varlen_func(q, k, v, off, off, 12, 12, func=func, alpha=0.5)
    dq, dk, dv = torch.autograd.grad(out_v, (q, k, v), g)
    torch.testing.assert_close(out_p, out_v, rtol=0, atol=0)
    torch.testing.assert_close(dqkv, torch.stack([dq, dk, dv], 1), rtol=0, atol=0)

    # NVIDIA: other offsets for the keys are a delta-q batch
    lq, lk = [2, 3], [5, 3]
    q, k, v, oq, ok, mq, mk, _ = _build(lq, lk, 2, {}, dtype=torch.bfloat16)
    f2 = make_func(lq, 3, lengths_k=lk, seed=8, device="cpu")
    out = nv.hstu_attn_varlen_func(q, k, v, oq, ok, mq, mk, func=f2)
    ref = hstu_reference(q, k, v, oq, ok, mq, mk, is_delta_q=True, func=f2)
    torch.testing.assert_close(out.double(), ref, rtol=2e-2, atol=2e-2)

    # FBGEMM seqused: func columns are padded query rows
    seg_q, seg_k, used_q, used_k = [6, 4, 7], [8, 4, 9], [3, 4, 0], [5, 4, 2]
    q, k, v, cq, ck = make_batch(seg_q, H, D, lengths_k=seg_k, dtype=torch.bfloat16,
                                 device="cpu", seed=3)
    f3 = make_func(seg_q, 5, lengths_k=seg_k, seed=9, device="cpu")
    uq = torch.tensor(used_q, dtype=torch.int32)
    uk = torch.tensor(used_k, dtype=torch.int32)
    out = fb.hstu_attn_varlen_func(q, k, v, cq, ck, uq, uk, 7, 9, -1, None, None, func=f3)

    rq, rk = _used_rows(seg_q, used_q), _used_rows(seg_k, used_k)
    ocq = torch.tensor([0] + list(torch.tensor(used_q).cumsum(0)), dtype=torch.int32)
    ock = torch.tensor([0] + list(torch.tensor(used_k).cumsum(0)), dtype=torch.int32)
    ref_c = hstu_reference(q[rq], k[rk], v[rk], ocq, ock, 7, 9, is_delta_q=True,
                           func=f3[:, :, rq])
    ref = torch.zeros_like(out, dtype=F64)
    ref[rq] = ref_c
    torch.testing.assert_close(out.double(), ref, rtol=2e-2, atol=2e-2)


def test_func_compile_fullgraph_and_opcheck(cpu_kiln):
    import kiln

    q, k, v, oq, _, mq, _, kw = _func_build([5, 7, 1], None, 2, 3, 256, dict(rab_heads=1),
                                            torch.bfloat16)
    rab, func = kw["rab"], kw["func"]

    def f(q, k, v, rab):
        o = kiln.hstu_attn_varlen_func(q, k, v, oq, oq, mq, mq, alpha=0.7, rab=rab,
                                       has_drab=True, func=func)
        return (o.float() * 2).sum()

    cf = torch.compile(f, fullgraph=True, backend="aot_eager")
    args = [t.clone().requires_grad_() for t in (q, k, v, rab)]
    args2 = [t.clone().requires_grad_() for t in (q, k, v, rab)]
    eager = f(*args)
    comp = cf(*args2)
    torch.testing.assert_close(comp, eager)
    for a, b in zip(torch.autograd.grad(eager, args), torch.autograd.grad(comp, args2)):
        torch.testing.assert_close(a, b)
    fargs = (q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), oq, None, mq, mq,
             None, None, 1, -1, -1, 1.0, 0.0, rab.requires_grad_(), True, False, False, func)
    torch.library.opcheck(torch.ops.kiln.hstu_fwd.default, fargs)
    bargs = (torch.rand_like(q), q.detach(), k.detach(), v.detach(), oq, None, mq, mq, None,
             None, 1, -1, -1, 1.0, 0.0, rab.detach(), True, False, False, func)
    torch.library.opcheck(torch.ops.kiln.hstu_bwd.default, bargs)


# ------------------------------------------------------------------- fp8
E4 = getattr(torch, "float8_e4m3fn", None)
needs_fp8 = pytest.mark.skipif(E4 is None, reason="no float8 in torch")


def _deq(t8, d):
    return t8.double() * (d.double() if d is not None else 1.0)


def _u8(t):
    return t.view(torch.uint8)


@needs_fp8
@pytest.mark.parametrize("out_dtype", [None, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name,lq,lk,H,kw", CASES, ids=[c[0] for c in CASES])
def test_fp8_inputs_route_descales_and_out_dtype(cpu_kiln, name, lq, lk, H, kw, out_dtype):
    import kiln

    q, k, v, oq, ok, mq, mk, kw = _build(lq, lk, H, kw, D=64, dtype=torch.bfloat16)
    q8, k8, v8 = (t.to(E4) for t in (q, k, v))
    # distinct factors: a descale routed to the wrong tensor changes the result
    dq, dk, dv = (torch.tensor([s], dtype=torch.float32) for s in (0.5, 0.25, 2.0))
    if kw.get("rab") is not None:
        kw["rab"] = kw["rab"].float()  # cast to the out dtype inside
    out = kiln.hstu_attn_varlen_func(q8, k8, v8, oq, ok, mq, mk, descale_q=dq,
                                     descale_k=dk, descale_v=dv, out_dtype=out_dtype, **kw)
    want_dtype = out_dtype or torch.bfloat16
    assert out.dtype == want_dtype and out.shape == q.shape and not out.requires_grad
    call, = cpu_kiln._fp8_calls
    assert call["descales"][0] is dq and call["descales"][1] is dk and call["descales"][2] is dv
    assert call["out_dtype"] == want_dtype
    rkw = dict(kw)
    if rkw.get("rab") is not None:
        rkw["rab"] = rkw["rab"].to(want_dtype)
    ref = hstu_reference(_deq(q8, dq), _deq(k8, dk), _deq(v8, dv), oq, ok, mq, mk, **rkw)
    torch.testing.assert_close(out, ref.to(want_dtype), rtol=0, atol=0)


@needs_fp8
def test_fp8_descale_none_is_one_and_no_grad_is_allowed(cpu_kiln):
    import kiln

    q, k, v, oq, _, mq, _, _ = _build([4, 9], None, 2, {}, D=128, dtype=torch.float16)
    q8 = q.to(E4).requires_grad_()
    with torch.no_grad():
        out = kiln.hstu_attn_varlen_func(q8, q8, q8, oq, oq, mq, mq, window_size=(-1, 0))
    call, = cpu_kiln._fp8_calls
    assert call["descales"] == (None, None, None) and out.dtype == torch.bfloat16
    ref = hstu_reference(q8.double(), q8.double(), q8.double(), oq, oq, mq, mq,
                         window_size=(-1, 0))
    torch.testing.assert_close(out, ref.to(torch.bfloat16), rtol=0, atol=0)
    with pytest.raises(kiln.Unsupported, match="backward") as ei:
        kiln.hstu_attn_varlen_func(q8, q8, q8, oq, oq, mq, mq)
    assert ei.value.argument == "q"


def _nvidia_quantized(x, off, mode):
    """NVIDIA's quantization of x for quant_mode `mode`: (x8, descale)."""
    from kiln.compat import hstu_attn_interface as nv

    if mode == 0:
        return x.to(E4), None
    return nv.quantize_for_head_batch_tensor(x, off, quant_mode=mode)


@needs_fp8
@pytest.mark.parametrize("mode", [0, 3, 4, 5])
@pytest.mark.parametrize("name,lq,lk,H,kw", CASES, ids=[c[0] for c in CASES])
def test_quant_mode_quantizes_as_nvidia_and_backward_is_16_bit(cpu_kiln, name, lq, lk, H,
                                                               kw, mode):
    import kiln

    q, k, v, oq, ok, mq, mk, kw = _build(lq, lk, H, kw, D=64, dtype=torch.bfloat16)
    has_rab = kw.get("rab") is not None
    leaves = [q.requires_grad_(), k.requires_grad_(), v.requires_grad_()]
    if has_rab:
        kw["rab"] = kw["rab"].float().requires_grad_()
        leaves.append(kw["rab"])
    out = kiln.hstu_attn_varlen_func(q, k, v, oq, ok, mq, mk, has_drab=has_rab,
                                     quant_mode=mode, **kw)
    assert out.dtype == q.dtype and out.shape == q.shape and out.requires_grad
    call, = cpu_kiln._fp8_calls
    assert call["out_dtype"] == q.dtype
    # NVIDIA's quantization (a cast, or quantize_for_head_batch_tensor), bit
    # for bit; k and v by the key offsets
    okk = oq if ok is None else ok
    for t8, d, x, off in zip((call["q"], call["k"], call["v"]), call["descales"],
                             (q, k, v), (oq, okk, okk)):
        x8, xd = _nvidia_quantized(x.detach(), off, mode)
        assert torch.equal(_u8(t8), _u8(x8))
        assert (d is None and xd is None) or torch.equal(d, xd)
    if mode == 5:
        assert torch.equal(call["descales"][0], (q.detach().abs().amax() / 448.0).float()
                           .clamp_min(1e-6).reshape(1))
    want_shape = {0: None, 3: (oq.shape[0] - 1, H), 4: (oq.shape[0] - 1,), 5: (1,)}[mode]
    for d in call["descales"]:
        assert (None if d is None else tuple(d.shape)) == want_shape
    rkw = {n: (t.detach().to(q.dtype) if n == "rab" else t) for n, t in kw.items()}
    ref = hstu_reference(*(dequantize(call[n], d, off) for n, d, off in
                           zip("qkv", call["descales"], (oq, okk, okk))),
                         oq, ok, mq, mk, **rkw)
    torch.testing.assert_close(out, ref.to(q.dtype), rtol=0, atol=0)
    # straight-through: the gradients are those of the 16-bit path at the
    # dequantized inputs (rounded to q's dtype)
    g = torch.rand_like(out)
    got = torch.autograd.grad(out, leaves, g)
    at = [dequantize(call[n], d, o).float().to(x.dtype).requires_grad_() for n, d, o, x in
          zip("qkv", call["descales"], (oq, okk, okk), (q, k, v))]
    if has_rab:
        at.append(kw["rab"].detach().clone().requires_grad_())
    out16 = kiln.hstu_attn_varlen_func(*at[:3], oq, ok, mq, mk, has_drab=has_rab,
                                       **dict(kw, **({"rab": at[3]} if has_rab else {})))
    want = torch.autograd.grad(out16, at, g)
    for a, b, leaf in zip(got, want, leaves):
        assert a.dtype == leaf.dtype and a.shape == leaf.shape
        assert torch.equal(a, b)


@needs_fp8
@pytest.mark.parametrize("mode", [0, 1, 2, 3, 4])
def test_quant_mode_on_a_packed_qkv_is_the_unpacked_call(cpu_kiln, mode):
    import kiln
    from kiln.compat import hstu_attn_interface as nv

    q, k, v, cu, _ = make_batch([5, 9, 1], 2, 64, dtype=torch.bfloat16, device="cpu", seed=8)
    qkv = torch.stack([q, k, v], dim=1).requires_grad_()
    outs, grads = [], []
    for f in (kiln.hstu_attn_qkvpacked_func, nv.hstu_attn_qkvpacked_func):
        out = f(qkv, cu, cu, 9, 9, window_size=(-1, 0), quant_mode=mode)
        outs.append(out)
        grads.append(torch.autograd.grad(out, qkv, torch.ones_like(out))[0])
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    want = kiln.hstu_attn_varlen_func(*leaves, cu, cu, 9, 9, window_size=(-1, 0),
                                      quant_mode=mode)
    g = torch.autograd.grad(want, leaves, torch.ones_like(want))
    for out, dqkv in zip(outs, grads):
        assert torch.equal(out, want)
        assert dqkv.shape == qkv.shape and torch.equal(dqkv, torch.stack(g, dim=1))


@needs_fp8
def test_quant_mode_5_has_drab_false_and_shared_tensors(cpu_kiln):
    import kiln

    q, _, _, oq, _, mq, _, kw = _build([5, 6], None, 2, dict(rab_heads=1), D=64,
                                       dtype=torch.float16)
    rab = kw["rab"].requires_grad_()
    q.requires_grad_()
    out = kiln.hstu_attn_varlen_func(q, q, q, oq, oq, mq, mq, rab=rab, quant_mode=5)
    call, = cpu_kiln._fp8_calls
    assert call["q"] is call["k"] is call["v"]  # one tensor: quantized once
    assert call["rab"].dtype == torch.float16
    out.sum().backward()
    assert rab.grad is None and q.grad is not None and q.grad.dtype == torch.float16


@needs_fp8
def test_fp8_and_quant_mode_5_with_seqused(cpu_kiln):
    import kiln

    seg, used = [6, 4, 9], [3, 4, 0]
    q, k, v, cu, _ = make_batch(seg, 2, 64, dtype=torch.bfloat16, device="cpu", seed=5)
    u = torch.tensor(used, dtype=torch.int32)
    rows = _used_rows(seg, used)
    pad = [r for r in range(q.shape[0]) if r not in set(rows)]
    cu_c = torch.tensor([0, 3, 7, 7], dtype=torch.int32)
    d = torch.tensor([0.75], dtype=torch.float32)
    q8, k8, v8 = (t.to(E4) for t in (q, k, v))
    out = kiln.hstu_attn_varlen_func(q8, k8, v8, cu, cu, 9, 9, seqused_q=u, seqused_k=u,
                                     descale_k=d, window_size=(-1, 0))
    sub = [_u8(t)[rows].view(E4) for t in (q8, k8, v8)]
    want = kiln.hstu_attn_varlen_func(*sub, cu_c, cu_c, 9, 9, descale_k=d,
                                      window_size=(-1, 0))
    assert torch.equal(out[rows], want) and torch.all(out[pad] == 0)

    leaves = [t.requires_grad_() for t in (q, k, v)]
    out = kiln.hstu_attn_varlen_func(q, k, v, cu, cu, 9, 9, seqused_q=u, seqused_k=u,
                                     window_size=(-1, 0), quant_mode=5)
    qc, kc, vc = (t.detach()[rows].clone().requires_grad_() for t in (q, k, v))
    want = kiln.hstu_attn_varlen_func(qc, kc, vc, cu_c, cu_c, 9, 9, window_size=(-1, 0),
                                      quant_mode=5)
    assert torch.equal(out[rows], want) and torch.all(out[pad] == 0)
    g = torch.rand_like(out)
    got = torch.autograd.grad(out, leaves, g)
    for a, b in zip(got, torch.autograd.grad(want, (qc, kc, vc), g[rows])):
        assert torch.equal(a[rows], b) and torch.all(a[pad] == 0)


@needs_fp8
def test_nvidia_compat_quant_mode_5_is_kilns(cpu_kiln):
    import kiln
    from kiln.compat import hstu_attn_interface as nv

    q, k, v, oq, ok, mq, mk = make_batch([3, 8], 2, 64, lengths_k=[5, 8],
                                         dtype=torch.bfloat16, device="cpu", seed=3) + (8, 8)
    a = nv.hstu_attn_varlen_func(q, k, v, oq, ok, mq, mk, window_size=(-1, 0),
                                 quant_mode=5)
    b = kiln.hstu_attn_varlen_func(q, k, v, oq, ok, mq, mk, window_size=(-1, 0),
                                   is_delta_q=True, quant_mode=5)
    assert torch.equal(a, b)


@needs_fp8
@pytest.mark.parametrize("mode", [5, 1, 2])
def test_quant_mode_under_torch_compile_graph_breaks(cpu_kiln, mode):
    import kiln

    q, k, v, oq, _, mq, _, _ = _build([5, 7], None, 2, {}, D=64, dtype=torch.bfloat16)

    def f(q, k, v):
        o = kiln.hstu_attn_varlen_func(q, k, v, oq, oq, mq, mq, window_size=(-1, 0),
                                       quant_mode=mode)
        return (o.float() * 2).sum()

    torch._dynamo.reset()
    cf = torch.compile(f, backend="aot_eager")
    a = [t.clone().requires_grad_() for t in (q, k, v)]
    b = [t.clone().requires_grad_() for t in (q, k, v)]
    e, c = f(*a), cf(*b)
    torch.testing.assert_close(c, e)
    for x, y in zip(torch.autograd.grad(e, a), torch.autograd.grad(c, b)):
        torch.testing.assert_close(x, y)


# ------------------------------------------- quant_mode 1 and 2 (16-bit)
# NVIDIA's per-token (1) and block (2) scales: kiln quantizes q, k, v as
# NVIDIA's does, dequantizes them to q's dtype and runs the 16-bit forward;
# the backward is the 16-bit one at the same dequantized values.  The
# reference quantizer is _reference.nvidia_quant_dequant (NVIDIA's loops
# written out, not kiln._quant).


def _spread_rows(x, seed):
    """x with each row scaled by its own factor in [1/16, 16]: block and row
    scales then differ by far, so a scale read from the wrong row, block or
    column shows."""
    g = torch.Generator().manual_seed(seed)
    f = torch.pow(16.0, torch.rand((x.shape[0], 1, 1), generator=g) * 2 - 1)
    return (x.float() * f).to(x.dtype)


def _record_16_bit(monkeypatch, kh):
    """Record the q, k, v each 16-bit forward launch reads."""
    seen = []
    real = kh._fwd_impl

    def rec(q, k, v, out, *rest, **kw):
        seen.append((q, k, v))
        return real(q, k, v, out, *rest, **kw)

    monkeypatch.setattr(kh, "_fwd_impl", rec)
    return seen


def _nv(x, off, mode, role, has_rab):
    return nvidia_quant_dequant(x.detach(), off, mode, role, has_rab=has_rab)[1]


@needs_fp8
@pytest.mark.parametrize("mode", [1, 2])
@pytest.mark.parametrize("name,lq,lk,H,kw", CASES, ids=[c[0] for c in CASES])
def test_quant_mode_1_2_quantize_as_nvidia_compute_16_bit(cpu_kiln, monkeypatch, name, lq,
                                                          lk, H, kw, mode):
    import kiln

    q, k, v, oq, ok, mq, mk, kw = _build(lq, lk, H, kw, D=128, dtype=torch.bfloat16)
    q, k, v = _spread_rows(q, 1), _spread_rows(k, 2), _spread_rows(v, 3)
    has_rab = kw.get("rab") is not None
    leaves = [q.requires_grad_(), k.requires_grad_(), v.requires_grad_()]
    if has_rab:
        kw["rab"] = kw["rab"].float().requires_grad_()
        leaves.append(kw["rab"])
    seen = _record_16_bit(monkeypatch, cpu_kiln)
    out = kiln.hstu_attn_varlen_func(q, k, v, oq, ok, mq, mk, has_drab=has_rab,
                                     quant_mode=mode, **kw)
    assert out.dtype == q.dtype and out.shape == q.shape and out.requires_grad
    assert not cpu_kiln._fp8_calls  # the 16-bit kernel, not the fp8 one
    assert len(seen) == 1
    okk = oq if ok is None else ok
    # what the forward read: NVIDIA's quantization, dequantized to bf16, bit
    # for bit (mode 2: blocks of 128 rows for q, 64 for k and v with rab at
    # head dim 128, 128 without)
    want = [_nv(x, o, mode, r, has_rab) for x, o, r in zip((q, k, v), (oq, okk, okk), "qkv")]
    for got, w, r in zip(seen[0], want, "qkv"):
        assert got.dtype == q.dtype and torch.equal(got, w), r
    rkw = {n: (t.detach().to(q.dtype) if n == "rab" else t) for n, t in kw.items()}
    ref = hstu_reference(*want, oq, ok, mq, mk, **rkw)
    torch.testing.assert_close(out, ref.to(q.dtype), rtol=0, atol=0)
    # straight-through: the gradients of the 16-bit path at those values
    g = torch.rand_like(out)
    got = torch.autograd.grad(out, leaves, g)
    at = [w.clone().requires_grad_() for w in want]
    if has_rab:
        at.append(kw["rab"].detach().clone().requires_grad_())
    out16 = kiln.hstu_attn_varlen_func(*at[:3], oq, ok, mq, mk, has_drab=has_rab,
                                       **dict(kw, **({"rab": at[3]} if has_rab else {})))
    assert torch.equal(out, out16)
    for a, b, leaf in zip(got, torch.autograd.grad(out16, at, g), leaves):
        assert a.dtype == leaf.dtype and a.shape == leaf.shape
        assert torch.equal(a, b)


RAGGED_Q = [0, 1, 130, 5, 0, 257, 129, 1]  # empty, one row, and not multiples of 64 or 128


@needs_fp8
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("D,has_rab", [(32, False), (64, True), (128, False), (128, True),
                                       (256, False)])
@pytest.mark.parametrize("mode", [1, 2])
def test_quant_mode_1_2_ragged_blocks_and_rows_outside(cpu_kiln, monkeypatch, mode, D,
                                                       has_rab, dtype):
    """Ragged lengths (0 and 1 rows, lengths past a multiple of the block),
    delta-q key lengths, and rows before and after every sequence: the
    values the forward reads are NVIDIA's quantization of each tensor, for
    each head dim and with or without rab (mode 2's block sizes)."""
    import kiln

    lk = [n + d for n, d in zip(RAGGED_Q, [3, 0, 70, 0, 2, 0, 1, 64])]
    pre, post = 3, 2
    g = torch.Generator().manual_seed(D)

    def rows(lens):
        t = sum(lens) + pre + post
        x = torch.rand((t, 1, D), generator=g) * 2 - 1
        off = torch.tensor([pre + sum(lens[:i]) for i in range(len(lens) + 1)],
                           dtype=torch.int32)
        return _spread_rows(x.to(dtype), D), off

    q, oq = rows(RAGGED_Q)
    k, ok = rows(lk)
    v, _ = rows(lk)
    kw = {}
    if has_rab:
        kw["rab"] = torch.rand((len(lk), 1, max(lk), max(lk)), generator=g).to(dtype)
    seen = _record_16_bit(monkeypatch, cpu_kiln)
    with torch.no_grad():
        kiln.hstu_attn_varlen_func(q, k, v, oq, ok, max(RAGGED_Q), max(lk), is_delta_q=True,
                                   window_size=(-1, 0), quant_mode=mode, **kw)
    (gq, gk, gv), = seen
    for got, x, o, r in ((gq, q, oq, "q"), (gk, k, ok, "k"), (gv, v, ok, "v")):
        assert torch.equal(got, _nv(x, o, mode, r, has_rab)), r
        # rows outside every sequence: the plain cast (mode 1's q, k: their
        # own row scale)
        for sl in (slice(0, pre), slice(x.shape[0] - post, None)):
            if mode == 2 or r == "v":
                assert torch.equal(got[sl], x[sl].to(E4).to(dtype)), r
    if mode == 2 and D == 128:
        # negative control: the other block size for k reads different values
        other = nvidia_quant_dequant(k, ok, 2, "k", has_rab=not has_rab)[1]
        assert not torch.equal(gk, other)
        assert nvidia_block_sizes_fwd(has_rab, D) == (128, 64 if has_rab else 128)


@needs_fp8
@pytest.mark.parametrize("mode", [1, 2])
def test_quant_mode_1_2_one_tensor_for_q_k_v(cpu_kiln, monkeypatch, mode):
    """q is k is v: mode 1 reads q and k in the row layout and v in the
    column-block one (two quantizations), mode 2 at head dim 256 q in blocks
    of 128 rows, k and v of 64."""
    import kiln

    q, _, _, oq, _, mq, _, _ = _build([130, 70], None, 2, {}, D=256, dtype=torch.float16)
    q = _spread_rows(q, 4).requires_grad_()
    seen = _record_16_bit(monkeypatch, cpu_kiln)
    out = kiln.hstu_attn_varlen_func(q, q, q, oq, oq, mq, mq, quant_mode=mode)
    (gq, gk, gv), = seen
    if mode == 1:
        assert gq is gk and not torch.equal(gk, gv)
    else:
        assert gk is gv and not torch.equal(gq, gk)
    for got, r in zip((gq, gk, gv), "qkv"):
        assert torch.equal(got, _nv(q, oq, mode, r, False)), r
    (dq,) = torch.autograd.grad(out, q, torch.ones_like(out))
    at = [t.clone().requires_grad_() for t in (gq, gk, gv)]
    out16 = kiln.hstu_attn_varlen_func(*at, oq, oq, mq, mq)
    assert torch.equal(out, out16)
    want = sum(torch.autograd.grad(out16, at, torch.ones_like(out16)))
    assert torch.equal(dq, want)


@needs_fp8
@pytest.mark.parametrize("mode", [1, 2])
def test_quant_mode_1_2_with_seqused_and_compat(cpu_kiln, mode):
    """FBGEMM's seqused quantizes the used rows (the compacted batch);
    NVIDIA's module (delta-q by its offsets) is kiln's call."""
    import kiln
    from kiln.compat import hstu as fb
    from kiln.compat import hstu_attn_interface as nv

    seg, used = [140, 4, 9], [131, 4, 0]
    q, k, v, cu, _ = make_batch(seg, 2, 64, dtype=torch.bfloat16, device="cpu", seed=5)
    u = torch.tensor(used, dtype=torch.int32)
    rows = _used_rows(seg, used)
    cu_c = torch.tensor([0, 131, 135, 135], dtype=torch.int32)
    out = fb.hstu_attn_varlen_func(q, k, v, cu, cu, u, u, 140, 140, -1, None, None,
                                   window_size=(-1, 0), quant_mode=mode)
    want = kiln.hstu_attn_varlen_func(q[rows], k[rows], v[rows], cu_c, cu_c, 140, 140,
                                      window_size=(-1, 0), quant_mode=mode)
    assert torch.equal(out[rows], want)

    q, k, v, oq, ok = make_batch([3, 130], 2, 128, lengths_k=[5, 200],
                                 dtype=torch.bfloat16, device="cpu", seed=3)
    a = nv.hstu_attn_varlen_func(q, k, v, oq, ok, 130, 200, window_size=(-1, 0),
                                 quant_mode=mode)
    b = kiln.hstu_attn_varlen_func(q, k, v, oq, ok, 130, 200, window_size=(-1, 0),
                                   is_delta_q=True, quant_mode=mode)
    assert torch.equal(a, b)


_HOST_READS = ("item", "tolist", "__bool__", "__int__", "__index__", "__float__", "nonzero",
               "numpy", "__len__", "__iter__")


@needs_fp8
@pytest.mark.parametrize("mode", [1, 2])
def test_quant_mode_1_2_read_no_device_value_on_the_host(cpu_kiln, monkeypatch, mode):
    """The no-sync property, on CPU: with the kernels stubbed out, every
    Tensor method that hands a value to the host (item, tolist, bool, int,
    nonzero, ...) raises while kiln quantizes, launches and runs the
    backward.  (tests/test_hstu_fp8.py checks the same on a GPU with
    torch.cuda.set_sync_debug_mode.)"""
    import kiln

    def fwd(q, k, v, out, *a, **kw):
        return out.zero_()

    def bwd(dout, q, k, v, dq, dk, dv, *a, **kw):
        for t in (dq, dk, dv):
            t.zero_()

    monkeypatch.setattr(cpu_kiln, "_fwd_impl", fwd)
    monkeypatch.setattr(cpu_kiln, "_bwd_impl", bwd)
    q, k, v, oq, ok, mq, mk, kw = _build([0, 1, 130, 7], [3, 1, 200, 7], 2,
                                         dict(window_size=(-1, 0), is_delta_q=True,
                                              rab_heads=1), D=128, dtype=torch.bfloat16)
    kw["rab"] = kw["rab"].requires_grad_()
    leaves = [t.requires_grad_() for t in (q, k, v)] + [kw["rab"]]
    g = torch.ones(q.shape, dtype=q.dtype)

    def host_read(self, *a, **k):
        raise AssertionError("a tensor value was read on the host")

    with monkeypatch.context() as m:
        for name in _HOST_READS:
            m.setattr(torch.Tensor, name, host_read)
        m.setattr(torch, "nonzero", host_read)
        out = kiln.hstu_attn_varlen_func(q, k, v, oq, ok, mq, mk, quant_mode=mode,
                                         has_drab=True, **kw)
        grads = torch.autograd.grad(out, leaves, g)
    assert len(grads) == 4
    # the probe works: the compat helper sizes its exact outputs on the host
    from kiln.compat import hstu_attn_interface as nv

    with monkeypatch.context() as m:
        for name in _HOST_READS:
            m.setattr(torch.Tensor, name, host_read)
        with pytest.raises(AssertionError, match="on the host"):
            nv.quantize_for_block_scale(q.detach(), oq)
