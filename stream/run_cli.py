"""`sightline run CONFIG` and `sightline demo`: the streaming service from the command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from sightline.model.cli import add_backend_argument

if TYPE_CHECKING:  # the service's modules pull in torch, av and fastapi: imported when a command runs
    from sightline.stream.config import RunConfig
    from sightline.stream.metrics import Metrics
    from sightline.stream.pipeline import Pipeline

log = logging.getLogger("sightline")

DEMO_CONFIG = Path("configs/demo.yaml")
DEMO_CLIP = Path("media/demo.mp4")
DEMO_LABELS = Path("media/demo_labels.csv")  # ground truth for `sightline eval --labels media/demo_labels.csv`
TOKEN_ENV = "SIGHTLINE_TOKEN"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the streaming service on a YAML config",
                       description="Decode the configured streams, classify their frames in cross-stream batches, "
                                   "write overlays/recordings/prediction logs and serve the HTTP API and metrics.")
    p.add_argument("config", type=Path, metavar="CONFIG", help="YAML file (see configs/demo.yaml)")
    add_overrides(p)
    p.set_defaults(func=cmd_run)

    d = sub.add_parser("demo", help="make a demo clip of real photos and run configs/demo.yaml on it",
                       description="Writes media/demo.mp4 (scikit-image's photos) if missing, then runs the service "
                                   "on configs/demo.yaml.")
    d.add_argument("--config", type=Path, default=DEMO_CONFIG, help=f"default {DEMO_CONFIG}")
    add_overrides(d)
    d.set_defaults(func=cmd_demo)


def add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS", help="stop after this many seconds")
    p.add_argument("--model", default=None, help="replaces model.source (imagenet, a bundle or a .pth)")
    p.add_argument("--device", default=None, help="replaces model.device")
    add_backend_argument(p, default=None)
    p.add_argument("--port", type=int, default=None, help="replaces server.port (0: any free port)")


def cmd_run(args: argparse.Namespace) -> int:
    from sightline.stream.config import load_run_config

    config = apply_overrides(apply_environment(load_run_config(args.config), os.environ), args)
    return asyncio.run(run_service(config, args.duration))


def apply_overrides(config: RunConfig, args: argparse.Namespace) -> RunConfig:
    """Command-line flags win over the file."""
    model = {k: v for k, v in (("source", args.model), ("device", args.device),
                               ("backend", getattr(args, "backend", None))) if v is not None}
    server = {"port": args.port} if args.port is not None else {}
    return config.model_copy(update={"model": config.model.model_copy(update=model),
                                     "server": config.server.model_copy(update=server)})


def apply_environment(config: RunConfig, environ: Mapping[str, str]) -> RunConfig:
    """SIGHTLINE_TOKEN (when set and not empty) replaces server.token: secrets stay out of config files."""
    token = environ.get(TOKEN_ENV, "").strip()
    if not token:
        return config
    return config.model_copy(update={"server": config.server.model_copy(update={"token": token})})


def cmd_demo(args: argparse.Namespace) -> int:
    from sightline.stream.media import demo_segments, imagenet_segments, make_demo_clip, write_labels_csv

    if not DEMO_CLIP.exists():
        log.info("writing %s from scikit-image's sample photos", DEMO_CLIP)
        make_demo_clip(DEMO_CLIP)
        write_labels_csv(DEMO_LABELS, DEMO_CLIP.name, imagenet_segments(demo_segments()))
    return cmd_run(args)


def build_pipeline(config: RunConfig, metrics: Metrics | None = None) -> Pipeline:
    from sightline.model.backends.build import BuildOptions
    from sightline.model.backends.serving import open_classifier
    from sightline.stream.metrics import Metrics
    from sightline.stream.pipeline import Pipeline

    m = config.model
    classifier = open_classifier(m.source, device=m.device, precision=m.precision, backend=m.backend,
                                 compile=m.compile, options=BuildOptions(calibrate=m.calibrate, require_check=False))
    classifier.warmup(batch_size=min(config.batching.batch_size(classifier.device.type), 8))
    log.info("model %s", classifier.describe())
    return Pipeline(classifier, config, metrics if metrics is not None else Metrics())


async def run_service(config: RunConfig, duration: float | None = None) -> int:
    from sightline.stream.api import create_app
    from sightline.stream.http_server import HttpServer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # first: a signal while the model loads is a clean stop
        loop.add_signal_handler(sig, stop.set)
    server = None
    try:
        if config.server.enabled:
            server = HttpServer(config.server.host, config.server.port)
            server.bind()  # a busy port fails now, not after the model has loaded
        pipeline = await asyncio.to_thread(build_pipeline, config)
        if server is not None and not stop.is_set():
            try:  # the configured streams exist before the first request is answered
                await asyncio.to_thread(pipeline.start)
                await server.start(create_app(pipeline, config, pipeline.metrics))
            except BaseException:
                await asyncio.to_thread(pipeline.shutdown)
                raise
        code = await pipeline.run(duration=duration, stop=stop)
    finally:
        if server is not None:
            await server.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    for status in pipeline.statuses():
        log.info("stream %s: %s, %s frames decoded, %s classified%s", status["name"], status["state"],
                 status["frames_decoded"], status["frames_inferred"],
                 f" ({status['error']})" if status["error"] else "")
    return code
