#!/usr/bin/env bash
# run_nvidia_suites.sh OUTDIR [options] -- the drop-in proof: the peers' own HSTU
# test suites, unchanged, with their imports pointed at kiln.
#
#   NVIDIA recsys-examples corelib/hstu/test.py, `hstu_attn_interface` ->
#       kiln.compat.hstu_attn_interface; a fixed every-Nth sample (by node id)
#       of the cases test.py really tests (it returns early from many
#       parameter combinations: those are counted, not run);
#   FBGEMM fbgemm_gpu/experimental/hstu/test/hstu_test.py, whole, `hstu` ->
#       kiln.compat.hstu (hypothesis made deterministic).
#
# Needs the two test files under .peers/ (ignored by git):
#   .peers/recsys-examples/corelib/hstu/test.py
#   .peers/FBGEMM/fbgemm_gpu/experimental/hstu/test/hstu_test.py
# and python3 with torch, pytest and hypothesis (einops is optional: a shim
# covers the one pattern the tests use), a GPU (sm_90 for NVIDIA's suite), and
# libkiln.so (build/ or $KILN_LIB).
#
# Options:
#   --shard K/N          NVIDIA: of the sampled cases run the K-th share of N
#   --every N            NVIDIA: every Nth real case (default: about 48 cases)
#   --offset K           NVIDIA: start the every-Nth walk at K, 0 <= K < N
#                        (default 0; shards of one N at distinct K are disjoint)
#   --max N              NVIDIA: at most N real cases
#   --fp8 N              NVIDIA: also run N fp8 cases, round-robin over
#                        quant_mode 0 to 5, half of them with a func mask
#                        (default 4; 0: none)
#   --unsupported N      ignored (kept for old command lines): no NVIDIA case
#                        needs a feature kiln lacks now; 4 func cases always
#                        run
#   --fbgemm-examples N  FBGEMM: hypothesis examples per test (FBGEMM's: 20)
#   --only nvidia|fbgemm run one suite
#   --timeout S          per-suite wall-clock limit in seconds (default 600)
#   --collect-only       classify and select, run nothing
#
# Writes OUTDIR/{nvidia,fbgemm}.xml (junit), .log, _summary.json and prints
# ran / passed / failed / skipped with the reasons.  Exit status 0 when
# nothing failed.  PYTHON picks the interpreter (default python3);
# KILN_CACHE_DIR the kernel cache (default $TMPDIR/kiln-peers-cache);
# KILN_PEERS_DIR where the peers are (default <repo>/.peers).
set -u

usage() { sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 1 ] || usage
case "$1" in -h|--help) usage ;; esac
OUT=$1; shift

SHARD=1/1 EVERY=0 OFFSET=0 MAX=0 FP8=4 FB_EX= ONLY= TIMEOUT=600 COLLECT=
while [ $# -gt 0 ]; do
    case "$1" in
    --shard) SHARD=$2; shift 2 ;;
    --every) EVERY=$2; shift 2 ;;
    --offset) OFFSET=$2; shift 2 ;;
    --max) MAX=$2; shift 2 ;;
    --unsupported) shift 2 ;;
    --fp8) FP8=$2; shift 2 ;;
    --fbgemm-examples) FB_EX=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --collect-only) COLLECT=--collect-only; shift ;;
    *) echo "run_nvidia_suites.sh: unknown option $1" >&2; usage ;;
    esac
done
case "$SHARD" in */*) ;; *) echo "--shard wants K/N" >&2; exit 2 ;; esac

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PY=${PYTHON:-python3}
PEERS=${KILN_PEERS_DIR:-$REPO/.peers}
NV_TEST=$PEERS/recsys-examples/corelib/hstu/test.py
FB_TEST=$PEERS/FBGEMM/fbgemm_gpu/experimental/hstu/test/hstu_test.py

mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
WORK=$OUT/work
rm -rf "$WORK" && mkdir -p "$WORK/nvidia" "$WORK/fbgemm"
rm -f "$OUT"/nvidia_summary.json "$OUT"/fbgemm_summary.json

export PYTHONPATH="$REPO/python:$HERE${PYTHONPATH:+:$PYTHONPATH}"
# Libraries the image may lack (libsqlite3, libxxhash) can sit in build/deps.
export LD_LIBRARY_PATH="$REPO/build/deps${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Compiled kernels: kept out of OUTDIR (set KILN_CACHE_DIR to share a cache).
export KILN_CACHE_DIR=${KILN_CACHE_DIR:-${TMPDIR:-/tmp}/kiln-peers-cache}
export PYTHONUNBUFFERED=1
export KILN_PEERS_OUT=$OUT
export KILN_NV_EVERY=$EVERY KILN_NV_OFFSET=$OFFSET KILN_NV_SHARD=$SHARD
export KILN_NV_MAX=$MAX KILN_NV_FP8=$FP8

"$PY" - <<'EOF' || exit 2
import sys
for m in ("torch", "pytest", "hypothesis"):
    try:
        __import__(m)
    except ImportError:
        sys.exit(f"run_nvidia_suites.sh: {sys.executable} has no {m}")
import kiln
print(f"kiln {kiln.__file__}, libkiln {kiln.library_path()}")
EOF

rev() {  # the peer revision recorded next to the copied test, if any
    [ -f "$1/REVISION" ] && head -c 12 "$1/REVISION"
}

# pytest options common to both suites: our plugin, no cache in the repo, no
# reordering plugins, skip reasons in the terminal summary.
PYTEST_OPTS="-p peers_plugin -p no:cacheprovider -p no:randomly -rs -q"
PYTEST_OPTS="$PYTEST_OPTS -o console_output_style=classic -o junit_family=xunit1"

status=0
run_suite() {  # suite test_file
    suite=$1 src=$2
    dst=$WORK/$suite/$(basename "$src")
    cp "$src" "$dst"
    if [ "$suite" = fbgemm ] && [ -n "$FB_EX" ]; then
        sed -i "s/^_MAX_SAMPLES: int = [0-9]*/_MAX_SAMPLES: int = $FB_EX/" "$dst"
    fi
    echo "=== $suite: $(basename "$src") $(rev "$(dirname "$src")")"
    (
        cd "$WORK/$suite" &&
        KILN_PEERS_SUITE=$suite KILN_PEERS_REV=$(rev "$(dirname "$src")") \
            timeout "$TIMEOUT" "$PY" -m pytest "$(basename "$dst")" $PYTEST_OPTS \
            --rootdir="$WORK/$suite" --junitxml="$OUT/$suite.xml" $COLLECT
    ) >"$OUT/$suite.log" 2>&1
    rc=$?
    tail -n 25 "$OUT/$suite.log" | grep -v '^DEBUG' | sed 's/^/    /'
    case $rc in
    0|5) ;;                       # 5: nothing selected (e.g. --collect-only)
    124) echo "=== $suite: timed out after $TIMEOUT s (summary keeps what ran)"; status=1 ;;
    *) status=1 ;;
    esac
}

missing=
if [ "$ONLY" != fbgemm ]; then
    if [ -f "$NV_TEST" ]; then run_suite nvidia "$NV_TEST"; else missing="$missing $NV_TEST"; fi
fi
if [ "$ONLY" != nvidia ]; then
    if [ -f "$FB_TEST" ]; then run_suite fbgemm "$FB_TEST"; else missing="$missing $FB_TEST"; fi
fi
if [ -n "$missing" ]; then
    echo "run_nvidia_suites.sh: missing peer tests:$missing" >&2
    echo "  fetch NVIDIA/recsys-examples and pytorch/FBGEMM and copy those files there" >&2
    status=1
fi

echo
echo "=== summary ($OUT)"
"$PY" "$HERE/peers_plugin.py" summary "$OUT"
exit $status
