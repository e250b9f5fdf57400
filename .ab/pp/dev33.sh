#!/bin/bash
# dev33.sh OUT: bwd GPU tests (persistent, blocks), then bench rows A/B
OUT=$1; mkdir -p $OUT
export LD_LIBRARY_PATH=$(pwd)/build/deps:$LD_LIBRARY_PATH
export KILN_CACHE_DIR=/tmp/kc; export TRITON_CACHE_DIR=/tmp/tc
nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
( time timeout 200 build/tests/test_hstu_bwd_gpu ) > $OUT/bwd.log 2>&1; echo "bwd rc $?" >> $OUT/bwd.log
( time KILN_BWD_GRID=blocks timeout 200 build/tests/test_hstu_bwd_gpu ) > $OUT/bwd_blocks.log 2>&1; echo "bwd rc $?" >> $OUT/bwd_blocks.log
grep -h 'hstu_bwd gpu:\|rc ' $OUT/bwd.log $OUT/bwd_blocks.log
for row in 256x1024x4x128 32x4096x4x128 64x2048x8x64; do
  for g in persist; do
    if [ $g = blocks ]; then export KILN_BWD_GRID=blocks; else unset KILN_BWD_GRID; fi
    timeout 120 python3 bench/bench_hstu.py --one kiln $row --work /tmp/w_${row}_$g --rep-ms 300 > $OUT/b_${row}_$g.log 2>&1
  done
done
timeout 120 python3 bench/bench_hstu.py --one triton 256x1024x4x128 --work /tmp/w_tr --rep-ms 300 > $OUT/b_256_triton.log 2>&1
for f in $OUT/b_*.log; do python3 - $f <<'PY'
import json,sys
try:
    l=[x for x in open(sys.argv[1]) if x.startswith('RESULT')][-1]
    r=json.loads(l[7:])
    print(sys.argv[1].split('/')[-1], {m:(round(v.get('ms',0),3), round(v.get('tflops',0),1)) for m,v in r['modes'].items()})
except Exception as e: print(sys.argv[1], 'ERR', e)
PY
done
