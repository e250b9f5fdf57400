"""A plain torch reference of HSTU attention (SPEC.md section 1), for tests.

hstu_reference() is differentiable (autograd) and computes in any dtype:
float64 for the truth, q's dtype for "what PyTorch itself gets in bf16/fp16"
(the baseline NVIDIA's tests scale their tolerances by).
hstu_reference_bwd() is the same backward written out by hand (the formulas
of include/kiln.h), so a test can check one against the other.

Offsets are read on the host: this is test code.
"""

import torch
import torch.nn.functional as F


def valid_mask(lq, lk, *, window=(-1, -1), n_ctx=None, n_tgt=None, group=1,
               delta_q=False, device="cpu"):
    """(lq, lk) bool: which (query row r, key j) pairs of one sequence count."""
    off = lk - lq if delta_q else 0
    i = torch.arange(lq, device=device)[:, None] + off  # query positions
    j = torch.arange(lk, device=device)[None, :]
    m = torch.ones((lq, lk), dtype=torch.bool, device=device)
    left, right = window
    if left >= 0:
        m &= j >= i - left
    if right >= 0:
        m &= j <= i + right
    length = lk
    t = int(n_tgt) if n_tgt is not None else 0
    if n_ctx is not None:
        c = int(n_ctx)
        m |= (i < c) & (j < length - t)
    if n_tgt is not None:
        ts = length - t
        tj = j >= ts
        same = torch.div(j - ts, group, rounding_mode="floor") == torch.div(
            i - ts, group, rounding_mode="floor")
        m &= ~tj | ((i >= ts) & same & (j <= i))
    return m


def func_mask(func, row0, lq, lk, device="cpu"):
    """(lq, lk) bool of NVIDIA's arbitrary mask for the query rows row0 ..
    row0 + lq - 1 (global): [0, F0) U [F1, F2) U ..., F = func[0, :, row]."""
    f = func[0, :, row0:row0 + lq].to(device=device, dtype=torch.int64)  # (n, lq)
    j = torch.arange(lk, device=device)[None, :]
    m = j < f[0][:, None]
    for a in range(1, f.shape[0] - 1, 2):
        m |= (j >= f[a][:, None]) & (j < f[a + 1][:, None])
    return m


def _seq_bounds(seq_offsets_q, seq_offsets_k):
    oq = [int(x) for x in seq_offsets_q.tolist()]
    ok = [int(x) for x in (seq_offsets_k if seq_offsets_k is not None
                           else seq_offsets_q).tolist()]
    return oq, ok


def _rab_block(rab, b, h, i, j, dtype):
    hr = rab.shape[1]
    heads = torch.arange(h, device=rab.device) % hr
    r = rab[b].to(dtype).index_select(0, heads)          # (H, Lmax, Lmax)
    return r.index_select(1, i).index_select(2, j)       # (H, lq, lk)


def hstu_reference(q, k, v, seq_offsets_q, seq_offsets_k, max_seqlen_q, max_seqlen_k, *,
                   num_contexts=None, num_targets=None, target_group_size=1,
                   window_size=(-1, -1), alpha=1.0, rab=None, is_delta_q=False,
                   scaling_seqlen=-1, dtype=torch.float64, func=None):
    """out (total_q, H, D) in `dtype`; rows outside every sequence are 0.
    func: NVIDIA's (1, n_func, >= total_q) mask (replaces the window)."""
    oq, ok = _seq_bounds(seq_offsets_q, seq_offsets_k)
    nc = num_contexts.tolist() if num_contexts is not None else None
    nt = num_targets.tolist() if num_targets is not None else None
    scale = max_seqlen_q if scaling_seqlen in (-1, None, 0) else scaling_seqlen
    H = q.shape[1]
    qd, kd, vd = q.to(dtype), k.to(dtype), v.to(dtype)
    pieces, pos = [], 0
    for b in range(len(oq) - 1):
        sq, eq, sk, ek = oq[b], oq[b + 1], ok[b], ok[b + 1]
        lq, lk = eq - sq, ek - sk
        if sq > pos:
            pieces.append(torch.zeros((sq - pos,) + tuple(q.shape[1:]), dtype=dtype,
                                      device=q.device))
        pos = eq
        if lq == 0:
            continue
        s = torch.einsum("ihd,jhd->hij", qd[sq:eq], kd[sk:ek])
        off = lk - lq if is_delta_q else 0
        i_pos = torch.arange(lq, device=q.device) + off
        j_pos = torch.arange(lk, device=q.device)
        if rab is not None:
            s = s + _rab_block(rab, b, H, i_pos, j_pos, dtype)
        s = s * alpha
        p = F.silu(s) / scale
        m = valid_mask(lq, lk, window=window_size, n_ctx=nc[b] if nc else None,
                       n_tgt=nt[b] if nt else None, group=target_group_size,
                       delta_q=is_delta_q, device=q.device)
        if func is not None:
            m = func_mask(func, sq, lq, lk, device=q.device)
        p = p * m.to(dtype)
        pieces.append(torch.einsum("hij,jhd->ihd", p, vd[sk:ek]))
    if q.shape[0] > pos:
        pieces.append(torch.zeros((q.shape[0] - pos,) + tuple(q.shape[1:]), dtype=dtype,
                                  device=q.device))
    if not pieces:
        return torch.zeros(tuple(q.shape), dtype=dtype, device=q.device) + 0 * qd.sum()
    return torch.cat(pieces)


def hstu_reference_bwd(dout, q, k, v, seq_offsets_q, seq_offsets_k, max_seqlen_q,
                       max_seqlen_k, *, num_contexts=None, num_targets=None,
                       target_group_size=1, window_size=(-1, -1), alpha=1.0, rab=None,
                       is_delta_q=False, scaling_seqlen=-1, dtype=torch.float64,
                       func=None):
    """(dq, dk, dv, drab) by the formulas of include/kiln.h, in `dtype`; drab
    is shaped like rab (zero where no pair touches it), None without rab."""
    oq, ok = _seq_bounds(seq_offsets_q, seq_offsets_k)
    nc = num_contexts.tolist() if num_contexts is not None else None
    nt = num_targets.tolist() if num_targets is not None else None
    scale = max_seqlen_q if scaling_seqlen in (-1, None, 0) else scaling_seqlen
    H = q.shape[1]
    qd, kd, vd, dod = q.to(dtype), k.to(dtype), v.to(dtype), dout.to(dtype)
    dq, dk, dv = torch.zeros_like(qd), torch.zeros_like(kd), torch.zeros_like(vd)
    drab = torch.zeros(tuple(rab.shape), dtype=dtype, device=q.device) if rab is not None \
        else None
    for b in range(len(oq) - 1):
        sq, eq, sk, ek = oq[b], oq[b + 1], ok[b], ok[b + 1]
        lq, lk = eq - sq, ek - sk
        if lq == 0 or lk == 0:
            continue
        s = torch.einsum("ihd,jhd->hij", qd[sq:eq], kd[sk:ek])
        off = lk - lq if is_delta_q else 0
        i_pos = torch.arange(lq, device=q.device) + off
        j_pos = torch.arange(lk, device=q.device)
        if rab is not None:
            s = s + _rab_block(rab, b, H, i_pos, j_pos, dtype)
        s = s * alpha
        m = valid_mask(lq, lk, window=window_size, n_ctx=nc[b] if nc else None,
                       n_tgt=nt[b] if nt else None, group=target_group_size,
                       delta_q=is_delta_q, device=q.device)
        if func is not None:
            m = func_mask(func, sq, lq, lk, device=q.device)
        m = m.to(dtype)
        sig = torch.sigmoid(s)
        p = s * sig / scale * m
        dsilu = sig * (1 + s * (1 - sig))
        do_b = dod[sq:eq]
        dv[sk:ek] += torch.einsum("hij,ihd->jhd", p, do_b)
        dp = torch.einsum("ihd,jhd->hij", do_b, vd[sk:ek])
        ds = dp * dsilu * alpha / scale * m                    # d(q.k + rab)
        dq[sq:eq] += torch.einsum("hij,jhd->ihd", ds, kd[sk:ek])
        dk[sk:ek] += torch.einsum("hij,ihd->jhd", ds, qd[sq:eq])
        if drab is not None:
            hr = rab.shape[1]
            red = torch.zeros((hr, lq, lk), dtype=dtype, device=q.device)
            red.index_add_(0, torch.arange(H, device=q.device) % hr, ds)
            drab[b][:, :, :lk].index_add_(1, i_pos, red)
    return dq, dk, dv, drab


def make_batch(lengths_q, H, D, *, lengths_k=None, dtype=torch.bfloat16, device="cuda",
               offsets_dtype=torch.int32, seed=0, scale=1.0):
    """Random q (total_q, H, D), k, v (total_k, H, D) in [-scale, scale] and
    the offsets (int tensors on device) for the given per-sequence lengths."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    lengths_k = lengths_q if lengths_k is None else lengths_k

    def offsets(lens):
        o = [0]
        for n in lens:
            o.append(o[-1] + n)
        return torch.tensor(o, dtype=offsets_dtype, device=device)

    tq, tk = sum(lengths_q), sum(lengths_k)

    def rnd(*shape):
        x = (torch.rand(shape, generator=g, dtype=torch.float32) * 2 - 1) * scale
        return x.to(dtype=dtype, device=device)

    return (rnd(tq, H, D), rnd(tk, H, D), rnd(tk, H, D), offsets(lengths_q),
            offsets(lengths_k))


def make_func(lengths_q, n_func, *, lengths_k=None, pad=256, seed=0, device="cuda"):
    """NVIDIA's arbitrary mask for a batch: int32 (1, n_func, total_q + pad),
    column seq_offsets_q[b] + r for query r of sequence b.  Per row a window
    around the query's position, sorted disjoint intervals, or any values in
    [-3, len_k + 5] (empty and overlapping intervals, ends past len_k); the
    pad columns hold garbage that must not be read."""
    g = torch.Generator(device="cpu").manual_seed(seed + 101)
    lengths_k = lengths_q if lengths_k is None else lengths_k
    total = sum(lengths_q)
    f = torch.randint(-(1 << 20), 1 << 20, (1, n_func, total + pad), generator=g,
                      dtype=torch.int32)
    row = 0
    for lq, lk in zip(lengths_q, lengths_k):
        for r in range(lq):
            i = r + lk - lq
            style = 0 if r == 0 else int(torch.randint(0, 3, (1,), generator=g))
            if style == 0:
                v = [int(torch.randint(0, i // 2 + 2, (1,), generator=g))]
                for _ in range((n_func - 1) // 2):
                    a, b = torch.randint(0, 12, (2,), generator=g).tolist()
                    v += [i - a, i + 1 + b]
                if n_func == 1:
                    v = [i + 1]
            elif style == 1:
                v = sorted(torch.randint(0, lk + 1, (n_func,), generator=g).tolist())
            else:
                v = torch.randint(-3, lk + 6, (n_func,), generator=g).tolist()
            f[0, :, row + r] = torch.tensor(v, dtype=torch.int32)
        row += lq
    return f.to(device)


def dequantize(x8, descale, seq_offsets):
    """x8 (total, H, D) e4m3 times its descale, in float64: descale None
    (1.0), one element, (B,) (per sequence) or (B, H) (per sequence and
    head); seq_offsets (B + 1,) says which sequence each row is in (rows
    outside every sequence get factor 0)."""
    x = x8.double()
    if descale is None:
        return x
    d = descale.double()
    if d.numel() == 1:
        return x * d.reshape(())
    off = seq_offsets.to(device=x.device, dtype=torch.int64)
    rows = torch.arange(x.shape[0], device=x.device)
    seg = torch.searchsorted(off[1:].contiguous(), rows, right=True)
    inside = (seg < off.shape[0] - 1) & (rows >= off[0])
    seg = seg.clamp(max=off.shape[0] - 2)
    f = d.to(x.device)[seg]  # (total,) or (total, H)
    f = torch.where(inside.view(-1, *([1] * (f.dim() - 1))), f, torch.zeros_like(f))
    return x * (f[:, None, None] if f.dim() == 1 else f[:, :, None])


def nvidia_block_sizes_fwd(has_rab, dim):
    """NVIDIA's get_bm_and_bn_block_size_fwd, written out: (BM, BN)."""
    if has_rab:
        return (128, 128) if dim == 64 else (128, 64)
    return (128, 128) if dim in (64, 128) else (128, 64)


def nvidia_quant_dequant(x, seq_offsets, quant_mode, role, *, has_rab=False):
    """What NVIDIA's quant_mode 1 or 2 makes of x (total, H, D), bf16 or
    fp16, as q, k or v (role "q", "k" or "v"; k and v by the key offsets):
    (x8 e4m3, the values the kernel reads: e4m3 value times its scale in
    float32, rounded to x's dtype).  Written from NVIDIA's loops
    (quantize_for_two_directions, quantize_for_block_scale), independent of
    kiln._quant: per sequence, per block of rows, on the host's offsets.
    Mode 1: q and k one scale per row and head (every row); v per 128-row
    block, head and column, amax divided in x's dtype.  Mode 2: per block of
    BM (q) or BN (k, v) rows and head.  Rows outside every sequence: cast
    unscaled (modes 1's v and 2)."""
    e4 = torch.float8_e4m3fn
    dev = x.device
    tiny = torch.tensor([1e-6], dtype=torch.float32, device=dev)
    if quant_mode == 1 and role in ("q", "k"):
        d = torch.amax(x.abs(), dim=-1, keepdim=True).to(torch.float32) / 448.0
        d = torch.max(d, tiny)
        x8 = (x / d).to(e4)
        return x8, (x8.to(torch.float32) * d).to(x.dtype)
    if quant_mode == 1:
        block = 128
    elif quant_mode == 2:
        bm, bn = nvidia_block_sizes_fwd(has_rab, x.shape[2])
        block = bm if role == "q" else bn
    else:
        raise ValueError(f"quant_mode {quant_mode}")
    o = [int(t) for t in seq_offsets.tolist()]
    x8 = x.to(e4)
    f = torch.ones(x.shape, dtype=torch.float32, device=dev)
    for b in range(len(o) - 1):
        for s in range(o[b], o[b + 1], block):
            e = min(o[b + 1], s + block)
            blk = x[s:e]
            if quant_mode == 1:  # xt: amax / fp8 max in x's dtype, stored float32
                d = (torch.amax(blk.abs(), dim=0, keepdim=True) / 448.0).to(torch.float32)
            else:
                d = torch.amax(blk.abs(), dim=(0, 2), keepdim=True).to(torch.float32) / 448.0
            d = torch.max(d, tiny)
            x8[s:e] = (blk / d).to(e4)
            f[s:e] = d.expand(e - s, x.shape[1], x.shape[2])
    return x8, (x8.to(torch.float32) * f).to(x.dtype)
