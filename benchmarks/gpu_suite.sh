#!/usr/bin/env bash
# The GPU suite (issue #16): one command, one results folder, within 8 minutes on a CUDA machine.
#
#   bash benchmarks/fetch_gpu_wheels.sh                  # once, on a machine with the package index
#   bash benchmarks/gpu_suite.sh [RESULTS_DIR]           # on the GPU machine (no network needed)
#   bash benchmarks/gpu_suite.sh /tmp/dry --device cpu --quick   # dry run on a CPU (tiny sizes; not figures)
#
# RESULTS_DIR defaults to $OUT/gpu-suite when $OUT is set (the device machine brings $OUT back: at most 8
# files, so the suite writes exactly 8), else benchmarks/results/gpu-suite-<UTC time>. Files:
#   env.txt            command, date, nvidia-smi, CPU, Python/torch/CUDA/cuDNN/PyAV/FFmpeg versions, NVDEC probe
#   pytest-gpu.txt     pytest -m gpu: fp16/bf16 vs fp32 on photo crops, GradScaler step, real OOM recovery,
#                      CUDA runner/feeder, pipeline on CUDA end to end, NVDEC decode (figures printed, -rP)
#   model-only.txt     images/s for fp16/bf16/fp32 x eager/channels_last/torch.compile/CUDA graphs, batch 1..256
#                      (its JSON stays on the machine: /tmp/gpu-suite-model-only.json)
#   density.txt        camera density (benchmarks/density.py): 720p30 realtime file cameras at infer_fps 1,
#                      decode auto (keyframes only, on NVDEC where FFmpeg opens it), a ladder of N cameras
#   pipeline-720p.txt  fast 720p streams: (a) model only, (b) end to end, (d) decode only, same run; then the
#   pipeline-720p.json realtime 720p30 ladder: p50/p99 capture-to-result, drops, GPU memory
#   pipeline-1080p.txt fast 1080p streams: (a), (b), (d)
#   summary.txt        each step's exit code and seconds, and the headline lines of each file
#
# Python: $PYTHON, else .venv/bin/python when present, else python3. When PyAV or pydantic is missing, the
# wheels in .whl/ are installed into a private folder first (pip, no index) and `sightline` is made importable
# from this checkout through symlinks (the package-dir layout of pyproject.toml), so nothing needs the network.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DEVICE=cuda
QUICK=0
RESULTS=""
while (( $# )); do
    case "$1" in
        --device) DEVICE=$2; shift 2 ;;
        --device=*) DEVICE=${1#*=}; shift ;;
        --quick) QUICK=1; shift ;;
        -h|--help) sed -n 2,24p "$0"; exit 0 ;;
        -*) echo "unknown option $1 (use --device DEV, --quick)" >&2; exit 2 ;;
        *) RESULTS=$1; shift ;;
    esac
done
if [ -z "$RESULTS" ]; then
    if [ -n "${OUT:-}" ]; then RESULTS=$OUT/gpu-suite; else RESULTS=benchmarks/results/gpu-suite-$(date -u +%Y%m%dT%H%M%SZ); fi
fi
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
SUITE_START=$(date +%s)

if [ -n "${PYTHON:-}" ]; then PY=$PYTHON; elif [ -x .venv/bin/python ]; then PY=$ROOT/.venv/bin/python; else PY=python3; fi
SUMMARY=$RESULTS/summary.txt
: > "$SUMMARY"
note() { echo "$*" | tee -a "$SUMMARY"; }

# --- Python packages the machine lacks: carried wheels, no index --------------------------------------------
SITE=${SIGHTLINE_SITE:-/tmp/sightline-site}
if ! "$PY" -c "import av, pydantic" 2>/dev/null; then
    if ! ls .whl/*.whl >/dev/null 2>&1; then
        note "PyAV/pydantic missing and no wheels in .whl/: run 'bash benchmarks/fetch_gpu_wheels.sh' where the package index is reachable, and carry .whl/"
        exit 1
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
        || { note "installing .whl/ into $SITE failed"; exit 1; }
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$PY" -c "import sightline.stream.pipeline.pipeline" 2>/dev/null; then
    # pyproject's package-dir: sightline = app/, sightline.{model,stream,training} = model/, stream/, training/
    SHIM=$SITE-src
    rm -rf "$SHIM" && mkdir -p "$SHIM/sightline"
    for f in app/*.py; do ln -s "$ROOT/$f" "$SHIM/sightline/$(basename "$f")"; done
    for d in model stream training; do ln -s "$ROOT/$d" "$SHIM/sightline/$d"; done
    export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
    "$PY" -c "import sightline.stream.pipeline.pipeline" || { note "cannot import sightline from $ROOT"; exit 1; }
fi
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

# --- sizes: the real run, or a dry run that only proves every step works ------------------------------------
if (( QUICK )); then
    T_PYTEST=300 T_MODEL=300 T_720=300 T_1080=200 T_DENSITY=200
    DENSITY=(--model random --size 320x180 --clip-seconds 4 --ladder 2 --seconds 2 --warmup 1 --model-seconds 0.2)
    MODEL_ARGS=(--batches 1,2 --seconds 0.05 --warmup 1 --precisions fp16,fp32 --compile-batches 1 --budget-s 120)
    P720=(--size 640x360 --seconds 1 --streams 2 --rounds 1 --seed-frames 5 --realtime 1,2 --realtime-seconds 2)
    P1080=(--size 960x540 --seconds 1 --streams 2 --rounds 1 --skip-seed --realtime "")
else
    # on the GPU: 80 + 140 + 120 + 50 + 110 s of step limits, plus set-up, stays under 9 minutes. Model only:
    # 81 eager/channels_last/CUDA-graph cells (~1 s each with cuDNN autotuning), then compiles while budget lasts
    T_PYTEST=80 T_MODEL=140 T_720=120 T_1080=50 T_DENSITY=110
    MODEL_ARGS=(--batches 1,2,4,8,16,32,64,128,256 --seconds 0.2 --warmup 2 --compile-batches 64,256
                --budget-s 120)
    P720=(--size 1280x720 --seconds 4 --streams 32 --rounds 2 --seed-frames 60
          --realtime 32,128,256 --realtime-seconds 5)
    DENSITY=(--model random --ladder 100,300 --seconds 10 --warmup 4 --clip-seconds 10 --keep-going)
    P1080=(--size 1920x1080 --seconds 3 --streams 16 --rounds 2 --skip-seed --realtime "")
fi

step() {  # step NAME SECONDS OUTFILE CMD...: run with a hard limit, record exit code and duration
    local name=$1 limit=$2 out=$3; shift 3
    local start=$(date +%s) rc
    echo "== $name (limit ${limit}s): $*" > "$out"
    timeout -k 10 "$limit" "$@" >> "$out" 2>&1
    rc=$?
    local took=$(( $(date +%s) - start ))
    case $rc in
        0) status=ok ;;
        124|137) status="TIMED OUT after ${limit}s (partial output kept)" ;;
        *) status="FAILED (exit $rc)" ;;
    esac
    note "$(printf '%-16s %-40s %4ds' "$name" "$status" "$took")"
    return 0
}

# --- env.txt ---------------------------------------------------------------------------------------------
{
    echo "command: bash benchmarks/gpu_suite.sh $RESULTS --device $DEVICE$( (( QUICK )) && echo ' --quick')"
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown) $(git status --porcelain 2>/dev/null | grep -q . && echo '(uncommitted changes)')"
    echo "cpu: $(lscpu 2>/dev/null | grep 'Model name' | sed 's/.*: *//') ($(nproc) cores)"
    echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
    if (( QUICK )); then echo "DRY RUN (--quick): tiny sizes and durations; the figures only prove the steps run"; fi
    echo; echo "== nvidia-smi"
    nvidia-smi 2>&1 || echo "(no nvidia-smi)"
    echo; echo "== versions"
    "$PY" - "$DEVICE" <<'EOF' 2>&1
import sys

import av
import torch
import torchvision

print(f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}), torchvision {torchvision.__version__}")
print(f"PyAV {av.__version__}, FFmpeg libavcodec {av.library_versions.get('libavcodec')}")
from av.codec.hwaccel import hwdevices_available

print(f"FFmpeg hardware device types: {', '.join(hwdevices_available()) or 'none'}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU: {p.name}, {p.total_memory / 2**30:.1f} GiB, compute capability {p.major}.{p.minor}, "
          f"{p.multi_processor_count} SMs; bf16 supported: {torch.cuda.is_bf16_supported()}")
    from sightline.stream.sources.hwdecode import probe_nvdec

    print(f"NVDEC probe: {probe_nvdec(0).reason}")
else:
    print("GPU: none visible to torch")
print(f"suite device: {sys.argv[1]}")
EOF
} > "$RESULTS/env.txt" 2>&1
note "results: $RESULTS"
note "$(grep -E '^(python|GPU|NVDEC)' "$RESULTS/env.txt" | tr '\n' ';')"

# --- the steps -------------------------------------------------------------------------------------------
GPU_TESTS=(tests/model/test_classifier.py tests/model/test_cuda_precision.py tests/model/test_staging.py
           tests/stream/inference/test_cuda_feeder.py tests/stream/sources/test_hwdecode.py tests/training/test_cuda_training.py)
step pytest-gpu "$T_PYTEST" "$RESULTS/pytest-gpu.txt" \
    "$PY" -m pytest -m gpu -rP -q -p no:cacheprovider "${GPU_TESTS[@]}"
step model-only "$T_MODEL" "$RESULTS/model-only.txt" \
    "$PY" benchmarks/model_throughput.py --model-only --device "$DEVICE" "${MODEL_ARGS[@]}" \
    --json /tmp/gpu-suite-model-only.json
step pipeline-720p "$T_720" "$RESULTS/pipeline-720p.txt" \
    "$PY" benchmarks/pipeline.py --device "$DEVICE" "${P720[@]}" --json "$RESULTS/pipeline-720p.json"
step pipeline-1080p "$T_1080" "$RESULTS/pipeline-1080p.txt" \
    "$PY" benchmarks/pipeline.py --device "$DEVICE" "${P1080[@]}"
step density "$T_DENSITY" "$RESULTS/density.txt" \
    "$PY" benchmarks/density.py --source file --infer-fps 1 "${DENSITY[@]}" --out /tmp/gpu-suite-density.json

# --- headlines -------------------------------------------------------------------------------------------
{
    echo
    echo "== pytest -m gpu"
    grep -E "top-1 agreement|GradScaler|OOM recovery|passed|failed|error|skipped" "$RESULTS/pytest-gpu.txt" | tail -12
    echo "== model only"
    grep -E "^best|^\| fp16 \| (channels_last|compile|cudagraphs)" "$RESULTS/model-only.txt"
    for size in 720p 1080p; do
        echo "== pipeline $size"
        grep -E "^device|^median|realtime|^ +[0-9]+ +[0-9]+ " "$RESULTS/pipeline-$size.txt"
    done
    echo "== density"
    grep -E "^costs|^computed|^\| file|last passing|reached" "$RESULTS/density.txt"
    echo
    echo "total $(( $(date +%s) - SUITE_START )) s"
} 2>&1 | tee -a "$SUMMARY"
