"""NVIDIA recsys-examples' `hstu_attn_interface` (corelib/hstu, Hopper), on kiln.

The seven names of NVIDIA's module with its signatures and defaults:

    hstu_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                          max_seqlen_k, num_contexts=None, num_targets=None,
                          target_group_size=1, window_size=(-1, -1), alpha=1.0,
                          rab=None, has_drab=False, func=None, quant_mode=-1,
                          scaling_seqlen=-1)
    hstu_attn_qkvpacked_func(qkv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                             max_seqlen_k, ... same keywords ...)
    get_bm_and_bn_block_size_fwd(rab, dim), get_bm_and_bn_block_size_bwd()
    quantize_for_two_directions(x, seq_offsets, fp8_type=torch.float8_e4m3fn)
    quantize_for_block_scale(x, seq_offsets, block_size=128, fp8_type=...)
    quantize_for_head_batch_tensor(x, seq_offsets, quant_mode=3, fp8_type=...)

Semantics as NVIDIA's: each sequence's queries sit at its last len_q
positions (a cu_seqlens_k other than cu_seqlens_q is a delta-q batch), rab is
(B, H_rab, max_seqlen_k, max_seqlen_k), scaling_seqlen=-1 means max_seqlen_q.
func (arbitrary masks, int32 (1, n_func, total_q + 256)) works as NVIDIA's,
forward and backward, with window_size (-1, -1) and no contexts or targets
(ValueError otherwise; kiln.Unsupported with fp8).
Differences: quant_mode 0 (a plain cast), 3 (a scale per sequence and
head), 4 (per sequence) and 5 (per tensor) run kiln's fp8 forward (sm_90a)
with a straight-through 16-bit backward at the dequantized q, k, v
(NVIDIA's has an fp8 backward); 1
and 2 (per-token and block scales) raise kiln.Unsupported.  The fp8 calls
are not traced by torch.compile (a graph break).  rab may have any number of
heads that divides H (NVIDIA: 1 or H).  The quantize helpers are written for kiln from what NVIDIA's compute
(same outputs, layouts and dtypes), vectorized; they take the device from x.
"""

import torch
import torch.nn.functional as F

from .. import _quant
from ..hstu import _check_quant_mode, hstu_varlen

__all__ = [
    "hstu_attn_varlen_func",
    "hstu_attn_qkvpacked_func",
    "get_bm_and_bn_block_size_fwd",
    "get_bm_and_bn_block_size_bwd",
    "quantize_for_two_directions",
    "quantize_for_block_scale",
    "quantize_for_head_batch_tensor",
]

_NAMES = dict(so_q="cu_seqlens_q", so_k="cu_seqlens_k")


def hstu_attn_varlen_func(
    q,
    k,
    v,
    cu_seqlens_q,
    cu_seqlens_k,
    max_seqlen_q,
    max_seqlen_k,
    num_contexts=None,
    num_targets=None,
    target_group_size=1,
    window_size=(-1, -1),
    alpha=1.0,
    rab=None,
    has_drab=False,
    func=None,
    quant_mode=-1,
    scaling_seqlen=-1,
):
    """HSTU attention over a jagged batch; returns out (total_q, H, D).
    quant_mode 0, 3, 4, 5: fp8 forward with those scales, straight-through
    16-bit backward at the dequantized inputs (see
    kiln.hstu_attn_varlen_func); func: NVIDIA's
    arbitrary mask (see there)."""
    quant = _check_quant_mode(quant_mode)
    return hstu_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                       num_contexts=num_contexts, num_targets=num_targets,
                       target_group_size=target_group_size, window_size=window_size,
                       alpha=alpha, rab=rab, has_drab=has_drab, is_delta_q="auto",
                       scaling_seqlen=scaling_seqlen, names=_NAMES,
                       quant=quant, func=func)


def hstu_attn_qkvpacked_func(
    qkv,
    cu_seqlens_q,
    cu_seqlens_k,
    max_seqlen_q,
    max_seqlen_k,
    num_contexts=None,
    num_targets=None,
    target_group_size=1,
    window_size=(-1, -1),
    alpha=1.0,
    rab=None,
    has_drab=False,
    func=None,
    quant_mode=-1,
    scaling_seqlen=-1,
):
    """HSTU attention on a packed qkv (total, 3, H, D); the gradient is one
    dqkv (total, 3, H, D)."""
    quant = _check_quant_mode(quant_mode)
    return hstu_varlen(None, None, None, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                       max_seqlen_k, num_contexts=num_contexts, num_targets=num_targets,
                       target_group_size=target_group_size, window_size=window_size,
                       alpha=alpha, rab=rab, has_drab=has_drab, is_delta_q="auto",
                       scaling_seqlen=scaling_seqlen, qkv=qkv,
                       names=dict(_NAMES, q="qkv[:, 0]", k="qkv[:, 1]", v="qkv[:, 2]"),
                       quant=quant, func=func)


# ------------------------------------------------------------ fp8 helpers


def get_bm_and_bn_block_size_fwd(rab, dim):
    """(BM, BN): the forward tile NVIDIA's fp8 block scaling is laid out for.
    128 x 128 for head dim 64 (and 128 without rab), otherwise 128 x 64."""
    if dim == 64 or (rab is None and dim == 128):
        return 128, 128
    return 128, 64


def get_bm_and_bn_block_size_bwd():
    """(BM, BN) of NVIDIA's fp8 backward tiles: 64 x 128."""
    return 64, 128


_fp8_max = _quant.fp8_max


def _need_3d(x, fn):
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{fn}: x must be 3-D (total, heads, dim), got {shape}")


def _blocks(seq_offsets, total, block, device):
    """Per-sequence blocks of `block` rows: (cu_blocks int32 (B+1,), number of
    blocks, block id of each row (the number of blocks for rows outside every
    sequence), inside)."""
    off, lens, seg, inside = _quant.segments(seq_offsets, total, device)
    nblk = torch.div(lens.clamp(min=0) + block - 1, block, rounding_mode="floor")
    cu = torch.zeros(off.shape[0], dtype=torch.int64, device=device)
    cu[1:] = torch.cumsum(nblk, 0)
    n = int(cu[-1])  # a host read: these helpers size their outputs by it
    segc = seg.clamp(max=max(off.shape[0] - 2, 0))
    rows = torch.arange(total, device=device, dtype=torch.int64)
    blk = cu[segc] + torch.div(rows - off[segc], block, rounding_mode="floor")
    blk = torch.where(inside, blk, n)
    return cu.to(torch.int32), n, blk, inside


def quantize_for_two_directions(x, seq_offsets, fp8_type=torch.float8_e4m3fn):
    """fp8 copies of x (total, H, D) scaled two ways, as NVIDIA's fp8 mode 1
    expects them.  Returns

      x_quantized   (total, H, D) fp8: x / x_descale, one scale per row and head
      x_descale     (H, total + 128) float32: amax over D / fp8 max (>= 1e-6),
                    padded with 128 zero columns
      xt_quantized  (total, H, D) fp8: x / the scale of its 128-row block
      xt_descale    (blocks, H, D) float32: per sequence, per block of 128
                    rows, amax over the block / fp8 max (>= 1e-6)
      cu_seqlens_xt_descale  (B + 1,) int32 offsets of each sequence's blocks
    """
    _need_3d(x, "quantize_for_two_directions")
    fmax = _fp8_max(fp8_type)
    dev = x.device
    with torch.no_grad():
        total, h, d = x.shape
        ax = x.abs()
        row_scale = (ax.amax(dim=-1, keepdim=True).to(torch.float32) / fmax).clamp_min(1e-6)
        x_quantized = (x / row_scale).to(fp8_type)
        x_descale = F.pad(row_scale.squeeze(-1), (0, 0, 0, 128)).transpose(0, 1).contiguous()

        cu, n, blk, inside = _blocks(seq_offsets, total, 128, dev)
        amax = _quant.amax_rows(ax.to(torch.float32), blk, n)
        # NVIDIA divides the block amax in x's dtype, then stores float32.
        xt_descale = (amax.to(x.dtype) / fmax).to(torch.float32).clamp_min(1e-6)
        scale_rows = torch.cat([xt_descale, torch.ones((1, h, d), dtype=torch.float32,
                                                       device=dev)]).index_select(0, blk)
        xt_quantized = torch.where(inside[:, None, None], x / scale_rows,
                                   x.to(torch.float32)).to(fp8_type)
    return x_quantized, x_descale, xt_quantized, xt_descale, cu


def quantize_for_block_scale(x, seq_offsets, block_size=128, fp8_type=torch.float8_e4m3fn):
    """fp8 x with one scale per (block of block_size rows of a sequence, head),
    as NVIDIA's fp8 mode 2 expects.  Returns

      x_quantized   (total, H, D) fp8
      x_descale     (H, blocks) float32: amax over the block's rows and D /
                    fp8 max (>= 1e-6)
      cu_seqlens_x_descale  (B + 1,) int32 offsets of each sequence's blocks
    """
    _need_3d(x, "quantize_for_block_scale")
    fmax = _fp8_max(fp8_type)
    dev = x.device
    with torch.no_grad():
        total, h, d = x.shape
        cu, n, blk, inside = _blocks(seq_offsets, total, int(block_size), dev)
        amax = _quant.amax_rows(x.abs().amax(dim=-1).to(torch.float32), blk, n)  # (n, H)
        scale = (amax / fmax).clamp_min(1e-6)
        rows = torch.cat([scale, torch.ones((1, h), dtype=torch.float32, device=dev)])
        rows = rows.index_select(0, blk)[:, :, None]
        x_quantized = torch.where(inside[:, None, None], x / rows,
                                  x.to(torch.float32)).to(fp8_type)
        x_descale = scale.transpose(0, 1).contiguous()
    return x_quantized, x_descale, cu


def quantize_for_head_batch_tensor(x, seq_offsets, quant_mode=3,
                                   fp8_type=torch.float8_e4m3fn):
    """fp8 x with one scale per (sequence, head) (quant_mode 3, descale (B, H)),
    per sequence (4, descale (B,)) or per tensor (5, descale (1,)); the scale is
    amax / fp8 max (>= 1e-6), float32.  Rows outside every sequence are 0 in
    modes 3 and 4.  Returns (x_quantized, x_descale)."""
    _need_3d(x, "quantize_for_head_batch_tensor")
    if quant_mode not in (3, 4, 5):
        raise ValueError("quantize_for_head_batch_tensor: quant_mode must be 3, 4 or 5, "
                         f"got {quant_mode!r}")
    fmax = _fp8_max(fp8_type)
    if quant_mode == 5:  # shared with kiln's quant_mode=5 path
        return _quant.per_tensor(x, fmax, fp8_type)
    return _quant.head_batch(x, seq_offsets, quant_mode, fmax, fp8_type)
