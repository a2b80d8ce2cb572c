#!/bin/bash
# Issue #21 (the restructuring): benchmarks/pipeline.py before (69128ea, main before the move) and after (c1e3184),
# interleaved five times, fp32; then ORDER="after before" PASSES="6 7 8" (the other order). Each side runs its own
# benchmarks/ folder and imports its own wheel's files (PYTHONPATH), in the same venv. Figures: ../house-21.md.
# The wheels: `pip wheel --no-deps --no-build-isolation` of each commit's `git archive`, unzipped to /tmp/bb/pp-SIDE.
set -u
PY=/work/main/.venv/bin/python
OUT=${OUT:-/tmp/bb/results}
mkdir -p "$OUT"
{ lscpu | grep 'Model name'; nproc; uptime; } > "$OUT/cpu.txt"
for pass in ${PASSES:-1 2 3 4 5}; do
  for side in ${ORDER:-before after}; do
    echo "=== pass $pass $side $(date -u +%T)" >> "$OUT/log.txt"
    (cd /tmp/bb/$side/benchmarks && PYTHONPATH=/tmp/bb/pp-$side timeout 600 $PY pipeline.py --precision fp32 --rounds 2 \
        --skip-seed --realtime 2 --realtime-seconds 8 --json "$OUT/$side-$pass.json") > "$OUT/$side-$pass.txt" 2>&1
    echo "rc=$? $(date -u +%T)" >> "$OUT/log.txt"
  done
done
uptime >> "$OUT/cpu.txt"
