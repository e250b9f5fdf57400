#!/usr/bin/env bash
# device_run.sh -- every GPU test in one call on the GPU machine.
#
#   bash tests/device_run.sh OUT_DIR [--python] [--peers] [--memcheck]
#
# Run from the repository root with build/ built here and carried (the test
# binaries find libcmocka.so.0 in build/lib).  Writes one log per suite into
# OUT_DIR and prints a summary last.
set -u
OUT=${1:?usage: bash tests/device_run.sh OUT_DIR [--python] [--peers] [--memcheck]}
shift
mkdir -p "$OUT"
export KILN_CACHE_DIR=${KILN_CACHE_DIR:-/tmp/kiln-device-cache}
# The test programs link build/libkiln.a: one that linked another (its
# .lib digest, written by the Makefile) would test old code.
lib_sum=$(cksum < build/libkiln.a)
stale=""
for t in build/tests/test_*; do
    case "$t" in *.lib) continue ;; esac
    [ "$(cat "$t.lib" 2>/dev/null)" = "$lib_sum" ] || stale="$stale ${t#build/tests/}"
done
if [ -n "$stale" ]; then
    echo "device_run.sh: linked another build/libkiln.a (run 'make tests' and carry build/):$stale" >&2
    exit 2
fi
export PYTHONUNBUFFERED=1
summary=""
run() { # name timeout command...
    local name=$1 t=$2
    shift 2
    local t0=$(date +%s)
    timeout "$t" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    summary="$summary
$name: exit $rc in $(( $(date +%s) - t0 )) s; $(grep -E 'gpu: [0-9]+ cases|passed|failed' "$OUT/$name.log" | tail -1)"
}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
run test_hstu_gpu 300 build/tests/test_hstu_gpu
run test_hstu_bwd_gpu 300 build/tests/test_hstu_bwd_gpu
run test_hstu_fp8_gpu 200 build/tests/test_hstu_fp8_gpu
# On sm_90a the defaults are the Hopper kernels: run the portable ones too.
run test_hstu_gpu_mma 300 env KILN_FWD_IMPL=mma build/tests/test_hstu_gpu
run test_hstu_bwd_gpu_mma 300 env KILN_BWD_IMPL=mma build/tests/test_hstu_bwd_gpu
run test_hstu_fp8_gpu_mma 200 env KILN_FWD_IMPL=mma build/tests/test_hstu_fp8_gpu
run test_engine 120 build/tests/test_engine
for a in "$@"; do
    case "$a" in
    --python)
        run pytest 300 env -C python python3 -m pytest tests -q -rs -p no:cacheprovider \
            --junitxml="$OUT/pytest.xml"
        ;;
    --memcheck)
        for t in test_hstu_gpu test_hstu_bwd_gpu test_hstu_fp8_gpu; do
            run memcheck_$t 400 compute-sanitizer --tool memcheck --error-exitcode 9 \
                build/tests/$t
        done
        ;;
    --peers)
        run peers 300 bash python/tests/run_nvidia_suites.sh "$OUT/peers" --max 32 --timeout 150
        ;;
    esac
done
echo "$summary"
