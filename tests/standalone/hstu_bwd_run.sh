#!/bin/bash
# hstu_bwd_run.sh -- on a GPU machine (sm_90): build the harness and every
# 'gpu' variant of the backward, check each against the CPU reference, then
# time the 'bench' variants.  Output: $OUT (or /tmp/kiln_bwd) gets
# check.txt, bench.txt, resources_gpu.txt.
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${OUT:-/tmp/kiln_bwd}
work=/tmp/kiln_bwd_work
mkdir -p "$out" "$work"
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.sm --format=csv,noheader
t0=$(date +%s)
nvcc -O2 -std=c++17 -I"$root" -I"$root/include" "$here/hstu_bwd_harness.cu" -lcuda -o "$work/harness" || exit 1
bash "$here/hstu_bwd_compile.sh" gpu "$work/gpu" 16 > "$out/compile_gpu.txt" 2>&1; tail -4 "$out/compile_gpu.txt"
bash "$here/hstu_bwd_compile.sh" bench "$work/bench" 16 > "$out/compile_bench.txt" 2>&1; tail -4 "$out/compile_bench.txt"
cp "$work/gpu/resources.txt" "$out/resources_gpu.txt"
echo "built in $(( $(date +%s) - t0 )) s"
# correctness: every variant, 12 at a time
awk -v w="$work" '{print w"/gpu/"$1".cubin", $3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15}' "$work/gpu/variants.txt" |
  xargs -P 12 -L 1 timeout 120 "$work/harness" > "$out/check.txt" 2>&1
echo "checks: $(grep -c ^PASS "$out/check.txt") pass, $(grep -vc ^PASS "$out/check.txt") other, $(( $(date +%s) - t0 )) s"
grep -v ^PASS "$out/check.txt" | head -40
# worst errors per tensor
for c in 4 6 8 10; do sort -k$c -g "$out/check.txt" | tail -1 | cut -c1-200; done
# timing: one at a time
while read -r l; do
  set -- $l
  timeout 200 "$work/harness" "$work/bench/$1.cubin" "${@:3:13}" bench 2>&1 | tee -a "$out/bench.txt"
done < "$work/bench/variants.txt"
echo "total $(( $(date +%s) - t0 )) s"
