#!/usr/bin/env bash
# The recorded backend comparison (benchmarks/results/backends-cpu.md): run it under the benchmark lock,
#   flock /tmp/sightline-bench.lock bash benchmarks/run_backends_cpu.sh > benchmarks/results/backends-cpu.txt 2>&1
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export NNCF_CI=1  # NNCF's own telemetry switch; OpenVINO's is blocked in code (model/backends/openvino_backend.py)
date -u
lscpu | grep -E 'Model name|^CPU\(s\)|Flags' | sed 's/Flags:.*\(avx512_bf16\).*/Flags: ... avx512_bf16 ... (no amx)/'
uptime
echo "== model only (random-init ResNet18, 224 crop) =="
$PY benchmarks/model_throughput.py --batches 1,8 --seconds 3 --warmup 3 \
    --backend torch:fp32,torch:bf16,openvino:fp32,openvino:bf16,openvino:int8,onnxruntime:fp32,onnxruntime:int8
echo "== decode only =="
$PY benchmarks/backend_decode.py --threads 1,2,4
for spec in torch:fp32 openvino:int8; do
    echo "== end to end: ${spec} =="
    $PY benchmarks/pipeline.py --backend "${spec%%:*}" --precision "${spec##*:}" --rounds 2 --seed-frames 60 \
        --realtime 1,2,3,4,6,8 --realtime-seconds 8 --json "benchmarks/results/backends-pipeline-${spec/:/-}.json"
done
uptime
date -u
