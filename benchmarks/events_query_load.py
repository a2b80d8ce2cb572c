"""/healthz latency while many clients query a long event history (issue #23: GET /api/events sorted the whole
history on the event loop; 20 parallel queries pushed /healthz to 1.66 s).

A real service (uvicorn on 127.0.0.1, the event engine on, no streams) holding ``--events`` stored events;
``--clients`` clients loop GET /api/events (newest 50, or a filter that matches half) while one client asks
/healthz every 20 ms. Prints /healthz p50/p99/max and the queries answered.

    python benchmarks/events_query_load.py --events 100000 --clients 20 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import torch
from sightline.model.architectures import build_network
from sightline.model.bundle import ModelBundle, PreprocessSpec
from sightline.model.classifier import Classifier
from sightline.stream.config import RunConfig
from sightline.stream.events.hub import EventHub
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.service.app import create_app
from sightline.stream.service.server import HttpServer


def fill(hub: EventHub, count: int) -> None:
    for i in range(count):
        hub.store.on_message({"type": "end", "event": {
            "id": f"20260101T{i // 3600 % 24:02d}{i // 60 % 60:02d}{i % 60:02d}Z-{i:08x}",
            "stream": f"cam{i % 8}", "rule": "r", "label": "cat" if i % 2 else "dog", "start": 1.7e9 + i,
            "end": 1.7e9 + i + 5, "peak": 0.9, "snapshot_url": None, "clip_url": None}})


async def main(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    bundle = ModelBundle("resnet18", ["cat", "dog"], build_network("resnet18", 2).state_dict(),
                         PreprocessSpec(resize=64, crop=56), {"source": "benchmark"})
    with tempfile.TemporaryDirectory() as tmp:
        config = RunConfig(output_dir=Path(tmp), media_root=Path(tmp), events={"enabled": True, "log": False,
                                                                                "history": args.events})
        metrics = Metrics()
        pipeline = Pipeline(Classifier(bundle, device="cpu"), config, metrics)
        pipeline.events = EventHub.build(config, metrics)
        fill(pipeline.events, args.events)
        server = HttpServer("127.0.0.1", 0)
        await server.start(create_app(pipeline, config, metrics))
        stop = time.monotonic() + args.seconds
        answered = 0

        async def query(client: httpx.AsyncClient, i: int) -> None:
            nonlocal answered
            params = {"limit": "50"} if i % 2 else {"label": "cat", "limit": "50"}
            while time.monotonic() < stop:
                r = await client.get("/api/events", params=params)
                assert r.status_code == 200 and r.json()["total"] >= args.events // 2
                answered += 1

        async def health(seen: list[float]) -> None:
            """One request per write on a keep-alive connection with TCP_NODELAY: the server's latency, without
            a client's Nagle / delayed-ACK pause (40 ms per request with httpx on this loopback)."""
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while time.monotonic() < stop:
                started = time.perf_counter()
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200"), head
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                await reader.readexactly(length)
                seen.append(time.perf_counter() - started)
                await asyncio.sleep(0.02)
            writer.close()

        limits = httpx.Limits(max_connections=args.clients + 2)
        seen: list[float] = []
        async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as client:
            await asyncio.gather(health(seen), *(query(client, i) for i in range(args.clients)))
        await server.stop()
        pipeline.shutdown()
    seen.sort()
    p99 = seen[min(len(seen) - 1, int(0.99 * len(seen)))]
    print(f"{args.events} events, {args.clients} clients, {args.seconds:g} s: {answered} queries answered "
          f"({answered / args.seconds:.1f}/s); /healthz n={len(seen)} p50 {1000 * statistics.median(seen):.1f} ms, "
          f"p99 {1000 * p99:.1f} ms, max {1000 * seen[-1]:.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0)
    asyncio.run(main(parser.parse_args()))
