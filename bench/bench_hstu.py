#!/usr/bin/env python3
"""HSTU attention TFLOP/s: kiln beside the Triton HSTU of generative-recommenders.

One driver run measures every row of the issue's table (forward, forward +
backward and backward, bf16 and fp8, causal / target / context masks, rab)
and writes OUT_DIR/results.json, OUT_DIR/RESULTS.md and OUT_DIR/bench_hstu.log:

    python3 bench/bench_hstu.py [--out-dir DIR] [--rows ROW ...] [--budget S]
    python3 bench/bench_hstu.py --dry-run     # the plan (rows, lengths, FLOPs); no torch
    python3 bench/bench_hstu.py --self-test   # checks the FLOP counter and row grammar
    python3 bench/bench_hstu.py --smoke-cpu --rows 3x64x2x32 3x64x2x32+fp8 ...
        # the whole harness on the CPU, both implementations replaced by the
        # PyTorch reference (needs torch; $BENCH_HSTU_SMOKE_NO_FP8=1 and
        # $BENCH_HSTU_SMOKE_CRASH=triton:fwdbwd exercise the failure paths)

Each (implementation, row) runs in its own process, so that one fault (the
peer's backward once hit an illegal memory access) cannot hide other rows; a
failed process is reported as a failure in the table.  Rows the time budget
has no room for are recorded as skipped.  One measurement (what the driver
runs; prints "RESULT {json}" lines, the last one counts):

    python3 bench/bench_hstu.py --one kiln|triton ROW --work DIR [--precompile [all|fwd|bwd]]

ROW is "BxLxHxD" (batch, max_len, heads, head_dim) followed by options:
    +tN     causal+target: num_targets per sequence uniform in [0, N], group size 1
    +cN     causal+context: num_contexts = N for every sequence
    +rab1   relative attention bias with 1 head (+rabH: H heads, +rabK: K heads)
    +drab   also the bias gradient (has_drab=True)
    +fp8    q, k, v in float8_e4m3fn with per-tensor descale factors (forward only)
    +full   every sequence max_len long (default: lengths uniform in [max_len/2, max_len])
The mask is always causal (window (-1, 0)).

What both implementations compute (the peer: ops/triton/triton_hstu_attention.py
at the pinned commit):
    out_i = sum over visible j of silu(alpha * (q_i.k_j + rab_ij)) / max_len * v_j
alpha = 1/sqrt(D); the divisor is max_len for both (the peer divides by its
first argument).  The peer's target mask is kiln's with target_group_size 1;
its contextual_seq_len (one count for every sequence) is kiln's num_contexts
with that count in every entry (context rows see every non-target key, every
row sees the context keys).  The peer takes no attention bias (rab) and no fp8:
those rows have no peer column.

FLOPs (forward) = sum over sequences of 2*H*D*len^2 for the plain causal mask
(the issue's formula: two GEMMs over the lower triangle); for target and
context masks 4*H*D*(exact number of visible (i, j) pairs).  fwd+bwd counts
3.5x the forward, bwd alone 2.5x.  rab adds no FLOPs; fp8 counts the same.

Timing: CUDA events around each call, median of N calls after warmup; before
each timed call a 256 MB write flushes L2 and a short GPU spin
(torch.cuda._sleep) lets the host queue the call, so launch overhead on the
host is not counted for either implementation.  Inputs are seeded (lengths on
the host, tensors from a seeded CUDA generator): both processes of a row see
the same data, and a fingerprint of q, k, v proves it.  fwd times the
forward under no_grad; fwd+bwd times forward then torch.autograd.grad with a
fixed random dout; bwd times autograd.grad on one retained graph.
"""

import argparse
import datetime
import json
import math
import os
import random
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PEER_DIR = REPO / ".peers" / "generative-recommenders"
SEED = 20261123
IMPLS = ("kiln", "triton")

# The issue's table, in the order measured (a row that needs a baseline from
# another row comes after it).
DEFAULT_ROWS = [
    "32x4096x4x128",
    "256x1024x4x128",
    "64x2048x8x64",
    "32x4099x4x256+c3",        # NVIDIA's published CUTLASS shape, causal+context
    "32x4096x4x128+t64",
    "32x4096x4x128+fp8",
    "256x1024x4x128+fp8",
    "64x2048x8x64+fp8",
    "32x4096x4x128+rab1",
    "32x4096x4x128+rabH+drab",
]

# Targets (the issue's).
PEER_RATIO = 1.5                      # kiln >= 1.5x the peer, fwd and fwd+bwd
FIRST_SHAPE, FIRST_FWD = (32, 4096, 4, 128), 500.0
NVIDIA_SHAPE, NVIDIA_FWD, NVIDIA_BWD = (32, 4099, 4, 256), 561.0, 336.0
FP8_RATIO = 1.5                       # kiln fp8 fwd >= 1.5x kiln bf16 fwd

MODES = ("fwd", "fwdbwd", "bwd")
MODE_MULT = {"fwd": 1.0, "fwdbwd": 3.5, "bwd": 2.5}
MODE_LABEL = {"fwd": "fwd", "fwdbwd": "fwd+bwd", "bwd": "bwd"}

ROW_RE = re.compile(r"^(\d+)x(\d+)x(\d+)x(\d+)((?:\+[A-Za-z0-9]+)*)$")


# ======================================================================
# Rows: grammar, lengths, FLOPs, targets.  Pure Python (no torch).
# ======================================================================


def parse_row(s):
    m = ROW_RE.match(s)
    if not m:
        raise argparse.ArgumentTypeError(
            f"bad row {s!r}: expected BxLxHxD[+tN][+cN][+rab1|+rabH|+rabK][+drab]"
            "[+fp8][+full]")
    b, L, h, d, opts = m.groups()
    row = {"name": s, "B": int(b), "max_len": int(L), "H": int(h), "D": int(d),
           "targets": None, "contexts": 0, "rab_heads": 0, "drab": False,
           "fp8": False, "full": False}
    for o in [x for x in opts.split("+") if x]:
        if re.fullmatch(r"t\d+", o):
            row["targets"] = int(o[1:])
        elif re.fullmatch(r"c\d+", o):
            row["contexts"] = int(o[1:])
        elif o == "rabH":
            row["rab_heads"] = row["H"]
        elif re.fullmatch(r"rab\d+", o):
            row["rab_heads"] = int(o[3:])
        elif o == "drab":
            row["drab"] = True
        elif o == "fp8":
            row["fp8"] = True
        elif o == "full":
            row["full"] = True
        else:
            raise argparse.ArgumentTypeError(f"row {s!r}: unknown option +{o}")
    if min(row["B"], row["max_len"], row["H"], row["D"]) < 1:
        raise argparse.ArgumentTypeError(f"row {s!r}: B, L, H, D must be >= 1")
    if row["rab_heads"] and row["H"] % row["rab_heads"]:
        raise argparse.ArgumentTypeError(
            f"row {s!r}: {row['rab_heads']} rab heads do not divide H={row['H']}")
    if row["drab"] and not row["rab_heads"]:
        raise argparse.ArgumentTypeError(f"row {s!r}: +drab needs +rab")
    if row["fp8"] and (row["rab_heads"] or row["drab"]):
        raise argparse.ArgumentTypeError(f"row {s!r}: +fp8 rows take no rab")
    return row


def row_modes(row):
    """Modes measured (all go into results.json)."""
    return ["fwd"] if row["fp8"] else ["fwd", "fwdbwd", "bwd"]


def shown_modes(row):
    """Modes shown in the table: bwd only where a target names it."""
    return [m for m in row_modes(row) if m != "bwd" or row_targets(row, m)]


def peer_unavailable(row):
    """Why the peer has no column for this row, or None."""
    if row["fp8"]:
        return "the peer's triton_hstu_mha has no fp8 path"
    if row["rab_heads"]:
        return ("the peer's triton_hstu_mha (at the pinned commit) takes no attention "
                "bias: no rab path in generative_recommenders/ops")
    return None


def row_impls(row, impls):
    return [i for i in impls if i == "kiln" or peer_unavailable(row) is None]


def shape4(row):
    return (row["B"], row["max_len"], row["H"], row["D"])


def is_plain(row):
    return (row["targets"] is None and not row["contexts"] and not row["rab_heads"]
            and not row["full"])


def mask_name(row):
    m = "causal"
    if row["contexts"]:
        m += f"+context({row['contexts']})"
    if row["targets"] is not None:
        m += f"+target(<={row['targets']})"
    return m


def variant_name(row):
    if row["fp8"]:
        return "fp8 e4m3"
    v = "bf16"
    if row["rab_heads"]:
        v += f", rab {row['rab_heads']} head{'s' if row['rab_heads'] > 1 else ''}"
        v += ", drab" if row["drab"] else ", no drab"
    return v


def baseline_row_name(row):
    """The bf16 row an fp8 row is compared with (same shape, mask, lengths)."""
    name = re.sub(r"\+fp8", "", row["name"])
    return name


def row_targets(row, mode):
    """[(kind, threshold, label)]: kind 'peer' (ratio to the peer), 'base'
    (ratio to kiln bf16), 'abs' (kiln TFLOP/s)."""
    t = []
    if row["fp8"]:
        if mode == "fwd":
            t.append(("base", FP8_RATIO, f">={FP8_RATIO:g}x kiln bf16"))
        return t
    if peer_unavailable(row) is None and mode in ("fwd", "fwdbwd"):
        t.append(("peer", PEER_RATIO, f">={PEER_RATIO:g}x peer"))
    if shape4(row) == FIRST_SHAPE and is_plain(row) and mode == "fwd":
        t.append(("abs", FIRST_FWD, f">={FIRST_FWD:g} TFLOP/s"))
    if shape4(row) == NVIDIA_SHAPE and row["contexts"] and not row["rab_heads"]:
        if mode == "fwd":
            t.append(("abs", NVIDIA_FWD, f">={NVIDIA_FWD:g} TFLOP/s (NVIDIA, H100)"))
        if mode == "bwd":
            t.append(("abs", NVIDIA_BWD, f">={NVIDIA_BWD:g} TFLOP/s (NVIDIA, H100)"))
    return t


def _seed_name(row):
    """Lengths depend on B, L, H, D and the target option only, so rab and
    fp8 rows see the lengths of their bf16 row (and names from older runs,
    e.g. "32x4096x4x128+t64", draw the same lengths as before)."""
    s = f"{row['B']}x{row['max_len']}x{row['H']}x{row['D']}"
    if row["targets"] is not None:
        s += f"+t{row['targets']}"
    return s


def make_lengths(row):
    """Per-sequence lengths and target counts: host-side, deterministic."""
    rng = random.Random(f"{SEED}-{_seed_name(row)}")
    L = row["max_len"]
    if row["full"]:
        lengths = [L] * row["B"]
    else:
        lengths = [rng.randint(L // 2, L) for _ in range(row["B"])]
    targets = None
    if row["targets"] is not None:
        targets = [min(rng.randint(0, row["targets"]), n) for n in lengths]
    return lengths, targets


def _clamp_mask(n, c, t):
    """kiln's clamping (tests/ref_hstu.c): 0 <= c <= n, 0 <= t <= n - c."""
    c = max(0, min(c, n))
    t = max(0, min(t, n - c))
    return c, t


def visible_pairs(n, c=0, t=0, g=1):
    """Visible (i, j) pairs of one sequence of length n under kiln's causal
    mask with c context rows, t targets in groups of g:
      context row i < c sees every history key j < n - t;
      history row sees j <= i;
      target row sees every history key and the targets of its group up to itself."""
    c, t = _clamp_mask(n, c, t)
    g = max(1, g)
    h = n - t
    pairs = c * h + (h * (h + 1) - c * (c + 1)) // 2
    full, r = divmod(t, g)
    pairs += t * h + full * g * (g + 1) // 2 + r * (r + 1) // 2
    return pairs


def visible_brute(n, c=0, t=0, g=1):
    """The same count by enumerating kiln's validity rule (self-test)."""
    c, t = _clamp_mask(n, c, t)
    h = n - t
    cnt = 0
    for i in range(n):
        for j in range(n):
            if t > 0 and j >= h:
                ok = i >= h and (j - h) // g == (i - h) // g and j <= i
            elif i < c and j < h:
                ok = True
            else:
                ok = j <= i
            cnt += ok
    return cnt


def flops_fwd(row, lengths, targets):
    H, D = row["H"], row["D"]
    if row["targets"] is None and not row["contexts"]:
        return float(sum(2 * H * D * n * n for n in lengths))
    tt = targets or [0] * len(lengths)
    return float(sum(4 * H * D * visible_pairs(n, row["contexts"], t, 1)
                     for n, t in zip(lengths, tt)))


def lengths_desc(row):
    L = row["max_len"]
    if row["full"]:
        return f"all {L}"
    return f"uniform [{L // 2}, {L}] seed {SEED}"


# ======================================================================
# One measurement, in its own process.
# ======================================================================


def _log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _emit(res):
    print("RESULT " + json.dumps(res), flush=True)


def _phase(name):
    print(f"PHASE {name}", flush=True)


_SPIN = {}


def _cycles_per_ms(torch):
    """GPU clock cycles per ms of torch.cuda._sleep, or None."""
    if "c" not in _SPIN:
        _SPIN["c"] = None
        if hasattr(torch.cuda, "_sleep"):
            try:
                torch.cuda._sleep(1000)
                s = torch.cuda.Event(enable_timing=True)
                e = torch.cuda.Event(enable_timing=True)
                s.record()
                torch.cuda._sleep(2_000_000)
                e.record()
                torch.cuda.synchronize()
                ms = s.elapsed_time(e)
                if ms > 0:
                    _SPIN["c"] = 2_000_000 / ms
            except Exception:  # noqa: BLE001
                _SPIN["c"] = None
    return _SPIN["c"]


def time_fn(torch, fn, dev, warmup_ms, rep_ms, min_iter=10, max_iter=200):
    """Median ms of fn() and how it was measured."""
    if dev.type != "cuda":  # the CPU smoke test: wall clock
        fn()
        ts = []
        for _ in range(max(3, min(min_iter, 5))):
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
        ts.sort()
        return {"ms": ts[len(ts) // 2], "min_ms": ts[0], "max_ms": ts[-1],
                "n": len(ts), "timer": "wall clock (CPU smoke test)"}
    sync = torch.cuda.synchronize
    fn()
    sync()
    s = torch.cuda.Event(enable_timing=True)
    e = torch.cuda.Event(enable_timing=True)
    host = []
    s.record()
    for _ in range(3):
        h0 = time.perf_counter()
        fn()
        host.append((time.perf_counter() - h0) * 1e3)
    e.record()
    sync()
    est = max(s.elapsed_time(e) / 3, 1e-3)
    host_ms = sorted(host)[1]
    n_warm = max(2, min(100, int(warmup_ms / est)))
    n = max(min_iter, min(max_iter, int(rep_ms / est)))
    cpm = _cycles_per_ms(torch)
    spin_ms = min(max(0.1, 1.5 * host_ms), 20.0) if cpm else 0.0
    flush = torch.empty(256 << 20, dtype=torch.int8, device=dev)
    for _ in range(n_warm):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    for i in range(n):
        flush.zero_()
        if spin_ms:
            torch.cuda._sleep(int(spin_ms * cpm))
        starts[i].record()
        fn()
        ends[i].record()
    sync()
    ts = sorted(a.elapsed_time(b) for a, b in zip(starts, ends))
    del flush
    return {"ms": ts[len(ts) // 2], "min_ms": ts[0], "max_ms": ts[-1], "n": n,
            "warmup": n_warm, "host_ms": host_ms, "spin_ms": spin_ms,
            "timer": ("cuda events, median, L2 flushed"
                      + (", host hidden by a GPU spin" if spin_ms else ""))}


def _diff(a, b):
    """(||a-b|| / ||b||, max|a-b| / max|b|) in float32, chunked."""
    import torch

    num = den = 0.0
    maxd = maxb = 0.0
    a2, b2 = a.reshape(-1), b.reshape(-1)
    step = 1 << 26
    for i in range(0, a2.numel(), step):
        x = a2[i:i + step].float()
        y = b2[i:i + step].float()
        d = x - y
        num += float(torch.sum(d * d))
        den += float(torch.sum(y * y))
        maxd = max(maxd, float(d.abs().max()))
        maxb = max(maxb, float(y.abs().max()))
    rel = math.sqrt(num / den) if den > 0 else (0.0 if num == 0 else float("inf"))
    return rel, (maxd / maxb if maxb > 0 else (0.0 if maxd == 0 else float("inf")))


def valid_mask(torch, n, c, t, g, device):
    """kiln's visibility rule (tests/ref_hstu.c) as an (n, n) bool tensor."""
    c, t = _clamp_mask(n, c, t)
    h = n - t
    i = torch.arange(n, device=device)[:, None]
    j = torch.arange(n, device=device)[None, :]
    causal = j <= i
    tgt = (i >= h) & (torch.div(j - h, g, rounding_mode="floor")
                      == torch.div(i - h, g, rounding_mode="floor")) & causal
    ctx = (i < c) & (j < h)
    return torch.where(j >= h, tgt, causal | ctx)


def ref_seq(torch, qs, ks, vs, rb, c, t, alpha, scale):
    """One sequence in the precision of its inputs: qs, ks, vs (n, H, D);
    rb (H_rab, n, n) or None.  Differentiable."""
    n, H = qs.shape[0], qs.shape[1]
    S = torch.einsum("ihd,jhd->hij", qs, ks)
    if rb is not None:
        S = S + rb[torch.arange(H, device=qs.device) % rb.shape[0]]
    S = S * alpha
    P = torch.nn.functional.silu(S) / scale
    P = torch.where(valid_mask(torch, n, c, t, 1, qs.device)[None], P,
                    torch.zeros((), device=qs.device, dtype=P.dtype))
    return torch.einsum("hij,jhd->ihd", P, vs)


class Data:
    """Inputs of one row (the same in every process)."""


def make_inputs(torch, row, dev):
    d = Data()
    B, L, H, D = shape4(row)
    d.lengths, d.targets = make_lengths(row)
    d.offs = [0]
    for n in d.lengths:
        d.offs.append(d.offs[-1] + n)
    d.total = d.offs[-1]
    d.L, d.alpha, d.scale = L, 1.0 / math.sqrt(D), float(L)
    d.contexts = row["contexts"]
    d.so = torch.tensor(d.offs, dtype=torch.int64, device=dev)
    gen = torch.Generator(device=dev)
    gen.manual_seed(SEED)
    shp = (d.total, H, D)
    bf = torch.bfloat16
    d.q = torch.randn(shp, generator=gen, device=dev, dtype=bf)
    d.k = torch.randn(shp, generator=gen, device=dev, dtype=bf)
    d.v = torch.randn(shp, generator=gen, device=dev, dtype=bf)
    d.rab = None
    if row["rab_heads"]:
        d.rab = torch.randn((B, row["rab_heads"], L, L), generator=gen, device=dev,
                            dtype=bf)
    d.dout = None
    if "fwdbwd" in row_modes(row):
        d.dout = torch.randn(shp, generator=gen, device=dev, dtype=bf)
    d.nt = (torch.tensor(d.targets, dtype=torch.int32, device=dev)
            if d.targets is not None else None)
    d.nc = (torch.full((B,), d.contexts, dtype=torch.int32, device=dev)
            if d.contexts else None)
    d.fingerprint = [round(float(x.float().sum()), 3) for x in (d.q, d.k, d.v)]
    d.q8 = d.k8 = d.v8 = d.dq8 = d.dk8 = d.dv8 = None
    if row["fp8"]:
        d.q8, d.dq8 = quantize_fp8(torch, d.q)
        d.k8, d.dk8 = quantize_fp8(torch, d.k)
        d.v8, d.dv8 = quantize_fp8(torch, d.v)
    return d


def quantize_fp8(torch, x):
    """Per-tensor e4m3: x ~= x8.float() * descale, descale a (1,) float32."""
    amax = x.abs().amax().float().clamp(min=1e-12)
    descale = (amax / 448.0).reshape(1).to(torch.float32).contiguous()
    x8 = (x.float() / descale).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)
    return x8, descale


def _fwd_inputs(row, d):
    if row["fp8"]:
        return (d.q8, d.k8, d.v8, None)
    return (d.q, d.k, d.v, d.rab)


def _seq_float(d, row, b, dequant=True):
    s, e = d.offs[b], d.offs[b + 1]
    if row["fp8"] and dequant:
        return tuple(x[s:e].float() * ds for x, ds in
                     ((d.q8, d.dq8), (d.k8, d.dk8), (d.v8, d.dv8)))
    return d.q[s:e].float(), d.k[s:e].float(), d.v[s:e].float()


def _seq_targets(d, b):
    return d.targets[b] if d.targets is not None else 0


# ---------------------------------------------------------------- impls


class Impl:
    """forward(q, k, v, rab) -> out, differentiable; info: what ran."""

    def __init__(self, name, forward, info=None):
        self.name, self.forward, self.info = name, forward, info or {}
        self.bwd_only = None
        self.keys = None


def make_ref_impl(torch, row, d, name):
    """The fp32 PyTorch reference as an implementation (CPU smoke test only).
    $BENCH_HSTU_SMOKE_NO_FP8 makes fp8 unsupported; $BENCH_HSTU_SMOKE_CRASH=
    IMPL:fwdbwd makes IMPL's process abort in its first forward with grad."""
    if row["fp8"] and os.environ.get("BENCH_HSTU_SMOKE_NO_FP8"):
        def forward(q, k, v, rab):
            raise NotImplementedError("smoke test: fp8 marked unsupported")
        return Impl(name, forward, {"smoke": "pytorch reference"})

    crash = os.environ.get("BENCH_HSTU_SMOKE_CRASH") == f"{name}:fwdbwd"

    def forward(q, k, v, rab):
        if crash and q.requires_grad:  # a peer that dies like an illegal address
            os.abort()
        outs = []
        for b in range(len(d.lengths)):
            s, e = d.offs[b], d.offs[b + 1]
            n = e - s
            if row["fp8"]:
                qs, ks, vs = (x[s:e].float() * ds for x, ds in
                              ((q, d.dq8), (k, d.dk8), (v, d.dv8)))
            else:
                qs, ks, vs = q[s:e].float(), k[s:e].float(), v[s:e].float()
            rb = rab[b, :, :n, :n].float() if rab is not None else None
            outs.append(ref_seq(torch, qs, ks, vs, rb, d.contexts, _seq_targets(d, b),
                                d.alpha, d.scale))
        return torch.cat(outs).to(torch.bfloat16)
    return Impl(name, forward, {"smoke": "pytorch reference"})


def make_kiln_impl(torch, row, d):
    sys.path.insert(0, str(REPO / "python"))
    import kiln

    info = {"kiln_lib": kiln.library_path(),
            "kiln_fwd_impl_env": os.environ.get("KILN_FWD_IMPL")}
    try:
        info["kiln_version"] = kiln.version()
    except Exception as e:  # noqa: BLE001
        info["kiln_version"] = f"? ({e})"
    L = d.L
    common = dict(num_contexts=d.nc, num_targets=d.nt, target_group_size=1,
                  window_size=(-1, 0), alpha=d.alpha, scaling_seqlen=L)
    if row["fp8"]:
        def forward(q, k, v, rab):
            return kiln.hstu_attn_varlen_func(q, k, v, d.so, d.so, L, L,
                                              descale_q=d.dq8, descale_k=d.dk8,
                                              descale_v=d.dv8, **common)
    else:
        def forward(q, k, v, rab):
            return kiln.hstu_attn_varlen_func(q, k, v, d.so, d.so, L, L, rab=rab,
                                              has_drab=row["drab"], **common)
    impl = Impl("kiln", forward, info)

    def keys(bwd):
        """Kernel keys (text form) and the kernel the cache says ran."""
        out = {}
        q, k, v, rab = _fwd_inputs(row, d)
        kw = dict(alpha=d.alpha, scaling_seqlen=float(L), causal=True,
                  num_contexts=d.nc, num_targets=d.nt, target_group_size=1, rab=rab)
        o = torch.empty(tuple(q.shape), dtype=torch.bfloat16, device=q.device)
        try:
            out["kiln_fwd_key"] = kiln.hstu_fwd_key(q, k, v, o, d.so, L, **kw)
        except Exception as e:  # noqa: BLE001
            out["kiln_fwd_key_error"] = f"{type(e).__name__}: {e}"[:300]
        if bwd:
            try:
                p = kiln.hstu_fwd_params(q, k, v, o, d.so, L, **kw)
                bp = kiln.hstu_bwd_params(p, d.dout, q, k, v,
                                          drab=rab if row["drab"] else None)
                # The key call checks the workspace's size and alignment but
                # touches no memory: any aligned device pointer will do.
                bp.workspace_bytes = kiln.hstu_bwd_workspace_size(bp)
                if bp.workspace_bytes:
                    bp.workspace = q.data_ptr()
                out["kiln_bwd_key"] = kiln.hstu_bwd_key(bp)
            except Exception as e:  # noqa: BLE001
                out["kiln_bwd_key_error"] = f"{type(e).__name__}: {e}"[:300]
        for fam in ("fwd", "bwd"):
            base = out.get(f"kiln_{fam}_key")
            if base:
                got = kiln_cached_kernel(base)
                if got:
                    out[f"kiln_{fam}_kernel"] = got
        row_k = out.get("kiln_fwd_kernel") or {}
        if row_k.get("template"):
            out["kiln_fwd_impl"] = f"templates/{row_k['template']} (cache row)"
        else:
            out["kiln_fwd_impl"] = kiln_fwd_impl_label(
                row_k.get("key") or out.get("kiln_fwd_key"),
                os.environ.get("KILN_FWD_IMPL"), bool(row_k))
        return out
    impl.keys = keys
    return impl


_KEY_TAIL = re.compile(r"^(mma|wgmma|bm\d+|bn\d+|w\d+)$")


def kiln_cached_kernel(base):
    """The most recently used cache row for the key `base` (plus any impl or
    tile suffix): {key, template, regs, spills, smem, tiles}, or None.  The
    template is the file the row's specialization prelude includes."""
    d = os.environ.get("KILN_CACHE_DIR")
    if not d:
        return None
    if os.environ.get("KILN_FWD_IMPL") == "mma" and base.endswith("/persist"):
        base = base[:-len("/persist")]  # the grid of wgmma keys; forced mma has one
    path = Path(d) / "kiln.db"
    if not path.exists():
        return None
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            cols = ("key, regs, spills, smem, block_m, block_n, warps, "
                    "coalesce(last_used, created, 0)")
            q = " from kernels where key = ? or key like ?"
            try:
                rows = con.execute(f"select {cols}, prelude{q}",
                                   (base, base + "/%")).fetchall()
            except sqlite3.Error:
                rows = [r + ("",) for r in con.execute(
                    f"select {cols}{q}", (base, base + "/%")).fetchall()]
        finally:
            con.close()
    except sqlite3.Error:
        return None
    # Prefer the impl $KILN_FWD_IMPL names (this process ran with it), then
    # the most recently used row.
    env = os.environ.get("KILN_FWD_IMPL")
    best, best_rank = None, None
    for r in rows:
        key = r[0]
        tail = key[len(base):].strip("/")
        if key != base and not (key.startswith(base + "/") and
                                all(_KEY_TAIL.match(x) for x in tail.split("/"))):
            continue
        rank = (bool(env) and env in tail.split("/"), r[7] or 0)
        if best is None or rank > best_rank:
            best, best_rank = r, rank
    if best is None:
        return None
    m = re.search(r'#include\s+"([^"]+)"', best[8] or "")
    return {"key": best[0], "template": m.group(1) if m else None, "regs": best[1],
            "spills": best[2], "smem": best[3],
            "tiles": f"bm{best[4]}/bn{best[5]}/w{best[6]}"}


def kiln_fwd_impl_label(key, env, from_cache):
    """Which forward kernel the key names: 'wgmma' (templates/hstu_fwd_sm90.cu)
    or 'mma' (templates/hstu_fwd.cu).  A key shows its impl only when it is
    not the default; the default (dispatch/key.c) is wgmma on sm_90a without
    rab.  Without a cache row the KILN_FWD_IMPL override is applied here."""
    if not key:
        return None
    segs = key.split("/")
    if "wgmma" in segs:
        return "wgmma (cache row)" if from_cache else "wgmma"
    if "mma" in segs:
        return "mma (cache row)" if from_cache else "mma"
    arch = segs[1] if len(segs) > 1 else ""
    dtype = segs[2] if len(segs) > 2 else ""
    if dtype not in ("bf16", "fp16"):
        default = f"default for {dtype}"
    else:
        default = "wgmma" if arch == "sm_90a" and "rab" not in segs else "mma"
    if from_cache:
        return f"{default} (cache row, default impl)"
    if env == "mma" or (env == "wgmma" and arch == "sm_90a"):
        return f"{env} (KILN_FWD_IMPL)"
    return f"{default} (derived: default impl)"


# The peer's backward autotune configs that fault on the device: with UNROLL
# 2 and 4 (BLOCK_M 32, BLOCK_N 128, 8 warps) its kernel hits an illegal memory
# access under Triton 3.6 / CUDA 13 (each config alone, in its own process, on
# an H100, 2026-11-24: those two fail at (32, 4096, 4, 128) and (256, 1024, 4,
# 128), the other 19 run).  One faulting config poisons the process, so the
# autotuner never got to its choice.  The peer already drops other configs
# "for CUDA 12.8+"; these join them.
PEER_BWD_DROPPED = "UNROLL > 1 (BLOCK_M 32, BLOCK_N 128: illegal memory access under Triton 3.6)"


def peer_drop_bwd_configs(tha):
    """Removes the faulting backward configs; returns how many were removed
    (0 where the peer's backward is not an autotuner with a config list)."""
    at = getattr(tha, "_hstu_attn_bwd", None)
    if not isinstance(getattr(at, "configs", None), list):
        return 0
    keep = [c for c in at.configs if getattr(c, "kwargs", {}).get("UNROLL", 1) == 1]
    dropped = len(at.configs) - len(keep)
    at.configs = keep
    return dropped


def make_peer_impl(torch, row, d, peer_dir):
    sys.path.insert(0, str(peer_dir))
    from generative_recommenders.ops.triton import triton_hstu_attention as tha
    dropped = peer_drop_bwd_configs(tha)
    _log(f"peer: {dropped} backward autotune configs dropped ({PEER_BWD_DROPPED})")

    L, c = d.L, d.contexts

    def forward(q, k, v, rab):
        if rab is not None:
            raise RuntimeError("the peer takes no rab")
        return tha.triton_hstu_mha(L, d.alpha, q, k, v, d.so, num_targets=d.nt,
                                   contextual_seq_len=c)
    impl = Impl("triton", forward, {"peer_dir": str(peer_dir)})

    def bwd_only():
        """The peer's backward alone (to compile/autotune it in parallel with
        the forward's precompile)."""
        q, k, v = d.q, d.k, d.v
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        tha.triton_hstu_attention_bwd(
            dout=d.dout, q=q, k=k, v=v, dq=dq, dk=dk, dv=dv, seq_offsets=d.so,
            num_targets=d.nt, N=L, alpha=d.alpha, max_attn_len=0,
            contextual_seq_len=c, sort_by_length_indices=None)
    impl.bwd_only = bwd_only
    return impl


def fp8_probe(torch, impl, row, dev):
    """One tiny fp8 call (B=1, 64 rows): None if it works, else the message."""
    try:
        n, H, D = 64, row["H"], row["D"]
        gen = torch.Generator(device=dev)
        gen.manual_seed(SEED + 1)
        xs = [torch.randn((n, H, D), generator=gen, device=dev, dtype=torch.bfloat16)
              for _ in range(3)]
        (q8, dq), (k8, dk), (v8, dv) = [quantize_fp8(torch, x) for x in xs]
        so = torch.tensor([0, n], dtype=torch.int64, device=dev)
        if impl.name == "kiln" and "smoke" not in impl.info:
            import kiln

            o = kiln.hstu_attn_varlen_func(q8, k8, v8, so, so, n, n,
                                           window_size=(-1, 0), alpha=1.0 / math.sqrt(D),
                                           descale_q=dq, descale_k=dk, descale_v=dv)
        else:  # the CPU smoke test
            if os.environ.get("BENCH_HSTU_SMOKE_NO_FP8"):
                raise NotImplementedError("smoke test: fp8 marked unsupported")
            o = xs[0]
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if o is None or tuple(o.shape) != (n, H, D):
            return f"unexpected output {None if o is None else tuple(o.shape)}"
        if bool(torch.isnan(o.float()).any()):
            return "the tiny fp8 call returned NaN"
        return None
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {e}"[:600]


# ---------------------------------------------------------------- run_one


def run_one(args, impl_name, row, precompile):
    import torch

    res = {"impl": impl_name, "row": row["name"], "ok": False, "modes": {},
           "checks": {}}
    smoke = args.smoke_cpu
    if smoke:
        dev = torch.device("cpu")
        res["device"] = "cpu (smoke test)"
    else:
        if not torch.cuda.is_available():
            raise RuntimeError("torch sees no CUDA device")
        dev = torch.device("cuda", 0)
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 reference
        torch.backends.cudnn.allow_tf32 = False
        res["device"] = torch.cuda.get_device_name(dev)
        cap = torch.cuda.get_device_capability(dev)
        res["capability"] = f"sm_{cap[0]}{cap[1]}"
    res["torch"] = torch.__version__
    try:
        import triton

        res["triton"] = triton.__version__
    except ImportError:
        res["triton"] = None
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    d = make_inputs(torch, row, dev)
    flops = flops_fwd(row, d.lengths, d.targets)
    res.update(total_tokens=d.total, flops_fwd=flops, alpha=d.alpha,
               input_fingerprint=d.fingerprint)
    _log(f"{impl_name} {row['name']}: {d.total} tokens, {flops / 1e12:.3f} TFLOP fwd"
         + (f", precompile {precompile}" if precompile else ""))

    if smoke:
        impl = make_ref_impl(torch, row, d, impl_name)
    elif impl_name == "kiln":
        impl = make_kiln_impl(torch, row, d)
    else:
        impl = make_peer_impl(torch, row, d, args.peer_dir)
    res.update(impl.info)

    if row["fp8"]:
        _phase("fp8-probe")
        why = fp8_probe(torch, impl, row, dev)
        if why:
            res["unavailable"] = why
            res["ok"] = True
            _log(f"fp8 not available: {why}")
            return res
        res["fp8_probe"] = "ok"

    fwd_in = _fwd_inputs(row, d)
    # Leaves for the backward (views of the same data).
    qg, kg, vg = (x.detach().requires_grad_() for x in (d.q, d.k, d.v))
    rabg = None
    if d.rab is not None:
        rabg = d.rab.detach().requires_grad_(row["drab"])
    leaves = [qg, kg, vg] + ([rabg] if row["drab"] else [])
    grad_names = ["dq", "dk", "dv"] + (["drab"] if row["drab"] else [])
    retained = {}

    def f_fwd():
        with torch.no_grad():
            return impl.forward(*fwd_in)

    def f_fwdbwd():
        out = impl.forward(qg, kg, vg, rabg)
        return torch.autograd.grad(out, leaves, d.dout)

    def f_bwd():
        return torch.autograd.grad(retained["out"], leaves, d.dout, retain_graph=True)

    fns = {"fwd": f_fwd, "fwdbwd": f_fwdbwd, "bwd": f_bwd}
    modes = row_modes(row)

    if precompile:
        # First calls only: kiln compiles (or loads) its kernels, the peer
        # compiles and autotunes; the binaries stay in the shared caches.
        if precompile == "bwd" and impl.bwd_only is not None:
            _phase("precompile-bwd")
            t0 = time.perf_counter()
            impl.bwd_only()
            sync()
            res["first_call_s"] = {"bwd": time.perf_counter() - t0}
        else:
            firsts = {}
            for m in modes:
                if m == "bwd" or (precompile == "fwd" and m != "fwd"):
                    continue
                _phase(f"precompile-{m}")
                t0 = time.perf_counter()
                fns[m]()
                sync()
                firsts[m] = time.perf_counter() - t0
            res["first_call_s"] = firsts
        res["ok"] = True
        res["precompile"] = precompile
        return res

    dead = False  # a failure that may have left the CUDA context unusable
    for m in modes:
        if dead:
            break
        _phase(m)
        mr = {"ok": False}
        res["modes"][m] = mr
        try:
            if m == "bwd":
                retained["out"] = impl.forward(qg, kg, vg, rabg)
            t0 = time.perf_counter()
            r = fns[m]()
            sync()
            mr["first_call_s"] = time.perf_counter() - t0
            del r
            if m == "fwd" and impl.keys is not None:
                res.update(impl.keys("fwdbwd" in modes))
            t = time_fn(torch, fns[m], dev, args.warmup_ms, args.rep_ms)
            mr.update(t)
            mr["tflops"] = MODE_MULT[m] * flops / (t["ms"] * 1e-3) / 1e12
            mr["ok"] = True
            _log(f"{impl_name} {row['name']} {MODE_LABEL[m]}: {t['ms']:.4f} ms, "
                 f"{mr['tflops']:.1f} TFLOP/s (n={t['n']})")
            _emit(res)  # the timing survives a crash in the checks below
            if m == "bwd":
                retained.clear()
            if m == "fwd":
                _phase("check-fwd")
                check_fwd(torch, args, impl, row, d, f_fwd, res)
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            mr["error"] = f"{type(e).__name__}: {e}"[:2000]
            retained.clear()
            dead = True
        _emit(res)

    ok_bwd = res["modes"].get("fwdbwd", {}).get("ok")
    if ok_bwd and not dead:
        _phase("check-grads")
        try:
            check_grads(torch, args, impl, row, d, f_fwdbwd, grad_names, res)
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            res["checks"]["grad_check_error"] = f"{type(e).__name__}: {e}"[:1000]
    res["ok"] = all(mr.get("ok") for mr in res["modes"].values())
    return res


def check_fwd(torch, args, impl, row, d, f_fwd, res):
    """NaN count, error against an fp32 reference on the first and last
    sequence, and the whole output against the other implementation's."""
    ck = res["checks"]
    try:
        # Best effort against unwritten rows: the caching allocator hands the
        # NaN-filled block just freed to the output allocated next.
        poison = torch.full((d.total, row["H"], row["D"]), float("nan"),
                            dtype=torch.bfloat16, device=d.q.device)
        del poison
        o = f_fwd()
        if d.q.device.type == "cuda":
            torch.cuda.synchronize()
        ck["nan_count"] = int(torch.isnan(o.float()).sum())
        B = row["B"]
        errs, errs_bf16 = [], []
        for b in sorted({0, B - 1}):
            s, e = d.offs[b], d.offs[b + 1]
            n = e - s
            qs, ks, vs = _seq_float(d, row, b)
            rb = d.rab[b, :, :n, :n].float() if d.rab is not None else None
            ref = ref_seq(torch, qs, ks, vs, rb, d.contexts, _seq_targets(d, b),
                          d.alpha, d.scale)
            errs.append(_diff(o[s:e], ref)[0])
            if row["fp8"]:
                qs, ks, vs = _seq_float(d, row, b, dequant=False)
                ref = ref_seq(torch, qs, ks, vs, None, d.contexts, _seq_targets(d, b),
                              d.alpha, d.scale)
                errs_bf16.append(_diff(o[s:e], ref)[0])
        ck["fwd_ref_rel_err"] = max(errs)
        if errs_bf16:
            ck["fwd_ref_rel_err_vs_unquantized"] = max(errs_bf16)
        _log(f"{impl.name} fwd vs fp32 reference (sequences 0, {B - 1}): rel l2 "
             f"{ck['fwd_ref_rel_err']:.3e}")
        if row["fp8"] or peer_unavailable(row):
            return
        tag = row_tag(row)
        mine = Path(args.work) / f"out_{tag}_{impl.name}.pt"
        torch.save({"fp": d.fingerprint, "out": o.cpu()}, mine)
        other = [x for x in IMPLS if x != impl.name][0]
        theirs = Path(args.work) / f"out_{tag}_{other}.pt"
        if theirs.exists():
            saved = torch.load(theirs)
            if saved["fp"] != d.fingerprint:
                ck["cross_error"] = (f"input fingerprints differ: {saved['fp']} vs "
                                     f"{d.fingerprint}")
            else:
                b = saved["out"].to(o.device)
                ko, po = (o, b) if impl.name == "kiln" else (b, o)
                rel, mx = _diff(ko, po)
                ck["kiln_vs_peer_out_rel_l2"] = rel
                ck["kiln_vs_peer_out_max_rel"] = mx
                _log(f"kiln vs peer out: rel l2 {rel:.3e}, max rel {mx:.3e}")
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        ck["fwd_check_error"] = f"{type(e).__name__}: {e}"[:1000]


def check_grads(torch, args, impl, row, d, f_fwdbwd, names, res):
    """Gradients of the first and last sequence against an fp32 reference
    (autograd), and against the other implementation's."""
    ck = res["checks"]
    grads = f_fwdbwd()
    if d.q.device.type == "cuda":
        torch.cuda.synchronize()
    ck["grad_nan_count"] = int(sum(int(torch.isnan(g.float()).sum()) for g in grads))
    B = row["B"]
    worst = {n: 0.0 for n in names}
    saved_slices = {}
    for b in sorted({0, B - 1}):
        s, e = d.offs[b], d.offs[b + 1]
        n = e - s
        qs, ks, vs = (x.detach().requires_grad_() for x in _seq_float(d, row, b))
        rb = None
        if d.rab is not None:
            rb = d.rab[b, :, :n, :n].float().detach().requires_grad_(row["drab"])
        with torch.enable_grad():
            out = ref_seq(torch, qs, ks, vs, rb, d.contexts, _seq_targets(d, b),
                          d.alpha, d.scale)
            ins = [qs, ks, vs] + ([rb] if row["drab"] else [])
            ref = torch.autograd.grad(out, ins, d.dout[s:e].float())
        mine = [g[s:e] for g in grads[:3]]
        if row["drab"]:
            mine.append(grads[3][b, :, :n, :n])
        for name, got, want in zip(names, mine, ref):
            worst[name] = max(worst[name], _diff(got, want)[0])
        saved_slices[b] = [g.detach().cpu() for g in mine[:3]]
    ck["grad_ref_rel_err"] = worst
    _log(f"{impl.name} grads vs fp32 reference: "
         + ", ".join(f"{k} {v:.3e}" for k, v in worst.items()))
    if peer_unavailable(row):
        return
    tag = row_tag(row)
    torch.save({"fp": d.fingerprint, "grads": saved_slices},
               Path(args.work) / f"grads_{tag}_{impl.name}.pt")
    other = [x for x in IMPLS if x != impl.name][0]
    theirs = Path(args.work) / f"grads_{tag}_{other}.pt"
    if theirs.exists():
        saved = torch.load(theirs)
        if saved["fp"] == d.fingerprint:
            out = {}
            for nm_i, nm in enumerate(("dq", "dk", "dv")):
                rels = []
                for b, mine in saved_slices.items():
                    a, o = mine[nm_i], saved["grads"][b][nm_i]
                    k_, p_ = (a, o) if impl.name == "kiln" else (o, a)
                    rels.append(_diff(k_, p_)[0])
                out[nm] = max(rels)
            ck["kiln_vs_peer_grad_rel_l2"] = out
            _log("kiln vs peer grads (sequences 0, B-1): "
                 + ", ".join(f"{k} {v:.3e}" for k, v in out.items()))


def row_tag(row):
    return re.sub(r"[^A-Za-z0-9]+", "_", row["name"])


def main_one(args):
    impl, row_s = args.one
    res = {"impl": impl, "row": row_s, "ok": False}
    code = 0
    try:
        res = run_one(args, impl, parse_row(row_s), args.precompile)
    except BaseException as e:  # noqa: BLE001 - report everything
        traceback.print_exc()
        res["error"] = f"{type(e).__name__}: {e}"[:2000]
        code = 1
    _emit(res)
    # Skip interpreter teardown: a faulted CUDA context can hang or crash in
    # destructors after the result is already out.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# ======================================================================
# Driver.
# ======================================================================


class Child:
    def __init__(self, impl, row, args, env, log, precompile=None):
        self.impl, self.row, self.precompile = impl, row, precompile
        cmd = [sys.executable, str(Path(__file__).resolve()), "--one", impl,
               row["name"], "--work", str(args.work), "--peer-dir",
               str(args.peer_dir), "--warmup-ms", str(args.warmup_ms),
               "--rep-ms", str(args.rep_ms)]
        if precompile:
            cmd += ["--precompile", precompile]
        if args.smoke_cpu:
            cmd.append("--smoke-cpu")
        self.cmd = cmd
        self.log = log
        self.t0 = time.time()
        pre = f"pre{precompile}_" if precompile else ""
        self.out_path = Path(args.work) / f"log_{pre}{impl}_{row_tag(row)}.txt"
        self.fh = open(self.out_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.fh, stderr=subprocess.STDOUT,
                                     env=env, cwd=str(REPO), start_new_session=True)

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def finish(self, timeout):
        """Wait up to timeout seconds; return the result dict."""
        timed_out = False
        try:
            self.proc.wait(timeout=max(timeout, 0.1))
        except subprocess.TimeoutExpired:
            timed_out = True
            self.kill()
            self.proc.wait()
        self.fh.close()
        text = self.out_path.read_text(errors="replace")
        wall = time.time() - self.t0
        kind = f"precompile {self.precompile} " if self.precompile else ""
        self.log.write(f"\n===== {kind}{self.impl} {self.row['name']} "
                       f"(rc {self.proc.returncode}, {wall:.1f} s)\n"
                       f"$ {shlex.join(self.cmd)}\n{text}")
        self.log.flush()
        res, phase = None, None
        for line in text.splitlines():
            if line.startswith("RESULT "):
                try:
                    res = json.loads(line[len("RESULT "):])
                except json.JSONDecodeError:
                    pass
            elif line.startswith("PHASE "):
                phase = line[len("PHASE "):].strip()
        tail = " | ".join(text.strip().splitlines()[-6:])
        why = None
        if timed_out:
            why = f"timed out after {timeout:.0f} s"
        elif self.proc.returncode not in (0, 1):
            why = f"exited with rc {self.proc.returncode}"
        elif res is None:
            why = f"exited with rc {self.proc.returncode} and no result"
        if res is None:
            res = {"impl": self.impl, "row": self.row["name"], "ok": False,
                   "modes": {}, "checks": {}}
        if why:
            res["ok"] = False
            res["error"] = f"{why} during {phase or 'start-up'}: {tail}"[:2000]
            # The mode that was running when the process died.
            if phase in MODES and not res.get("modes", {}).get(phase, {}).get("ok"):
                res.setdefault("modes", {})[phase] = {
                    "ok": False, "error": f"{why}: {tail}"[:2000]}
        res["wall_s"] = wall
        res["rc"] = self.proc.returncode
        return res


def child_env(args):
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    # Autotuning results must not be shared between processes: each measuring
    # process re-tunes on an idle GPU (only compiled binaries are shared).
    env.pop("TRITON_CACHE_AUTOTUNING", None)
    env.setdefault("TRITON_CACHE_DIR", str(Path(args.work) / "triton-cache"))
    env.setdefault("KILN_CACHE_DIR", str(Path(args.work) / "kiln-cache"))
    return env


def _git(*a):
    try:
        r = subprocess.run(["git", "-C", str(REPO), *a], capture_output=True,
                           text=True, timeout=10)
        return r.stdout.strip() if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def kiln_commit():
    """(commit, where it came from): $KILN_COMMIT, else build/KILN_COMMIT (a
    file written beside the build that is carried to the GPU machine: it
    names the commit the binaries were built from), else git rev-parse HEAD
    (+"-dirty" when tracked files differ).  git comes last because the GPU
    machine's copy of .git can be older than its working tree."""
    env = os.environ.get("KILN_COMMIT")
    if env:
        return env, "$KILN_COMMIT"
    f = REPO / "build" / "KILN_COMMIT"  # written next to the carried build
    try:
        h = f.read_text().strip()
        if h:
            when = datetime.datetime.fromtimestamp(
                f.stat().st_mtime, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            return h, f"build/KILN_COMMIT, written {when}"
    except OSError:
        pass
    h = _git("rev-parse", "HEAD")
    if h:
        dirty = _git("status", "--porcelain", "--untracked-files=no")
        return h + ("-dirty" if dirty else ""), "git rev-parse HEAD"
    return "unknown", "no $KILN_COMMIT, no build/KILN_COMMIT, no git"


def peer_commit(peer_dir):
    try:
        return (Path(peer_dir) / "PEER_COMMIT").read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def collect_meta(args, started):
    commit, src = kiln_commit()
    cmd = os.environ.get("BENCH_COMMAND") or shlex.join(
        ["python3", "bench/bench_hstu.py"] + sys.argv[1:])
    return {"date": started, "command": cmd, "kiln_commit": commit,
            "kiln_commit_source": src, "peer": "generative-recommenders triton_hstu_mha",
            "peer_commit": peer_commit(args.peer_dir), "peer_dir": str(args.peer_dir),
            "peer_bwd_configs_dropped": PEER_BWD_DROPPED,
            "kiln_fwd_impl_env": os.environ.get("KILN_FWD_IMPL"),
            "seed": SEED, "smoke_cpu": bool(args.smoke_cpu),
            "warmup_ms": args.warmup_ms, "rep_ms": args.rep_ms, "budget_s": args.budget}


def _mode_res(child, mode, skipped_why=None):
    if child is None:
        if skipped_why:
            return {"ok": False, "skipped": skipped_why, "error": skipped_why}
        return {"ok": False, "error": "not run"}
    if child.get("unavailable"):
        return {"ok": False, "unavailable": child["unavailable"],
                "error": "not available: " + child["unavailable"]}
    m = child.get("modes", {}).get(mode)
    if m:
        return m
    return {"ok": False, "error": child.get("error") or
            ("not run (an earlier mode failed)" if child.get("modes") else "not run")}


def _tfl(m):
    return m.get("tflops") if m.get("ok") else None


def evaluate(targets, kiln_t, ratio, kiln_m):
    """[(label, value, 'pass'|'miss'|'unknown')] and the row's result."""
    out = []
    for kind, thr, label in targets:
        val = kiln_t if kind == "abs" else ratio
        if kiln_m.get("unavailable"):
            st = "n/a"
        elif kiln_m.get("skipped"):
            st = "skipped"
        elif not kiln_m.get("ok"):
            st = "failed"  # kiln failed: counts as a miss
        elif val is None:
            st = "unknown"
        else:
            st = "pass" if val >= thr else "miss"
        out.append({"target": label, "kind": kind, "threshold": thr, "value": val,
                    "status": st})
    sts = [x["status"] for x in out]
    if not sts:
        result = "-"
    elif "failed" in sts:
        result = "FAILED"
    elif "miss" in sts:
        result = "MISS"
    elif "skipped" in sts:
        result = "skipped"
    elif "n/a" in sts:
        result = "not available"
    elif "unknown" in sts:
        result = "?"
    else:
        result = "pass"
    return out, result


def build_records(rows, results, meta, skipped):
    recs = []
    for row in rows:
        kr = results.get((row["name"], "kiln"))
        pr = results.get((row["name"], "triton"))
        skip_k = skipped.get((row["name"], "kiln"))
        skip_p = skipped.get((row["name"], "triton"))
        lengths, targets = make_lengths(row)
        F = flops_fwd(row, lengths, targets)
        na = peer_unavailable(row)
        base_name = baseline_row_name(row) if row["fp8"] else None
        base_child = results.get((base_name, "kiln")) if base_name else None
        for mode in row_modes(row):
            km = _mode_res(kr, mode, skip_k)
            kt = _tfl(km)
            rec = {
                "row": row["name"], "mode": mode, "mode_label": MODE_LABEL[mode],
                "shown": mode in shown_modes(row),
                "B": row["B"], "max_len": row["max_len"], "H": row["H"], "D": row["D"],
                "mask": mask_name(row), "variant": variant_name(row),
                "dtype": "e4m3" if row["fp8"] else "bf16",
                "rab_heads": row["rab_heads"], "has_drab": row["drab"],
                "num_contexts": row["contexts"], "max_targets": row["targets"],
                "offsets": "int64", "lengths": lengths_desc(row),
                "total_tokens": sum(lengths), "flops_fwd": F,
                "flops": MODE_MULT[mode] * F, "flops_mult": MODE_MULT[mode],
                "kiln": {"tflops": kt, **{k: km.get(k) for k in
                         ("ok", "ms", "min_ms", "max_ms", "n", "first_call_s",
                          "timer", "spin_ms", "host_ms", "error", "unavailable",
                          "skipped")
                         if km.get(k) is not None}},
            }
            if na:
                rec["peer"] = {"status": "n/a", "why": na}
                pm = None
            else:
                pm = _mode_res(pr, mode, skip_p)
                rec["peer"] = {"tflops": _tfl(pm), **{k: pm.get(k) for k in
                               ("ok", "ms", "min_ms", "max_ms", "n", "first_call_s",
                                "timer", "spin_ms", "host_ms", "error", "skipped")
                               if pm.get(k) is not None}}
            ratio, other = None, None
            if row["fp8"]:
                bm = _mode_res(base_child, "fwd") if base_child else {}
                other = _tfl(bm)
                rec["baseline"] = {"what": f"kiln bf16 fwd, row {base_name}",
                                   "tflops": other, "ms": bm.get("ms")}
            elif pm is not None:
                other = _tfl(pm)
            if kt and other:
                ratio = kt / other
            rec["ratio"] = ratio
            rec["targets"], rec["result"] = evaluate(row_targets(row, mode), kt, ratio,
                                                     km)
            if mode == "bwd":
                # Derived: fwd+bwd minus fwd (the issue's alternative).
                for who, child in (("kiln", kr), ("peer", None if na else pr)):
                    fb = _mode_res(child, "fwdbwd")
                    fw = _mode_res(child, "fwd")
                    if fb.get("ok") and fw.get("ok") and fb["ms"] > fw["ms"]:
                        ms = fb["ms"] - fw["ms"]
                        rec[who]["derived_ms"] = ms
                        rec[who]["derived_tflops"] = 2.5 * F / (ms * 1e-3) / 1e12
            for who, child in (("kiln", kr), ("peer", pr)):
                if child:
                    rec[f"{who}_checks"] = child.get("checks", {})
                    rec[f"{who}_wall_s"] = child.get("wall_s")
                    if who == "kiln":
                        for k in ("kiln_fwd_key", "kiln_bwd_key", "kiln_fwd_kernel",
                                  "kiln_bwd_kernel", "kiln_fwd_impl",
                                  "kiln_fwd_impl_env", "kiln_fwd_key_error",
                                  "kiln_bwd_key_error", "kiln_lib", "kiln_version"):
                            if child.get(k) is not None:
                                rec[k] = child[k]
            for k in ("device", "capability", "torch", "triton"):
                rec[k] = (kr or {}).get(k) or (pr or {}).get(k)
            for k in ("date", "kiln_commit", "peer_commit", "command"):
                rec[k] = meta[k]
            recs.append(rec)
    return recs


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def _short(s, n=160):
    s = str(s).replace("|", "/").replace("\n", " ")
    return s if len(s) <= n else s[:n - 3] + "..."


def render_md(meta, recs, rows, procs, skipped=None):
    device = next((r["device"] for r in recs if r.get("device")), "unknown")
    torch_v = next((r["torch"] for r in recs if r.get("torch")), "?")
    triton_v = next((r["triton"] for r in recs if r.get("triton")), "?")
    shown = [r for r in recs if r["shown"]]
    counts = {}
    for r in shown:
        for t in r["targets"]:
            counts[t["status"]] = counts.get(t["status"], 0) + 1
    L = [
        "# HSTU attention: kiln vs generative-recommenders' Triton HSTU",
        "",
        f"- device: {device}; torch {torch_v}, triton {triton_v}",
        f"- date: {meta['date']}",
        f"- command: `{meta['command']}`",
        f"- kiln commit: {meta['kiln_commit']} ({meta['kiln_commit_source']}); "
        f"KILN_FWD_IMPL={meta['kiln_fwd_impl_env'] or '(unset)'}",
        f"- peer: generative-recommenders `triton_hstu_mha` "
        "(ops/triton/triton_hstu_attention.py) at "
        f"{meta['peer_commit']}; its backward autotunes over its own configs less "
        f"those that fault here: {meta.get('peer_bwd_configs_dropped', 'none')}",
        "- inputs: bf16 q, k, v ~ N(0, 1) (seeded), int64 offsets, lengths uniform "
        "in [max_len/2, max_len] (seed "
        f"{SEED}, the same draw for kiln, the peer, and the rab/fp8 rows of a shape); "
        "alpha = 1/sqrt(D); both divide by max_len; causal always. target: "
        "num_targets uniform in [0, N], group size 1 (the peer's semantics); "
        "context: num_contexts = N for every sequence (the peer's "
        "contextual_seq_len = N). rab: N(0, 1) bf16 (B, rab_heads, max_len, max_len). "
        "fp8: e4m3 q, k, v with per-tensor (1,) float32 descale factors "
        "(amax/448), through `kiln.hstu_attn_varlen_func(..., descale_q, descale_k, "
        "descale_v)`.",
        "- FLOPs: forward = sum over sequences of 2*H*D*len^2 for the plain causal "
        "mask; for target and context masks 4*H*D*(exact number of visible (i, j) "
        "pairs per sequence); fwd+bwd = 3.5x forward, bwd = 2.5x forward. rab adds "
        "none; fp8 counts the same. TFLOP/s = FLOPs / median time.",
        "- timing: CUDA events around each call, median of n calls after warmup; "
        "a 256 MB write flushes L2 and a GPU spin (torch.cuda._sleep) hides host "
        "launch overhead before each call, for both implementations. fwd: forward "
        "under no_grad; fwd+bwd: forward + torch.autograd.grad(out, (q, k, v[, rab]), "
        "dout) with a fixed random dout (the peer through its autograd Function); "
        "bwd: autograd.grad on one retained graph (also derived as fwd+bwd minus fwd "
        "in results.json). kiln runs through its public "
        "`kiln.hstu_attn_varlen_func` (NVIDIA's signature).",
        "- each (implementation, row) runs in its own process; a failed peer is "
        "a failure in its cell, not a dropped row. Rows the time budget had no "
        "room for say 'skipped'.",
        f"- NVIDIA's shape (B=32, max_len=4099, H=4, D=256, causal+context): NVIDIA "
        f"reports {NVIDIA_FWD:g} TFLOP/s forward and {NVIDIA_BWD:g} backward for its "
        "CUTLASS kernel on an H100. Its length distribution and context count are "
        "not known here: this row uses the ragged draw above and 3 context tokens "
        "(4099 = 4096 + 3, assumed).",
        f"- targets: kiln >= {PEER_RATIO:g}x the peer (fwd, fwd+bwd), >= {FIRST_FWD:g} "
        f"TFLOP/s forward on (32, 4096, 4, 128); NVIDIA's shape >= {NVIDIA_FWD:g} fwd "
        f"/ {NVIDIA_BWD:g} bwd; fp8 forward >= {FP8_RATIO:g}x kiln's bf16 forward. "
        f"This run: {counts.get('pass', 0)} pass, {counts.get('miss', 0)} miss, "
        f"{counts.get('failed', 0)} kiln failed, "
        f"{counts.get('unknown', 0)} unknown (peer failed or not run), "
        f"{counts.get('n/a', 0)} not available, {counts.get('skipped', 0)} skipped.",
        "",
        "| row | B | max_len | H | D | mask | variant | mode | kiln TFLOP/s | kiln ms "
        "| peer (or baseline) TFLOP/s | peer ms | ratio | target | result | notes |",
        "|---|---:|---:|---:|---:|---|---|---|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in shown:
        k, p = r["kiln"], r["peer"]
        notes = []
        if k.get("unavailable"):
            notes.append("kiln: not available: " + k["unavailable"])
        elif k.get("skipped"):
            notes.append("kiln " + k["skipped"])
        elif k.get("error"):
            notes.append("kiln FAILED: " + k["error"])
        if p.get("status") == "n/a":
            other_t, other_ms = None, None
            if "baseline" in r:
                other_t, other_ms = r["baseline"]["tflops"], r["baseline"]["ms"]
                notes.append("baseline: " + r["baseline"]["what"])
            else:
                notes.append("peer n/a: " + p["why"])
        else:
            other_t, other_ms = p.get("tflops"), p.get("ms")
            if p.get("skipped"):
                notes.append("peer " + p["skipped"])
            elif p.get("error"):
                notes.append("peer FAILED: " + p["error"])
        if r["mode"] == "bwd":
            if k.get("derived_tflops"):
                notes.append(f"kiln derived (fwd+bwd - fwd) {k['derived_tflops']:.1f}")
            if p.get("derived_tflops"):
                notes.append(f"peer derived {p['derived_tflops']:.1f}")
        kc = r.get("kiln_checks") or {}
        if kc.get("nan_count") and r["mode"] == "fwd":
            notes.append(f"kiln output has {kc['nan_count']} NaN")
        target = "; ".join(t["target"] for t in r["targets"]) or "-"
        res = r["result"]
        misses = [t for t in r["targets"] if t["status"] == "miss"]
        if misses:
            res += ": " + "; ".join(
                (f"{t['value']:.2f}x < {t['threshold']:g}x" if t["kind"] != "abs" else
                 f"{t['value']:.0f} < {t['threshold']:g}") for t in misses)
        L.append(
            f"| {r['row']} | {r['B']} | {r['max_len']} | {r['H']} | {r['D']} "
            f"| {r['mask']} | {r['variant']} | {r['mode_label']} "
            f"| {fmt(k.get('tflops'), '.1f')} | {fmt(k.get('ms'), '.3f')} "
            f"| {fmt(other_t, '.1f')} | {fmt(other_ms, '.3f')} "
            f"| {fmt(r['ratio'], '.2f')} | {target} | {res} "
            f"| {'; '.join(_short(n) for n in notes)} |")

    L += ["", "## Checks and kernels", "",
          "ref err: ||out - ref|| / ||ref|| against an fp32 PyTorch reference "
          "(same mask, rab, fp8 descales) on the first and last sequence; grads: the "
          "same for dq, dk, dv (and drab) through autograd. kiln vs peer: whole "
          "output, and gradients of those two sequences. Kernels: kiln's key (text "
          "form) and the template it was compiled from, read from the kiln cache "
          "row of that key (its specialization prelude); without a row, derived "
          "from the key and KILN_FWD_IMPL (wgmma = templates/hstu_fwd_sm90.cu, "
          "mma = templates/hstu_fwd.cu).",
          "",
          "| row | kiln fwd ref err | kiln grads ref err | peer fwd ref err "
          "| peer grads ref err | kiln vs peer out (rel l2 / max rel) "
          "| kiln vs peer grads | kiln fwd kernel | kiln bwd kernel |",
          "|---|---:|---|---:|---|---|---|---|---|"]
    seen = set()
    for r in recs:
        if r["row"] in seen:
            continue
        seen.add(r["row"])
        kc, pc = r.get("kiln_checks") or {}, r.get("peer_checks") or {}

        def g(c):
            d = c.get("grad_ref_rel_err")
            return ", ".join(f"{k} {v:.1e}" for k, v in d.items()) if d else "-"
        cross = "-"
        if kc.get("kiln_vs_peer_out_rel_l2") is not None or pc.get(
                "kiln_vs_peer_out_rel_l2") is not None:
            c = kc if kc.get("kiln_vs_peer_out_rel_l2") is not None else pc
            cross = (f"{c['kiln_vs_peer_out_rel_l2']:.1e} / "
                     f"{c['kiln_vs_peer_out_max_rel']:.1e}")
        gx = kc.get("kiln_vs_peer_grad_rel_l2") or pc.get("kiln_vs_peer_grad_rel_l2")
        gxs = ", ".join(f"{k} {v:.1e}" for k, v in gx.items()) if gx else "-"
        fk = r.get("kiln_fwd_kernel", {}).get("key") or r.get("kiln_fwd_key") or "-"
        if r.get("kiln_fwd_impl"):
            fk = f"`{fk}` {r['kiln_fwd_impl']}"
        kfe = kc.get("fwd_ref_rel_err")
        if kc.get("fwd_ref_rel_err_vs_unquantized") is not None:
            kfe_s = (f"{kfe:.1e} (vs unquantized "
                     f"{kc['fwd_ref_rel_err_vs_unquantized']:.1e})")
        else:
            kfe_s = fmt(kfe, ".1e")
        bk = (r.get("kiln_bwd_kernel") or {}).get("key") or r.get("kiln_bwd_key")
        bt = (r.get("kiln_bwd_kernel") or {}).get("template")
        bks = "-" if not bk else f"`{bk}`" + (f" templates/{bt}" if bt else "")
        L.append(f"| {r['row']} | {kfe_s} | {g(kc)} "
                 f"| {fmt(pc.get('fwd_ref_rel_err'), '.1e')} | {g(pc)} | {cross} "
                 f"| {gxs} | {fk} | {bks} |")

    errs = []
    for p in procs:
        issues = []
        if p.get("error"):
            issues.append(p["error"])
        for m, mr in (p.get("modes") or {}).items():
            if mr.get("error"):
                issues.append(f"{MODE_LABEL.get(m, m)}: {mr['error']}")
        for key in ("fwd_check_error", "grad_check_error", "cross_error"):
            if (p.get("checks") or {}).get(key):
                issues.append(f"{key}: {p['checks'][key]}")
        if p.get("unavailable"):
            issues.append("not available: " + p["unavailable"])
        if issues:
            errs.append(f"- {p.get('impl')} {p.get('row')}: "
                        + " / ".join(_short(x, 700) for x in issues))
    for (row_name, impl), why in (skipped or {}).items():
        errs.append(f"- {impl} {row_name}: {why}")
    if errs:
        L += ["", "## Failures, skips and unavailable features", ""] + errs
    L.append("")
    return L


def write_outputs(args, meta, rows, results, skipped, procs):
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    recs = build_records(rows, results, meta, skipped)
    device = next((r["device"] for r in recs if r.get("device")), None)
    meta = dict(meta, device=device)
    doc = {"meta": meta, "records": recs, "processes": procs,
           "skipped": [{"row": r, "impl": i, "why": w} for (r, i), w in skipped.items()]}
    (out_dir / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = render_md(meta, recs, rows, procs, skipped)
    (out_dir / "RESULTS.md").write_text("\n".join(lines))
    return lines


def plan(rows, impls):
    """[(row, impl)] in measuring order and the precompile children."""
    measure, pre = [], []
    for row in rows:
        for impl in row_impls(row, impls):
            measure.append((row, impl))
            if impl == "triton" and "fwdbwd" in row_modes(row):
                pre += [(row, impl, "fwd"), (row, impl, "bwd")]
            else:
                pre.append((row, impl, "all"))
    return measure, pre


def main_dry_run(args):
    rows = [parse_row(s) for s in args.rows]
    measure, pre = plan(rows, args.impls)
    print(f"bench_hstu plan: {len(rows)} rows, {len(measure)} measuring processes "
          f"(one per (impl, row)), {len(pre)} precompile processes in parallel first; "
          f"budget {args.budget:.0f} s, precompile <= {args.precompile_s:.0f} s, "
          f"child timeout {args.child_timeout:.0f} s")
    print(f"peer: {args.peer_dir} @ {peer_commit(args.peer_dir)}; kiln commit "
          f"{kiln_commit()[0]}")
    print()
    hdr = (f"{'row':28s} {'mask':26s} {'variant':26s} {'impls':12s} "
           f"{'tokens':>8s} {'fwd TFLOP':>9s} {'visible':>7s}  modes (targets)")
    print(hdr)
    print("-" * len(hdr))
    for row in rows:
        lengths, targets = make_lengths(row)
        F = flops_fwd(row, lengths, targets)
        dense = float(sum(4 * row["H"] * row["D"] * n * n for n in lengths))
        modes = []
        for m in row_modes(row):
            t = "; ".join(x[2] for x in row_targets(row, m))
            modes.append(MODE_LABEL[m] + (f" ({t})" if t else "")
                         + ("" if m in shown_modes(row) else " [json only]"))
        impls = "+".join(row_impls(row, args.impls))
        print(f"{row['name']:28s} {mask_name(row):26s} {variant_name(row):26s} "
              f"{impls:12s} {sum(lengths):8d} {F / 1e12:9.4f} {F / dense:7.3f}  "
              + ", ".join(modes))
        if peer_unavailable(row):
            print(f"{'':28s} peer: n/a ({peer_unavailable(row)})")
        if targets is not None:
            print(f"{'':28s} targets per sequence: min {min(targets)}, max "
                  f"{max(targets)}, total {sum(targets)}")
        print(f"{'':28s} lengths: {lengths_desc(row)}: min {min(lengths)}, "
              f"max {max(lengths)}")
    print()
    print("precompile children:")
    for row, impl, part in pre:
        print(f"  --one {impl} {row['name']} --precompile {part}")
    print("measuring children, in order:")
    for row, impl in measure:
        print(f"  --one {impl} {row['name']}")
    return 0


def main_self_test(args):
    bad = 0
    for n in range(0, 41):
        for c in range(0, 6):
            for t in range(0, 7):
                for g in (1, 2, 3):
                    a, b = visible_pairs(n, c, t, g), visible_brute(n, c, t, g)
                    if a != b:
                        bad += 1
                        if bad < 10:
                            print(f"visible_pairs({n}, {c}, {t}, {g}) = {a}, "
                                  f"brute force {b}")
    for n in (1, 7, 100):
        assert visible_pairs(n) == n * (n + 1) // 2
    for s in DEFAULT_ROWS + ["4x64x2x32+t8+c2+rab1+drab+full"]:
        r = parse_row(s)
        assert r["name"] == s
        lengths, targets = make_lengths(r)
        assert len(lengths) == r["B"] and all(r["max_len"] // 2 <= n <= r["max_len"]
                                              for n in lengths)
        assert flops_fwd(r, lengths, targets) > 0
    for s in ("4x64x2x32+drab", "4x64x3x32+rab2", "4x64x2x32+fp8+rab1", "4x64x2x32+x"):
        try:
            parse_row(s)
            print(f"parse_row({s!r}) should have failed")
            bad += 1
        except argparse.ArgumentTypeError:
            pass
    # The old names draw the old lengths (results stay comparable across runs).
    r = parse_row("32x4096x4x128")
    assert sum(make_lengths(r)[0]) == 101566, sum(make_lengths(r)[0])
    assert row_targets(parse_row("32x4096x4x128"), "fwd")[1][1] == FIRST_FWD
    assert [x[1] for x in row_targets(parse_row("32x4099x4x256+c3"), "bwd")] == [NVIDIA_BWD]
    assert shown_modes(parse_row("32x4099x4x256+c3")) == ["fwd", "fwdbwd", "bwd"]
    assert shown_modes(parse_row("64x2048x8x64")) == ["fwd", "fwdbwd"]
    print("self-test: " + ("ok" if not bad else f"{bad} FAILURES"))
    return 1 if bad else 0


def main_driver(args):
    started = datetime.datetime.now(datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC")
    t_start = time.time()
    deadline = t_start + args.budget
    rows = [parse_row(s) for s in args.rows]
    names = [r["name"] for r in rows]
    if len(set(names)) != len(names):
        raise SystemExit("bench_hstu: a row is named twice")
    if args.work is None:
        args.work = tempfile.mkdtemp(prefix="kiln-bench-hstu-")
    Path(args.work).mkdir(parents=True, exist_ok=True)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = child_env(args)
    meta = collect_meta(args, started)
    log = open(out_dir / "bench_hstu.log", "w")
    measure, pre = plan(rows, args.impls)
    _log(f"bench_hstu: {len(rows)} rows, {len(measure)} measurements, work "
         f"{args.work}, budget {args.budget:.0f} s, kiln {meta['kiln_commit']}, "
         f"peer {meta['peer_commit'][:12]}")
    _log(f"TRITON_CACHE_DIR={env['TRITON_CACHE_DIR']} "
         f"KILN_CACHE_DIR={env['KILN_CACHE_DIR']}")

    # Phase 1: compile everything at once (Triton autotuning compiles ~29
    # forward and ~24 backward configurations per shape, the peer's backward
    # in a process of its own; kiln compiles a few keys per row).  Results are
    # discarded; the binaries stay in the shared caches.
    if args.precompile_s > 0 and pre:
        t0 = time.time()
        kids = [Child(impl, row, args, env, log, precompile=part)
                for row, impl, part in pre]
        limit = min(args.precompile_s, max(0.0, (deadline - time.time()) * 0.4))
        for c in kids:
            r = c.finish(limit - (time.time() - t0))
            if r.get("ok"):
                fc = r.get("first_call_s") or {}
                status = "ok" + ("" if not fc else ", first calls " + ", ".join(
                    f"{MODE_LABEL.get(k, k)} {v:.1f} s" for k, v in fc.items()))
                if r.get("unavailable"):
                    status = "fp8 not available"
            else:
                status = f"FAILED: {_short(r.get('error', ''), 200)}"
            _log(f"precompile {c.precompile:3s} {c.impl:6s} {c.row['name']:28s} "
                 f"{status}")
        _log(f"precompile phase {time.time() - t0:.1f} s")

    # Phase 2: measure, one process at a time, in plan order.
    results, skipped, procs = {}, {}, []
    for row in rows:
        for impl in row_impls(row, args.impls):
            left = deadline - time.time()
            if left < 15:
                skipped[(row["name"], impl)] = "skipped: time budget spent"
                _log(f"{impl:6s} {row['name']:28s} SKIPPED (budget)")
                continue
            c = Child(impl, row, args, env, log)
            r = c.finish(min(args.child_timeout, left))
            results[(row["name"], impl)] = r
            procs.append(r)
            parts = []
            for m in row_modes(row):
                mr = (r.get("modes") or {}).get(m)
                if mr and mr.get("ok"):
                    parts.append(f"{MODE_LABEL[m]} {mr['tflops']:.1f}")
                elif mr:
                    parts.append(f"{MODE_LABEL[m]} FAILED")
            if r.get("unavailable"):
                parts.append("not available: " + _short(r["unavailable"], 120))
            if r.get("error"):
                parts.append("ERROR: " + _short(r["error"], 200))
            _log(f"{impl:6s} {row['name']:28s} {', '.join(parts)} "
                 f"({r.get('wall_s', 0):.0f} s)")
        for f in list(Path(args.work).glob(f"out_{row_tag(row)}_*.pt")) + list(
                Path(args.work).glob(f"grads_{row_tag(row)}_*.pt")):
            f.unlink()
        write_outputs(args, meta, rows, results, skipped, procs)  # partial results

    lines = write_outputs(args, meta, rows, results, skipped, procs)
    log.close()
    _log(f"done in {time.time() - t_start:.0f} s; wrote {out_dir}/results.json, "
         f"{out_dir}/RESULTS.md, {out_dir}/bench_hstu.log")
    print("\n".join(lines))
    failed = [p for p in procs if not p.get("ok")] or skipped
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="Rows: " + " ".join(DEFAULT_ROWS) + ".  See the module docstring "
               "(head of this file) for the row grammar, FLOPs and timing.")
    ap.add_argument("--dry-run", action="store_true",
                    help="print the plan (rows, lengths, FLOPs, targets, processes) "
                         "and exit; needs no torch and no GPU")
    ap.add_argument("--self-test", action="store_true",
                    help="check the FLOP counter against brute force and the row "
                         "grammar; needs no torch")
    ap.add_argument("--one", nargs=2, metavar=("IMPL", "ROW"),
                    help="run one measurement (kiln|triton, a ROW)")
    ap.add_argument("--precompile", nargs="?", const="all", choices=("all", "fwd", "bwd"),
                    help="with --one: first calls only (compile/autotune); bwd: the "
                         "peer's backward alone")
    ap.add_argument("--smoke-cpu", action="store_true",
                    help="test the harness on the CPU: both implementations are "
                         "replaced by the PyTorch reference (numbers mean nothing)")
    ap.add_argument("--out-dir", default=str(REPO / "bench"))
    ap.add_argument("--work", default=None,
                    help="scratch folder (outputs exchanged between processes, "
                         "default caches); default: a new temp folder")
    ap.add_argument("--peer-dir", default=str(DEFAULT_PEER_DIR))
    ap.add_argument("--rows", "--shapes", nargs="+", default=DEFAULT_ROWS,
                    dest="rows", metavar="ROW")
    ap.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    ap.add_argument("--budget", type=float, default=480.0,
                    help="seconds for the whole driver run; rows left when it is "
                         "spent are recorded as skipped")
    ap.add_argument("--precompile-s", type=float, default=150.0,
                    help="limit of the parallel compile phase (0: skip it); at most "
                         "0.4 of the budget")
    ap.add_argument("--child-timeout", type=float, default=150.0)
    ap.add_argument("--warmup-ms", type=float, default=50.0)
    ap.add_argument("--rep-ms", type=float, default=300.0)
    args = ap.parse_args()
    for s in args.rows:
        try:
            parse_row(s)
        except argparse.ArgumentTypeError as e:
            ap.error(str(e))
    if args.self_test:
        sys.exit(main_self_test(args))
    if args.dry_run:
        sys.exit(main_dry_run(args))
    if args.one:
        if args.one[0] not in IMPLS:
            ap.error(f"--one: impl must be one of {IMPLS}")
        try:
            parse_row(args.one[1])
        except argparse.ArgumentTypeError as e:
            ap.error(str(e))
        if args.work is None:
            args.work = tempfile.mkdtemp(prefix="kiln-bench-hstu-")
        main_one(args)
    sys.exit(main_driver(args))


if __name__ == "__main__":
    main()
