#!/bin/bash
# before (9f887d8: main before the #17 reshape was merged) and after (43dcb50: reshape + features), ABAB, fp32
set -u
PY=/work/main/.venv/bin/python
OUT=/tmp/bb/results
mkdir -p $OUT
lscpu | grep 'Model name' > $OUT/cpu.txt; nproc >> $OUT/cpu.txt; uptime >> $OUT/cpu.txt
for pass in ${PASSES:-1 2}; do
  for side in before after; do
    echo "=== pass $pass $side $(date -u +%T)" >> $OUT/log.txt
    (cd /tmp/bb/$side/benchmarks && PYTHONPATH=/tmp/bb/pp-$side timeout 600 $PY pipeline.py --precision fp32 --rounds 2 \
        --skip-seed --realtime 2 --realtime-seconds 8 --json $OUT/$side-$pass.json) > $OUT/$side-$pass.txt 2>&1
    echo "rc=$? $(date -u +%T)" >> $OUT/log.txt
  done
done
uptime >> $OUT/cpu.txt
