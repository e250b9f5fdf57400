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
(NVIDIA's has an fp8 backward).  quant_mode 1 (per-token scales for q and
k, per 128-row block and column for v) and 2 (per block of rows and head,
blocks of get_bm_and_bn_block_size_fwd's BM rows for q, BN for k and v)
quantize q, k, v exactly as NVIDIA's do but compute at 16 bits: kiln
dequantizes them to q's dtype and runs its 16-bit forward (the
quantization error without the fp8 tensor-core speedup), with the same
straight-through backward.  The quantized calls are not traced by
torch.compile (a graph break).  rab may have any number of
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
    quant_mode 0, 3, 4, 5: fp8 forward with those scales; 1, 2: q, k, v
    quantized with NVIDIA's per-token / block scales but computed at 16 bits
    (the dequantized values, no fp8 speedup); all with a straight-through
    16-bit backward at the dequantized inputs (see
    kiln.hstu_attn_varlen_func); func: NVIDIA's arbitrary mask (see
    there)."""
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
    return _quant.block_sizes_fwd(rab is not None, dim)


def get_bm_and_bn_block_size_bwd():
    """(BM, BN) of NVIDIA's fp8 backward tiles: 64 x 128."""
    return 64, 128


_fp8_max = _quant.fp8_max


def _need_3d(x, fn):
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{fn}: x must be 3-D (total, heads, dim), got {shape}")


def _exact(cu):
    """The number of blocks (a host read: these helpers size their outputs
    by it, as NVIDIA's do) and cu as int32."""
    return int(cu[-1]), cu.to(torch.int32)


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

    The math is kiln._quant's (per_row, column_blocks), which
    kiln.hstu_attn_varlen_func(quant_mode=1) uses too.
    """
    _need_3d(x, "quantize_for_two_directions")
    fmax = _fp8_max(fp8_type)
    with torch.no_grad():
        x_quantized, row_scale = _quant.per_row(x, fmax, fp8_type)
        x_descale = F.pad(row_scale, (0, 0, 0, 128)).transpose(0, 1).contiguous()
        xt_quantized, xt_descale, cu = _quant.column_blocks(x, seq_offsets, 128, fmax,
                                                            fp8_type)
        n, cu = _exact(cu)
    return x_quantized, x_descale, xt_quantized, xt_descale[:n], cu


def quantize_for_block_scale(x, seq_offsets, block_size=128, fp8_type=torch.float8_e4m3fn):
    """fp8 x with one scale per (block of block_size rows of a sequence, head),
    as NVIDIA's fp8 mode 2 expects.  Returns

      x_quantized   (total, H, D) fp8
      x_descale     (H, blocks) float32: amax over the block's rows and D /
                    fp8 max (>= 1e-6)
      cu_seqlens_x_descale  (B + 1,) int32 offsets of each sequence's blocks

    The math is kiln._quant.head_blocks, which
    kiln.hstu_attn_varlen_func(quant_mode=2) uses too.
    """
    _need_3d(x, "quantize_for_block_scale")
    block_size = int(block_size)
    if block_size < 1:
        raise ValueError(f"quantize_for_block_scale: block_size must be >= 1, got "
                         f"{block_size}")
    fmax = _fp8_max(fp8_type)
    with torch.no_grad():
        x_quantized, scale, cu = _quant.head_blocks(x, seq_offsets, block_size, fmax,
                                                    fp8_type)
        n, cu = _exact(cu)
        x_descale = scale[:n].transpose(0, 1).contiguous()
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
