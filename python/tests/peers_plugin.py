"""pytest plugin for running the peers' HSTU test suites on kiln (the drop-in
proof).  Loaded by run_nvidia_suites.sh with `-p peers_plugin`; configured
by environment variables:

  KILN_PEERS_SUITE   "nvidia" (recsys-examples corelib/hstu/test.py) or
                     "fbgemm" (fbgemm_gpu/experimental/hstu/test/hstu_test.py)
  KILN_PEERS_OUT     directory for <suite>_summary.json
  KILN_NV_EVERY      NVIDIA: run every Nth real case, in the order of the
                     SHA-1 of their node ids (0: about 48 cases)
  KILN_NV_OFFSET     NVIDIA: start of the every-Nth walk (default 0)
  KILN_NV_SHARD      NVIDIA: "K/N": of the selected cases keep the K-th of N
  KILN_NV_MAX        NVIDIA: at most this many real cases (0: no cap)
  KILN_NV_FP8        NVIDIA: also run this many fp8 cases, round-robin over
                     quant_mode, every other one with a func mask (default 4)
  KILN_NV_FUNC       NVIDIA: also run this many arbitrary-mask (func) cases
                     (default 4)

What it does:
- points the imports at kiln: `hstu_attn_interface` and `hstu_attn` ->
  kiln.compat.hstu_attn_interface, `hstu` -> kiln.compat.hstu (through thin
  wrappers that count calls); provides `einops.rearrange` for the one pattern
  the tests use if einops is not installed;
- NVIDIA: classifies every collected case from its parameters, the way
  test.py itself decides: "early" (test.py returns before testing anything:
  delta-q with contexts or targets, contexts without the causal mask),
  "func" (arbitrary masks, sampled on their own), "fp8" (test_fused_attn_fp8,
  with or without func, sampled on their own), "paged" (sm8x only), "real";
  then keeps a fixed every-Nth sample of the real ones (node ids ordered by
  their SHA-1, which mixes parameters);
- FBGEMM: skips the fp8 class, makes hypothesis deterministic (derandomize,
  no database, no shrinking), and turns an example that needs a missing
  feature into a rejected example (hypothesis.reject) instead of a failure;
  counts the examples that ran on kiln, returned early, or were rejected;
- a kiln.Unsupported raised by a test becomes a skip with kiln's message;
- writes <suite>_summary.json after every test (a timeout keeps what ran).

`python3 peers_plugin.py summary OUTDIR` prints the combined report.
"""

import collections
import functools
import itertools
import json
import logging
import os
import sys
import time
import types

SUITE = os.environ.get("KILN_PEERS_SUITE", "")
OUT = os.environ.get("KILN_PEERS_OUT", ".")

STATE = {
    "suite": SUITE,
    "started": time.time(),
    "classes": {},          # class -> count (NVIDIA, all collected)
    "by_test": {},          # test function -> {class: count}
    "selection": {},
    "outcomes": collections.Counter(),
    "skip_reasons": collections.Counter(),
    "failed": [],
    "kiln_calls": 0,
    "real_ran": 0,           # ran and called kiln
    "passed_without_kiln": [],
    "unsupported": collections.Counter(),
    "early_returns": collections.Counter(),
    "examples": {},          # FBGEMM test -> {"kiln": n, "early": n, "rejected": n}
    "revision": os.environ.get("KILN_PEERS_REV", ""),
}


def _save():
    if not SUITE:
        return
    path = os.path.join(OUT, f"{SUITE}_summary.json")
    data = dict(STATE)
    for k in ("outcomes", "skip_reasons", "unsupported", "early_returns"):
        data[k] = dict(STATE[k])
    data["elapsed_s"] = round(time.time() - STATE["started"], 1)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


# ------------------------------------------------------------ the imports
_current = {"test": None}


def _counting(mod_name, fn, in_hypothesis):
    import kiln

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            out = fn(*args, **kwargs)
        except kiln.Unsupported as e:
            STATE["unsupported"][e.argument] += 1
            _example("rejected")
            if in_hypothesis and _in_hypothesis_example():
                import hypothesis

                hypothesis.reject()
            raise
        STATE["kiln_calls"] += 1
        _example("kiln")
        return out

    return wrapper


def _in_hypothesis_example():
    try:
        from hypothesis import currently_in_test_context

        return currently_in_test_context()
    except ImportError:  # older hypothesis
        from hypothesis.control import _current_build_context

        return _current_build_context.value is not None


def _example(kind):
    t = _current["test"]
    if t is None or SUITE != "fbgemm":
        return
    STATE["examples"].setdefault(t, {"kiln": 0, "early": 0, "rejected": 0})[kind] += 1


def _wrap_module(name, real, in_hypothesis):
    m = types.ModuleType(name)
    m.__dict__.update({k: v for k, v in vars(real).items() if not k.startswith("__")})
    m.__doc__ = real.__doc__
    m.__file__ = getattr(real, "__file__", None)
    for fn in ("hstu_attn_varlen_func", "hstu_attn_qkvpacked_func"):
        setattr(m, fn, _counting(name, getattr(real, fn), in_hypothesis))
    return m


def _einops_shim():
    try:
        import einops  # noqa: F401

        return
    except ImportError:
        pass
    e = types.ModuleType("einops")

    def rearrange(x, pattern, **sizes):
        # The peers' tests use exactly "(b s) ... -> b s ...".
        if pattern.replace(" ", "") != "(bs)...->bs..." or "b" not in sizes:
            raise NotImplementedError(f"einops shim: pattern {pattern!r}")
        return x.reshape(sizes["b"], -1, *x.shape[1:])

    e.rearrange = rearrange
    e.__kiln_shim__ = True
    sys.modules["einops"] = e


class _EarlyReturnLog(logging.Handler):
    """FBGEMM's test logs "Skipping test for ..." when it returns early."""

    def emit(self, record):
        msg = record.getMessage()
        if msg.startswith("Skipping test for"):
            STATE["early_returns"][msg[len("Skipping test for "):]] += 1
            _example("early")


def pytest_configure(config):
    if not SUITE:
        return
    _einops_shim()
    import kiln.compat.hstu as fb
    import kiln.compat.hstu_attn_interface as nv

    if SUITE == "nvidia":
        w = _wrap_module("hstu_attn_interface", nv, in_hypothesis=False)
        sys.modules["hstu_attn_interface"] = w
        sys.modules["hstu_attn"] = w
    else:
        sys.modules["hstu"] = _wrap_module("hstu", fb, in_hypothesis=True)
        from hypothesis import HealthCheck, Phase, settings

        settings.register_profile(
            "kiln-peers", derandomize=True, database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck), print_blob=True)
        settings.load_profile("kiln-peers")
        h = _EarlyReturnLog(level=logging.INFO)
        logging.getLogger().addHandler(h)
        logging.getLogger().setLevel(logging.INFO)
    _save()


# ------------------------------------------------------------ NVIDIA cases
def _classify_nvidia(item):
    name = item.originalname if hasattr(item, "originalname") else item.name
    params = getattr(getattr(item, "callspec", None), "params", {})
    if name == "test_paged_kv_attn":
        return "paged"
    if name not in ("test_fused_attn", "test_fused_attn_fp8"):
        return "other"
    mq, mk = params["max_seq_len_q"], params["max_seq_len_k"]
    ctx, tgt = params["max_context_len"] > 0, params["max_target_len"] > 0
    w = params["window_size"]
    causal = w[0] == -1 and w[1] == 0
    delta = mq < mk
    early = ((delta and tgt) or (delta and ctx) or (not causal and ctx)
             or ((w[0] > 0 or w[1] > 0) and ctx))
    if name == "test_fused_attn_fp8":
        qm, fb, alpha = params["quant_mode"], params["full_batch"], params["alpha"]
        tq = params["max_context_len"] + mq + params["max_target_len"]
        tk = params["max_context_len"] + mk + params["max_target_len"]
        early = early or (qm == 0 and alpha < 0.5) or (
            qm > 0 and (tq % 16 or tk % 16 or not fb))
        if early:
            return "fp8-early"
        # kiln runs every quant_mode, with func too (1 and 2, and any mode
        # with func, at 16 bits)
        return "fp8"
    if early:
        return "early"
    if params["is_arbitrary"]:
        return "func"
    return "real"


def _stable_key(item):
    import hashlib

    return hashlib.sha1(item.nodeid.encode()).hexdigest()


def _params(item):
    return getattr(getattr(item, "callspec", None), "params", {})


def _select_nvidia(items, config):
    import pytest

    classes = collections.defaultdict(list)
    by_test = collections.defaultdict(collections.Counter)
    for it in items:
        c = _classify_nvidia(it)
        classes[c].append(it)
        by_test[getattr(it, "originalname", it.name)][c] += 1
    STATE["classes"] = {c: len(v) for c, v in classes.items()}
    STATE["by_test"] = {t: dict(c) for t, c in by_test.items()}
    # A fixed order that mixes the parameters: sorted node ids walk the last
    # parametrize axis slowest, so an every-Nth stride would alias with it.
    real = sorted(classes["real"], key=_stable_key)
    every = int(os.environ.get("KILN_NV_EVERY", "0") or 0)
    if every <= 0:
        every = max(1, len(real) // 48)
    offset = int(os.environ.get("KILN_NV_OFFSET", "0") or 0)
    if not 0 <= offset < every:
        # an offset of every or more walks the sample of offset % every
        raise pytest.UsageError(f"KILN_NV_OFFSET={offset}: want 0 <= K < {every} (the stride); "
                                f"K >= {every} repeats the cases of K % {every}")
    picked = real[offset::every]
    shard = os.environ.get("KILN_NV_SHARD", "1/1")
    k, n = (int(x) for x in shard.split("/"))
    if not (1 <= k <= n):
        raise pytest.UsageError(f"KILN_NV_SHARD={shard}: want K/N with 1 <= K <= N")
    picked = picked[k - 1::n]
    cap = int(os.environ.get("KILN_NV_MAX", "0") or 0)
    if cap > 0:
        picked = picked[:cap]
    extra = []
    n_func = int(os.environ.get("KILN_NV_FUNC", "4") or 0)
    n_fp8 = int(os.environ.get("KILN_NV_FP8", "4") or 0)
    if k == 1 and n_func > 0:
        extra += sorted(classes["func"], key=_stable_key)[:n_func]
    if k == 1 and n_fp8 > 0:
        # round-robin over quant_mode, so that a few cases cover every mode,
        # and every other one with a func mask (a tenth of the fp8 cases,
        # which a plain round-robin would seldom pick)
        def round_robin(its):
            by_mode = collections.defaultdict(list)
            for it in its:
                by_mode[_params(it).get("quant_mode")].append(it)
            return [x for grp in itertools.zip_longest(*[by_mode[m] for m in sorted(by_mode)])
                    for x in grp if x is not None]
        fp8 = sorted(classes["fp8"], key=_stable_key)
        plain = round_robin([i for i in fp8 if not _params(i).get("is_arbitrary")])
        func = round_robin([i for i in fp8 if _params(i).get("is_arbitrary")])
        nf = min(n_fp8 // 2, len(func))
        extra += plain[:n_fp8 - nf] + func[:nf]
    STATE["selection"] = dict(real=len(real), every=every, offset=offset, shard=shard,
                              cap=cap, selected_real=len(picked),
                              unsupported_samples=len(extra),
                              func_samples=min(n_func, len(classes["func"])) if k == 1 else 0,
                              fp8_samples=min(n_fp8, len(classes["fp8"])) if k == 1 else 0)
    keep = set(id(i) for i in picked + extra)
    return [i for i in items if id(i) in keep], [i for i in items if id(i) not in keep]


def pytest_collection_modifyitems(session, config, items):
    if SUITE == "nvidia":
        kept, dropped = _select_nvidia(items, config)
        if dropped:
            config.hook.pytest_deselected(items=dropped)
        items[:] = kept
    elif SUITE == "fbgemm":
        # HSTU8Test runs: examples with quant_mode 1 or 2 (kiln.Unsupported)
        # are rejected by hypothesis and counted as rejected
        STATE["classes"] = {"collected": len(items)}
    _save()


# ----------------------------------------------------------- outcomes
def pytest_runtest_setup(item):
    item._kiln_calls0 = STATE["kiln_calls"]
    _current["test"] = item.nodeid


def _is_unsupported(excinfo):
    if excinfo is None:
        return False
    try:
        import kiln

        return excinfo.errisinstance(kiln.Unsupported)
    except Exception:
        return False


try:
    import pytest as _pytest

    @_pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(item, call):
        outcome = yield
        rep = outcome.get_result()
        if not SUITE:
            return
        if call.when == "call" and _is_unsupported(call.excinfo):
            msg = str(call.excinfo.value)
            msg = msg[len("kiln: "):] if msg.startswith("kiln: ") else msg
            rep.outcome = "skipped"
            rep.longrepr = (str(item.path), item.location[1] or 0,
                            f"Skipped: kiln.Unsupported: {msg}")
        calls = STATE["kiln_calls"] - getattr(item, "_kiln_calls0", STATE["kiln_calls"])
        if call.when == "call" or (call.when == "setup" and rep.outcome != "passed"):
            rep.user_properties.append(("kiln_calls", calls))
            STATE["outcomes"][rep.outcome] += 1
            if rep.outcome == "skipped":
                reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(
                    rep.longrepr)
                STATE["skip_reasons"][reason.replace("Skipped: ", "")[:200]] += 1
            elif rep.outcome == "failed":
                STATE["failed"].append(item.nodeid)
                if calls:
                    STATE["real_ran"] += 1
            else:
                if calls:
                    STATE["real_ran"] += 1
                elif SUITE == "nvidia":
                    STATE["passed_without_kiln"].append(item.nodeid)
            _save()
        if call.when == "teardown":
            _current["test"] = None
except ImportError:  # imported as a script for the summary
    pass


def pytest_sessionfinish(session, exitstatus):
    if SUITE:
        STATE["exitstatus"] = int(exitstatus)
        _save()


# -------------------------------------------------------------- summary
def _load(out, suite):
    p = os.path.join(out, f"{suite}_summary.json")
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)


def summary(out):
    total = collections.Counter()
    lines = []
    nv = _load(out, "nvidia")
    if nv:
        s = nv["selection"]
        lines.append(f"NVIDIA recsys-examples corelib/hstu/test.py {nv['revision']}".rstrip())
        if nv.get("by_test"):
            for t, cl in sorted(nv["by_test"].items()):
                lines.append(f"  collected {t}: " + ", ".join(
                    f"{k} {v}" for k, v in sorted(cl.items())))
        lines.append(
            "  classes: real = tested by test.py on kiln; early = test.py returns before "
            "testing (delta-q with contexts/targets, contexts without causal); func = "
            "arbitrary mask; fp8 = quant_mode 0 to 5 (1 and 2, and any with func, "
            "computed at 16 bits); paged = sm8x only")
        if s:
            lines.append(f"  selected {s['selected_real']} of {s['real']} real cases "
                         f"(every {s['every']}th from {s['offset']}, shard {s['shard']}"
                         f"{', cap %d' % s['cap'] if s['cap'] else ''}) + "
                         f"{s['unsupported_samples']} func and fp8 samples"
                         f" ({s.get('func_samples', 0)} func, {s.get('fp8_samples', 0)} fp8)")
        lines += _outcome_lines(nv)
        if nv["passed_without_kiln"]:
            lines.append(f"  WARNING: {len(nv['passed_without_kiln'])} passed without "
                         f"calling kiln: {nv['passed_without_kiln'][:3]}")
        total.update(nv["outcomes"])
    fb = _load(out, "fbgemm")
    if fb:
        lines.append(f"FBGEMM fbgemm_gpu/experimental/hstu/test/hstu_test.py "
                     f"{fb['revision']}".rstrip())
        for t, ex in sorted(fb.get("examples", {}).items()):
            lines.append(f"  {t.split('::', 1)[-1]}: {sum(ex.values())} examples: "
                         f"{ex['kiln']} ran on kiln, {ex['early']} returned early, "
                         f"{ex['rejected']} rejected (need a feature kiln lacks)")
        if fb.get("unsupported"):
            lines.append("  rejected by argument: " + ", ".join(
                f"{k} {v}" for k, v in sorted(fb["unsupported"].items())))
        lines += _outcome_lines(fb)
        total.update(fb["outcomes"])
    if not lines:
        return "no summaries in " + out
    lines.append(f"TOTAL ran {sum(total.values())}: passed {total['passed']}, "
                 f"failed {total['failed']}, skipped {total['skipped']}")
    return "\n".join(lines)


def _outcome_lines(d):
    o = d["outcomes"]
    out = [f"  ran {sum(o.values())}: passed {o.get('passed', 0)}, failed "
           f"{o.get('failed', 0)}, skipped {o.get('skipped', 0)}; kiln was called in "
           f"{d['real_ran']} of them ({d['kiln_calls']} calls) in {d.get('elapsed_s', 0)} s"]
    for reason, n in sorted(d["skip_reasons"].items(), key=lambda x: -x[1]):
        out.append(f"    skipped {n}: {reason}")
    for nodeid in d["failed"][:20]:
        out.append(f"    FAILED {nodeid}")
    if len(d["failed"]) > 20:
        out.append(f"    ... and {len(d['failed']) - 20} more failures")
    return out


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "summary":
        print(summary(sys.argv[2]))
    else:
        print(__doc__)
        sys.exit(2)
