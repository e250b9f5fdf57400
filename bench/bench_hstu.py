#!/usr/bin/env python3
"""HSTU forward TFLOP/s: kiln beside the Triton HSTU of generative-recommenders.

Driver (default):
    python3 bench/bench_hstu.py [--out-dir bench/] [--shapes S ...] [--budget 300]
runs every (implementation, shape) in its own subprocess, so that one fault
(an illegal address, a Triton compile error) cannot hide the other rows, and
writes OUT_DIR/results.json and OUT_DIR/RESULTS.md.

One measurement (what the driver runs):
    python3 bench/bench_hstu.py --one kiln|triton SHAPE --work DIR [--precompile]
prints a final line "RESULT {json}".

SHAPE is "BxLxHxD" (batch, max_len, heads, head_dim), with "+tN" for the
causal+target mask with num_targets per sequence uniform in [0, N]
(e.g. "32x4096x4x128+t64").

What both implementations compute (checked in the peer's source at the pinned
commit, ops/triton/triton_hstu_attention.py):
    out_i = sum_{j valid} silu(alpha * q_i.k_j) / max_len * v_j
The peer's kernel multiplies by 1/MAX_SEQ_LEN where MAX_SEQ_LEN is the first
argument of triton_hstu_mha (N); kiln divides by scaling_seqlen, given the same
max_len.  alpha = 1/sqrt(D) for both (a free parameter; the peer's own bench
uses 1/D).  The peer's target mask: a target row sees every history token and
itself only, i.e. kiln's target_group_size = 1.  The peer's API has no
relative attention bias (rab): no rab case is run.

Lengths are uniform in [max_len/2, max_len] (seeded, the same in both
processes), offsets int64, q/k/v bf16 N(0,1) from a seeded CUDA generator.
FLOPs: sum over sequences of 2*H*D*len^2 (two GEMMs over the causal lower
triangle; the same count for the target case, whose masked area differs by
< 64/2048 of a row).
Timing: triton.testing.do_bench, median, which clears L2 between repetitions
(every input set here is over 50 MB anyway, above the H100's L2).
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
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PEER_DIR = REPO / ".peers" / "generative-recommenders"
DEFAULT_SHAPES = [
    "32x4096x4x128",
    "256x1024x4x128",
    "64x2048x8x64",
    "128x512x2x256",
    "32x4096x4x128+t64",
]
IMPLS = ("kiln", "triton")
SEED = 20261123

SHAPE_RE = re.compile(r"^(\d+)x(\d+)x(\d+)x(\d+)(?:\+t(\d+))?$")


def parse_shape(s):
    m = SHAPE_RE.match(s)
    if not m:
        raise argparse.ArgumentTypeError(
            f"bad shape {s!r}: expected BxLxHxD or BxLxHxD+tN")
    b, L, h, d, t = m.groups()
    return {"B": int(b), "max_len": int(L), "H": int(h), "D": int(d),
            "targets": None if t is None else int(t), "name": s}


def mask_name(shape):
    return "causal" if shape["targets"] is None else "causal+target"


def shape_tag(shape):
    return shape["name"].replace("+", "_")


def make_lengths(shape):
    """Per-sequence lengths and target counts: host-side, deterministic."""
    rng = random.Random(f"{SEED}-{shape['name']}")
    L = shape["max_len"]
    lengths = [rng.randint(L // 2, L) for _ in range(shape["B"])]
    targets = None
    if shape["targets"] is not None:
        targets = [min(rng.randint(0, shape["targets"]), n) for n in lengths]
    return lengths, targets


def flops_fwd(shape, lengths):
    return float(sum(2 * shape["H"] * shape["D"] * n * n for n in lengths))


def peer_commit(peer_dir):
    f = Path(peer_dir) / "PEER_COMMIT"
    try:
        return f.read_text().strip()[:7]
    except OSError:
        return "unknown"


# ======================================================================
# One measurement, in its own process.
# ======================================================================


def _log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _bench_ms(fn, warmup_ms, rep_ms):
    """Median milliseconds of fn()."""
    try:
        from triton.testing import do_bench

        return (float(do_bench(fn, warmup=warmup_ms, rep=rep_ms,
                               return_mode="median")),
                "triton.testing.do_bench(median)")
    except ImportError:
        pass
    import torch

    # Fallback: CUDA events around each call, L2 flushed by a 256 MB write.
    flush = torch.empty(256 << 20, dtype=torch.int8, device="cuda")
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    est = (time.perf_counter() - t0) / 5 * 1e3
    n_warm = max(1, int(warmup_ms / max(est, 1e-3)))
    n_rep = max(5, int(rep_ms / max(est, 1e-3)))
    for _ in range(n_warm):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n_rep)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n_rep)]
    for i in range(n_rep):
        flush.zero_()
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize()
    times = sorted(s.elapsed_time(e) for s, e in zip(starts, ends))
    return times[len(times) // 2], "cuda events (median, L2 flushed)"


def _reference(q, k, v, lengths, targets, offsets_host, alpha, max_len, idx):
    """fp32 reference (TF32 off) for sequence idx: (len, H, D) float32."""
    import torch

    s, e = offsets_host[idx], offsets_host[idx + 1]
    n = e - s
    qb = q[s:e].float().permute(1, 0, 2)  # (H, n, D)
    kb = k[s:e].float().permute(1, 0, 2)
    vb = v[s:e].float().permute(1, 0, 2)
    S = torch.matmul(qb, kb.transpose(1, 2)) * alpha
    P = S * torch.sigmoid(S) / max_len
    i = torch.arange(n, device=q.device)
    valid = i[None, :] <= i[:, None]
    if targets is not None:
        hist = n - targets[idx]
        valid = valid & ((i[None, :] < hist) | (i[None, :] == i[:, None]))
    P = torch.where(valid[None], P, torch.zeros((), device=q.device))
    return torch.matmul(P, vb).permute(1, 0, 2)


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
    rel = math.sqrt(num / den) if den > 0 else float("inf")
    return rel, (maxd / maxb if maxb > 0 else float("inf"))


def run_one(impl, shape, work, peer_dir, precompile, warmup_ms, rep_ms):
    import torch

    res = {"impl": impl, "shape": shape["name"], "ok": False}
    if not torch.cuda.is_available():
        raise RuntimeError("torch sees no CUDA device")
    dev = torch.device("cuda", 0)
    torch.cuda.set_device(dev)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 reference
    res["device"] = torch.cuda.get_device_name(dev)
    res["torch"] = torch.__version__

    B, L, H, D = shape["B"], shape["max_len"], shape["H"], shape["D"]
    lengths, targets = make_lengths(shape)
    offs = [0]
    for n in lengths:
        offs.append(offs[-1] + n)
    total = offs[-1]
    seq_offsets = torch.tensor(offs, dtype=torch.int64, device=dev)
    num_targets = (torch.tensor(targets, dtype=torch.int32, device=dev)
                   if targets is not None else None)
    gen = torch.Generator(device=dev)
    gen.manual_seed(SEED)
    q = torch.randn((total, H, D), generator=gen, device=dev, dtype=torch.bfloat16)
    k = torch.randn((total, H, D), generator=gen, device=dev, dtype=torch.bfloat16)
    v = torch.randn((total, H, D), generator=gen, device=dev, dtype=torch.bfloat16)
    alpha = 1.0 / math.sqrt(D)
    flops = flops_fwd(shape, lengths)
    res.update(total_tokens=total, flops=flops, alpha=alpha)
    # Both processes must see the same inputs: fingerprint them.
    res["input_fingerprint"] = [round(float(t.float().sum()), 3) for t in (q, k, v)]
    _log(f"{impl} {shape['name']}: total {total} tokens, {flops / 1e12:.3f} TFLOP")

    if impl == "kiln":
        sys.path.insert(0, str(REPO / "python"))
        import kiln

        res["kiln_lib"] = kiln.library_path()
        eng = kiln.Engine()
        out = torch.full_like(q, float("nan"))
        kw = dict(alpha=alpha, scaling_seqlen=float(L), causal=True,
                  num_targets=num_targets, target_group_size=1)
        res["kiln_key"] = kiln.hstu_fwd_key(q, k, v, out, seq_offsets, L, **kw)
        _log(f"kiln key {res['kiln_key']}")

        # The timed call: the params struct is built once (as a framework
        # binding would cache it), so Python overhead stays out of the time.
        import ctypes

        from kiln import _capi

        params = _capi.hstu_fwd_params(q, k, v, out, seq_offsets, L, **kw)
        stream = ctypes.c_void_p(torch.cuda.current_stream(dev).cuda_stream)
        lib = _capi.library()
        calls = [0]

        def fn():
            if calls[0] == 0:  # the first call goes through the public wrapper
                kiln.hstu_fwd(eng, q, k, v, out, seq_offsets, L, **kw)
            else:
                st = lib.kiln_hstu_fwd(eng.handle, ctypes.byref(params), stream)
                if st:
                    _capi._check(st, "kiln_hstu_fwd")
            calls[0] += 1
            return out
    else:
        sys.path.insert(0, str(peer_dir))
        from generative_recommenders.ops.triton.triton_hstu_attention import (
            triton_hstu_mha,
        )

        res["peer_dir"] = str(peer_dir)

        def fn():
            return triton_hstu_mha(L, alpha, q, k, v, seq_offsets,
                                   num_targets=num_targets)

    with torch.no_grad():
        # First call: kiln compiles or loads its kernel; the peer autotunes
        # (compiles and times ~29 configurations).
        t0 = time.perf_counter()
        o = fn()
        torch.cuda.synchronize()
        res["first_call_s"] = time.perf_counter() - t0
        _log(f"first call {res['first_call_s']:.2f} s")
        if precompile:
            res["ok"] = True
            res["precompile"] = True
            return res

        # Every element written, no NaN (kiln's out was poisoned with NaN).
        if impl == "kiln":
            out.fill_(float("nan"))
            o = fn()
            torch.cuda.synchronize()
        res["nan_count"] = int(torch.isnan(o).sum())

        ms, timer = _bench_ms(fn, warmup_ms, rep_ms)
        res.update(ms=ms, timer=timer, tflops=flops / (ms * 1e-3) / 1e12)
        _log(f"{impl} {shape['name']}: {ms:.4f} ms, {res['tflops']:.1f} TFLOP/s")

        # Checks: a failure here is recorded but keeps the timing.
        try:
            # Fresh output after timing, for the checks.
            if impl == "kiln":
                out.fill_(float("nan"))
            o = fn()
            torch.cuda.synchronize()

            # fp32 reference on the first and the last sequence.
            errs = []
            for idx in sorted({0, B - 1}):
                ref = _reference(q, k, v, lengths, targets, offs, alpha, L, idx)
                got = o[offs[idx]:offs[idx + 1]]
                errs.append(_diff(got, ref)[0])
            res["ref_rel_err"] = max(errs)
            _log(f"{impl} vs fp32 reference (sequences 0, {B - 1}): "
                 f"rel l2 {res['ref_rel_err']:.3e}")

            # Cross-check against the other implementation's saved output.
            tag = shape_tag(shape)
            mine = Path(work) / f"out_{tag}_{impl}.pt"
            torch.save({"fp": res["input_fingerprint"], "out": o.cpu()}, mine)
            other = [x for x in IMPLS if x != impl][0]
            theirs = Path(work) / f"out_{tag}_{other}.pt"
            if theirs.exists():
                saved = torch.load(theirs)
                if saved["fp"] != res["input_fingerprint"]:
                    res["cross_error"] = (f"input fingerprints differ: {saved['fp']} "
                                          f"vs {res['input_fingerprint']}")
                else:
                    b = saved["out"].to(dev)
                    kiln_o, peer_o = (o, b) if impl == "kiln" else (b, o)
                    rel, mx = _diff(kiln_o, peer_o)
                    res["kiln_vs_peer_rel_l2"] = rel
                    res["kiln_vs_peer_max_rel"] = mx
                    _log(f"kiln vs peer: rel l2 {rel:.3e}, max|d|/max|peer| {mx:.3e}")
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            res["check_error"] = f"{type(e).__name__}: {e}"[:1000]

    res["ok"] = True
    return res


def main_one(args):
    res = {"impl": args.one[0], "shape": args.one[1], "ok": False}
    code = 0
    try:
        res = run_one(args.one[0], parse_shape(args.one[1]), args.work,
                      args.peer_dir, args.precompile, args.warmup_ms, args.rep_ms)
    except BaseException as e:  # noqa: BLE001 - report everything
        traceback.print_exc()
        res["error"] = f"{type(e).__name__}: {e}"[:2000]
        code = 1
    print("RESULT " + json.dumps(res), flush=True)
    # Skip interpreter teardown: a faulted CUDA context can hang or crash in
    # destructors after the result is already out.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# ======================================================================
# Driver.
# ======================================================================


class Child:
    def __init__(self, impl, shape, args, env, log, precompile=False):
        self.impl, self.shape, self.precompile = impl, shape, precompile
        cmd = [sys.executable, str(Path(__file__).resolve()), "--one", impl,
               shape["name"], "--work", str(args.work), "--peer-dir",
               str(args.peer_dir), "--warmup-ms", str(args.warmup_ms),
               "--rep-ms", str(args.rep_ms)]
        if precompile:
            cmd.append("--precompile")
        self.cmd = cmd
        self.log = log
        self.t0 = time.time()
        self.out_path = Path(args.work) / (
            f"log_{'pre_' if precompile else ''}{impl}_{shape_tag(shape)}.txt")
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
        kind = "precompile " if self.precompile else ""
        self.log.write(f"\n===== {kind}{self.impl} {self.shape['name']} "
                       f"(rc {self.proc.returncode}, {wall:.1f} s)\n"
                       f"$ {shlex.join(self.cmd)}\n{text}")
        self.log.flush()
        res = None
        for line in text.splitlines():
            if line.startswith("RESULT "):
                try:
                    res = json.loads(line[len("RESULT "):])
                except json.JSONDecodeError:
                    pass
        if res is None:
            tail = " | ".join(text.strip().splitlines()[-6:])
            why = (f"timed out after {timeout:.0f} s" if timed_out else
                   f"exited with rc {self.proc.returncode} and no result")
            res = {"impl": self.impl, "shape": self.shape["name"], "ok": False,
                   "error": f"{why}: {tail}"[:2000]}
        elif timed_out:
            res["ok"] = False
            res["error"] = f"timed out after {timeout:.0f} s"
        res["wall_s"] = wall
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


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def write_outputs(args, records, started):
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(records, indent=2) + "\n")
    device = next((r["device"] for r in records if r.get("device")), "unknown")
    cmd = os.environ.get("BENCH_COMMAND") or shlex.join(
        ["python3", "bench/bench_hstu.py"] + sys.argv[1:])
    lines = [
        "# HSTU forward: kiln vs generative-recommenders Triton",
        "",
        f"- device: {device}",
        f"- date: {started}",
        f"- command: `{cmd}`",
        f"- peer: {records[0]['peer'] if records else '-'} "
        "(`triton_hstu_mha`, ops/triton/triton_hstu_attention.py)",
        "- bf16, causal, lengths uniform in [max_len/2, max_len] (seeded), int64 "
        "offsets; alpha = 1/sqrt(D), divisor max_len for both (the peer divides by "
        "its first argument); target case: num_targets uniform in [0, 64], "
        "group size 1 (the peer's semantics). The peer has no rab in this API.",
        "- TFLOP/s = sum over sequences of 2*H*D*len^2 / median time "
        "(triton.testing.do_bench, L2 cleared between runs); each (impl, shape) "
        "in its own process.",
        "- ref err: ||out - ref|| / ||ref|| against an fp32 reference on the "
        "first and last sequence; kiln vs peer: ||k - p|| / ||p|| and "
        "max|k - p| / max|p| over the whole output.",
        "",
        "| B | max_len | H | D | mask | kiln TFLOP/s | peer TFLOP/s | kiln/peer "
        "| kiln ms | peer ms | kiln vs peer rel l2 | max rel | kiln ref err "
        "| peer ref err | notes |",
        "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in records:
        s = r["shape"]
        notes = []
        if r.get("kiln_error"):
            notes.append("kiln FAILED: " + r["kiln_error"])
        if r.get("peer_error"):
            notes.append("peer FAILED: " + r["peer_error"])
        if r.get("cross_error"):
            notes.append(r["cross_error"])
        if r.get("check_error"):
            notes.append("check failed: " + r["check_error"])
        if r.get("kiln_nan"):
            notes.append(f"kiln output has {r['kiln_nan']} NaN/unwritten")
        if r.get("peer_nan"):
            notes.append(f"peer output has {r['peer_nan']} NaN")
        note = "; ".join(n.replace("|", "/").replace("\n", " ")[:300] for n in notes)
        lines.append(
            f"| {s['B']} | {s['max_len']} | {s['H']} | {s['D']} | {r['mask']} "
            f"| {fmt(r['kiln_tflops'], '.1f')} | {fmt(r['peer_tflops'], '.1f')} "
            f"| {fmt(r['ratio'], '.2f')} | {fmt(r.get('kiln_ms'), '.3f')} "
            f"| {fmt(r.get('peer_ms'), '.3f')} "
            f"| {fmt(r.get('kiln_vs_peer_rel_l2'), '.2e')} "
            f"| {fmt(r.get('kiln_vs_peer_max_rel'), '.2e')} "
            f"| {fmt(r.get('kiln_ref_err'), '.2e')} "
            f"| {fmt(r.get('peer_ref_err'), '.2e')} | {note} |")
    lines.append("")
    (out_dir / "RESULTS.md").write_text("\n".join(lines))
    return lines


def main_driver(args):
    started = datetime.datetime.now(datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC")
    t_start = time.time()
    deadline = t_start + args.budget
    shapes = [parse_shape(s) for s in args.shapes]
    if args.work is None:
        args.work = tempfile.mkdtemp(prefix="kiln-bench-hstu-")
    Path(args.work).mkdir(parents=True, exist_ok=True)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = child_env(args)
    peer = f"gr-triton@{peer_commit(args.peer_dir)}"
    log = open(out_dir / "bench_hstu.log", "w")
    _log(f"bench_hstu: {len(shapes)} shapes x {list(args.impls)}, work {args.work}, "
         f"budget {args.budget:.0f} s, peer {peer}")
    _log(f"TRITON_CACHE_DIR={env['TRITON_CACHE_DIR']} "
         f"KILN_CACHE_DIR={env['KILN_CACHE_DIR']}")

    # Phase 1: compile everything at once (Triton autotuning compiles ~29
    # configurations per kernel; kiln compiles one key per shape).  Results
    # are discarded; the compiled binaries stay in the shared caches.
    if args.precompile_s > 0:
        t0 = time.time()
        kids = [Child(impl, sh, args, env, log, precompile=True)
                for sh in shapes for impl in args.impls]
        limit = min(args.precompile_s, max(0.0, (deadline - time.time()) * 0.45))
        for c in kids:
            r = c.finish(limit - (time.time() - t0))
            status = (f"ok, first call {r.get('first_call_s', 0):.1f} s"
                      if r.get("ok") else f"FAILED: {r.get('error', '')[:200]}")
            _log(f"precompile {c.impl:6s} {c.shape['name']:20s} {status}")
        _log(f"precompile phase {time.time() - t0:.1f} s")

    # Phase 2: measure, one process at a time, kiln then the peer per shape.
    records = []
    for sh in shapes:
        got = {}
        for impl in args.impls:
            left = deadline - time.time()
            if left < 15:
                got[impl] = {"ok": False, "error": "skipped: time budget spent"}
                _log(f"{impl:6s} {sh['name']:20s} SKIPPED (budget)")
                continue
            c = Child(impl, sh, args, env, log)
            r = c.finish(min(args.child_timeout, left))
            got[impl] = r
            if r.get("ok"):
                _log(f"{impl:6s} {sh['name']:20s} {r['tflops']:8.1f} TFLOP/s "
                     f"({r['ms']:.3f} ms, ref err {r.get('ref_rel_err', 0):.2e}, "
                     f"{r['wall_s']:.0f} s)")
            else:
                _log(f"{impl:6s} {sh['name']:20s} FAILED: {r.get('error', '')[:300]}")
        for f in Path(args.work).glob(f"out_{shape_tag(sh)}_*.pt"):
            f.unlink()
        kr, pr = got.get("kiln", {}), got.get("triton", {})
        lengths, _ = make_lengths(sh)
        rec = {
            "family": "hstu_fwd",
            "shape": {"B": sh["B"], "max_len": sh["max_len"], "H": sh["H"],
                      "D": sh["D"]},
            "shape_name": sh["name"],
            "dtype": "bf16",
            "mask": mask_name(sh),
            "max_targets": sh["targets"],
            "offsets": "int64",
            "lengths": f"uniform [{sh['max_len'] // 2}, {sh['max_len']}] seed {SEED}",
            "total_tokens": sum(lengths),
            "flops": flops_fwd(sh, lengths),
            "kiln_tflops": kr.get("tflops") if kr.get("ok") else None,
            "kiln_ms": kr.get("ms") if kr.get("ok") else None,
            "kiln_error": None if kr.get("ok") else kr.get("error", "not run"),
            "kiln_key": kr.get("kiln_key"),
            "kiln_first_call_s": kr.get("first_call_s"),
            "kiln_ref_err": kr.get("ref_rel_err"),
            "kiln_nan": kr.get("nan_count") or None,
            "peer_nan": pr.get("nan_count") or None,
            "peer": peer,
            "peer_tflops": pr.get("tflops") if pr.get("ok") else None,
            "peer_ms": pr.get("ms") if pr.get("ok") else None,
            "peer_error": None if pr.get("ok") else pr.get("error", "not run"),
            "peer_ref_err": pr.get("ref_rel_err"),
            "ratio": None,
            "kiln_vs_peer_rel_l2": (kr.get("kiln_vs_peer_rel_l2")
                                    or pr.get("kiln_vs_peer_rel_l2")),
            "kiln_vs_peer_max_rel": (kr.get("kiln_vs_peer_max_rel")
                                     or pr.get("kiln_vs_peer_max_rel")),
            "cross_error": kr.get("cross_error") or pr.get("cross_error"),
            "check_error": "; ".join(f"{n}: {x['check_error']}" for n, x in
                                     (("kiln", kr), ("peer", pr))
                                     if x.get("check_error")) or None,
            "timer": kr.get("timer") or pr.get("timer"),
            "device": kr.get("device") or pr.get("device"),
            "torch": kr.get("torch") or pr.get("torch"),
            "date": started,
        }
        if rec["kiln_tflops"] and rec["peer_tflops"]:
            rec["ratio"] = rec["kiln_tflops"] / rec["peer_tflops"]
        records.append(rec)
        write_outputs(args, records, started)  # keep partial results on disk

    lines = write_outputs(args, records, started)
    log.close()
    _log(f"done in {time.time() - t_start:.0f} s; wrote {out_dir}/results.json, "
         f"{out_dir}/RESULTS.md, {out_dir}/bench_hstu.log")
    print("\n".join(lines))
    bad = [r for r in records if r["kiln_error"] or r["peer_error"]]
    return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--one", nargs=2, metavar=("IMPL", "SHAPE"),
                    help="run one measurement (kiln|triton, BxLxHxD[+tN])")
    ap.add_argument("--precompile", action="store_true",
                    help="with --one: first call only (compile/autotune)")
    ap.add_argument("--out-dir", default=str(REPO / "bench"))
    ap.add_argument("--work", default=None,
                    help="scratch folder (outputs exchanged between processes, "
                         "default caches); default: a new temp folder")
    ap.add_argument("--peer-dir", default=str(DEFAULT_PEER_DIR))
    ap.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES)
    ap.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    ap.add_argument("--budget", type=float, default=300.0,
                    help="seconds for the whole driver run; rows left when it "
                         "is spent are recorded as skipped")
    ap.add_argument("--precompile-s", type=float, default=120.0,
                    help="limit of the parallel compile phase (0: skip it)")
    ap.add_argument("--child-timeout", type=float, default=150.0)
    ap.add_argument("--warmup-ms", type=float, default=100.0)
    ap.add_argument("--rep-ms", type=float, default=500.0)
    args = ap.parse_args()
    if args.one:
        if args.one[0] not in IMPLS:
            ap.error(f"--one: impl must be one of {IMPLS}")
        if args.work is None:
            args.work = tempfile.mkdtemp(prefix="kiln-bench-hstu-")
        main_one(args)
    sys.exit(main_driver(args))


if __name__ == "__main__":
    main()
