"""The one serve loop of ``sightline run`` and ``sightline demo``, on one process or as a cluster's controller.

Order matters, and is the same for both: signal handlers first (a signal while the model loads is a clean
stop), the port bound before the model loads (a busy port fails at once), the configured streams running
before the first request is answered, then serve until every stream has finished, ``duration`` passed, or
SIGINT/SIGTERM; print a summary. What differs is a ``Served`` kind: how to open what serves (a ``Pipeline``
here, a cluster controller in stream/cluster/launch.py), the app over it, the banner, and what to finish.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fastapi import FastAPI
from sightline.stream.config import RunConfig
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.build import build_pipeline
from sightline.stream.pipeline.model_swap import SighupReloader
from sightline.stream.service.app import create_app
from sightline.stream.service.auth import require_safe_bind
from sightline.stream.service.server import HttpServer


class Served(Protocol):
    """What the loop runs: a ``Pipeline`` or a ``ClusterPipeline``."""

    metrics: Metrics | None

    def start(self) -> None: ...

    def shutdown(self) -> None: ...

    async def run(self, duration: float | None = None, stop: asyncio.Event | None = None) -> int: ...

    def statuses(self) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class ServedKind:
    open: Callable[[RunConfig], Served]  # blocking: runs in a worker thread
    make_app: Callable[[Served, RunConfig], FastAPI]
    banner: Callable[[str, Served], str]  # the line printed once the API answers, given its URL
    reloader: type[SighupReloader] = SighupReloader
    finish: Callable[[Served], None] | None = None  # blocking, after the run: drain what is left


def _close_events(pipeline: Any) -> None:
    if pipeline.events is not None:  # drain the event outputs (MQTT, webhooks) and close events.jsonl
        pipeline.events.close()


ONE_PROCESS = ServedKind(
    open=build_pipeline,
    make_app=lambda pipeline, config: create_app(pipeline, config, pipeline.metrics),  # type: ignore[arg-type]
    banner=lambda url, _: f"Sightline is serving {url}/  (API {url}/api/streams, metrics {url}/metrics); "
                          f"Ctrl-C stops it (pid {os.getpid()})",
    finish=_close_events)


async def serve(config: RunConfig, kind: ServedKind = ONE_PROCESS, duration: float | None = None,
                outputs_of: Path | None = None, reload_config: Callable[[], RunConfig] | None = None) -> int:
    """Serve ``config`` until it is done; the exit code of the run.

    ``outputs_of``: the folder named in the summary as holding the outputs (the demo's); default output_dir.
    ``reload_config``: with it, SIGHUP reads the config it returns (the file's, with the environment's secrets):
    its credentials take effect, its model is swapped to if that section changed (model_swap.py).
    """
    require_safe_bind(config.server)  # before anything binds or loads
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    server: HttpServer | None = None
    frozen = False

    def on_stop_signal() -> None:
        stop.set()
        if server is not None:
            server.begin_closing()  # from the signal on, every state change is 503 (the drain takes seconds)

    for sig in (signal.SIGINT, signal.SIGTERM):  # first: a signal while the model loads is a clean stop
        loop.add_signal_handler(sig, on_stop_signal)
    reloader = kind.reloader(loop, reload_config, config.model) if reload_config is not None else None
    if reloader is not None:
        reloader.install()
    try:
        if config.server.enabled:
            server = HttpServer(config.server.host, config.server.port, write_timeout_s=config.server.write_timeout_s)
            server.bind()  # a busy port fails now, not after the model has loaded
        frozen = freeze_imports()
        served = await asyncio.to_thread(kind.open, config)
        if reloader is not None:
            reloader.attach(served)  # type: ignore[arg-type]
        if server is not None and not stop.is_set():
            try:  # the configured streams exist before the first request is answered
                await asyncio.to_thread(served.start)
                app = kind.make_app(served, config)
                if reloader is not None:
                    reloader.on_config = lambda new: app.state.auth.update(new.server)
                await server.start(app)
                if stop.is_set():  # the signal came while the app was being made
                    server.begin_closing()
            except BaseException:
                await asyncio.to_thread(served.shutdown)
                raise
        if server is not None and not stop.is_set():
            print(kind.banner(server.url, served), flush=True)
        started = loop.time()
        code = await served.run(duration=duration, stop=stop)
        if kind.finish is not None:
            await asyncio.to_thread(kind.finish, served)
        print(summary(served.statuses(), loop.time() - started, outputs_of or config.output_dir), flush=True)
    finally:
        if frozen:
            gc.unfreeze()
        if server is not None:
            await server.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if reloader is not None:
            reloader.remove()
    return code


def freeze_imports() -> bool:
    """Leave what is imported by now (torch, numpy, FastAPI: ~400k objects) out of the cyclic collector.

    A full collection walks every tracked object with the GIL held: beside 200 streams' threads on 2 cores
    the longest took 0.6 s (every request in flight waited); with these frozen, 0.23 s in the same run. Frozen before
    the model loads, so a model retired by a hot swap is still collected (model_swap.py waits for it)."""
    gc.collect()
    gc.freeze()
    return True


async def run_service(config: RunConfig, duration: float | None = None, outputs_of: Path | None = None,
                      reload_config: Callable[[], RunConfig] | None = None) -> int:
    """``serve`` on this process (``sightline run`` without ``--ray``, ``sightline demo``)."""
    return await serve(config, ONE_PROCESS, duration, outputs_of, reload_config)


def summary(statuses: list[dict[str, Any]], seconds: float, outputs: Path) -> str:
    """What a run did, per stream: frames, classified frames per second while the stream was at work, recent
    latency, drops, outputs."""
    lines = [f"summary after {seconds:.1f} s:"]
    width = max([len(str(s["name"])) for s in statuses] + [6])
    for s in statuses:
        classified = int(s["frames_inferred"])
        # the stream's own rate, over the time it was at work (stats.StreamStats.active_s), not over the whole run
        active = float(s.get("active_s", seconds))
        rate = f"{classified / active:.1f}/s over {active:.1f} s" if classified > 1 and active > 0 else "rate n/a"
        dropped = sum(s["dropped"].values())
        latency = (f"latency p50 {s['p50_ms']:.0f} ms, p99 {s['p99_ms']:.0f} ms (last 30 s)" if s["p50_ms"] is not None
                   else "latency n/a")
        lines.append(f"  {str(s['name']):<{width}}  {str(s['state']):<12} {s['frames_decoded']} frames decoded, "
                     f"{classified} classified ({rate}), {latency}, "
                     f"{dropped} dropped" + (f"; {s['error']}" if s["error"] else ""))
    lines.append(f"outputs: {outputs}")
    return "\n".join(lines)
