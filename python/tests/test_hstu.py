"""kiln's HSTU attention on the GPU against a float64 reference (SPEC.md section 1).

Tolerances as in NVIDIA's HSTU tests: kiln's largest error against the
float64 reference may be at most 2x (output) or 5x (gradients) the error
PyTorch itself makes computing the same formula in the input dtype, plus a
tiny floor for cases whose errors are exactly zero.

Also: packed qkv, deterministic backward, odd layouts, torch.compile
(fullgraph, inductor), CUDA graph capture and replay, no host sync, the
compat modules on the GPU, torch.library.opcheck, and errors.
Every test skips without CUDA.
"""

import pytest
import torch

import kiln
from _reference import hstu_reference, make_batch, make_func
from conftest import requires_cuda

pytestmark = requires_cuda

BF, FP = torch.bfloat16, torch.float16
DEV = "cuda"


def _has_bwd():
    try:
        from kiln import _capi

        return _capi.has_symbol("kiln_hstu_bwd")
    except OSError:
        return False


requires_bwd = pytest.mark.skipif(not _has_bwd(), reason="libkiln.so has no kiln_hstu_bwd")


# ------------------------------------------------------------------ cases
def _case(name, lengths, H=2, D=64, dtype=BF, lengths_k=None, window=(-1, -1),
          n_ctx=None, n_tgt=None, group=1, rab_heads=None, drab=False, delta=False,
          alpha=1.0, scaling=-1, offsets_dtype=torch.int32, n_func=None, func_pad=256):
    return pytest.param(dict(lengths=lengths, H=H, D=D, dtype=dtype, lengths_k=lengths_k,
                             window=window, n_ctx=n_ctx, n_tgt=n_tgt, group=group,
                             rab_heads=rab_heads, drab=drab, delta=delta, alpha=alpha,
                             scaling=scaling, offsets_dtype=offsets_dtype, n_func=n_func,
                             func_pad=func_pad), id=name)


RAGGED = [0, 1, 37, 0, 130, 1, 64]
CASES = [
    _case("none", RAGGED),
    _case("causal", RAGGED, window=(-1, 0)),
    _case("local", RAGGED, window=(7, 3)),
    _case("local_causal", RAGGED, window=(20, 0)),
    _case("local_right_only", [50, 9], window=(-1, 5)),
    _case("context", [40, 90, 3], window=(-1, 0), n_ctx=[5, 30, 0]),
    _case("target", [40, 90, 3], window=(-1, 0), n_tgt=[7, 20, 3]),
    _case("context_target", [40, 90, 17], window=(-1, 0), n_ctx=[5, 11, 0],
          n_tgt=[7, 20, 17]),
    _case("target_groups", [100, 57], window=(-1, 0), n_tgt=[31, 20], group=4),
    _case("ctx_tgt_groups_rab_drab", [100, 57, 0], window=(-1, 0), n_ctx=[9, 0, 0],
          n_tgt=[31, 20, 0], group=3, rab_heads=2, drab=True),
    _case("delta_none", [5, 1, 0, 60], lengths_k=[9, 1, 3, 128], delta=True),
    _case("delta_causal", [5, 1, 0, 60], lengths_k=[9, 1, 3, 128], delta=True,
          window=(-1, 0)),
    _case("delta_local", [5, 1, 33], lengths_k=[9, 1, 100], delta=True, window=(12, 4)),
    _case("delta_causal_rab_drab", [7, 40], lengths_k=[20, 90], delta=True,
          window=(-1, 0), rab_heads=1, drab=True),
    _case("rab_per_head", RAGGED, window=(-1, 0), rab_heads=2),
    _case("rab_shared_drab", RAGGED, window=(-1, 0), rab_heads=1, drab=True),
    _case("rab_2_of_4_heads_drab", [33, 70], H=4, rab_heads=2, drab=True),
    _case("alpha_scaling", [33, 70], window=(-1, 0), alpha=0.125, scaling=50),
    _case("int64_offsets", RAGGED, window=(-1, 0), offsets_dtype=torch.int64),
    _case("fp16_causal_rab", RAGGED, dtype=FP, window=(-1, 0), rab_heads=2, drab=True),
    _case("fp16_local_delta", [5, 60], lengths_k=[9, 128], dtype=FP, delta=True,
          window=(12, 4)),
    _case("one_token_batch", [1], window=(-1, 0)),
    _case("many_heads", [70, 20], H=8, window=(-1, 0)),
    # NVIDIA's arbitrary mask (func)
    _case("func_n1", RAGGED, n_func=1),
    _case("func_n3_rab_drab", RAGGED, n_func=3, rab_heads=1, drab=True),
    _case("func_n5_fp16", [200, 0, 65, 1], dtype=FP, n_func=5, func_pad=0),
    _case("func_delta_rab_drab", [5, 1, 0, 60], lengths_k=[9, 1, 3, 128], delta=True,
          n_func=3, rab_heads=2, drab=True, func_pad=7),
    _case("func_d256", [130, 3], D=256, n_func=3),
]
DIMS = [_case(f"{dt}_d{d}", [3, 130, 1, 64], D=d, dtype=dt, window=(-1, 0), rab_heads=1,
              drab=True, n_tgt=[1, 9, 0, 5])
        for dt in (BF, FP) for d in (32, 64, 128, 256)]


def _make(c, seed=0):
    q, k, v, oq, ok = make_batch(c["lengths"], c["H"], c["D"], lengths_k=c["lengths_k"],
                                 dtype=c["dtype"], device=DEV,
                                 offsets_dtype=c["offsets_dtype"], seed=seed)
    B = len(c["lengths"])
    mq = max(c["lengths"] + [0])
    mk = max((c["lengths_k"] or c["lengths"]) + [0])
    kw = dict(window_size=c["window"], alpha=c["alpha"], scaling_seqlen=c["scaling"])
    for key, name in (("n_ctx", "num_contexts"), ("n_tgt", "num_targets")):
        if c[key] is not None:
            kw[name] = torch.tensor(c[key], dtype=torch.int32, device=DEV)
    if c["n_tgt"] is not None:
        kw["target_group_size"] = c["group"]
    rab = None
    if c["rab_heads"] is not None:
        g = torch.Generator().manual_seed(seed + 7)
        rab = (torch.rand((B, c["rab_heads"], mk, mk), generator=g) * 2 - 1)
        rab = rab.to(device=DEV, dtype=c["dtype"])
    if c.get("n_func"):
        kw["func"] = make_func(c["lengths"], c["n_func"], lengths_k=c["lengths_k"],
                               pad=c["func_pad"], seed=seed, device=DEV)
    return q, k, v, oq, (ok if c["lengths_k"] is not None else oq), mq, mk, kw, rab


def _err(x, ref):
    return (x.double() - ref).abs().max().item() if x.numel() else 0.0


def _check(name, got, ref64, lowp, factor):
    e, b = _err(got, ref64), _err(lowp, ref64)
    floor = 1e-6 * (1.0 + (ref64.abs().max().item() if ref64.numel() else 0.0))
    assert e <= factor * b + floor, (
        f"{name}: kiln's max error {e:.3e} exceeds {factor} x the torch "
        f"{got.dtype} error {b:.3e}")


def _run(c, seed=0, backward=True, deterministic=False):
    q, k, v, oq, ok, mq, mk, kw, rab = _make(c, seed)
    leaves = [t.requires_grad_() for t in (q, k, v)]
    if rab is not None:
        rab.requires_grad_(c["drab"])
        if c["drab"]:
            leaves.append(rab)
    out = kiln.hstu_attn_varlen_func(q, k, v, oq, ok, mq, mk, rab=rab, has_drab=c["drab"],
                                     is_delta_q=c["delta"], deterministic=deterministic,
                                     **kw)
    ref_kw = dict(kw, rab=rab, is_delta_q=c["delta"])
    ref = hstu_reference(q, k, v, oq, ok, mq, mk, dtype=torch.float64, **ref_kw)
    low = hstu_reference(q, k, v, oq, ok, mq, mk, dtype=q.dtype, **ref_kw)
    assert out.shape == q.shape and out.dtype == q.dtype
    _check("out", out, ref.detach(), low.detach(), 2)
    if not backward:
        return out, None
    gen = torch.Generator(device=out.device).manual_seed(seed + 11)
    g = torch.rand(out.shape, generator=gen, device=out.device).to(out.dtype)
    got = torch.autograd.grad(out, leaves, g)
    want = torch.autograd.grad(ref, leaves, g.double())
    base = torch.autograd.grad(low, leaves, g)
    for name, a, w, b in zip(("dq", "dk", "dv", "drab"), got, want, base):
        assert a.shape == w.shape and a.dtype == b.dtype
        _check(name, a, w, b, 5)
    return out, got


@requires_bwd
@pytest.mark.parametrize("c", CASES)
def test_matches_reference(c):
    _run(c)


@requires_bwd
@pytest.mark.parametrize("c", DIMS)
def test_head_dims_and_dtypes(c):
    _run(c)


@pytest.mark.parametrize("c", CASES[:4] + DIMS[:4])
def test_forward_only(c):
    with torch.no_grad():
        q, k, v, oq, ok, mq, mk, kw, rab = _make(c)
        out = kiln.hstu_attn_varlen_func(q, k, v, oq, ok, mq, mk, rab=rab,
                                         is_delta_q=c["delta"], **kw)
    ref = hstu_reference(q, k, v, oq, ok, mq, mk, dtype=torch.float64, rab=rab,
                         is_delta_q=c["delta"], **kw)
    low = hstu_reference(q, k, v, oq, ok, mq, mk, dtype=q.dtype, rab=rab,
                         is_delta_q=c["delta"], **kw)
    _check("out", out, ref, low, 2)


def test_empty_batch_and_empty_tensors():
    q = torch.zeros(0, 2, 64, dtype=BF, device=DEV, requires_grad=True)
    off = torch.zeros(3, dtype=torch.int32, device=DEV)
    out = kiln.hstu_attn_varlen_func(q, q, q, off, off, 0, 0)
    assert out.shape == (0, 2, 64)
    (dq,) = torch.autograd.grad(out.sum(), q)
    assert dq.shape == q.shape


# --------------------------------------------------------- packed / layout
@requires_bwd
def test_qkvpacked_equals_varlen_on_views():
    torch.manual_seed(0)
    lens = [0, 77, 1, 130]
    L, H, D = sum(lens), 2, 128
    off = torch.tensor([0, 0, 77, 78, 208], dtype=torch.int32, device=DEV)
    nt = torch.tensor([0, 10, 1, 30], dtype=torch.int32, device=DEV)
    qkv = torch.empty(L, 3, H, D, device=DEV, dtype=BF).uniform_(-1, 1).requires_grad_()
    rab = torch.empty(4, H, 130, 130, device=DEV, dtype=BF).uniform_(-1, 1)
    rab.requires_grad_()
    kw = dict(num_targets=nt, target_group_size=2, window_size=(-1, 0), alpha=0.5,
              rab=rab, has_drab=True, deterministic=True)
    out_p = kiln.hstu_attn_qkvpacked_func(qkv, off, off, 130, 130, **kw)
    g = torch.rand_like(out_p)
    dqkv, drab_p = torch.autograd.grad(out_p, (qkv, rab), g)
    assert dqkv.shape == qkv.shape and dqkv.is_contiguous()
    q, k, v = (qkv.detach()[:, i].requires_grad_() for i in range(3))
    out_v = kiln.hstu_attn_varlen_func(q, k, v, off, off, 130, 130, **kw)
    dq, dk, dv, drab_v = torch.autograd.grad(out_v, (q, k, v, rab), g)
    assert torch.equal(out_p, out_v)
    assert torch.equal(dqkv, torch.stack([dq, dk, dv], 1))
    assert torch.equal(drab_p, drab_v)


@requires_bwd
def test_deterministic_backward_is_bitwise_reproducible():
    c = CASES[9].values[0]
    _, g1 = _run(c, deterministic=True)
    _, g2 = _run(c, deterministic=True)
    for a, b in zip(g1, g2):
        assert torch.equal(a, b)


def _layouts(L, H, D):
    base = torch.empty(L, H, D, device=DEV, dtype=BF).uniform_(-1, 1)
    # rows and heads strided by D + 2 elements (not multiples of 8): copied
    wide = torch.zeros(L, H, D + 2, device=DEV, dtype=BF)
    wide[..., :D] = base
    odd = wide[..., :D]
    # 2 bytes past a 16-byte boundary: copied
    flat = torch.zeros(L * H * D + 1, device=DEV, dtype=BF)
    flat[1:] = base.reshape(-1)
    mis = flat[1:].view(L, H, D)
    # heads outermost (H, L, D) seen as (L, H, D): taken as it is
    tr = base.transpose(0, 1).contiguous().transpose(0, 1)
    return base, {"odd_strides": odd, "misaligned": mis, "heads_outer": tr}


@requires_bwd
@pytest.mark.parametrize("layout", ["odd_strides", "misaligned", "heads_outer"])
def test_unusual_layouts_give_the_same_result(layout):
    lens = [50, 1, 80]
    L, H, D = sum(lens), 2, 64
    off = torch.tensor([0, 50, 51, 131], dtype=torch.int32, device=DEV)
    base, views = _layouts(L, H, D)
    x = views[layout]
    assert torch.equal(x, base)
    a = base.clone().requires_grad_()
    b = x.detach().requires_grad_()
    assert b.stride() == x.stride()
    out_a = kiln.hstu_attn_varlen_func(a, a, a, off, off, 80, 80, window_size=(-1, 0),
                                       deterministic=True)
    out_b = kiln.hstu_attn_varlen_func(b, b, b, off, off, 80, 80, window_size=(-1, 0),
                                       deterministic=True)
    assert torch.equal(out_a, out_b)
    g = torch.rand_like(out_a)
    (ga,) = torch.autograd.grad(out_a, a, g)
    (gb,) = torch.autograd.grad(out_b, b, g)
    assert gb.shape == b.shape
    torch.testing.assert_close(ga, gb)


# --------------------------------------------------- compile, graphs, sync
def _small_inputs(seed=0, drab=True):
    c = CASES[9].values[0]  # context + targets in groups + rab (2 heads) + drab
    q, k, v, oq, ok, mq, mk, kw, rab = _make(c, seed)
    return q, k, v, oq, mq, kw, rab


@requires_bwd
def test_torch_compile_fullgraph():
    q, k, v, oq, mq, kw, rab = _small_inputs()

    def f(q, k, v, rab):
        o = kiln.hstu_attn_varlen_func(q, k, v, oq, oq, mq, mq, rab=rab, has_drab=True,
                                       deterministic=True, **kw)
        return torch.nn.functional.layer_norm(o.float() * 2 + 1, o.shape[-1:])

    torch._dynamo.reset()
    cf = torch.compile(f, fullgraph=True)
    xs = [t.clone().requires_grad_() for t in (q, k, v, rab)]
    ys = [t.clone().requires_grad_() for t in (q, k, v, rab)]
    e, c = f(*xs), cf(*ys)
    # kiln's kernels are the same; inductor fuses the layer norm around them.
    torch.testing.assert_close(c, e, rtol=1e-3, atol=1e-4)
    g = torch.rand_like(e)
    for a, b in zip(torch.autograd.grad(e, xs, g), torch.autograd.grad(c, ys, g)):
        torch.testing.assert_close(b, a, rtol=2e-2, atol=2e-2)


@requires_bwd
def test_cuda_graph_capture_and_replay():
    q, k, v, oq, mq, kw, rab = _small_inputs()
    sq, sk, sv, srab = (t.clone().requires_grad_() for t in (q, k, v, rab))
    sg = torch.rand(q.shape, device=DEV, dtype=q.dtype)

    def step():
        o = kiln.hstu_attn_varlen_func(sq, sk, sv, oq, oq, mq, mq, rab=srab, has_drab=True,
                                       deterministic=True, **kw)
        return (o, *torch.autograd.grad(o, (sq, sk, sv, srab), sg))

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up: compile/load kernels before capture
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static = step()

    for seed in (0, 1):
        q2, k2, v2, _, _, _, rab2 = _small_inputs(seed)
        with torch.no_grad():
            for dst, src in ((sq, q2), (sk, k2), (sv, v2), (srab, rab2)):
                dst.copy_(src)
            sg.copy_(torch.rand_like(sg))
        graph.replay()
        torch.cuda.synchronize()
        want = step()
        for a, b in zip(static, want):
            assert torch.equal(a, b)


@requires_bwd
def test_no_host_sync_on_the_launch_path():
    q, k, v, oq, mq, kw, rab = _small_inputs()
    leaves = [t.requires_grad_() for t in (q, k, v, rab)]
    kiln.hstu_attn_varlen_func(q, k, v, oq, oq, mq, mq, rab=rab, has_drab=True, **kw)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = kiln.hstu_attn_varlen_func(q, k, v, oq, oq, mq, mq, rab=rab, has_drab=True,
                                         **kw)
        torch.autograd.grad(out, leaves, torch.ones_like(out))
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_runs_on_the_current_stream():
    c = CASES[1].values[0]
    q, k, v, oq, ok, mq, mk, kw, rab = _make(c)
    want = kiln.hstu_attn_varlen_func(q, k, v, oq, ok, mq, mk, **kw)
    q2 = torch.full_like(q, float("nan"))
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        # q2 gets its values only after a 50 ms sleep on s: a kernel launched on
        # any other stream would read the NaNs.
        torch.cuda._sleep(50_000_000)
        q2.copy_(q)
        got = kiln.hstu_attn_varlen_func(q2, k, v, oq, ok, mq, mk, **kw)
    s.synchronize()
    assert torch.equal(got, want)


@requires_bwd
def test_opcheck():
    q, k, v, oq, mq, kw, rab = _small_inputs()
    args = (q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), oq, None, mq, mq,
            kw["num_contexts"], kw["num_targets"], kw["target_group_size"], -1, 0, 1.0,
            0.0, rab.requires_grad_(), True, False, True)
    torch.library.opcheck(torch.ops.kiln.hstu_fwd.default, args)


# ------------------------------------------------------------ compat on GPU
@requires_bwd
def test_nvidia_compat_packed_with_rab_like_its_test():
    from kiln.compat import hstu_attn_interface as nv

    B, H, D, L = 4, 2, 64, 99
    lens = torch.tensor([99, 50, 1, 77], device=DEV)
    cu = torch.zeros(B + 1, dtype=torch.int32, device=DEV)
    cu[1:] = torch.cumsum(lens, 0)
    cu_k = cu.clone()  # another tensor with the same values, as NVIDIA's test has
    T = int(cu[-1])
    qkv = torch.empty(T, 3, H, D, device=DEV, dtype=BF).uniform_(-1, 1).requires_grad_()
    rab = torch.empty(B, 1, L, L, device=DEV, dtype=BF).uniform_(-1, 1).requires_grad_()
    out = nv.hstu_attn_qkvpacked_func(qkv=qkv, cu_seqlens_q=cu, cu_seqlens_k=cu_k,
                                      max_seqlen_q=L, max_seqlen_k=L, window_size=(-1, 0),
                                      alpha=0.1, rab=rab, has_drab=True)
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
    ref = hstu_reference(q, k, v, cu, cu_k, L, L, window_size=(-1, 0), alpha=0.1, rab=rab)
    low = hstu_reference(q, k, v, cu, cu_k, L, L, window_size=(-1, 0), alpha=0.1, rab=rab,
                         dtype=BF)
    _check("out", out, ref.detach(), low.detach(), 2)
    g = torch.rand_like(out)
    dqkv, drab = torch.autograd.grad(out, (qkv, rab), g)
    wq, wr = torch.autograd.grad(ref, (qkv, rab), g.double())
    bq, br = torch.autograd.grad(low, (qkv, rab), g)
    _check("dqkv", dqkv, wq, bq, 5)
    _check("drab", drab, wr, br, 5)


@requires_bwd
def test_nvidia_compat_func_like_its_test():
    """NVIDIA's is_arbitrary cases: func drawn per max_seq_len_q row as its
    test draws it (n_func 3, values in the thirds of max_seq_len_k), copied
    into the (1, n_func, total_q + 256) var_fun, a delta-q batch with rab and
    drab; packed qkv and separate q, k, v."""
    from kiln.compat import hstu_attn_interface as nv

    B, H, D, Lq, Lk = 3, 2, 64, 40, 96
    lq = torch.tensor([40, 17, 1], device=DEV)
    lk = torch.tensor([96, 17, 30], device=DEV)
    cu_q = torch.zeros(B + 1, dtype=torch.int32, device=DEV)
    cu_k = torch.zeros(B + 1, dtype=torch.int32, device=DEV)
    cu_q[1:], cu_k[1:] = torch.cumsum(lq, 0), torch.cumsum(lk, 0)
    tq, tk = int(cu_q[-1]), int(cu_k[-1])
    g = torch.Generator(device=DEV).manual_seed(5)
    split = Lk // 3
    func = torch.empty((B, 1, 3, Lq), dtype=torch.int32, device=DEV)
    for i in range(3):
        func[:, :, i, :] = torch.randint(i * split, int((i + 0.3) * split), (B, 1, Lq),
                                         device=DEV, generator=g)
    var_fun = torch.empty((1, 3, tq + 256), dtype=torch.int32, device=DEV)
    for b in range(B):
        var_fun[0, :, cu_q[b]:cu_q[b + 1]] = func[b, 0, :, :int(lq[b])]
    q = torch.empty(tq, H, D, device=DEV, dtype=BF).uniform_(-1, 1).requires_grad_()
    k = torch.empty(tk, H, D, device=DEV, dtype=BF).uniform_(-1, 1).requires_grad_()
    v = torch.empty(tk, H, D, device=DEV, dtype=BF).uniform_(-1, 1).requires_grad_()
    rab = torch.empty(B, 1, Lk, Lk, device=DEV, dtype=BF).uniform_(-1, 1).requires_grad_()
    out = nv.hstu_attn_varlen_func(q, k, v, cu_q, cu_k, Lq, Lk, alpha=0.5, rab=rab,
                                   has_drab=True, func=var_fun)
    kw = dict(alpha=0.5, rab=rab, is_delta_q=True, func=var_fun)
    ref = hstu_reference(q, k, v, cu_q, cu_k, Lq, Lk, **kw)
    low = hstu_reference(q, k, v, cu_q, cu_k, Lq, Lk, dtype=BF, **kw)
    _check("out", out, ref.detach(), low.detach(), 2)
    gr = torch.rand_like(out)
    got = torch.autograd.grad(out, (q, k, v, rab), gr)
    want = torch.autograd.grad(ref, (q, k, v, rab), gr.double())
    base = torch.autograd.grad(low, (q, k, v, rab), gr)
    for name, a, w, b in zip(("dq", "dk", "dv", "drab"), got, want, base):
        _check(name, a, w, b, 5)
    # packed qkv, equal lengths
    qkv = torch.empty(tk, 3, H, D, device=DEV, dtype=BF).uniform_(-1, 1).requires_grad_()
    fk = torch.randint(0, Lk, (1, 5, tk + 256), dtype=torch.int32, device=DEV, generator=g)
    out_p = nv.hstu_attn_qkvpacked_func(qkv, cu_k, cu_k, Lk, Lk, func=fk)
    qs, ks, vs = qkv[:, 0], qkv[:, 1], qkv[:, 2]
    ref = hstu_reference(qs, ks, vs, cu_k, cu_k, Lk, Lk, func=fk)
    low = hstu_reference(qs, ks, vs, cu_k, cu_k, Lk, Lk, func=fk, dtype=BF)
    _check("out (packed)", out_p, ref.detach(), low.detach(), 2)
    gr = torch.rand_like(out_p)
    (dqkv,) = torch.autograd.grad(out_p, qkv, gr)
    (wq,) = torch.autograd.grad(ref, qkv, gr.double())
    (bq,) = torch.autograd.grad(low, qkv, gr)
    _check("dqkv (packed)", dqkv, wq, bq, 5)


@requires_bwd
def test_fbgemm_compat_seqused_on_gpu():
    from kiln.compat import hstu as fb

    H, D = 2, 64
    seg = [40, 17, 90]
    used = [33, 17, 5]
    q, k, v, cu, _ = make_batch(seg, H, D, dtype=BF, device=DEV, seed=4)
    u = torch.tensor(used, dtype=torch.int32, device=DEV)
    leaves = [t.requires_grad_() for t in (q, k, v)]
    out = fb.hstu_attn_varlen_func(q, k, v, cu, cu.clone(), u, u, 90, 90, -1, None,
                                   torch.tensor([3, 0, 1], dtype=torch.int32, device=DEV),
                                   window_size=(-1, 0))
    rows, s = [], 0
    for n, m in zip(seg, used):
        rows += list(range(s, s + m))
        s += n
    cu_c = torch.tensor([0, 33, 50, 55], dtype=torch.int32, device=DEV)
    nt = torch.tensor([3, 0, 1], dtype=torch.int32, device=DEV)
    ref_c = hstu_reference(q[rows], k[rows], v[rows], cu_c, cu_c, 90, 90,
                           window_size=(-1, 0), num_targets=nt)
    low_c = hstu_reference(q[rows], k[rows], v[rows], cu_c, cu_c, 90, 90,
                           window_size=(-1, 0), num_targets=nt, dtype=BF)
    pad = [r for r in range(q.shape[0]) if r not in set(rows)]
    assert torch.all(out[pad] == 0)
    _check("out", out[rows], ref_c.detach(), low_c.detach(), 2)
    g = torch.rand_like(out)
    dq, dk, dv = torch.autograd.grad(out, leaves, g)
    for t in (dq, dk, dv):
        assert torch.all(t[pad] == 0)
    want = torch.autograd.grad(ref_c, leaves, g[rows].double())
    base = torch.autograd.grad(low_c, leaves, g[rows])
    for name, a, w, b in zip(("dq", "dk", "dv"), (dq, dk, dv), want, base):
        _check(name, a, w, b, 5)


# ------------------------------------------------------------------- errors
def test_device_errors_name_the_argument():
    q = torch.zeros(10, 2, 64, dtype=BF, device=DEV)
    off = torch.tensor([0, 10], dtype=torch.int32, device=DEV)
    with pytest.raises(ValueError, match="k must be a CUDA tensor"):
        kiln.hstu_attn_varlen_func(q, q.cpu(), q, off, off, 10, 10)
    with pytest.raises(ValueError, match="seq_offsets_q must be a CUDA tensor"):
        kiln.hstu_attn_varlen_func(q, q, q, off.cpu(), off, 10, 10)
    with pytest.raises(ValueError, match="rab must be a CUDA tensor"):
        kiln.hstu_attn_varlen_func(q, q, q, off, off, 10, 10,
                                   rab=torch.zeros(1, 1, 10, 10, dtype=BF))
    with pytest.raises(ValueError, match="func must be a CUDA tensor"):
        kiln.hstu_attn_varlen_func(q, q, q, off, off, 10, 10,
                                   func=torch.zeros(1, 3, 266, dtype=torch.int32))


def test_c_failure_is_a_kiln_error():
    q = torch.zeros(10, 2, 64, dtype=BF, device=DEV)
    off = torch.zeros(70000, dtype=torch.int32, device=DEV)  # batch beyond kiln's grid
    off[-1] = 10
    with pytest.raises(kiln.KilnError) as ei:
        kiln.hstu_attn_varlen_func(q, q, q, off, off, 10, 10)
    assert ei.value.status_name == "KILN_EBADARG" and "batch" in ei.value.detail
