#!/bin/bash
# before (9d5ef23) and after (h17) back to back, ABAB, one flock-held run
set -u
PY=/work/wt/h17/.venv/bin/python
OUT=/tmp/h17-bench/results
mkdir -p $OUT
lscpu | grep 'Model name' > $OUT/cpu.txt
uptime >> $OUT/cpu.txt
for pass in 1 2; do
  for side in before after; do
    if [ $side = before ]; then tree=/tmp/h17-before; pp=/tmp/h17-bench/old; else tree=/work/wt/h17; pp=/tmp/h17-bench/new; fi
    echo "=== pass $pass $side $(date -u +%T)" >> $OUT/log.txt
    (cd $tree/benchmarks && PYTHONPATH=$pp timeout 900 $PY pipeline.py --rounds 2 --skip-seed --realtime 2 --realtime-seconds 8 \
        --json $OUT/$side-$pass.json) >> $OUT/$side-$pass.txt 2>&1
    echo "rc=$? $(date -u +%T)" >> $OUT/log.txt
  done
done
uptime >> $OUT/cpu.txt
