work=/tmp/sm90_work; out=${OUT}
mkdir -p $work/cubins
nvcc -O2 -std=c++17 tests/standalone/sm90_harness.cu -lcuda -o $work/harness || exit 1
mk() { n=$1; shift; printf '#define KILN_ARCH 900\n#define KILN_DTYPE %s\n#define KILN_HEAD_DIM %s\n#define KILN_BLOCK_M %s\n#define KILN_BLOCK_N %s\n#define KILN_WARPS %s\n#define KILN_CAUSAL %s\n#define KILN_LOCAL %s\n#define KILN_CONTEXT %s\n#define KILN_TARGET %s\n#define KILN_DELTA_Q %s\n#define KILN_RAB %s\n#define KILN_PERSIST %s\n#include "%s"\n' "${@:1:11}" $((1 - ${11})) "${12}" > $work/cubins/$n.cu; nvcc -cubin -gencode=arch=compute_90a,code=sm_90a -std=c++17 -DKILN_NVRTC=1 -Itemplates $work/cubins/$n.cu -o $work/cubins/$n.cubin; }
mk s_tgt 2 128 128 128 12 1 0 1 1 0 0 hstu_fwd_sm90.cu &
mk s_tgt_rab 1 64 128 128 12 1 0 1 1 0 1 hstu_fwd_sm90.cu &
mk s_rab 2 128 128 128 12 1 0 0 0 0 1 hstu_fwd_sm90.cu &
mk p_rab 2 128 128 32 4 1 0 0 0 0 1 hstu_fwd.cu &
mk p_tgt 2 128 128 32 4 1 0 1 1 0 0 hstu_fwd.cu &
wait
H=$work/harness; C=$work/cubins
$H $C/s_tgt.cubin 2 128 128 128 12 1 0 1 1 0 0; $H $C/s_tgt_rab.cubin 1 64 128 128 12 1 0 1 1 0 1
$H $C/s_tgt.cubin 2 128 128 128 12 1 0 1 1 0 0 bench 32 4096 4
$H $C/p_tgt.cubin 2 128 128 32 4 1 0 1 1 0 0 bench 32 4096 4
$H $C/s_rab.cubin 2 128 128 128 12 1 0 0 0 0 1 bench 32 4096 4
$H $C/p_rab.cubin 2 128 128 32 4 1 0 0 0 0 1 bench 32 4096 4
export KILN_CACHE_DIR=/tmp/sm90_kcache2
KILN_FWD_IMPL=wgmma timeout 300 build/tests/test_hstu_gpu > $out/t.log 2>&1; echo "test_hstu_gpu wgmma rc $?"; grep -E "PASSED|FAILED|cases" $out/t.log | tail -8; grep "^FAIL" $out/t.log | head
KILN_FWD_IMPL=wgmma timeout 120 build/kiln-demo 2>&1 | tail -4
timeout 120 build/kiln-demo 2>&1 | tail -2
