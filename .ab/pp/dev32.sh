#!/bin/bash
# dev32.sh OUT: bwd GPU tests on the persistent backward, then bench rows A/B
OUT=$1; mkdir -p $OUT
export LD_LIBRARY_PATH=$(pwd)/build/deps:$LD_LIBRARY_PATH
export KILN_CACHE_DIR=/tmp/kc; export TRITON_CACHE_DIR=/tmp/tc
nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
( time timeout 280 build/tests/test_hstu_bwd_gpu ) > $OUT/bwd.log 2>&1; echo "bwd rc $?" >> $OUT/bwd.log
tail -5 $OUT/bwd.log
for row in 256x1024x4x128 32x4096x4x128; do
  for g in persist blocks; do
    if [ $g = blocks ]; then export KILN_BWD_GRID=blocks; else unset KILN_BWD_GRID; fi
    timeout 120 python3 bench/bench_hstu.py --one kiln $row --work /tmp/w_$row_$g --rep-ms 300 > $OUT/b_${row}_$g.log 2>&1
    echo "$row $g: $(grep RESULT $OUT/b_${row}_$g.log | tail -1 | cut -c1-400)"
  done
done
