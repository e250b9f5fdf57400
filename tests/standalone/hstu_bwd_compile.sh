#!/bin/bash
# hstu_bwd_compile.sh MODE OUTDIR [JOBS] -- build a cubin for every variant
# that hstu_bwd_variants.py MODE lists (nvcc -cubin, the same front end and
# options as NVRTC) and write OUTDIR/resources.txt: registers, stack and
# spills of each entry.  Fails if any entry spills or has a stack frame.
set -e
here=$(cd "$(dirname "$0")" && pwd)
tdir="$here/../../templates"
mode=${1:-all}; out=${2:-/tmp/kiln_bwd_cubins}; jobs=${3:-$(nproc)}
mkdir -p "$out"
python3 "$here/hstu_bwd_variants.py" "$mode" > "$out/variants.txt"
build_one() {
    set -- $1
    name=$1; arch=$2
    archnum=$(echo "$arch" | tr -dc 0-9)
    cat > "$out/$name.cu" <<EOP
#define KILN_ARCH ${archnum}0
#define KILN_DTYPE $3
#define KILN_HEAD_DIM $4
#define KILN_BLOCK_M $5
#define KILN_BLOCK_N $6
#define KILN_WARPS $7
#define KILN_CAUSAL $8
#define KILN_LOCAL $9
#define KILN_CONTEXT ${10}
#define KILN_TARGET ${11}
#define KILN_DELTA_Q ${12}
#define KILN_RAB ${13}
#define KILN_DRAB ${14}
#define KILN_DETERMINISTIC ${15}
$(echo "${16}" | tr ',' '\n' | sed -n 's/^\(KILN_[A-Z0-9_]*\)=\(.*\)$/#define \1 \2/p')
#include "hstu_bwd.cu"
EOP
    if [ "$arch" = sm_90a ]; then ga="-gencode=arch=compute_90a,code=sm_90a"; else ga="-arch=$arch"; fi
    nvcc -cubin $ga -std=c++17 -Xptxas -v -DKILN_NVRTC=1 -I"$tdir" \
        "$out/$name.cu" -o "$out/$name.cubin" > "$out/$name.log" 2>&1 || { echo "FAIL $name"; cat "$out/$name.log"; return 1; }
    # one line per entry: regs, stack, spill stores, spill loads
    awk -v n="$name" '
      /Compiling entry function/ { match($0, /kiln_hstu_bwd_[a-z]+/); fn = substr($0, RSTART + 14, RLENGTH - 14) }
      /bytes stack frame/ { st = $1; ss = $5; sl = $9 }
      /Used [0-9]+ registers/ { match($0, /Used [0-9]+/); r = substr($0, RSTART + 5, RLENGTH - 5);
                                printf "%-64s %-8s regs %3d stack %s spill_st %s spill_ld %s\n", n, fn, r, st, ss, sl }' "$out/$name.log"
    rm -f "$out/$name.cu"
}
export -f build_one 2>/dev/null || true
export out tdir
: > "$out/resources.txt"
cat "$out/variants.txt" | xargs -P "$jobs" -I{} bash -c "$(declare -f build_one); build_one '{}'" >> "$out/resources.txt"
sort -o "$out/resources.txt" "$out/resources.txt"
n=$(wc -l < "$out/variants.txt")
bad=$(grep -v 'stack 0 spill_st 0 spill_ld 0' "$out/resources.txt" || true)
echo "$n variants built in $out ($(wc -l < "$out/resources.txt") entries)"
if [ -n "$bad" ]; then echo "SPILLS OR FAILURES:"; echo "$bad" | head -50; exit 1; fi
for fn in main dq convert; do
  awk -v f="$fn" '$2 == f {print $4}' "$out/resources.txt" | sort -n | tail -1 | sed "s/^/max regs $fn: /"
done
