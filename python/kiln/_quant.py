"""fp8 quantization of 16-bit q, k, v: the scale layouts of NVIDIA's
quant_mode 0 (a plain cast), 1 (q and k one scale per row and head, v one
per 128-row block, head and column), 2 (one per block of rows and head),
3 (one per sequence and head), 4 (per sequence) and 5 (per tensor).  Shared
by kiln.hstu_attn_varlen_func and the compat module's quantize helpers, so
both quantize exactly alike.  Everything runs on x's device without a host
sync: per-block scales are sized by an upper bound on the number of blocks
(blocks()), not by reading the offsets.

kiln runs modes 0, 3, 4 and 5 on its fp8 kernel.  Modes 1 and 2 (and
every mode with NVIDIA's func mask) quantize as NVIDIA's do but kiln
computes them at 16 bits: q, k, v are dequantized (e4m3 value times its
scale, rounded to the input dtype) and the 16-bit kernel runs, so they give
NVIDIA's quantization error without its fp8 tensor-core speed.

A layout (what quantize and dequantize take) is one of 0, 3, 4, 5 (that
mode), ROW (mode 1's q and k), (COL, block) (mode 1's v) or (BLOCK, block)
(mode 2); layouts() gives q's, k's and v's for a quant_mode.
"""

import torch

E4M3 = getattr(torch, "float8_e4m3fn", None)
FP8_MAX = 448.0  # largest finite float8_e4m3fn

ROW = "row"      # one scale per row and head (mode 1's q and k)
COL = "col"      # per sequence, block of rows, head and column (mode 1's v)
BLOCK = "block"  # per sequence, block of rows and head (mode 2)
COL_BLOCK = 128  # NVIDIA's block of rows for mode 1's v


def fp8_max(fp8_type):
    return FP8_MAX if fp8_type == E4M3 else 57344.0


def block_sizes_fwd(has_rab, dim):
    """(BM, BN), NVIDIA's get_bm_and_bn_block_size_fwd: the forward tile its
    fp8 block scaling (quant_mode 2) is laid out for.  128 x 128 for head
    dim 64 (and 128 without rab), otherwise 128 x 64."""
    if dim == 64 or (not has_rab and dim == 128):
        return 128, 128
    return 128, 64


def layouts(quant_mode, has_rab, dim):
    """The layouts of q, k and v for quant_mode, as NVIDIA quantizes them:
    mode 1 q and k per row (quantize_for_two_directions' x_quantized), v per
    128-row block and column (its xt_quantized); mode 2 q in blocks of BM
    rows, k and v in blocks of BN (block_sizes_fwd(has_rab, dim)); modes
    0, 3, 4, 5 the mode itself for all three."""
    if quant_mode == 1:
        return ROW, ROW, (COL, COL_BLOCK)
    if quant_mode == 2:
        bm, bn = block_sizes_fwd(has_rab, dim)
        return (BLOCK, bm), (BLOCK, bn), (BLOCK, bn)
    return (quant_mode,) * 3


def segments(seq_offsets, total, device):
    """(offsets int64, lengths, seg, inside) where row r belongs to sequence
    seg[r] when inside[r]."""
    off = seq_offsets.to(device=device, dtype=torch.int64)
    nb = off.shape[0] - 1
    rows = torch.arange(total, device=device, dtype=torch.int64)
    seg = torch.searchsorted(off[1:].contiguous(), rows, right=True)
    inside = (seg < nb) & (rows >= off[0])
    return off, off[1:] - off[:-1], seg.clamp(max=max(nb, 0)), inside


def blocks(seq_offsets, total, block, device):
    """Each sequence's rows in blocks of `block` rows (the last one short),
    numbered sequence after sequence.  Returns (cu, blk, n): cu (B + 1,)
    int64, sequence b's blocks are cu[b] .. cu[b + 1] - 1; row r is in block
    blk[r], and blk[r] == n for rows outside every sequence.
    n = total // block + B + 1 bounds the number of blocks from above for
    nondecreasing offsets, without reading them on the host (cu[B] is the
    exact count); blocks cu[B] .. n - 1 hold no row."""
    off, lens, seg, inside = segments(seq_offsets, total, device)
    nb = off.shape[0] - 1
    n = total // block + nb + 1
    nblk = torch.div(lens.clamp(min=0) + block - 1, block, rounding_mode="floor")
    cu = torch.cat([torch.zeros(1, dtype=torch.int64, device=device),
                    torch.cumsum(nblk, 0)])
    segc = seg.clamp(max=max(nb - 1, 0))
    rows = torch.arange(total, device=device, dtype=torch.int64)
    blk = cu[segc] + torch.div(rows - off[segc], block, rounding_mode="floor")
    inside = inside & (blk >= 0) & (blk < n)  # (always, for valid offsets)
    return cu, torch.where(inside, blk, n), n


def amax_rows(vals, index, n):
    """out[b] = max over rows r with index[r] == b of vals[r] (vals >= 0);
    rows with index n are dropped.  out has n rows."""
    out = torch.zeros((n + 1,) + tuple(vals.shape[1:]), dtype=vals.dtype,
                      device=vals.device)
    idx = index.view((-1,) + (1,) * (vals.dim() - 1)).expand_as(vals)
    out.scatter_reduce_(0, idx, vals, "amax", include_self=True)
    return out[:n]


def _block_rows(descale, blk):
    """descale[blk[r]] for each row r (blk: a block or sequence number), 1.0
    where blk[r] == len(descale)."""
    one = torch.ones((1,) + tuple(descale.shape[1:]), dtype=descale.dtype,
                     device=descale.device)
    return torch.cat([descale, one]).index_select(0, blk)


def per_tensor(x, fmax=FP8_MAX, fp8_type=None):
    """quant_mode 5: (x / scale as fp8, scale) with scale = amax |x| / fmax
    (the division in x's dtype, as NVIDIA's), stored float32 and clamped to
    >= 1e-6; scale is a (1,) tensor on x's device.  An empty x gets scale 1."""
    fp8_type = E4M3 if fp8_type is None else fp8_type
    with torch.no_grad():
        if x.numel() == 0:
            d = torch.ones(1, dtype=torch.float32, device=x.device)
        else:
            d = (x.abs().amax().reshape(1) / fmax).to(torch.float32).clamp_min(1e-6)
        return (x / d).to(fp8_type), d


def head_batch(x, seq_offsets, quant_mode, fmax=FP8_MAX, fp8_type=None):
    """quant_mode 3 (descale (B, H): one per sequence and head) or 4 (descale
    (B,): one per sequence), as NVIDIA's quantize_for_head_batch_tensor: the
    scale is amax / fmax (>= 1e-6), divided in x's dtype and stored float32;
    rows outside every sequence quantize to 0.  Returns (x_fp8, descale)."""
    fp8_type = E4M3 if fp8_type is None else fp8_type
    dev = x.device
    with torch.no_grad():
        total, h, d = x.shape
        ax = x.abs()
        off, _, seg, inside = segments(seq_offsets, total, dev)
        nb = off.shape[0] - 1
        idx = torch.where(inside, seg, nb)
        per_row = ax.amax(dim=-1) if quant_mode == 3 else ax.amax(dim=(1, 2))
        amax = amax_rows(per_row.to(torch.float32), idx, nb)
        x_descale = (amax.to(x.dtype) / fmax).to(torch.float32).clamp_min(1e-6)
        rows = _block_rows(x_descale, idx)
        if quant_mode == 3:
            rows = rows[:, :, None]
        else:
            # NVIDIA divides by a 0-dim float32 scale, which torch's promotion
            # rules evaluate in x's dtype: do the same.
            rows = rows.to(x.dtype)[:, None, None]
        x_quantized = torch.where(inside[:, None, None], x / rows,
                                  torch.zeros((), dtype=x.dtype, device=dev))
        return x_quantized.to(fp8_type), x_descale


def per_row(x, fmax=FP8_MAX, fp8_type=None):
    """quant_mode 1's q and k, as x_quantized and x_descale of NVIDIA's
    quantize_for_two_directions: one scale per row and head, amax over the
    head dim / fmax in float32 (>= 1e-6); every row, in a sequence or not.
    Returns (x_fp8, descale (total, H) float32)."""
    fp8_type = E4M3 if fp8_type is None else fp8_type
    with torch.no_grad():
        d = (x.abs().amax(dim=-1).to(torch.float32) / fmax).clamp_min(1e-6)
        return (x / d[:, :, None]).to(fp8_type), d


def column_blocks(x, seq_offsets, block=COL_BLOCK, fmax=FP8_MAX, fp8_type=None):
    """quant_mode 1's v, as xt_quantized and xt_descale of NVIDIA's
    quantize_for_two_directions: per sequence, per block of `block` rows
    (the last one short), one scale per head and column: the amax over the
    block's rows / fmax, divided in x's dtype, stored float32 (>= 1e-6).
    Rows outside every sequence are cast unscaled.  Returns (x_fp8,
    descale (n, H, D) float32, cu) with n and cu as blocks() gives them
    (descale rows cu[B] .. n - 1 belong to no block)."""
    fp8_type = E4M3 if fp8_type is None else fp8_type
    with torch.no_grad():
        cu, blk, n = blocks(seq_offsets, x.shape[0], block, x.device)
        amax = amax_rows(x.abs().to(torch.float32), blk, n)
        # NVIDIA divides the block amax in x's dtype, then stores float32.
        descale = (amax.to(x.dtype) / fmax).to(torch.float32).clamp_min(1e-6)
        return (x / _block_rows(descale, blk)).to(fp8_type), descale, cu


def head_blocks(x, seq_offsets, block, fmax=FP8_MAX, fp8_type=None):
    """quant_mode 2, as NVIDIA's quantize_for_block_scale: per sequence, per
    block of `block` rows (the last one short), one scale per head: the amax
    over the block's rows and the head dim / fmax in float32 (>= 1e-6).
    Rows outside every sequence are cast unscaled.  Returns (x_fp8,
    descale (n, H) float32, cu) with n and cu as blocks() gives them."""
    fp8_type = E4M3 if fp8_type is None else fp8_type
    with torch.no_grad():
        cu, blk, n = blocks(seq_offsets, x.shape[0], block, x.device)
        amax = amax_rows(x.abs().amax(dim=-1).to(torch.float32), blk, n)  # (n, H)
        descale = (amax / fmax).clamp_min(1e-6)
        return (x / _block_rows(descale, blk)[:, :, None]).to(fp8_type), descale, cu


def quantize(x, seq_offsets, layout):
    """x (total, H, D) 16-bit -> (e4m3 x, descale or None) for a layout (see
    the module doc): 0 (a cast: descale None, i.e. 1.0), 3, 4, 5, ROW,
    (COL, block) or (BLOCK, block)."""
    if layout == 0:
        with torch.no_grad():
            return x.to(E4M3), None
    if layout == 5:
        return per_tensor(x)
    if layout in (3, 4):
        return head_batch(x, seq_offsets, layout)
    if layout == ROW:
        return per_row(x)
    kind, block = layout
    if kind == COL:
        return column_blocks(x, seq_offsets, block)[:2]
    if kind == BLOCK:
        return head_blocks(x, seq_offsets, block)[:2]
    raise ValueError(f"kiln: unknown quantization layout {layout!r}")


def dequantize(x8, descale, seq_offsets, layout, dtype):
    """The values the kernels read, in dtype: x8 times its descale (None:
    1.0) in float32, laid out as quantize() made it for layout.  Rows outside
    every sequence come out 0 in modes 3 and 4, unscaled (the plain cast)
    for (COL, block) and (BLOCK, block)."""
    with torch.no_grad():
        x = x8.to(torch.float32)
        if descale is None:
            return x.to(dtype)
        if layout == 5:
            return (x * descale).to(dtype)
        if layout == ROW:
            return (x * descale[:, :, None]).to(dtype)
        if layout in (3, 4):
            _, _, seg, inside = segments(seq_offsets, x.shape[0], x.device)
            f = torch.where(inside.view((-1,) + (1,) * (descale.dim() - 1)),
                            descale.index_select(0, seg.clamp(max=descale.shape[0] - 1)), 0)
            return (x * (f[:, None, None] if f.dim() == 1 else f[:, :, None])).to(dtype)
        kind, block = layout
        _, blk, _ = blocks(seq_offsets, x.shape[0], block, x.device)
        f = _block_rows(descale, blk)
        return (x * (f if kind == COL else f[:, :, None])).to(dtype)
