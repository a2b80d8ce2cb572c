#!/usr/bin/env bash
# Fetch, for CPython 3.12 on manylinux x86_64, the wheels that benchmarks/gpu_suite.sh needs and the GPU
# machine lacks, into .whl/ (git-ignored; carried with the working tree, 64 MiB at most).
#
# The GPU machine has Python 3.12 with torch, torchvision, opencv-python-headless, prometheus-client, pyyaml,
# tqdm, scikit-image (so numpy, pillow, packaging), onnx and onnxruntime, but no PyAV, pydantic or pytest
# plugins. The suite needs exactly these (pinned to what the tests were run with here):
#   av (PyAV; ~40 MB, FFmpeg inside), pydantic + pydantic-core, annotated-types, typing-inspection,
#   typing-extensions, pytest + pluggy + iniconfig + pygments + packaging, pytest-timeout, pytest-asyncio.
# Not fetched: fastapi, uvicorn, httpx (the suite starts no HTTP server) and aiortc (the pipeline imports it
# only for webrtc:// streams; the suite has none).
#
#   bash benchmarks/fetch_gpu_wheels.sh            # then: bash benchmarks/gpu_suite.sh (on the GPU machine)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=.whl
LIMIT_MIB=${LIMIT_MIB:-60}  # under the 64 MiB a device call carries, with room for the source tree

WHEELS=(
    av==18.1.0
    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0
    pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 pygments==2.21.0 packaging==26.4
    pytest-timeout==2.4.0 pytest-asyncio==1.5.0
)

mkdir -p "$DEST"
if [ -d .git ] || git rev-parse --git-dir >/dev/null 2>&1; then  # keep .whl/ out of git even without .gitignore
    exclude="$(git rev-parse --git-path info/exclude)"
    grep -qxF '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
fi
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" --platform any -d "$DEST" "${WHEELS[@]}"

# only the wheels named above: a stale one from an earlier pin would be installed too
keep=()
for spec in "${WHEELS[@]}"; do
    name=${spec%%==*}; version=${spec#*==}
    norm=$(echo "$name" | tr '-' '_' | tr '[:upper:]' '[:lower:]')
    match=$(ls "$DEST" | awk -v n="$norm" -v v="$version" 'tolower($0) ~ "^"n"-"v"-" {print}')
    [ -n "$match" ] || { echo "missing wheel for $spec in $DEST" >&2; exit 1; }
    keep+=("$match")
done
for f in "$DEST"/*.whl; do
    base=$(basename "$f")
    printf '%s\n' "${keep[@]}" | grep -qxF "$base" || { echo "removing stale $base"; rm -f "$f"; }
done

total=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
ls -l "$DEST"
echo "total $(( total / 1024 / 1024 )) MiB ($total bytes) in ${#keep[@]} wheels"
if (( total > LIMIT_MIB * 1024 * 1024 )); then
    echo "more than $LIMIT_MIB MiB: a device call carries 64 MiB at most" >&2
    exit 1
fi
