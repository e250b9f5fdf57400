"""FBGEMM's `hstu` package (fbgemm_gpu/experimental/hstu), on kiln.

Same names and signatures as FBGEMM's:

    hstu_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_q,
                          seqused_k, max_seqlen_q, max_seqlen_k, scaling_seqlen,
                          num_contexts, num_targets, target_group_size=1,
                          window_size=(-1, -1), alpha=1.0, rab=None,
                          has_drab=False, kv_cache=None, page_offsets=None,
                          page_ids=None, last_page_lens=None, func=None,
                          quant_mode=-1)
    hstu_attn_qkvpacked_func(qkv, cu_seqlens_q, cu_seqlens_k, seqused_q,
                             seqused_k, max_seqlen_q, max_seqlen_k,
                             scaling_seqlen=-1, num_contexts=None,
                             num_targets=None, target_group_size=1,
                             window_size=(-1, -1), alpha=1.0, rab=None,
                             has_drab=False, func=None)
    cuda_hstu_attn_varlen(...), HstuAttnVarlenFunc.apply(...)
    get_bm_and_bn_block_size_fwd/bwd, quantize_for_two_directions,
    quantize_for_block_scale, quantize_for_head_batch_tensor

seqused_q / seqused_k (FBGEMM's used lengths per padded segment) work: only
the first seqused[b] rows of a segment take part, the rest of the output and
of the gradients is zero, and queries sit at positions seqused_k - seqused_q
onwards.  func (arbitrary masks, int32 (1, n_func, total + 256) indexed by
the padded query row) works as NVIDIA's, with window_size (-1, -1) and no
contexts or targets.  quant_mode 0, 3, 4 and 5 run kiln's fp8 forward (on
sm_90a) with a straight-through 16-bit backward, as in
kiln.compat.hstu_attn_interface; 1 and 2 quantize as NVIDIA does and compute
at 16 bits.  Paged KV (kv_cache, page_offsets, page_ids, last_page_lens)
raises kiln.Unsupported.
"""

from ...hstu import _check_quant_mode, _unsupported_extras, hstu_varlen
from ..hstu_attn_interface import (  # noqa: F401
    get_bm_and_bn_block_size_bwd,
    get_bm_and_bn_block_size_fwd,
    quantize_for_block_scale,
    quantize_for_head_batch_tensor,
    quantize_for_two_directions,
)

__all__ = [
    "cuda_hstu_attn_varlen",
    "get_bm_and_bn_block_size_bwd",
    "get_bm_and_bn_block_size_fwd",
    "hstu_attn_qkvpacked_func",
    "hstu_attn_varlen_func",
    "HstuAttnVarlenFunc",
    "quantize_for_block_scale",
    "quantize_for_head_batch_tensor",
    "quantize_for_two_directions",
]

_NAMES = dict(so_q="cu_seqlens_q", so_k="cu_seqlens_k")


def hstu_attn_varlen_func(
    q,
    k,
    v,
    cu_seqlens_q,
    cu_seqlens_k,
    seqused_q,
    seqused_k,
    max_seqlen_q,
    max_seqlen_k,
    scaling_seqlen,
    num_contexts,
    num_targets,
    target_group_size=1,
    window_size=(-1, -1),
    alpha=1.0,
    rab=None,
    has_drab=False,
    kv_cache=None,
    page_offsets=None,
    page_ids=None,
    last_page_lens=None,
    func=None,
    quant_mode=-1,
):
    """HSTU attention over a jagged batch; returns out (total_q, H, D)."""
    _unsupported_extras(None, others=(
        ("kv_cache", kv_cache), ("page_offsets", page_offsets), ("page_ids", page_ids),
        ("last_page_lens", last_page_lens)))
    quant = _check_quant_mode(quant_mode)
    return hstu_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                       num_contexts=num_contexts, num_targets=num_targets,
                       target_group_size=target_group_size, window_size=window_size,
                       alpha=alpha, rab=rab, has_drab=bool(has_drab), is_delta_q="auto",
                       scaling_seqlen=scaling_seqlen, seqused_q=seqused_q,
                       seqused_k=seqused_k, names=_NAMES, quant=quant, func=func)


def hstu_attn_qkvpacked_func(
    qkv,
    cu_seqlens_q,
    cu_seqlens_k,
    seqused_q,
    seqused_k,
    max_seqlen_q,
    max_seqlen_k,
    scaling_seqlen=-1,
    num_contexts=None,
    num_targets=None,
    target_group_size=1,
    window_size=(-1, -1),
    alpha=1.0,
    rab=None,
    has_drab=False,
    func=None,
):
    """HSTU attention on a packed qkv (total, 3, H, D)."""
    names = dict(_NAMES, q="qkv[:, 0]", k="qkv[:, 1]", v="qkv[:, 2]")
    if seqused_q is None and seqused_k is None:
        return hstu_varlen(None, None, None, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                           max_seqlen_k, num_contexts=num_contexts,
                           num_targets=num_targets, target_group_size=target_group_size,
                           window_size=window_size, alpha=alpha, rab=rab,
                           has_drab=bool(has_drab), is_delta_q="auto",
                           scaling_seqlen=scaling_seqlen, qkv=qkv, names=names, func=func)
    # With used lengths the rows are gathered anyway: go through the views.
    if not hasattr(qkv, "dim") or qkv.dim() != 4 or qkv.shape[1] != 3:
        raise ValueError("kiln: qkv must be 4-D (total, 3, heads, head_dim), got "
                         f"{getattr(qkv, 'shape', type(qkv).__name__)}")
    return hstu_varlen(qkv[:, 0], qkv[:, 1], qkv[:, 2], cu_seqlens_q, cu_seqlens_k,
                       max_seqlen_q, max_seqlen_k, num_contexts=num_contexts,
                       num_targets=num_targets, target_group_size=target_group_size,
                       window_size=window_size, alpha=alpha, rab=rab,
                       has_drab=bool(has_drab), is_delta_q="auto",
                       scaling_seqlen=scaling_seqlen, seqused_q=seqused_q,
                       seqused_k=seqused_k, names=names, func=func)


def cuda_hstu_attn_varlen(
    q,
    k,
    v,
    cu_seqlens_q,
    cu_seqlens_k,
    seqused_q,
    seqused_k,
    max_seqlen_q,
    max_seqlen_k,
    scaling_seqlen,
    num_targets,
    window_size=(-1, -1),
    alpha=1.0,
    is_train=True,
):
    """FBGEMM's entry point for HSTU without rab or contexts (targets in
    groups of 1).  is_train=False runs without building an autograd graph."""
    args = (q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k, max_seqlen_q,
            max_seqlen_k, scaling_seqlen, None, num_targets, 1, window_size, alpha)
    if is_train:
        return hstu_attn_varlen_func(*args)
    import torch

    with torch.no_grad():
        return hstu_attn_varlen_func(*args)


class HstuAttnVarlenFunc:
    """FBGEMM's autograd.Function entry: HstuAttnVarlenFunc.apply(q, k, v,
    cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k, max_seqlen_q,
    max_seqlen_k, scaling_seqlen, num_contexts, num_targets, target_group_size,
    window_size=(-1, -1), alpha=1.0, rab=None, has_drab=False, func=None,
    kv_cache=None, page_offsets=None, page_ids=None, last_page_lens=None,
    quant_mode=-1).  Gradients flow through kiln's custom ops."""

    @staticmethod
    def apply(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k, max_seqlen_q,
              max_seqlen_k, scaling_seqlen, num_contexts, num_targets, target_group_size,
              window_size=(-1, -1), alpha=1.0, rab=None, has_drab=False, func=None,
              kv_cache=None, page_offsets=None, page_ids=None, last_page_lens=None,
              quant_mode=-1):
        return hstu_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_q,
                                     seqused_k, max_seqlen_q, max_seqlen_k, scaling_seqlen,
                                     num_contexts, num_targets, target_group_size,
                                     window_size, alpha, rab, has_drab, kv_cache,
                                     page_offsets, page_ids, last_page_lens, func,
                                     quant_mode)
