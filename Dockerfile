# syntax=docker/dockerfile:1
# One image for compose (deploy/docker-compose.yml) and KubeRay (deploy/kuberay/): Sightline with Ray
# (the `cluster` extra), on a plain Python base. CUDA comes once, from the torch wheels' own nvidia-* libraries
# (no CUDA base image under them); the host needs only the NVIDIA driver. Build from the repository root:
#   docker build -t sightline:0.2.0 .
#   docker build --build-arg MODEL_FILE=models/resnet18-f37072fd.pth -t sightline:0.2.0 .   # model baked in
#   docker run --gpus all -p 127.0.0.1:8080:8080 -e SIGHTLINE_TOKEN=... -v "$PWD/media:/media:ro" sightline:0.2.0
# Without --gpus it runs on the CPU. Versions come from constraints.txt (deploy/pin_constraints.py writes it).
# docs/deploy.md has the build arguments, compose and KubeRay.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, in their own layer (torch with its CUDA wheels and Ray change least): exactly the pins.
COPY constraints.txt ./
RUN pip install --no-cache-dir --requirement constraints.txt
COPY pyproject.toml README.md ./
COPY app ./app
COPY model ./model
COPY training ./training
COPY stream ./stream
# The project itself; every dependency is already installed at its pinned version, and pip check proves it.
RUN pip install --no-cache-dir --constraint constraints.txt ".[cluster]" && pip check

FROM ${PYTHON_IMAGE}
# A model file from the build context (a Sightline bundle or a torchvision .pth), baked in for sites without
# internet: it lands in /opt/sightline/models/ under its own name; point model.source at it.
ARG MODEL_FILE=""
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/data \
    TORCH_HOME=/data/cache/torch \
    MPLCONFIGDIR=/tmp/matplotlib \
    RAY_USAGE_STATS_ENABLED=0
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# ffmpeg: the CLI for operators (PyAV wheels carry their own FFmpeg libraries); wget: KubeRay's default
# Ray probes call it. Debian's security updates replace exact versions, so these follow the base image.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg fonts-dejavu-core ca-certificates wget \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 sightline \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home --shell /usr/sbin/nologin sightline \
 && mkdir -p /data/runs /data/cache /config /media /opt/sightline/models \
 && chown -R 10001:10001 /data

COPY --from=build /opt/venv /opt/venv
COPY configs/docker.yaml /config/config.yaml

# Read the model through the build context only when asked (no copy of the context stays in a layer), and
# load it once so a wrong file fails the build rather than the first start.
RUN --mount=type=bind,target=/context \
    if [ -n "$MODEL_FILE" ]; then \
      install -m 0444 "/context/$MODEL_FILE" "/opt/sightline/models/$(basename "$MODEL_FILE")" \
      && python -c "import sys; from sightline.model.weights import load_model_source; \
b = load_model_source(sys.argv[1], download=False); print(sys.argv[1], b.arch, len(b.class_names), 'classes')" \
         "/opt/sightline/models/$(basename "$MODEL_FILE")"; \
    fi

USER 10001:10001
WORKDIR /data
EXPOSE 8080
VOLUME ["/data"]

# /healthz answers while the event loop is alive; the first start loads (and maybe downloads) the model.
# Ray worker containers (compose cluster override, KubeRay) serve no API: they set their own check.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

# SIGTERM (docker stop) drains in-flight frames and finalizes recordings before exit.
STOPSIGNAL SIGTERM
CMD ["sightline", "run", "/config/config.yaml"]
