#!/bin/bash
# sm90_run.sh -- on the GPU machine, from the repository root (build/ built
# and carried): check every Hopper forward variant against the CPU reference
# (tests/standalone/sm90_harness.cu), time it against the portable kernel,
# run the repo's GPU test and demo with KILN_FWD_IMPL=wgmma, check SASS.
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${OUT:-/tmp/sm90_out}
work=/tmp/sm90_work
mkdir -p "$out" "$work/cubins"
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
nvcc -O2 -std=c++17 "$here/sm90_harness.cu" -lcuda -o "$work/harness" || exit 1
# name dt d bm bn warps causal local ctx tgt delta rab template
{
for dt in 1 2; do for d in 32 64 128 256; do
  bn=128; [ $d = 256 ] && bn=64
  for m in "none 0 0 0 0 0" "causal 1 0 0 0 0" "local 0 1 0 0 0" "causal_local 1 1 0 0 0" "ctx 1 0 1 0 0" \
           "tgt 1 0 0 1 0" "ctx_tgt 1 0 1 1 0" "delta 0 0 0 0 1" "delta_causal 1 0 0 0 1" "delta_local 0 1 0 0 1"; do
    set -- $m
    for rab in 0 1; do
      echo "sm90_dt${dt}_d${d}_$1_rab$rab $dt $d 128 $bn 12 $2 $3 $4 $5 $6 $rab hstu_fwd_sm90.cu"
    done
  done
done; done
echo "port_bf16_d128_causal 2 128 128 32 4 1 0 0 0 0 0 hstu_fwd.cu"
echo "port_bf16_d64_causal 2 64 128 64 4 1 0 0 0 0 0 hstu_fwd.cu"
echo "port_bf16_d256_causal 2 256 64 32 4 1 0 0 0 0 0 hstu_fwd.cu"
echo "port_bf16_d32_causal 2 32 128 64 4 1 0 0 0 0 0 hstu_fwd.cu"
} > "$work/variants.txt"
build_one() {
    set -- $1
    f=$work/cubins/$1
    # the harness launches the persistent grid unless rab: the cubin's kernel
    printf '#define KILN_ARCH 900\n#define KILN_DTYPE %s\n#define KILN_HEAD_DIM %s\n#define KILN_BLOCK_M %s\n#define KILN_BLOCK_N %s\n#define KILN_WARPS %s\n#define KILN_CAUSAL %s\n#define KILN_LOCAL %s\n#define KILN_CONTEXT %s\n#define KILN_TARGET %s\n#define KILN_DELTA_Q %s\n#define KILN_RAB %s\n#define KILN_PERSIST %s\n#include "%s"\n' \
        $2 $3 $4 $5 $6 $7 $8 $9 ${10} ${11} ${12} $((1 - ${12})) ${13} > $f.cu
    nvcc -cubin -gencode=arch=compute_90a,code=sm_90a -std=c++17 -Xptxas -v -DKILN_NVRTC=1 -I$root/templates $f.cu -o $f.cubin > $f.log 2>&1 || echo "COMPILE FAIL $1"
    echo "$1 $(grep -o 'Used [0-9]* registers' $f.log) $(grep -o '[0-9]* bytes spill stores' $f.log) $(grep -c C751 $f.log) serialization-notes"
}
export -f build_one; export work root
xargs -P 16 -I{} bash -c 'build_one "{}"' < "$work/variants.txt" | sort > "$out/resources.txt"
grep -c "0 bytes spill" "$out/resources.txt"; grep -v " 0 bytes spill stores 0 serial" "$out/resources.txt" | head -50
grep "^sm90" "$work/variants.txt" | awk -v w="$work" '{print w"/cubins/"$1".cubin", $2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12}' |
  xargs -P 12 -L 1 timeout 60 "$work/harness" > "$out/check.txt" 2>&1
echo "checks: $(grep -c ^PASS "$out/check.txt") pass, $(grep -vc ^PASS "$out/check.txt") other"
grep -v ^PASS "$out/check.txt" | head -40
B() { timeout 60 "$work/harness" "$work/cubins/$1.cubin" $2 bench $3 2>&1 | tee -a "$out/bench.txt"; }
for shp in "32 4096 4" "256 1024 4"; do
  B sm90_dt2_d128_causal_rab0 "2 128 128 128 12 1 0 0 0 0 0" "$shp"
  B port_bf16_d128_causal "2 128 128 32 4 1 0 0 0 0 0" "$shp"
done
B sm90_dt2_d64_causal_rab0 "2 64 128 128 12 1 0 0 0 0 0" "64 2048 8"
B port_bf16_d64_causal "2 64 128 64 4 1 0 0 0 0 0" "64 2048 8"
B sm90_dt2_d256_causal_rab0 "2 256 128 64 12 1 0 0 0 0 0" "32 4096 4"
B port_bf16_d256_causal "2 256 64 32 4 1 0 0 0 0 0" "32 4096 4"
B sm90_dt2_d32_causal_rab0 "2 32 128 128 12 1 0 0 0 0 0" "32 4096 4"
B port_bf16_d32_causal "2 32 128 64 4 1 0 0 0 0 0" "32 4096 4"
B sm90_dt1_d128_causal_rab0 "1 128 128 128 12 1 0 0 0 0 0" "32 4096 4"
B sm90_dt2_d128_ctx_tgt_rab0 "2 128 128 128 12 1 0 1 1 0 0" "32 4096 4"
B sm90_dt2_d128_causal_rab1 "2 128 128 128 12 1 0 0 0 0 1" "32 4096 4"
B sm90_dt2_d128_none_rab0 "2 128 128 128 12 0 0 0 0 0 0" "32 4096 4"
cuobjdump -sass "$work/cubins/sm90_dt2_d128_causal_rab0.cubin" > "$out/sass_d128_causal.txt"
echo "HGMMA count: $(grep -c HGMMA "$out/sass_d128_causal.txt"), LDL/STL: $(grep -cE 'LDL|STL' "$out/sass_d128_causal.txt")"
grep -m3 HGMMA "$out/sass_d128_causal.txt"
export KILN_CACHE_DIR=/tmp/sm90_kcache
KILN_FWD_IMPL=wgmma timeout 300 build/tests/test_hstu_gpu > "$out/test_hstu_gpu_wgmma.log" 2>&1; echo "test_hstu_gpu wgmma rc $?"
tail -5 "$out/test_hstu_gpu_wgmma.log"; grep -iE "fail|error" "$out/test_hstu_gpu_wgmma.log" | head -20
KILN_FWD_IMPL=wgmma timeout 120 build/kiln-demo > "$out/demo_wgmma.log" 2>&1; echo "demo wgmma rc $?"; tail -15 "$out/demo_wgmma.log"
timeout 120 build/kiln-demo > "$out/demo_mma.log" 2>&1; echo "demo default rc $?"; tail -15 "$out/demo_mma.log"
