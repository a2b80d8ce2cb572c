#!/bin/bash
set -u
PY=/work/wt/h17/.venv/bin/python
OUT=/tmp/h17-bench/results
for pass in 1 2 3; do
  for side in before after; do
    if [ $side = before ]; then tree=/tmp/h17-before; pp=/tmp/h17-bench/old; else tree=/work/wt/h17; pp=/tmp/h17-bench/new; fi
    echo "=== rt pass $pass $side $(date -u +%T) $(cut -d' ' -f1-3 /proc/loadavg)" >> $OUT/log.txt
    (cd $tree/benchmarks && PYTHONPATH=$pp timeout 300 $PY pipeline.py --skip-throughput --realtime 1,2 --realtime-seconds 8 \
        --json $OUT/rt-$side-$pass.json) >> $OUT/rt-$side-$pass.txt 2>&1
  done
done
