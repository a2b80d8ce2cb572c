"""An in-process API (httpx over ASGI, no socket) on a real pipeline with a tiny model, for API regressions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from sightline.stream.config import RunConfig
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.service.app import create_app

from tests.support.models import tiny_classifier

TOKEN = "test-token-1234"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BASE_URL = "http://127.0.0.1:8080"  # the default bind address: what a local client sends as Host
LISTING_ENDPOINTS = ("/api/streams", "/readyz", "/metrics")


@contextlib.asynccontextmanager
async def api_client(media_root: Path, output_dir: Path, **config: object
                     ) -> AsyncIterator[tuple[httpx.AsyncClient, Pipeline]]:
    """The app on a started pipeline (no streams unless ``config`` has some); shut down on exit."""
    run_config = RunConfig.model_validate({"output_dir": output_dir, "media_root": media_root,
                                           "server": {"token": TOKEN}, **config})
    pipeline = Pipeline(tiny_classifier(), run_config, Metrics())
    await asyncio.to_thread(pipeline.start)
    try:
        app = create_app(pipeline, run_config, pipeline.metrics)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL, timeout=10) as client:
            yield client, pipeline
    finally:
        await asyncio.to_thread(pipeline.shutdown, 5.0)


async def listing_endpoints_answer(client: httpx.AsyncClient) -> dict[str, httpx.Response]:
    """Every endpoint that reports on all streams, each asserted to answer (200, or 503 for an unready /readyz)."""
    responses = {}
    for path in LISTING_ENDPOINTS:
        r = await client.get(path)
        assert r.status_code in ((200, 503) if path == "/readyz" else (200,)), (path, r.status_code, r.text[:300])
        responses[path] = r
    return responses
