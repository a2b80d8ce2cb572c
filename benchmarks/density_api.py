"""What many cameras cost the service's own API: start time, ``GET /api/streams`` and ``/metrics`` latency.

N realtime file streams (a tiny looping clip, ``infer_fps`` 1, a small random-init ResNet18 on the CPU, no
download) are started in one pipeline beside the HTTP server on 127.0.0.1; then each endpoint is asked
``--requests`` times, one request at a time, while the streams run. Start time is from ``Pipeline.start()``
until every stream is live. Figures name the CPU; nothing here is a timed assert
(tests/benchmarks/test_density_api.py runs a short round with generous bounds).

    python benchmarks/density_api.py --streams 200 --requests 200
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import torch
from common import cpu_name, tiny_classifier  # benchmarks/ is on sys.path when this script runs
from sightline import synthetic_media as media
from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.lifecycle import StreamState
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.service.app import create_app
from sightline.stream.service.serve import freeze_imports
from sightline.stream.service.server import HttpServer


@dataclass
class Density:
    streams: int
    start_s: float  # Pipeline.start() until every stream is live
    streams_p50_ms: float
    streams_p99_ms: float
    metrics_p50_ms: float
    metrics_p99_ms: float
    readyz_p99_ms: float
    streams_bytes: int
    metrics_bytes: int
    threads: int


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _ask(client: httpx.AsyncClient, path: str, n: int) -> tuple[list[float], int]:
    took, size = [], 0
    for _ in range(n):
        started = time.perf_counter()
        r = await client.get(path)
        took.append(time.perf_counter() - started)
        r.raise_for_status()
        size = len(r.content)
    return took, size


async def measure(root: Path, streams: int, requests: int, fps: int = 5, settle_s: float = 2.0,
                  start_timeout_s: float = 120.0, freeze: bool = True) -> Density:
    """Start ``streams`` file streams and the API, then time the endpoints (``root``: a scratch folder)."""
    import threading

    clip = media.make_test_clip(root / "clip.mp4", frames=10 * fps, fps=fps, size=(64, 48), counter=False)
    config = RunConfig(output_dir=root / "out", media_root=root, log_predictions=False,
                       server={"port": 0, "max_streams": max(64, streams)},
                       streams=[StreamConfig(name=f"cam-{i:03d}", url=str(clip), loop=True, infer_fps=1)
                                for i in range(streams)])
    if freeze:
        freeze_imports()  # as ``serve`` does before it loads the model
    pipeline = Pipeline(tiny_classifier(), config, Metrics())
    server = HttpServer("127.0.0.1", 0)
    started = time.perf_counter()
    await asyncio.to_thread(pipeline.start)
    try:
        deadline = started + start_timeout_s
        while not all(s.state == StreamState.LIVE for s in pipeline.stream_stats()):
            if time.perf_counter() > deadline:
                raise TimeoutError(f"not every stream live within {start_timeout_s:.0f}s")
            await asyncio.sleep(0.05)
        start_s = time.perf_counter() - started
        await server.start(create_app(pipeline, config, pipeline.metrics))
        try:
            await asyncio.sleep(settle_s)  # every stream classified a frame or two: real statistics to read
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                await _ask(client, "/api/streams", 3)  # warm up (first schema build, connections)
                await _ask(client, "/metrics", 3)
                listed, streams_bytes = await _ask(client, "/api/streams", requests)
                scraped, metrics_bytes = await _ask(client, "/metrics", requests)
                ready, _ = await _ask(client, "/readyz", requests)
            threads = threading.active_count()
        finally:
            await server.stop()
    finally:
        await asyncio.to_thread(pipeline.shutdown)
        if freeze:
            gc.unfreeze()
    ms = 1000.0
    return Density(streams, round(start_s, 2), round(statistics.median(listed) * ms, 1),
                   round(quantile(listed, 0.99) * ms, 1), round(statistics.median(scraped) * ms, 1),
                   round(quantile(scraped, 0.99) * ms, 1), round(quantile(ready, 0.99) * ms, 1),
                   streams_bytes, metrics_bytes, threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, nargs="+", default=[200])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--no-freeze", action="store_true", help="leave the imports in the cyclic collector")
    args = parser.parse_args()
    print(f"# {cpu_name()}, {torch.get_num_threads()} torch threads; {args.requests} requests per endpoint, "
          "one at a time, while the streams run")
    rows = []
    for n in args.streams:
        with tempfile.TemporaryDirectory() as tmp:
            row = asyncio.run(measure(Path(tmp), n, args.requests, freeze=not args.no_freeze))
        rows.append(asdict(row))
        print(json.dumps(rows[-1]), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
