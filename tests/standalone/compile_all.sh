#!/bin/sh
# compile_all.sh MODE OUTDIR [JOBS] -- build a cubin for every variant that
# variants.py MODE lists, with nvcc -cubin (same front end as NVRTC), and
# write OUTDIR/resources.txt: registers, stack, spills, smem per variant.
# Fails if any variant spills or has a stack frame.
set -e
here=$(cd "$(dirname "$0")" && pwd)
tdir="$here/../../templates"
mode=${1:-defaults}; out=${2:-/tmp/kiln_cubins}; jobs=${3:-$(nproc)}
mkdir -p "$out"
python3 "$here/variants.py" "$mode" > "$out/variants.txt"
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
#include "hstu_fwd.cu"
EOP
    if [ "$arch" = sm_90a ]; then ga="-gencode=arch=compute_90a,code=sm_90a"; else ga="-arch=$arch"; fi
    nvcc -cubin $ga -std=c++17 -Xptxas -v -DKILN_NVRTC=1 -I"$tdir" \
        "$out/$name.cu" -o "$out/$name.cubin" > "$out/$name.log" 2>&1 || { echo "FAIL $name"; cat "$out/$name.log"; return 1; }
    regs=$(grep -o 'Used [0-9]* registers' "$out/$name.log" | grep -o '[0-9]*')
    stack=$(grep -o '[0-9]* bytes stack frame' "$out/$name.log" | grep -o '^[0-9]*')
    sst=$(grep -o '[0-9]* bytes spill stores' "$out/$name.log" | grep -o '^[0-9]*')
    sld=$(grep -o '[0-9]* bytes spill loads' "$out/$name.log" | grep -o '^[0-9]*')
    smem=$(( 2 * ($5 * $4 + 4 * $6 * $4 + 2 * $5 * $6) ))
    printf "%-48s regs %3s stack %s spill_st %s spill_ld %s smem %6d\n" "$name" "$regs" "$stack" "$sst" "$sld" "$smem"
}
export -f build_one 2>/dev/null || true
export out tdir
: > "$out/resources.txt"
while read -r l; do echo "$l"; done < "$out/variants.txt" | \
  xargs -P "$jobs" -I{} bash -c "$(declare -f build_one); build_one '{}'" >> "$out/resources.txt"
sort -o "$out/resources.txt" "$out/resources.txt"
n=$(wc -l < "$out/resources.txt")
bad=$(grep -v 'stack 0 spill_st 0 spill_ld 0' "$out/resources.txt" || true)
echo "$n variants built in $out"
if [ -n "$bad" ]; then echo "SPILLS OR FAILURES:"; echo "$bad"; exit 1; fi
awk '{print $3}' "$out/resources.txt" | sort -n | tail -1 | sed 's/^/max regs: /'
