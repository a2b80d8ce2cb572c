"""A pipeline plus the HTTP app for API tests: tiny model, webrtc:// streams (they decode nothing), no network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
