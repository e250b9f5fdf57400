#!/bin/bash
# run_gpu.sh -- on a GPU machine: build the harness and every 'gpu' variant
# (sm_90a), check each against the CPU reference, then time the big cases.
# Output: $OUT (or /tmp/kiln_gpu) gets check.txt, bench.txt, resources.txt.
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-/tmp/kiln_gpu}
work=/tmp/kiln_gpu_work
mkdir -p "$out" "$work"
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
nvcc -O2 -std=c++17 "$here/hstu_fwd_harness.cu" -lcuda -o "$work/harness" || exit 1
bash "$here/compile_all.sh" gpu "$work/cubins" 16 > "$out/compile.txt" 2>&1
tail -3 "$out/compile.txt"
cp "$work/cubins/resources.txt" "$out/resources.txt"
# correctness: every variant, 8 at a time
awk -v w="$work" '{print w"/cubins/"$1".cubin", $3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13}' "$work/cubins/variants.txt" |
  xargs -P 8 -L 1 "$work/harness" > "$out/check.txt" 2>&1
echo "checks: $(grep -c ^PASS "$out/check.txt") pass, $(grep -vc ^PASS "$out/check.txt") other"
grep -v ^PASS "$out/check.txt" | head -30
sort -k5 -g "$out/check.txt" | tail -4
# timing: one at a time
C=$work/cubins
bench() { "$work/harness" "$C/$1.cubin" $2 bench 2>&1 | tee -a "$out/bench.txt"; }
python3 "$here/variants.py" bench | while read -r n a rest; do bench "$n" "$rest"; done
bench sm_90a_bf16_d128_128x32x4_none      "2 128 128 32 4 0 0 0 0 0 0"
bench sm_90a_fp16_d128_128x32x4_causal    "1 128 128 32 4 1 0 0 0 0 0"
bench sm_90a_bf16_d128_128x32x4_ctx_tgt   "2 128 128 32 4 1 0 1 1 0 0"
bench sm_90a_bf16_d128_128x32x4_causal_rab "2 128 128 32 4 1 0 0 0 0 1"
cuobjdump -sass "$C/sm_90a_bf16_d128_128x32x4_causal.cubin" > "$out/sass_d128_causal.txt"
grep -oE '^\s+/\*[0-9a-f]+\*/\s+[A-Z][A-Z0-9_.]+' "$out/sass_d128_causal.txt" | awk '{print $2}' | sort | uniq -c | sort -rn | head -40
