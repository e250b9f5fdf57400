#!/usr/bin/env bash
# run_device.sh -- every kiln benchmark in one call on the GPU machine.
#
#   bash bench/run_device.sh OUT_DIR
#
# Run from the repository root with build/ already built (libkiln.so,
# bench-engine: `make bench`) and the peer at .peers/generative-recommenders
# (see bench/bench_hstu.py).  Writes into OUT_DIR, five files:
#   run_device.log   everything printed (environment, both benches)
#   engine.jsonl     bench-engine's JSON lines (compile, first call, per call)
#   bench_hstu.log   every bench_hstu subprocess's output
#   results.json     HSTU records (fwd, fwd+bwd, bwd; bf16, fp8, rab), kiln vs
#                    the peer, with device, date, command and both commits
#   RESULTS.md       the issue's table: kiln, peer, ratio, target, pass/miss
# Ends within about 9 minutes (KILN_BENCH_TOTAL_S, default 530 s): each step
# has a time limit, and bench_hstu records the rows it had no time for as
# skipped.  Name the commit the binaries were built from (the GPU machine's
# .git may be older than its working tree): `git rev-parse HEAD >
# build/KILN_COMMIT` before carrying build/, or KILN_COMMIT=<sha>.
set -u

OUT=${1:?usage: bash bench/run_device.sh OUT_DIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
# Shared libraries the image may lack (libxxhash.so.0, libsqlite3.so.0) can be
# dropped into build/deps/ here and carried with build/.
export LD_LIBRARY_PATH="$(pwd)/build/deps${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
TOTAL_S=${KILN_BENCH_TOTAL_S:-530}   # whole script, seconds

main() {
    local t0 now left rc_engine=0 rc_hstu=0
    t0=$(date +%s)
    WORK=$(mktemp -d /tmp/kiln-bench-XXXXXX)
    export KILN_CACHE_DIR=$WORK/kiln-cache
    export TRITON_CACHE_DIR=$WORK/triton-cache
    unset TRITON_CACHE_AUTOTUNING

    echo "== kiln run_device.sh  $(date -u '+%Y-%m-%d %H:%M:%S UTC')  repo $(pwd)"
    echo "-- environment"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,power.draw,utilization.gpu \
        --format=csv 2>&1 | head -5
    python3 -c 'import sys, torch, triton; print("python", sys.version.split()[0], "torch", torch.__version__, "triton", triton.__version__, "cuda", torch.version.cuda)' 2>&1 | tail -1
    echo "peer: $(cat .peers/generative-recommenders/PEER_COMMIT 2>/dev/null || echo 'MISSING .peers/generative-recommenders')"
    echo "kiln: ${KILN_COMMIT:-$(cat build/KILN_COMMIT 2>/dev/null || git rev-parse HEAD 2>/dev/null || echo 'unknown (no KILN_COMMIT, build/KILN_COMMIT or git)')}  KILN_FWD_IMPL=${KILN_FWD_IMPL:-(unset)}"
    if [ -e build/libkiln.so ]; then
        ldd build/libkiln.so | grep -E 'not found|sqlite|xxhash' || true
    else
        echo "build/libkiln.so MISSING"
    fi
    echo "KILN_CACHE_DIR=$KILN_CACHE_DIR TRITON_CACHE_DIR=$TRITON_CACHE_DIR"

    echo
    echo "-- 1. bench-engine (compile, first call in a new process, per-call cost)"
    if [ -x build/bench-engine ]; then
        timeout 150 build/bench-engine --json "$OUT/engine.jsonl" \
            --cache-dir "$KILN_CACHE_DIR" --calls 10000
        rc_engine=$?
        [ $rc_engine -eq 124 ] && echo "bench-engine TIMED OUT (150 s)"
        echo "bench-engine rc=$rc_engine ($(( $(date +%s) - t0 )) s so far)"
    else
        rc_engine=127
        echo "bench-engine NOT RUN: build/bench-engine does not exist (run 'make bench' before the call and carry build/)"
    fi

    echo
    echo "-- 2. bench_hstu.py (kiln vs gr-triton, each (impl, row) in its own process)"
    now=$(date +%s)
    left=$(( TOTAL_S - (now - t0) - 20 ))
    [ $left -gt 480 ] && left=480
    if [ $left -lt 60 ]; then
        echo "only ${left}s left: bench_hstu gets 60 s (the script may overrun)"
        left=60
    fi
    BENCH_COMMAND="bash bench/run_device.sh \$OUT" \
        timeout $(( left + 30 )) python3 bench/bench_hstu.py --out-dir "$OUT" \
        --work "$WORK/hstu" --budget "$left"
    rc_hstu=$?
    [ $rc_hstu -eq 124 ] && echo "bench_hstu.py TIMED OUT"
    [ -s "$OUT/engine.jsonl" ] && [ -e "$OUT/RESULTS.md" ] && python3 bench/engine_table.py "$OUT"
    echo
    echo "== done in $(( $(date +%s) - t0 )) s: bench-engine rc=$rc_engine, bench_hstu rc=$rc_hstu"
    ls -l "$OUT"
    rm -rf "$WORK"
    [ $rc_engine -eq 0 ] && [ $rc_hstu -eq 0 ]
}

main 2>&1 | tee "$OUT/run_device.log"
exit "${PIPESTATUS[0]}"
