"""`sightline eval --ray ADDRESS`: the labelled videos spread over the cluster, one replay per worker.

Each worker (a Ray task holding one GPU, or ``cpus`` CPUs on a CPU-only cluster) opens the model itself and
replays its share of the videos through the same ``replay`` a single process runs (a Pipeline, lossless
``fast`` mode by default); the controller puts the videos back in labels order and scores them as one run, so
the report is the one a single process writes on the same inputs (only the timings differ).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from sightline.stream.config import BatchingConfig, SmoothingConfig
from sightline.stream.eval.labels import VideoJob
from sightline.stream.eval.replay import Replay, VideoInfo, replay

log = logging.getLogger("sightline.eval")

NAMESPACE = "sightline-eval"


def replay_share(source: str, device: str, precision: str, backend: str, jobs: list[VideoJob],
                 infos: list[VideoInfo], realtime: bool, batching: BatchingConfig, smoothing: SmoothingConfig,
                 out_dir: Path, parallel: int, label: str) -> Replay:
    """One worker's share (runs in a Ray task)."""
    from sightline.model.backends.serving import open_classifier

    classifier = open_classifier(source, device=device, precision=precision, backend=backend)
    return replay(classifier, jobs, infos, realtime=realtime, batching=batching, smoothing=smoothing,
                  out_dir=out_dir, parallel=parallel, label=label)


def worker_slots(ray: Any, cpus: float, gpus: float) -> tuple[int, dict[str, float]]:
    total = ray.cluster_resources()
    if total.get("GPU", 0) > 0 and gpus > 0:
        return max(1, int(math.floor(total["GPU"] / gpus))), {"num_gpus": gpus, "num_cpus": 0}
    return max(1, int(math.floor(total.get("CPU", 0) / cpus))), {"num_cpus": cpus}


def cluster_replay(address: str, source: str, device: str, precision: str, backend: str, jobs: list[VideoJob],
                   infos: list[VideoInfo], *, realtime: bool, batching: BatchingConfig, smoothing: SmoothingConfig,
                   out_dir: Path, parallel: int, label: str, cpus: float = 1.0, gpus: float = 1.0) -> Replay:
    """The videos dealt round-robin over the cluster's worker slots; results in the jobs' order."""
    from sightline.stream.cluster.rayenv import connect

    ray = connect(address, NAMESPACE)
    slots, resources = worker_slots(ray, cpus, gpus)
    shares = min(slots, len(jobs))
    remote = ray.remote(replay_share).options(max_retries=1, **resources)
    started = time.perf_counter()
    refs = []
    for k in range(shares):
        idx = list(range(k, len(jobs), shares))
        refs.append((idx, remote.remote(source, device, precision, backend, [jobs[i] for i in idx],
                                        [infos[i] for i in idx], realtime, batching, smoothing, out_dir, parallel,
                                        f"{label}[{k}]")))
    log.info("eval: %d videos over %d Ray workers", len(jobs), shares)
    runs: list[Any] = [None] * len(jobs)
    for idx, ref in refs:
        part: Replay = ray.get(ref)
        for i, run in zip(idx, part.videos, strict=True):
            runs[i] = run
    return Replay(runs, time.perf_counter() - started, "realtime" if realtime else "fast")
