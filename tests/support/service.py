"""Services for tests: a pipeline plus the HTTP app for API tests (tiny model, webrtc:// streams: they decode
nothing, no network), and a real `sightline run` child process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from fastapi import FastAPI
from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.service.app import create_app

from tests.support.models import tiny_classifier


def make_service(tmp_path: Path, streams: tuple[str, ...] = (), **server: Any) -> tuple[Pipeline, FastAPI]:
    """A started pipeline with one ``webrtc://`` stream per name, and its app (``server`` sets ServerConfig)."""
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path, log_predictions=False,
                       server={"port": 0, **server},
                       streams=[StreamConfig(name=n, url=f"webrtc://{n}") for n in streams])
    pipeline = Pipeline(tiny_classifier(), config, Metrics())
    pipeline.start()
    return pipeline, create_app(pipeline, config, pipeline.metrics)


def spawn_service(tmp_path: Path, config: dict, prefix: tuple[str, ...] = ()) -> tuple[subprocess.Popen[str], Path]:
    """`sightline run` on ``config`` in a child process; its output goes to a file, not a pipe: nobody reads it
    until the end, and a full pipe would block the service's logging. ``prefix``: a command that runs it (one that
    ends by exec'ing it keeps the child's pid the service's)."""
    path = tmp_path / "service.yaml"
    path.write_text(yaml.safe_dump(config))
    log = tmp_path / "service.log"
    with log.open("w") as sink:
        proc = subprocess.Popen([*prefix, sys.executable, "-m", "sightline", "run", str(path)], cwd=tmp_path, text=True,
                                stdout=sink, stderr=subprocess.STDOUT)
    return proc, log
