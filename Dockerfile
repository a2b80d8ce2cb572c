# syntax=docker/dockerfile:1
# Sightline on a CUDA runtime base. Build from the repository root:
#   docker build -t sightline .
#   docker run --gpus all -p 127.0.0.1:8080:8080 -e SIGHTLINE_TOKEN=... -v "$PWD/media:/media:ro" sightline
# (or deploy/docker-compose.yml, which adds Prometheus and Grafana). Without --gpus it runs on the CPU.
FROM nvidia/cuda:12.4.1-runtime-ubuntu22.04

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu124
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    TORCH_HOME=/data/cache/torch \
    MPLCONFIGDIR=/tmp/matplotlib

# ffmpeg: the CLI for operators (PyAV wheels carry their own FFmpeg libraries).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ffmpeg fonts-dejavu-core ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv "$VIRTUAL_ENV"

# torch first, in its own layer: it is the big one and changes least. CUDA 12.4 wheels match the base image.
RUN pip install --index-url "$TORCH_INDEX_URL" "torch>=2.2" "torchvision>=0.17"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY model ./model
COPY training ./training
COPY stream ./stream
RUN pip install . && rm -rf /src

RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home sightline \
 && mkdir -p /data/runs /data/cache /config /media \
 && chown -R sightline:sightline /data
COPY configs/docker.yaml /config/config.yaml

USER sightline
WORKDIR /data
EXPOSE 8080
VOLUME ["/data"]

# /healthz answers while the event loop is alive; the first start loads (and maybe downloads) the model.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

# SIGTERM (docker stop) drains in-flight frames and finalizes recordings before exit.
STOPSIGNAL SIGTERM
CMD ["sightline", "run", "/config/config.yaml"]
