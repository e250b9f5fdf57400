"""HSTU attention (pointwise SiLU, jagged batches) for PyTorch, on kiln.

    out = kiln.hstu_attn_varlen_func(q, k, v, seq_offsets_q, seq_offsets_k,
                                     max_seqlen_q, max_seqlen_k, ...)

computes, per sequence b, head h and query row i (SPEC.md section 1)

    out_i = sum over valid j of silu(alpha * (q_i . k_j + rab[b, h % H_rab, i, j]))
            / scaling_seqlen * v_j

with NVIDIA's HSTU masks (causal, local windows, contexts, targets in groups,
delta-q, and arbitrary per-row key intervals: NVIDIA's `func`).  It is
differentiable (dq, dk, dv and, with has_drab, d(rab)) and
built from torch.library custom ops, so torch.compile(fullgraph=True) and
CUDA graph capture see one opaque op per direction:

    kiln::hstu_fwd(q, k, v, ..., func) -> out
    kiln::hstu_bwd(dout, q, k, v, ..., func) -> (dq, dk, dv, drab)
    kiln::hstu_fwd_qkvpacked(qkv, ...) -> out
    kiln::hstu_bwd_qkvpacked(dout, qkv, ...) -> (dqkv, drab)

The ops allocate their outputs and, in backward, one workspace tensor (the size
that kiln_hstu_bwd_workspace_size() gives), launch on the current CUDA stream,
and never read a device tensor on the host.  Inputs whose layout the kernels
cannot take (a last dimension that is not contiguous, row or head strides that
are not multiples of 16 bytes, a data pointer not 16-byte aligned) are
copied first; NVIDIA's packed-qkv views need no copy.

fp8 (forward only; the fp8 wgmma kernel on sm_90a, a kernel that widens
e4m3 to 16 bits as it loads on other sm_80+ GPUs): hstu_attn_varlen_func
takes float8_e4m3fn q, k, v with descale_q/k/v (one factor per tensor, per sequence or per
sequence and head; a bf16 or fp16 out), and quant_mode 0, 3, 4 or 5
quantizes 16-bit q, k, v itself with NVIDIA's scale layouts (a
straight-through 16-bit backward at the dequantized values).  quant_mode 1
(per-token) and 2 (block scales) quantize q, k, v exactly as NVIDIA's do but
compute at 16 bits: the dequantized values go through the 16-bit kernels
(NVIDIA's quantization error, no fp8 tensor-core speedup), with the same
straight-through backward; so does every quant_mode with `func`, since
kiln's fp8 kernels have no func mask.  None of these is a custom op: they
call the C library directly and torch.compile graph-breaks around them
(torch.compiler.disable).

Arguments are checked here, before any CUDA call: a wrong type or dtype raises
TypeError, a wrong shape, value or device ValueError, each naming the
argument; a valid argument that kiln does not implement yet (descale_do
and fp8 backward, `func` with float8_e4m3fn inputs, paged KV caches)
raises kiln.Unsupported, a NotImplementedError.  A failure inside the
C library raises kiln.KilnError with the status name and kiln_last_error().
"""

import functools
import math
import numbers
import operator
from typing import Optional, Tuple

import torch

from . import _capi, _quant

__all__ = [
    "Unsupported",
    "hstu_attn_varlen_func",
    "hstu_attn_qkvpacked_func",
    "hstu_varlen",
]

Tensor = torch.Tensor

_HEAD_DIMS = (32, 64, 128, 256)
_DTYPES = {torch.float16: _capi.KILN_DTYPE_FP16, torch.bfloat16: _capi.KILN_DTYPE_BF16}
_FP8 = tuple(getattr(torch, n) for n in
             ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
             if hasattr(torch, n))
_OFFSET_DTYPES = (torch.int32, torch.int64)
_E4M3 = getattr(torch, "float8_e4m3fn", None)
_FP8_HEAD_DIMS = (64, 128, 256)  # the e4m3 kernels' (both)
# kiln_dtype of every input dtype the C library takes.
_CODES = {**_DTYPES, **({_E4M3: _capi.KILN_DTYPE_E4M3} if _E4M3 is not None else {})}


class Unsupported(NotImplementedError):
    """A valid argument (or value) that kiln does not implement yet.

    argument: the name of the argument; the message says what is missing.
    """

    def __init__(self, argument, what):
        self.argument = argument
        super().__init__(f"kiln: {argument}: {what}")

    def __reduce__(self):
        return (_unsupported_from_message, (self.argument, str(self)))


def _unsupported_from_message(argument, message):
    e = Unsupported.__new__(Unsupported)
    e.argument = argument
    NotImplementedError.__init__(e, message)
    return e


# ------------------------------------------------------------- validation
# Pure metadata: these run on FakeTensors under torch.compile too.


def _is_int(x):
    if isinstance(x, bool):
        return True
    if isinstance(x, (int, torch.SymInt)):
        return True
    if isinstance(x, torch.Tensor):
        return False
    try:
        operator.index(x)
        return True
    except TypeError:
        return False


def _as_int(name, x):
    if isinstance(x, (int, torch.SymInt)) and not isinstance(x, bool):
        return x
    if isinstance(x, torch.Tensor) or isinstance(x, bool) or not _is_int(x):
        raise TypeError(f"kiln: {name} must be an int, got {type(x).__name__}")
    return operator.index(x)


def _as_real(name, x):
    if isinstance(x, (torch.Tensor, bool)) or not isinstance(x, (numbers.Real, torch.SymFloat,
                                                                 torch.SymInt)):
        raise TypeError(f"kiln: {name} must be a real number, got {type(x).__name__}")
    if isinstance(x, (torch.SymFloat, torch.SymInt)):
        return x
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"kiln: {name} must be finite, got {x}")
    return x


def _check_tensor(name, t):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"kiln: {name} must be a torch.Tensor, got {type(t).__name__}")


def _check_qkv(q, k, v, names=("q", "k", "v"), allow_fp8=False):
    """Checks q, k, v; returns True for float8_e4m3fn inputs (allowed only
    with allow_fp8: kiln.hstu_attn_varlen_func's forward-only path)."""
    nq, nk, nv = names
    for n, t in zip(names, (q, k, v)):
        _check_tensor(n, t)
    for n, t in zip(names, (q, k, v)):
        if t.dim() != 3:
            raise ValueError(f"kiln: {n} must be 3-D (total, heads, head_dim), got shape "
                             f"{tuple(t.shape)}")
    fp8 = q.dtype in _FP8
    if fp8 and q.dtype != _E4M3:
        raise Unsupported(nq, f"{q.dtype} inputs are not implemented in kiln; its fp8 "
                              "path takes torch.float8_e4m3fn (or float16 / bfloat16)")
    if fp8 and not allow_fp8:
        raise Unsupported(nq, f"{q.dtype} inputs (fp8) are implemented only by "
                              "kiln.hstu_attn_varlen_func (forward only); pass float16 "
                              "or bfloat16 here")
    if q.dtype not in _DTYPES and not fp8:
        raise TypeError(f"kiln: {nq} has dtype {q.dtype}; expected torch.float16, "
                        "torch.bfloat16" + (" or torch.float8_e4m3fn" if allow_fp8 else ""))
    for n, t in ((nk, k), (nv, v)):
        if t.dtype != q.dtype:
            raise TypeError(f"kiln: {n} has dtype {t.dtype} but {nq} has {q.dtype}; "
                            "q, k and v must have one dtype")
    H, D = q.shape[1], q.shape[2]
    dims = _FP8_HEAD_DIMS if fp8 else _HEAD_DIMS
    if D not in dims:
        raise ValueError(f"kiln: {nq} has head dim {D}; supported head dims are "
                         f"{', '.join(map(str, dims))}" + (f" for {q.dtype}" if fp8 else ""))
    if k.shape[1] != H:
        raise ValueError(f"kiln: {nk} has {k.shape[1]} heads but {nq} has {H}; "
                         "kiln's HSTU needs as many key heads as query heads")
    if k.shape[2] != D:
        raise ValueError(f"kiln: {nk} has head dim {k.shape[2]} but {nq} has {D}")
    if v.shape[1] != H:
        raise ValueError(f"kiln: {nv} has {v.shape[1]} heads but {nq} has {H}")
    if v.shape[2] != D:
        raise ValueError(f"kiln: {nv} has head dim {v.shape[2]} but {nq} has {D}; "
                         "kiln needs v's head dim equal to q's")
    if v.shape[0] != k.shape[0]:
        raise ValueError(f"kiln: {nv} has {v.shape[0]} rows but {nk} has {k.shape[0]}")
    return fp8


def _check_out_dtype(out_dtype):
    if out_dtype is None:
        return torch.bfloat16
    if out_dtype not in _DTYPES:
        raise TypeError(f"kiln: out_dtype must be torch.bfloat16 or torch.float16, got "
                        f"{out_dtype!r}")
    return out_dtype


# NVIDIA's quant_mode values: 0, 3, 4, 5 run kiln's fp8 kernel; 1 and 2
# quantize as NVIDIA's do and run the 16-bit kernel on the dequantized values,
# as every mode does with func (kiln's fp8 kernels have no func mask).
_QUANT_MODES = (0, 1, 2, 3, 4, 5)
_QUANT_16BIT = (1, 2)


def _check_quant_mode(quant_mode):
    """None for quant_mode -1 or None (no quantization); 0 to 5 as an int
    (q, k, v quantized with that mode's scale layout: the fp8 forward for 0,
    3, 4, 5, the 16-bit forward at the dequantized values for 1 and 2 and
    for every mode with func); anything else ValueError / TypeError."""
    if quant_mode is None:
        return None
    if not _is_int(quant_mode) or isinstance(quant_mode, bool):
        raise TypeError(f"kiln: quant_mode must be an int, got {type(quant_mode).__name__}")
    qm = int(quant_mode)
    if qm == -1:
        return None
    if qm in _QUANT_MODES:
        return qm
    raise ValueError(f"kiln: quant_mode must be -1 or 0 to 5, got {qm}")


def _check_offsets(name, t):
    _check_tensor(name, t)
    if t.dtype not in _OFFSET_DTYPES:
        raise TypeError(f"kiln: {name} has dtype {t.dtype}; offsets must be torch.int32 "
                        "or torch.int64")
    if t.dim() != 1:
        raise ValueError(f"kiln: {name} must be 1-D (batch + 1 offsets), got shape "
                         f"{tuple(t.shape)}")
    if t.shape[0] < 1:
        raise ValueError(f"kiln: {name} must have batch + 1 >= 1 entries, got 0")


def _check_per_batch(name, t, batch):
    if t is None:
        return
    _check_tensor(name, t)
    if t.dtype != torch.int32:
        raise TypeError(f"kiln: {name} has dtype {t.dtype}; it must be torch.int32")
    if t.dim() != 1 or t.shape[0] != batch:
        raise ValueError(f"kiln: {name} must have shape ({batch},) (one entry per "
                         f"sequence), got {tuple(t.shape)}")


def _check_window(window_size):
    if isinstance(window_size, torch.Tensor) or not isinstance(window_size, (tuple, list)):
        raise TypeError("kiln: window_size must be a (left, right) tuple of ints, got "
                        f"{type(window_size).__name__}")
    if len(window_size) != 2:
        raise ValueError(f"kiln: window_size must have 2 entries (left, right), got "
                         f"{len(window_size)}")
    left = _as_int("window_size[0]", window_size[0])
    right = _as_int("window_size[1]", window_size[1])
    if left < -1 or right < -1:
        raise ValueError(f"kiln: window_size ({left}, {right}): each side must be -1 "
                         "(unbounded) or >= 0")
    return int(left), int(right)


def _check_device(name, t, device):
    if t is None:
        return
    if t.device.type != "cuda":
        raise ValueError(f"kiln: {name} must be a CUDA tensor, got device {t.device}")
    if t.device != device:
        raise ValueError(f"kiln: {name} is on {t.device} but q is on {device}")


def _check_func(func, total_q, window, num_contexts, num_targets, fp8, q_name="q"):
    """NVIDIA's arbitrary mask: None, or an int32 tensor (1, n_func, L) with
    n_func odd (1 to 255) and L >= total_q (NVIDIA allocates total_q + 256);
    func[0, f, g] for global query row g.  A mask family of its own: no
    window, contexts or targets.  Not with float8_e4m3fn inputs (fp8: the
    e4m3 kernels have no func); quant_mode takes it (computed at 16 bits).
    Its device is checked with the others."""
    if func is None:
        return
    if not isinstance(func, torch.Tensor):
        raise TypeError(f"kiln: func must be None or a torch.Tensor, got "
                        f"{type(func).__name__}")
    if func.dtype != torch.int32:
        raise TypeError(f"kiln: func has dtype {func.dtype}; it must be torch.int32")
    if func.dim() != 3 or func.shape[0] != 1:
        raise ValueError("kiln: func must be 3-D (1, n_func, total_q + 256) (one func head), "
                         f"got shape {tuple(func.shape)}")
    nf = func.shape[1]
    if nf < 1 or nf > _capi.KILN_HSTU_FUNC_MAX or nf % 2 == 0:
        raise ValueError(f"kiln: func has n_func = {nf} (shape {tuple(func.shape)}); it must "
                         f"be odd, from 1 to {_capi.KILN_HSTU_FUNC_MAX}")
    if func.shape[2] < total_q:
        raise ValueError(f"kiln: func has {func.shape[2]} columns but {q_name} has {total_q} "
                         "rows; func[0, f, g] is read for every query row g (NVIDIA's "
                         "layout: total_q + 256 columns)")
    if tuple(window) != (-1, -1):
        raise ValueError(f"kiln: func is a mask of its own: window_size must be (-1, -1) "
                         f"with it, got {tuple(window)}")
    if num_contexts is not None:
        raise ValueError("kiln: func is a mask of its own: num_contexts must be None with it")
    if num_targets is not None:
        raise ValueError("kiln: func is a mask of its own: num_targets must be None with it")
    if fp8:
        raise Unsupported("func", "float8_e4m3fn q, k, v (with descale_q/k/v) "
                                  "take no arbitrary func mask in kiln; pass float16 or "
                                  "bfloat16 inputs with func, and quant_mode 0 to 5 to "
                                  "have kiln quantize them (with func it computes at 16 "
                                  "bits, at the dequantized values)")


def _unsupported_extras(quant_mode=-1, descales=(), others=()):
    if quant_mode is not None and not (_is_int(quant_mode) and int(quant_mode) == -1):
        raise Unsupported("quant_mode", f"fp8 quantization (quant_mode={quant_mode!r}) is "
                                        "not implemented here; pass quant_mode=-1 "
                                        "(kiln.hstu_attn_varlen_func takes quant_mode 0 "
                                        "to 5)")
    for name, val in descales:
        if val is not None:
            raise Unsupported(name, "fp8 backward (descale_do) is not implemented in kiln: "
                                    f"its fp8 path is forward only; pass {name}=None")
    for name, val in others:
        if val is not None:
            raise Unsupported(name, "paged KV caches are not implemented in kiln yet; "
                                    f"pass {name}=None")


def _resolve_scaling(scaling_seqlen, max_seqlen_q):
    if scaling_seqlen is None:
        return 0.0
    s = _as_real("scaling_seqlen", scaling_seqlen)
    if isinstance(s, float):
        if s == -1.0:
            return 0.0  # the C library's 0: max_seqlen_q
        if s <= 0:
            raise ValueError(f"kiln: scaling_seqlen must be -1 (max_seqlen_q) or > 0, got "
                             f"{scaling_seqlen}")
    return s


# ------------------------------------------------------------ C plumbing

_fwd_template = None


def _new_fwd_params():
    global _fwd_template
    if _fwd_template is None:
        _fwd_template = _capi._fwd_params_init()
    return _capi.HstuFwdParams.from_buffer_copy(_fwd_template)


def _usable3(t):
    """(t or a copy, row_stride, head_stride) that kiln can read: last dim
    contiguous, strides multiples of 16 bytes (8 elements, 16 for fp8),
    16-byte aligned."""
    L, H, D = t.shape
    s0, s1, s2 = t.stride()
    rs = s0 if L > 1 else H * D
    hs = s1 if H > 1 else D
    m = 16 // t.element_size()
    if ((D <= 1 or s2 == 1) and rs >= 1 and rs % m == 0 and hs >= 1 and hs % m == 0
            and (t.numel() == 0 or t.data_ptr() % 16 == 0)):
        return t, rs, hs
    c = torch.empty((L, H, D), dtype=t.dtype, device=t.device)
    c.copy_(t)
    return c, H * D, D


def _usable1(t):
    return t if t.stride(0) == 1 or t.shape[0] <= 1 else t.contiguous()


def _rab_strides(r):
    return r.stride(0), r.stride(1), (r.stride(2) if r.shape[2] > 1 else max(1, r.shape[3]))


def _usable_func(f):
    """func (1, n_func, L) int32 with its last dimension contiguous and its
    n_func rows at least L elements apart (kiln_hstu_fwd_params.func_stride),
    else a contiguous copy."""
    n, L = f.shape[1], f.shape[2]
    if (L <= 1 or f.stride(2) == 1) and (n <= 1 or f.stride(1) >= L):
        return f
    return f.contiguous()


def _fill_func(p, func):
    if func is None:
        return
    n = func.shape[1]
    p.func = func.data_ptr()
    p.n_func = n
    p.func_stride = func.stride(1) if n > 1 else max(func.shape[2], 1)


def _fill_fwd(q3, k3, v3, so_q, so_k, max_seqlen_q, max_seqlen_k, num_contexts,
              num_targets, target_group_size, window_left, window_right, alpha,
              scaling_seqlen, rab, is_delta_q, func=None):
    (q, qrs, qhs), (k, krs, khs), (v, vrs, vhs) = q3, k3, v3
    p = _new_fwd_params()
    p.dtype = _CODES[q.dtype]
    p.head_dim = q.shape[2]
    p.num_heads = q.shape[1]
    p.batch = so_q.shape[0] - 1
    p.total_q, p.total_k = q.shape[0], k.shape[0]
    p.q, p.k, p.v = q.data_ptr(), k.data_ptr(), v.data_ptr()
    p.q_row_stride, p.q_head_stride = qrs, qhs
    p.k_row_stride, p.k_head_stride = krs, khs
    p.v_row_stride, p.v_head_stride = vrs, vhs
    p.seq_offsets_q = so_q.data_ptr()
    p.seq_offsets_k = so_k.data_ptr() if so_k is not None else 0
    p.offsets_type = (_capi.KILN_INDEX_INT64 if so_q.dtype == torch.int64
                      else _capi.KILN_INDEX_INT32)
    p.max_seqlen_q, p.max_seqlen_k = max_seqlen_q, max_seqlen_k
    p.window_left, p.window_right = window_left, window_right
    p.num_contexts = num_contexts.data_ptr() if num_contexts is not None else 0
    p.num_targets = num_targets.data_ptr() if num_targets is not None else 0
    p.target_group_size = target_group_size
    p.alpha = alpha
    p.scaling_seqlen = scaling_seqlen
    if rab is not None:
        p.rab = rab.data_ptr()
        p.rab_heads = rab.shape[1]
        p.rab_batch_stride, p.rab_head_stride, p.rab_row_stride = _rab_strides(rab)
    p.is_delta_q = 1 if is_delta_q else 0
    _fill_func(p, func)
    return p


class _on_device:
    """Make `device` current for a kiln call (kiln launches in the context
    current on the calling thread); a no-op when it already is."""

    __slots__ = ("idx", "prev")

    def __init__(self, device):
        self.idx = device.index if device.index is not None else torch.cuda.current_device()
        self.prev = None

    def __enter__(self):
        cur = torch.cuda.current_device()
        if cur != self.idx:
            self.prev = cur
            torch.cuda.set_device(self.idx)

    def __exit__(self, *exc):
        if self.prev is not None:
            torch.cuda.set_device(self.prev)


def _stream(device):
    return torch.cuda.current_stream(device).cuda_stream


def _common_inputs(so_q, so_k, num_contexts, num_targets, rab):
    so_q = _usable1(so_q)
    so_k = _usable1(so_k) if so_k is not None else None
    nc = _usable1(num_contexts) if num_contexts is not None else None
    nt = _usable1(num_targets) if num_targets is not None else None
    return so_q, so_k, nc, nt, rab


def _fwd_impl(q, k, v, out, seq_offsets_q, seq_offsets_k, max_seqlen_q, max_seqlen_k,
              num_contexts, num_targets, target_group_size, window_left, window_right,
              alpha, scaling_seqlen, rab, is_delta_q, func=None):
    """func: NVIDIA's (1, n_func, >= total_q) int32 mask, or None."""
    return _launch_fwd(q, k, v, out, None, seq_offsets_q, seq_offsets_k, max_seqlen_q,
                       max_seqlen_k, num_contexts, num_targets, target_group_size,
                       window_left, window_right, alpha, scaling_seqlen, rab, is_delta_q,
                       func)


def _fwd_fp8_impl(q, k, v, out, descale_q, descale_k, descale_v, seq_offsets_q,
                  seq_offsets_k, max_seqlen_q, max_seqlen_k, num_contexts, num_targets,
                  target_group_size, window_left, window_right, alpha, scaling_seqlen,
                  rab, is_delta_q):
    """The e4m3 forward: q, k, v float8_e4m3fn, out float16 or bfloat16 (rab,
    if any, in out's dtype); descale_*: one-element float32 device tensors or
    None (1.0)."""
    return _launch_fwd(q, k, v, out, (descale_q, descale_k, descale_v), seq_offsets_q,
                       seq_offsets_k, max_seqlen_q, max_seqlen_k, num_contexts,
                       num_targets, target_group_size, window_left, window_right, alpha,
                       scaling_seqlen, rab, is_delta_q)


def _launch_fwd(q, k, v, out, descales, seq_offsets_q, seq_offsets_k, max_seqlen_q,
                max_seqlen_k, num_contexts, num_targets, target_group_size, window_left,
                window_right, alpha, scaling_seqlen, rab, is_delta_q, func=None):
    if q.shape[0] == 0 or seq_offsets_q.shape[0] <= 1:
        return out
    if k.shape[0] == 0:
        return out.zero_()
    so_q, so_k, nc, nt, rab = _common_inputs(seq_offsets_q, seq_offsets_k, num_contexts,
                                             num_targets, rab)
    q3, k3, v3 = _usable3(q), _usable3(k), _usable3(v)
    func = _usable_func(func) if func is not None else None
    p = _fill_fwd(q3, k3, v3, so_q, so_k, max_seqlen_q, max_seqlen_k, nc, nt,
                  target_group_size, window_left, window_right, alpha, scaling_seqlen,
                  rab, is_delta_q, func)
    p.out = out.data_ptr()
    p.out_row_stride = out.stride(0) if out.shape[0] > 1 else out.shape[1] * out.shape[2]
    p.out_head_stride = out.stride(1) if out.shape[1] > 1 else out.shape[2]
    if descales is not None:
        p.out_dtype = _DTYPES[out.dtype]
        p.descale_q, p.descale_k, p.descale_v = (
            t.data_ptr() if t is not None else 0 for t in descales)
        p.descale_batch_stride, p.descale_head_stride = _capi.descale_layout(
            zip(("descale_q", "descale_k", "descale_v"), descales), p.batch, p.num_heads)
    lib = _capi.library()
    with _on_device(q.device):
        st = lib.kiln_hstu_fwd(_capi.default_engine().handle, _capi.ctypes.byref(p),
                               _capi.ctypes.c_void_p(_stream(q.device)))
        if st:
            _capi._check(st, "kiln_hstu_fwd")
    return out


def _bwd_impl(dout, q, k, v, dq, dk, dv, seq_offsets_q, seq_offsets_k, max_seqlen_q,
              max_seqlen_k, num_contexts, num_targets, target_group_size, window_left,
              window_right, alpha, scaling_seqlen, rab, drab, is_delta_q, deterministic,
              func=None):
    """dq, dk, dv: fresh outputs (possibly strided views of one packed
    tensor); drab: zero-filled output shaped like rab, or None; func as for
    _fwd_impl."""
    if seq_offsets_q.shape[0] <= 1:
        return
    if q.shape[0] == 0 or k.shape[0] == 0:
        # Nothing flows back: no queries (dk, dv zero) or no keys (dq zero).
        for t in (dq, dk, dv):
            t.zero_()
        return
    _capi._need_bwd()
    so_q, so_k, nc, nt, rab = _common_inputs(seq_offsets_q, seq_offsets_k, num_contexts,
                                             num_targets, rab)
    q3, k3, v3 = _usable3(q), _usable3(k), _usable3(v)
    dout, drs, dhs = _usable3(dout)
    func = _usable_func(func) if func is not None else None
    fwd = _fill_fwd(q3, k3, v3, so_q, so_k, max_seqlen_q, max_seqlen_k, nc, nt,
                    target_group_size, window_left, window_right, alpha, scaling_seqlen,
                    rab, is_delta_q, func)
    p = _capi._bwd_params_init()
    p.fwd = fwd
    p.dout = dout.data_ptr()
    p.dout_row_stride, p.dout_head_stride = drs, dhs
    p.dq, p.dk, p.dv = dq.data_ptr(), dk.data_ptr(), dv.data_ptr()
    for name, t in (("dq", dq), ("dk", dk), ("dv", dv)):
        rs = t.stride(0) if t.shape[0] > 1 else t.shape[1] * t.shape[2]
        hs = t.stride(1) if t.shape[1] > 1 else t.shape[2]
        setattr(p, name + "_row_stride", rs)
        setattr(p, name + "_head_stride", hs)
    if drab is not None:
        p.drab = drab.data_ptr()
        p.drab_batch_stride, p.drab_head_stride, p.drab_row_stride = _rab_strides(drab)
    p.deterministic = 1 if deterministic else 0
    ws_bytes = _capi.hstu_bwd_workspace_size(p)
    ws = None
    if ws_bytes:
        ws = torch.empty((ws_bytes,), dtype=torch.uint8, device=q.device)
        p.workspace, p.workspace_bytes = ws.data_ptr(), ws_bytes
    lib = _capi.library()
    with _on_device(q.device):
        st = lib.kiln_hstu_bwd(_capi.default_engine().handle, _capi.ctypes.byref(p),
                               _capi.ctypes.c_void_p(_stream(q.device)))
        if st:
            _capi._check(st, "kiln_hstu_bwd")
    del ws  # the caching allocator keeps it for the stream until the kernels are done


def _empty_like3(t):
    return torch.empty((t.shape[0], t.shape[1], t.shape[2]), dtype=t.dtype, device=t.device)


def _empty_drab(rab, has_drab, like):
    if has_drab:
        return torch.zeros(tuple(rab.shape), dtype=rab.dtype, device=rab.device)
    return torch.empty((0,), dtype=like.dtype, device=like.device)


# ------------------------------------------------------------ custom ops
# Argument order shared by the four ops after their tensor inputs.
#   seq_offsets_q, seq_offsets_k (None: same as q), max_seqlen_q, max_seqlen_k,
#   num_contexts, num_targets, target_group_size, window_left, window_right,
#   alpha, scaling_seqlen (0: max_seqlen_q), rab, has_drab, is_delta_q,
#   deterministic, func (NVIDIA's (1, n_func, >= total_q) int32 mask, or None)


@torch.library.custom_op("kiln::hstu_fwd", mutates_args=())
def _op_fwd(q: Tensor, k: Tensor, v: Tensor, seq_offsets_q: Tensor,
            seq_offsets_k: Optional[Tensor], max_seqlen_q: int, max_seqlen_k: int,
            num_contexts: Optional[Tensor], num_targets: Optional[Tensor],
            target_group_size: int, window_left: int, window_right: int, alpha: float,
            scaling_seqlen: float, rab: Optional[Tensor], has_drab: bool, is_delta_q: bool,
            deterministic: bool, func: Optional[Tensor] = None) -> Tensor:
    out = _empty_like3(q)
    return _fwd_impl(q, k, v, out, seq_offsets_q, seq_offsets_k, max_seqlen_q,
                     max_seqlen_k, num_contexts, num_targets, target_group_size,
                     window_left, window_right, alpha, scaling_seqlen, rab, is_delta_q,
                     func)


@_op_fwd.register_fake
def _(q, k, v, *args):
    return q.new_empty((q.shape[0], q.shape[1], q.shape[2]))


@torch.library.custom_op("kiln::hstu_bwd", mutates_args=())
def _op_bwd(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, seq_offsets_q: Tensor,
            seq_offsets_k: Optional[Tensor], max_seqlen_q: int, max_seqlen_k: int,
            num_contexts: Optional[Tensor], num_targets: Optional[Tensor],
            target_group_size: int, window_left: int, window_right: int, alpha: float,
            scaling_seqlen: float, rab: Optional[Tensor], has_drab: bool, is_delta_q: bool,
            deterministic: bool,
            func: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    dq, dk, dv = _empty_like3(q), _empty_like3(k), _empty_like3(v)
    drab = _empty_drab(rab, has_drab, q)
    _bwd_impl(dout, q, k, v, dq, dk, dv, seq_offsets_q, seq_offsets_k, max_seqlen_q,
              max_seqlen_k, num_contexts, num_targets, target_group_size, window_left,
              window_right, alpha, scaling_seqlen, rab, drab if has_drab else None,
              is_delta_q, deterministic, func)
    return dq, dk, dv, drab


@_op_bwd.register_fake
def _(dout, q, k, v, seq_offsets_q, seq_offsets_k, max_seqlen_q, max_seqlen_k,
      num_contexts, num_targets, target_group_size, window_left, window_right, alpha,
      scaling_seqlen, rab, has_drab, is_delta_q, deterministic, func=None):
    drab = (rab.new_empty(tuple(rab.shape)) if has_drab else q.new_empty((0,)))
    return (q.new_empty(tuple(q.shape)), k.new_empty(tuple(k.shape)),
            v.new_empty(tuple(v.shape)), drab)


def _split_packed(qkv):
    return qkv[:, 0], qkv[:, 1], qkv[:, 2]


@torch.library.custom_op("kiln::hstu_fwd_qkvpacked", mutates_args=())
def _op_fwd_packed(qkv: Tensor, seq_offsets_q: Tensor, seq_offsets_k: Optional[Tensor],
                   max_seqlen_q: int, max_seqlen_k: int, num_contexts: Optional[Tensor],
                   num_targets: Optional[Tensor], target_group_size: int, window_left: int,
                   window_right: int, alpha: float, scaling_seqlen: float,
                   rab: Optional[Tensor], has_drab: bool, is_delta_q: bool,
                   deterministic: bool, func: Optional[Tensor] = None) -> Tensor:
    q, k, v = _split_packed(qkv)
    out = _empty_like3(q)
    return _fwd_impl(q, k, v, out, seq_offsets_q, seq_offsets_k, max_seqlen_q,
                     max_seqlen_k, num_contexts, num_targets, target_group_size,
                     window_left, window_right, alpha, scaling_seqlen, rab, is_delta_q,
                     func)


@_op_fwd_packed.register_fake
def _(qkv, *args):
    return qkv.new_empty((qkv.shape[0], qkv.shape[2], qkv.shape[3]))


@torch.library.custom_op("kiln::hstu_bwd_qkvpacked", mutates_args=())
def _op_bwd_packed(dout: Tensor, qkv: Tensor, seq_offsets_q: Tensor,
                   seq_offsets_k: Optional[Tensor], max_seqlen_q: int, max_seqlen_k: int,
                   num_contexts: Optional[Tensor], num_targets: Optional[Tensor],
                   target_group_size: int, window_left: int, window_right: int,
                   alpha: float, scaling_seqlen: float, rab: Optional[Tensor],
                   has_drab: bool, is_delta_q: bool, deterministic: bool,
                   func: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    q, k, v = _split_packed(qkv)
    dqkv = torch.empty(tuple(qkv.shape), dtype=qkv.dtype, device=qkv.device)
    dq, dk, dv = _split_packed(dqkv)
    drab = _empty_drab(rab, has_drab, qkv)
    _bwd_impl(dout, q, k, v, dq, dk, dv, seq_offsets_q, seq_offsets_k, max_seqlen_q,
              max_seqlen_k, num_contexts, num_targets, target_group_size, window_left,
              window_right, alpha, scaling_seqlen, rab, drab if has_drab else None,
              is_delta_q, deterministic, func)
    return dqkv, drab


@_op_bwd_packed.register_fake
def _(dout, qkv, seq_offsets_q, seq_offsets_k, max_seqlen_q, max_seqlen_k, num_contexts,
      num_targets, target_group_size, window_left, window_right, alpha, scaling_seqlen,
      rab, has_drab, is_delta_q, deterministic, func=None):
    drab = rab.new_empty(tuple(rab.shape)) if has_drab else qkv.new_empty((0,))
    return qkv.new_empty(tuple(qkv.shape)), drab


# ------------------------------------------------------------- autograd
_N_SCALARS_AFTER_TENSORS = 16  # seq_offsets_q ... deterministic, func


def _setup(ctx, inputs, output, n_tensors):
    t = inputs[:n_tensors]
    (so_q, so_k, mq, mk, nc, nt, tgs, wl, wr, alpha, scal, rab, has_drab, dlt,
     det, *func) = inputs[n_tensors:]
    ctx.save_for_backward(*t, so_q, so_k, nc, nt, rab, func[0] if func else None)
    ctx.kiln_args = (mq, mk, tgs, wl, wr, alpha, scal, has_drab, dlt, det)
    ctx.kiln_n = n_tensors
    ctx.kiln_inputs = len(inputs)


def _args_for_bwd(ctx):
    n = ctx.kiln_n
    saved = ctx.saved_tensors
    tensors, (so_q, so_k, nc, nt, rab, func) = saved[:n], saved[n:]
    mq, mk, tgs, wl, wr, alpha, scal, has_drab, dlt, det = ctx.kiln_args
    rest = (so_q, so_k, mq, mk, nc, nt, tgs, wl, wr, alpha, scal, rab, has_drab, dlt, det,
            func)
    return tensors, rest, has_drab


def _setup_fwd(ctx, inputs, output):
    _setup(ctx, inputs, output, 3)


def _backward_fwd(ctx, grad):
    (q, k, v), rest, has_drab = _args_for_bwd(ctx)
    dq, dk, dv, drab = torch.ops.kiln.hstu_bwd(grad, q, k, v, *rest)
    nones = [None] * (ctx.kiln_inputs - 3)  # func may have been left to its default
    nones[11] = drab if has_drab else None  # rab
    return (dq, dk, dv, *nones)


def _setup_fwd_packed(ctx, inputs, output):
    _setup(ctx, inputs, output, 1)


def _backward_fwd_packed(ctx, grad):
    (qkv,), rest, has_drab = _args_for_bwd(ctx)
    dqkv, drab = torch.ops.kiln.hstu_bwd_qkvpacked(grad, qkv, *rest)
    nones = [None] * (ctx.kiln_inputs - 1)
    nones[11] = drab if has_drab else None
    return (dqkv, *nones)


torch.library.register_autograd("kiln::hstu_fwd", _backward_fwd, setup_context=_setup_fwd)
torch.library.register_autograd("kiln::hstu_fwd_qkvpacked", _backward_fwd_packed,
                                setup_context=_setup_fwd_packed)


# ------------------------------------------------------------------- fp8
# Not custom ops: these call the C library directly, so torch.compile
# graph-breaks around them (torch.compiler.disable) instead of tracing them.


@torch.compiler.disable
def _call_fp8(descales, out_dtype, q, k, v, so_q, so_k, mq, mk, nc, nt, tgs, wl, wr, alpha,
              scal, rab, has_drab, dlt, det, func=None):
    """float8_e4m3fn q, k, v -> out (out_dtype); forward only.  The
    arguments after v as the custom ops take them (func must be None: the
    fp8 kernel has no func mask; hstu_varlen refuses it first)."""
    assert func is None
    out = torch.empty((q.shape[0], q.shape[1], q.shape[2]), dtype=out_dtype,
                      device=q.device)
    dq, dk, dv = descales
    return _fwd_fp8_impl(q, k, v, out, dq, dk, dv, so_q, so_k, mq, mk, nc, nt, tgs, wl, wr,
                         alpha, scal, rab, dlt)


class _QuantFp8(torch.autograd.Function):
    """quant_mode 0 to 5: the forward quantizes q, k, v to e4m3 with that
    mode's scales, as NVIDIA's does (kiln._quant.layouts: k and v by the key
    offsets).  Modes 0, 3, 4, 5 run the fp8 kernel; modes 1 and 2 (scales
    per row or per block of rows, which kiln's fp8 kernel does not read),
    and every mode with func (which it has no mask for), dequantize q, k, v
    to q's dtype and run the 16-bit kernel: NVIDIA's quantization, computed
    at 16 bits.  out is in q's dtype.  The backward is straight-through: the
    quantizer counts as the identity, and kiln's 16-bit backward runs at the
    point the forward computed, the dequantized q, k, v, with func if any
    (so it saves the fp8 tensors and their scales, a byte per element, not
    16-bit copies, and dequantizes them again)."""

    @staticmethod
    def forward(ctx, q, k, v, rab, so_q, so_k, nc, nt, func, scalars):
        mode, mq, mk, tgs, wl, wr, alpha, scal, has_drab, dlt, det = scalars
        so_kk = so_q if so_k is None else so_k
        lay = _quant.layouts(mode, rab is not None, q.shape[2])
        done = {}
        q8k8v8 = []
        for t, so, ly in zip((q, k, v), (so_q, so_kk, so_kk), lay):
            key = (id(t), id(so), ly)
            if key not in done:  # k is v (or q) in one layout: quantize once
                done[key] = _quant.quantize(t, so, ly)
            q8k8v8.append(done[key])
        (q8, dq), (k8, dk), (v8, dv) = q8k8v8
        out = torch.empty((q.shape[0], q.shape[1], q.shape[2]), dtype=q.dtype,
                          device=q.device)
        if mode in _QUANT_16BIT or func is not None:
            qd, kd, vd = _QuantFp8._dequantized((q8, k8, v8), (dq, dk, dv),
                                                (so_q, so_kk, so_kk), lay,
                                                (q.dtype, k.dtype, v.dtype))
            _fwd_impl(qd, kd, vd, out, so_q, so_k, mq, mk, nc, nt, tgs, wl, wr, alpha,
                      scal, rab, dlt, func)
        else:
            _fwd_fp8_impl(q8, k8, v8, out, dq, dk, dv, so_q, so_k, mq, mk, nc, nt, tgs, wl,
                          wr, alpha, scal, rab, dlt)
        ctx.save_for_backward(q8, k8, v8, dq, dk, dv, rab, so_q, so_k, nc, nt, func)
        ctx.kiln_scalars = scalars
        ctx.kiln_layouts = lay
        ctx.kiln_dtypes = (q.dtype, k.dtype, v.dtype)
        return out

    @staticmethod
    def _dequantized(x8s, descales, offsets, lay, dtypes):
        """q, k, v as the kernels read them, dequantized once per distinct
        (tensor, layout)."""
        done, res = {}, []
        for x8, d, so, ly, dt in zip(x8s, descales, offsets, lay, dtypes):
            key = (id(x8), ly)
            if key not in done:
                done[key] = _quant.dequantize(x8, d, so, ly, dt)
            res.append(done[key])
        return res

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        q8, k8, v8, dq, dk, dv, rab, so_q, so_k, nc, nt, func = ctx.saved_tensors
        mode, mq, mk, tgs, wl, wr, alpha, scal, has_drab, dlt, det = ctx.kiln_scalars
        so_kk = so_q if so_k is None else so_k
        q, k, v = _QuantFp8._dequantized((q8, k8, v8), (dq, dk, dv), (so_q, so_kk, so_kk),
                                         ctx.kiln_layouts, ctx.kiln_dtypes)
        gq, gk, gv, drab = torch.ops.kiln.hstu_bwd(grad, q, k, v, so_q, so_k, mq, mk, nc,
                                                   nt, tgs, wl, wr, alpha, scal, rab,
                                                   has_drab, dlt, det, func)
        return (gq, gk, gv, (drab if has_drab else None), None, None, None, None, None,
                None)


@torch.compiler.disable
def _call_quant_fp8(mode, q, k, v, so_q, so_k, mq, mk, nc, nt, tgs, wl, wr, alpha, scal,
                    rab, has_drab, dlt, det, func=None):
    return _QuantFp8.apply(q, k, v, rab, so_q, so_k, nc, nt, func,
                           (mode, mq, mk, tgs, wl, wr, alpha, scal, has_drab, dlt, det))


# --------------------------------------------------------- seqused (FBGEMM)


def _compaction(cu, used, total):
    """For FBGEMM's seqused: sequence b uses rows [cu[b], cu[b] + used[b]) of
    its segment.  Returns (new_cu, src, valid, inv, pvalid), all on the device
    and computed without a host sync: compact row r holds padded row src[r]
    when valid[r]; padded row p is compact row inv[p] when pvalid[p]."""
    dev = cu.device
    cu = cu.to(torch.int64)
    lens = cu[1:] - cu[:-1]
    used = torch.minimum(used.to(torch.int64), lens).clamp_(min=0)
    nb = used.shape[0]
    new_cu = torch.cat([torch.zeros(1, dtype=torch.int64, device=dev),
                        torch.cumsum(used, 0)])
    r = torch.arange(total, dtype=torch.int64, device=dev)
    seg = torch.searchsorted(new_cu[1:].contiguous(), r, right=True)
    valid = seg < nb
    segc = seg.clamp(max=max(nb - 1, 0))
    src = torch.where(valid, cu[segc] + (r - new_cu[segc]), 0)
    pseg = torch.searchsorted(cu[1:].contiguous(), r, right=True)
    psegc = pseg.clamp(max=max(nb - 1, 0))
    j = r - cu[psegc]
    pvalid = (pseg < nb) & (j < used[psegc])
    inv = torch.where(pvalid, new_cu[psegc] + j, 0)
    return new_cu, src, valid, inv, pvalid


def _gather_rows(x, idx, mask):
    if x.dtype in _FP8:  # bytes: 0 is +0.0, and where/index_select take uint8
        return _gather_rows(x.view(torch.uint8), idx, mask).view(x.dtype)
    return torch.where(mask[:, None, None], x.index_select(0, idx), 0)


# --------------------------------------------------------------- the core


def hstu_varlen(q, k, v, seq_offsets_q, seq_offsets_k, max_seqlen_q, max_seqlen_k, *,
                num_contexts=None, num_targets=None, target_group_size=1,
                window_size=(-1, -1), alpha=1.0, rab=None, has_drab=False,
                is_delta_q=False, scaling_seqlen=-1, seqused_q=None, seqused_k=None,
                deterministic=False, qkv=None, names=None, fp8_inputs=False,
                descales=(None, None, None), out_dtype=None, quant=None,
                func=None):
    """The one implementation behind every public signature (kiln's, NVIDIA's,
    FBGEMM's).  Keyword arguments as in hstu_attn_varlen_func; is_delta_q may
    also be "auto": queries are the last rows of each sequence whenever
    seq_offsets_k is a tensor other than seq_offsets_q (NVIDIA's current
    semantics; equal lengths make it a no-op) and there are no contexts or
    targets.  qkv: the packed tensor q, k, v are views of (its backward then
    writes one dqkv).  names: how the caller spells q, k, v, seq_offsets_q,
    seq_offsets_k in error messages.
    fp8_inputs: accept float8_e4m3fn q, k, v (forward only) with descales
    (descale_q, descale_k, descale_v) and out_dtype (None: bfloat16).
    quant: None, or NVIDIA's quant_mode 0 to 5 for 16-bit q, k, v.
    func: NVIDIA's arbitrary mask (see hstu_attn_varlen_func)."""
    n = {"q": "q", "k": "k", "v": "v", "so_q": "seq_offsets_q", "so_k": "seq_offsets_k",
         **(names or {})}
    if qkv is not None:
        _check_tensor("qkv", qkv)
        if qkv.dim() != 4 or qkv.shape[1] != 3:
            raise ValueError(f"kiln: qkv must be 4-D (total, 3, heads, head_dim), got shape "
                             f"{tuple(qkv.shape)}")
        q, k, v = _split_packed(qkv)
    fp8 = _check_qkv(q, k, v, (n["q"], n["k"], n["v"]), allow_fp8=fp8_inputs)
    if fp8 and quant is not None:
        raise ValueError(f"kiln: quant_mode={quant} quantizes float16 or bfloat16 inputs; "
                         f"{n['q']} is already {q.dtype} (pass quant_mode=-1 and "
                         "descale_q/k/v)")
    for name, t in zip(("descale_q", "descale_k", "descale_v"), descales):
        _capi._check_descale(name, t)
        if t is not None and not fp8:
            raise ValueError(f"kiln: {name} applies to float8_e4m3fn q, k, v only; "
                             f"{n['q']} has dtype {q.dtype}"
                             + (f"; quant_mode={quant} computes its own scales"
                                if quant is not None else ""))
    if fp8:
        out_dtype = _check_out_dtype(out_dtype)
    elif out_dtype is not None and out_dtype != q.dtype:
        raise TypeError(f"kiln: out_dtype {out_dtype!r} differs from {n['q']}'s dtype "
                        f"{q.dtype}; only float8_e4m3fn inputs choose their output dtype")
    _check_offsets(n["so_q"], seq_offsets_q)
    if seq_offsets_k is not None:
        _check_offsets(n["so_k"], seq_offsets_k)
        if seq_offsets_k.shape[0] != seq_offsets_q.shape[0]:
            raise ValueError(f"kiln: {n['so_k']} has {seq_offsets_k.shape[0]} entries but "
                             f"{n['so_q']} has {seq_offsets_q.shape[0]}; both are batch + 1")
    batch = seq_offsets_q.shape[0] - 1
    if fp8:
        _capi.descale_layout(zip(("descale_q", "descale_k", "descale_v"), descales), batch,
                             q.shape[1])
    max_seqlen_q = _as_int("max_seqlen_q", max_seqlen_q)
    max_seqlen_k = _as_int("max_seqlen_k", max_seqlen_k)
    if max_seqlen_q < 0:
        raise ValueError(f"kiln: max_seqlen_q must be >= 0, got {max_seqlen_q}")
    if max_seqlen_k < 0:
        raise ValueError(f"kiln: max_seqlen_k must be >= 0, got {max_seqlen_k}")
    if max_seqlen_q > max_seqlen_k:
        raise ValueError(f"kiln: max_seqlen_q ({max_seqlen_q}) must not exceed max_seqlen_k "
                         f"({max_seqlen_k})")
    window_left, window_right = _check_window(window_size)
    _check_per_batch("num_contexts", num_contexts, batch)
    _check_per_batch("num_targets", num_targets, batch)
    _check_func(func, q.shape[0], (window_left, window_right), num_contexts, num_targets,
                fp8, n["q"])
    if target_group_size is None:
        target_group_size = 1
    target_group_size = _as_int("target_group_size", target_group_size)
    if target_group_size < 1:
        raise ValueError(f"kiln: target_group_size must be >= 1, got {target_group_size}")
    if num_contexts is not None and (window_left, window_right) != (-1, 0):
        raise ValueError("kiln: num_contexts needs the causal window_size (-1, 0), got "
                         f"({window_left}, {window_right})")
    if num_targets is not None and (window_left, window_right) != (-1, 0):
        raise ValueError("kiln: num_targets needs the causal window_size (-1, 0), got "
                         f"({window_left}, {window_right})")
    alpha = _as_real("alpha", alpha)
    scaling = _resolve_scaling(scaling_seqlen, max_seqlen_q)
    if not isinstance(has_drab, bool):
        raise TypeError(f"kiln: has_drab must be a bool, got {type(has_drab).__name__}")
    if rab is not None:
        _check_tensor("rab", rab)
        if rab.dim() != 4:
            raise ValueError("kiln: rab must be 4-D (batch, rab_heads, max_seqlen_k, "
                             f"max_seqlen_k), got shape {tuple(rab.shape)}")
        if not (rab.dtype.is_floating_point and rab.dtype not in _FP8):
            raise TypeError(f"kiln: rab has dtype {rab.dtype}; expected a float16, "
                            "bfloat16 or float32 tensor")
        if rab.shape[0] != batch:
            raise ValueError(f"kiln: rab has batch {rab.shape[0]}, expected {batch} "
                             f"({n['so_q']} has {batch + 1} entries)")
        hr = rab.shape[1]
        if hr < 1 or q.shape[1] % hr:
            raise ValueError(f"kiln: rab has {hr} heads, which does not divide the "
                             f"{q.shape[1]} heads of {n['q']}")
        if rab.shape[2] < max_seqlen_k or rab.shape[3] < max_seqlen_k:
            raise ValueError(f"kiln: rab is {tuple(rab.shape[2:])} per head; it must cover "
                             f"max_seqlen_k x max_seqlen_k = ({max_seqlen_k}, {max_seqlen_k})")
    elif has_drab:
        raise ValueError("kiln: has_drab=True needs a rab tensor")
    if fp8 and has_drab:
        raise Unsupported("has_drab", f"{q.dtype} inputs have no backward in kiln (fp8 is "
                                      "forward only); pass has_drab=False")
    if fp8 and torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        raise Unsupported(n["q"], f"{q.dtype} inputs have no backward in kiln (fp8 is "
                                  "forward only): detach q, k and v or run under "
                                  "torch.no_grad(); quant_mode 0 to 5 with 16-bit "
                                  "inputs have a backward")
    if is_delta_q == "auto":
        is_delta_q = (seq_offsets_k is not None and seq_offsets_k is not seq_offsets_q
                      and num_contexts is None and num_targets is None)
    elif not isinstance(is_delta_q, bool):
        raise TypeError(f"kiln: is_delta_q must be a bool, got {type(is_delta_q).__name__}")
    elif is_delta_q and (num_contexts is not None or num_targets is not None):
        raise ValueError("kiln: is_delta_q=True does not combine with num_contexts or "
                         "num_targets")
    if not isinstance(deterministic, bool):
        raise TypeError("kiln: deterministic must be a bool")
    for name, t in (("seqused_q", seqused_q), ("seqused_k", seqused_k)):
        if t is None:
            continue
        _check_tensor(name, t)
        if t.dtype not in _OFFSET_DTYPES:
            raise TypeError(f"kiln: {name} has dtype {t.dtype}; expected torch.int32 "
                            "or torch.int64")
        if t.dim() != 1 or t.shape[0] != batch:
            raise ValueError(f"kiln: {name} must have shape ({batch},), got "
                             f"{tuple(t.shape)}")
    # Devices last, so that everything above runs (and is testable) on CPU.
    dev = q.device
    _check_device(n["q"], q, dev)
    for name, t in ((n["k"], k), (n["v"], v), (n["so_q"], seq_offsets_q),
                    (n["so_k"], seq_offsets_k), ("num_contexts", num_contexts),
                    ("num_targets", num_targets), ("rab", rab), ("seqused_q", seqused_q),
                    ("seqused_k", seqused_k), ("descale_q", descales[0]),
                    ("descale_k", descales[1]), ("descale_v", descales[2]),
                    ("func", func)):
        _check_device(name, t, dev)

    # Inputs the op takes as they come; conversions here stay differentiable.
    if seq_offsets_k is not None and seq_offsets_k.dtype != seq_offsets_q.dtype:
        seq_offsets_q = seq_offsets_q.to(torch.int64)
        seq_offsets_k = seq_offsets_k.to(torch.int64)
    so_k = None if (seq_offsets_k is None or seq_offsets_k is seq_offsets_q) else seq_offsets_k
    if rab is not None:
        rab_dtype = out_dtype if fp8 else q.dtype
        if rab.dtype != rab_dtype:
            rab = rab.to(rab_dtype)
        if rab.shape[3] > 1 and rab.stride(3) != 1:
            rab = rab.contiguous()

    if fp8:
        fwd = functools.partial(_call_fp8, tuple(descales), out_dtype)
    elif quant is not None:
        fwd = functools.partial(_call_quant_fp8, quant)
    else:
        fwd = torch.ops.kiln.hstu_fwd
    if seqused_q is not None or seqused_k is not None:
        return _with_seqused(q, k, v, seq_offsets_q, seq_offsets_k, seqused_q, seqused_k,
                             max_seqlen_q, max_seqlen_k, num_contexts, num_targets,
                             target_group_size, window_left, window_right, alpha, scaling,
                             rab, has_drab, is_delta_q, deterministic, fwd=fwd, func=func)
    rest = (seq_offsets_q, so_k, max_seqlen_q, max_seqlen_k, num_contexts, num_targets,
            target_group_size, window_left, window_right, alpha, scaling, rab, has_drab,
            is_delta_q, deterministic, func)
    if qkv is not None and quant is None:
        # (quantized: q, k, v are views of qkv, whose gradient autograd
        # gathers from theirs)
        return torch.ops.kiln.hstu_fwd_qkvpacked(qkv, *rest)
    return fwd(q, k, v, *rest)


def _with_seqused(q, k, v, cu_q, cu_k, used_q, used_k, max_seqlen_q, max_seqlen_k,
                  num_contexts, num_targets, target_group_size, window_left,
                  window_right, alpha, scaling, rab, has_drab, is_delta_q,
                  deterministic, fwd=None, func=None):
    """FBGEMM's seqused: only the first seqused[b] rows of each segment take
    part; the other rows' outputs and gradients are zero.  Done by gathering
    the used rows into a packed batch (differentiable torch ops around the
    kiln op, no host sync).  fwd: the forward to call (arguments as
    kiln::hstu_fwd's; default that op).  func (NVIDIA's mask, columns by
    padded query row) follows the gathered query rows."""
    if fwd is None:
        fwd = torch.ops.kiln.hstu_fwd
    if cu_q.shape[0] <= 1:
        rest = (cu_q, None if cu_k is cu_q else cu_k, max_seqlen_q, max_seqlen_k,
                num_contexts, num_targets, target_group_size, window_left, window_right,
                alpha, scaling, rab, has_drab, is_delta_q, deterministic, func)
        return fwd(q, k, v, *rest)
    if cu_k is None:
        cu_k = cu_q
    if used_q is None:
        used_q = cu_q[1:] - cu_q[:-1]
    if used_k is None:
        used_k = cu_k[1:] - cu_k[:-1]
    new_q, src_q, val_q, inv_q, pval_q = _compaction(cu_q, used_q, q.shape[0])
    same = used_k is used_q and cu_k is cu_q
    if same:
        new_k, src_k, val_k = new_q, src_q, val_q
    else:
        new_k, src_k, val_k, _, _ = _compaction(cu_k, used_k, k.shape[0])
        if used_k is used_q:
            new_k = new_q  # equal lengths: not a delta-q batch
    qc = _gather_rows(q, src_q, val_q)
    kc = _gather_rows(k, src_k, val_k)
    vc = _gather_rows(v, src_k, val_k)
    so_k = None if new_k is new_q else new_k
    if so_k is None:
        is_delta_q = False
    func_c = None
    if func is not None:  # compact row r is padded row src_q[r]: its values too
        func_c = func.index_select(2, src_q) if src_q.numel() else func[:, :, :0]
    out_c = fwd(qc, kc, vc, new_q, so_k, max_seqlen_q, max_seqlen_k, num_contexts,
                num_targets, target_group_size, window_left, window_right, alpha, scaling,
                rab, has_drab, is_delta_q, deterministic, func_c)
    return _gather_rows(out_c, inv_q, pval_q)


# ------------------------------------------------------- public signatures


def hstu_attn_varlen_func(q, k, v, seq_offsets_q, seq_offsets_k, max_seqlen_q,
                          max_seqlen_k, num_contexts=None, num_targets=None,
                          target_group_size=1, window_size=(-1, -1), alpha=1.0, rab=None,
                          has_drab=False, is_delta_q=False, descale_q=None, descale_k=None,
                          descale_v=None, descale_do=None, *, func=None, quant_mode=-1,
                          scaling_seqlen=-1, seqused_q=None, seqused_k=None,
                          deterministic=False, out_dtype=None):
    """HSTU attention over a jagged batch, with the signature of NVIDIA's
    Hopper `hstu_attn_varlen_func` (recsys-examples corelib/hstu) plus its
    later additions as keywords.

    q: (total_q, H, D); k, v: (total_k, H, D); float16 or bfloat16; D one of
    32, 64, 128, 256; any strides (views of a packed (total, 3, H, D) qkv are
    taken as they are).  Or all three torch.float8_e4m3fn (see fp8 below).
    seq_offsets_q, seq_offsets_k: (B + 1,) int32 or int64 CUDA tensors;
    seq_offsets_k may be None or the same tensor (then keys share the
    queries' rows).
    max_seqlen_q, max_seqlen_k: ints >= every sequence's length.
    num_contexts, num_targets: (B,) int32 or None; both need the causal
    window_size (-1, 0).  target_group_size: targets attend within groups.
    window_size: (-1, -1) no mask; (-1, 0) causal; (l, r) local.
    alpha: multiplies q.k + rab before silu.
    rab: (B, H_rab, >= max_seqlen_k, >= max_seqlen_k), H_rab dividing H; cast
    to q's dtype.  has_drab: also return its gradient.
    is_delta_q: queries are the last len_q positions of each sequence.
    scaling_seqlen: the divisor after silu; -1 means max_seqlen_q.
    seqused_q, seqused_k: (B,) FBGEMM-style used lengths (rows past them are
    zero in the output).  deterministic: bit-reproducible backward.
    func: NVIDIA's arbitrary mask, an int32 tensor (1, n_func, L) on q's
    device, n_func odd (1 to 255), L >= total_q (NVIDIA allocates
    total_q + 256; the last dimension is read with its strides, a copy is
    made only if it is not contiguous).  With F_f = func[0, f,
    seq_offsets_q[b] + r], query r (local index) of sequence b sees exactly
    the keys j in [0, F_0) U [F_1, F_2) U ... U [F_(n-2), F_(n-1)), clamped
    to [0, len_k): intervals may be empty, overlap, or pass the ends
    (integer ranges, never Python's negative indices).  With delta-q the
    query's rab row is its position r + len_k - len_q; its intervals stay
    those of r.  A mask of its own: window_size must be (-1, -1) and
    num_contexts, num_targets None (ValueError otherwise).  Differentiable
    like the other masks (func itself gets no gradient).  With quant_mode 0
    to 5 it computes at 16 bits at the dequantized values (see below); not
    with float8_e4m3fn q, k, v (kiln.Unsupported naming func).  Runs on the
    portable kernels (never the Hopper wgmma ones).

    fp8 (D 64, 128 or 256; on sm_90a the e4m3 wgmma kernel, which rounds P
    to e4m3; on other sm_80+ GPUs, and with $KILN_FWD_IMPL=mma, the
    portable kernel, which widens e4m3 to the out dtype as it loads and
    keeps P in 16 bits: it halves the reads, not the tensor-core work):
    - q, k, v all torch.float8_e4m3fn: forward only.  descale_q, descale_k,
      descale_v: None (1.0) or float32 CUDA tensors on q's device with
      q = descale_q * q_fp8 and so on: one element (per tensor), shape (B,)
      (per sequence) or (B, H) (per sequence and head, any strides); the
      three given must share their layout.
      out_dtype: torch.bfloat16 (None, the default) or torch.float16; rab is
      cast to it.  If autograd would track q, k or v (grad enabled and one
      requires grad) this raises kiln.Unsupported naming q, and has_drab=True
      kiln.Unsupported naming has_drab: there is no fp8 backward.
    - quant_mode with float16 / bfloat16 q, k, v (and on a packed qkv): q, k
      and v are quantized to e4m3 as NVIDIA's modes do and the fp8 kernel
      runs; out is in q's dtype.  0: a plain cast (descales 1); 3: a scale
      per sequence and head, 4: per sequence, 5: per tensor, each amax / 448
      (>= 1e-6), as NVIDIA's quantize_for_head_batch_tensor.  With func
      they compute at 16 bits as 1 and 2 below do (the fp8 kernels have no
      func mask): the forward is kiln's 16-bit one, func included, at the
      dequantized q, k and v (head dims and GPUs as the 16-bit path).  The
      backward is straight-through (quantization counts as the identity):
      kiln's 16-bit backward at the values the forward read, the
      dequantized q, k and v (e4m3 value times its factor, rounded to q's
      dtype), drab included, func if given.
    - quant_mode 1 and 2 with float16 / bfloat16 q, k, v (and on a packed
      qkv): q, k and v are quantized to e4m3 exactly as NVIDIA's modes do,
      but kiln computes at 16 bits: it dequantizes them (e4m3 value times
      its factor, in float32, rounded to q's dtype) and runs its 16-bit
      forward, so out carries NVIDIA's quantization error but gets no fp8
      tensor-core speedup (head dims and GPUs as the 16-bit path).  1: q and k
      one scale per row and head (NVIDIA's quantize_for_two_directions
      x_quantized), v one per sequence, 128-row block, head and column (its
      xt_quantized); 2: one per sequence, block of rows and head
      (quantize_for_block_scale), q in blocks of BM rows, k and v of BN,
      (BM, BN) = get_bm_and_bn_block_size_fwd(rab, head dim) (128 x 128 for
      head dim 64, and 128 without rab; otherwise 128 x 64).  Scales are
      amax / 448 (>= 1e-6).  The backward is the same straight-through one
      (the 16-bit backward at the dequantized q, k, v); func, if given,
      masks both directions.
    None of these is a torch.library custom op: they call the C library directly,
    so torch.compile does not trace them (a graph break,
    torch.compiler.disable).  descale_do (fp8 backward) and func with
    float8_e4m3fn q, k, v raise kiln.Unsupported; descale_* with 16-bit inputs and
    out_dtype other than q's dtype raise ValueError / TypeError.

    Returns out (total_q, H, D), a new contiguous tensor in q's dtype
    (out_dtype for float8_e4m3fn inputs).
    """
    _unsupported_extras(None, (("descale_do", descale_do),))
    quant = _check_quant_mode(quant_mode)
    return hstu_varlen(q, k, v, seq_offsets_q, seq_offsets_k, max_seqlen_q, max_seqlen_k,
                       num_contexts=num_contexts, num_targets=num_targets,
                       target_group_size=target_group_size, window_size=window_size,
                       alpha=alpha, rab=rab, has_drab=has_drab, is_delta_q=is_delta_q,
                       scaling_seqlen=scaling_seqlen, seqused_q=seqused_q,
                       seqused_k=seqused_k, deterministic=deterministic, fp8_inputs=True,
                       descales=(descale_q, descale_k, descale_v), out_dtype=out_dtype,
                       quant=quant, func=func)


def hstu_attn_qkvpacked_func(qkv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                             num_contexts=None, num_targets=None, target_group_size=1,
                             window_size=(-1, -1), alpha=1.0, rab=None, has_drab=False,
                             func=None, quant_mode=-1, scaling_seqlen=-1, *,
                             deterministic=False):
    """HSTU attention on a packed qkv (total, 3, H, D), with the signature of
    NVIDIA's `hstu_attn_qkvpacked_func`.  The backward writes one dqkv
    (total, 3, H, D).  Other arguments as in hstu_attn_varlen_func; as in
    NVIDIA's interface, a cu_seqlens_k other than cu_seqlens_q places each
    sequence's queries at its last positions (a no-op for equal lengths);
    func as there (its columns are the query rows)."""
    quant = _check_quant_mode(quant_mode)
    return hstu_varlen(None, None, None, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                       max_seqlen_k, num_contexts=num_contexts, num_targets=num_targets,
                       target_group_size=target_group_size, window_size=window_size,
                       alpha=alpha, rab=rab, has_drab=has_drab, is_delta_q="auto",
                       scaling_seqlen=scaling_seqlen, deterministic=deterministic, qkv=qkv,
                       names=dict(q="qkv[:, 0]", k="qkv[:, 1]", v="qkv[:, 2]",
                                  so_q="cu_seqlens_q", so_k="cu_seqlens_k"),
                       quant=quant, func=func)
