"""engine_table.py -- append bench-engine's numbers (engine.jsonl) to RESULTS.md.

    python3 bench/engine_table.py OUT_DIR
"""
import json
import sys


def main(out_dir):
    rows = [json.loads(l) for l in open(f"{out_dir}/engine.jsonl") if l.strip()]
    md = ["", "## Engine latency (bench/bench_engine.c)", ""]
    env = next((r for r in rows if r.get("bench") == "env"), {})
    md.append(f"- device {env.get('device')} ({env.get('arch')}), NVRTC {env.get('nvrtc')}, "
              f"kiln {env.get('kiln')}, {env.get('date')}")
    md += ["", "| key | cold compile (NVRTC) ms | regs | spills | cubin bytes | "
               "new process: engine create ms | first call ms (SQLite hit + load + launch) |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    first = {r["config"]: r.get("child", {}) for r in rows if r.get("bench") == "first_call"}
    for r in rows:
        if r.get("bench") != "cold_compile":
            continue
        c = first.get(r["config"], {})
        md.append(f"| `{r['key']}` | {r.get('cache_compile_ms', 0):.0f} | {r.get('regs')} | "
                  f"{r.get('spills')} | {r.get('cubin_bytes')} | "
                  f"{c.get('engine_create_ms', float('nan')):.2f} | "
                  f"{c.get('first_call_ms', float('nan')):.2f} |")
    for r in rows:
        if r.get("bench") == "steady_state" and r.get("ok"):
            md += ["", f"Steady state, {r['calls']} back-to-back calls of `{r['key']}` "
                       f"(tiny problem, host time per call): kiln_hstu_fwd "
                       f"{r['kiln_host_us']:.2f} us (best batch {r['kiln_host_us_best_batch']:.2f}), "
                       f"a raw cuLaunchKernel of an empty kernel with the same "
                       f"{r['raw_param_bytes']}-byte parameter block {r['raw_host_us']:.2f} us "
                       f"(best {r['raw_host_us_best_batch']:.2f}): kiln's own cost is the difference."]
    with open(f"{out_dir}/RESULTS.md", "a") as f:
        f.write("\n".join(md) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
