"""fp8 quantization of 16-bit q, k, v for kiln's fp8 forward: the scale
layouts of NVIDIA's quant_mode 0 (a plain cast), 3 (one scale per sequence
and head), 4 (per sequence) and 5 (per tensor).  Shared by
kiln.hstu_attn_varlen_func and the compat module's quantize helpers, so both
quantize exactly alike.  Everything runs on x's device without a host sync.
"""

import torch

E4M3 = getattr(torch, "float8_e4m3fn", None)
FP8_MAX = 448.0  # largest finite float8_e4m3fn


def fp8_max(fp8_type):
    return 448.0 if fp8_type == E4M3 else 57344.0


def segments(seq_offsets, total, device):
    """(offsets int64, lengths, seg, inside) where row r belongs to sequence
    seg[r] when inside[r]."""
    off = seq_offsets.to(device=device, dtype=torch.int64)
    nb = off.shape[0] - 1
    rows = torch.arange(total, device=device, dtype=torch.int64)
    seg = torch.searchsorted(off[1:].contiguous(), rows, right=True)
    inside = (seg < nb) & (rows >= off[0])
    return off, off[1:] - off[:-1], seg.clamp(max=max(nb, 0)), inside


def amax_rows(vals, index, n):
    """out[b] = max over rows r with index[r] == b of vals[r] (vals >= 0);
    rows with index n are dropped.  out has n rows."""
    out = torch.zeros((n + 1,) + tuple(vals.shape[1:]), dtype=vals.dtype,
                      device=vals.device)
    idx = index.view((-1,) + (1,) * (vals.dim() - 1)).expand_as(vals)
    out.scatter_reduce_(0, idx, vals, "amax", include_self=True)
    return out[:n]


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
        pad = torch.ones((1,) + tuple(x_descale.shape[1:]), dtype=torch.float32, device=dev)
        rows = torch.cat([x_descale, pad]).index_select(0, idx)
        if quant_mode == 3:
            rows = rows[:, :, None]
        else:
            # NVIDIA divides by a 0-dim float32 scale, which torch's promotion
            # rules evaluate in x's dtype: do the same.
            rows = rows.to(x.dtype)[:, None, None]
        x_quantized = torch.where(inside[:, None, None], x / rows,
                                  torch.zeros((), dtype=x.dtype, device=dev))
        return x_quantized.to(fp8_type), x_descale


def quantize(x, seq_offsets, quant_mode):
    """x (total, H, D) 16-bit -> (e4m3 x, descale or None) for quant_mode 0
    (a cast: descale None, i.e. 1.0), 3, 4 or 5."""
    if quant_mode == 0:
        with torch.no_grad():
            return x.to(E4M3), None
    if quant_mode == 5:
        return per_tensor(x)
    return head_batch(x, seq_offsets, quant_mode)


def dequantize(x8, descale, seq_offsets, quant_mode, dtype):
    """The values the fp8 kernel reads, in dtype: x8 times its descale (None:
    1.0) in float32, laid out as quantize() made it for quant_mode.  Rows
    outside every sequence come out 0 in modes 3 and 4."""
    with torch.no_grad():
        x = x8.to(torch.float32)
        if descale is None:
            return x.to(dtype)
        if quant_mode == 5:
            return (x * descale).to(dtype)
        _, _, seg, inside = segments(seq_offsets, x.shape[0], x.device)
        f = torch.where(inside.view((-1,) + (1,) * (descale.dim() - 1)),
                        descale.index_select(0, seg.clamp(max=descale.shape[0] - 1)), 0)
        return (x * (f[:, None, None] if f.dim() == 1 else f[:, :, None])).to(dtype)
