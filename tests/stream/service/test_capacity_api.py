"""Over capacity, visibly: a model slower than the streams ask for. /readyz stays 200 and says by how much,
GET /api/streams carries the box's figures and each stream's share, /metrics the capacity gauges; every
stream keeps a fair share of the classifications."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sightline import synthetic_media as media
from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.service.app import create_app

from tests.support.models import tiny_classifier

pytestmark = [pytest.mark.timeout(90)]

STREAMS = 6
FPS = 25  # each stream asks for every frame: 150 a second; the model below serves at most 8 / 0.15 s = 53


def slow_classifier(seconds: float):
    classifier = tiny_classifier()
    forward = classifier.forward

    def slow(batch):  # noqa: ANN001, ANN202
        time.sleep(seconds)
        return forward(batch)

    classifier.forward = slow
    return classifier


async def get(app, path: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        return await client.get(path)


def test_over_capacity_is_reported_and_shared_fairly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clip = media.make_test_clip(tmp_path / "clip.mp4", frames=2 * FPS, fps=FPS, size=(64, 48), counter=False)
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path, log_predictions=False,
                       streams=[StreamConfig(name=f"cam-{i}", url=str(clip), loop=True) for i in range(STREAMS)])
    pipeline = Pipeline(slow_classifier(0.15), config, Metrics())
    app = create_app(pipeline, config, pipeline.metrics)
    pipeline.start()
    try:
        deadline = time.monotonic() + 30
        while not (ready := asyncio.run(get(app, "/readyz")).json())["over_capacity"]:
            assert time.monotonic() < deadline, f"never reported over capacity: {ready}"
            time.sleep(0.2)
        time.sleep(3.0)  # a few seconds over: shares to compare
        r = asyncio.run(get(app, "/readyz"))
        listed = asyncio.run(get(app, "/api/streams")).json()
        text = asyncio.run(get(app, "/metrics")).text
    finally:
        pipeline.shutdown()

    assert r.status_code == 200  # stays in the load balancer
    body = r.json()
    assert body["ready"] is True and body["over_capacity"] is True
    assert "classifications/s" in body["detail"] and "x over capacity" in body["detail"]
    assert body["capacity"]["overload_ratio"] > 1.5, body
    capacity = listed["capacity"]
    assert capacity["over_capacity"] is True and capacity["demand_per_s"] > capacity["served_per_s"] > 0
    shares = [s["capacity"]["served_share"] for s in listed["streams"]]
    served = [s["capacity"]["served_per_s"] for s in listed["streams"]]
    assert min(served) / statistics.median(served) >= 0.8, served  # no stream starved while another is fed
    assert min(shares) / statistics.median(shares) >= 0.8, shares
    gauges = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
              if s.name.startswith("sightline_capacity_")}
    assert gauges["sightline_capacity_over"] == 1.0
    assert gauges["sightline_capacity_overload_ratio"] > 1.5
    assert gauges["sightline_capacity_demand_per_second"] > gauges["sightline_capacity_served_per_second"] > 0
    went_over = [r for r in caplog.records if r.name == "sightline.stream.capacity"]
    assert len(went_over) == 1 and "over capacity" in went_over[0].getMessage()  # one line, not one per frame
