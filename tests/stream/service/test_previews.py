"""Previews: every stream drawn at one size, and each snapshot carries the labels of its own frame."""

from __future__ import annotations

import asyncio
import json
import re
import time
from importlib import resources
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from sightline import synthetic_media as media
from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.service.app import create_app
from sightline.stream.service.previews import PREVIEW_HEIGHT
from sightline.stream.service.routers.previews import LABELS_HEADER

from tests.support.models import tiny_classifier

pytestmark = [pytest.mark.timeout(90)]


async def test_snapshots_of_small_and_large_streams_have_one_size_and_their_own_labels(tmp_path: Path) -> None:
    small = media.make_test_clip(tmp_path / "small.mp4", frames=12, size=(160, 120))
    large = media.make_test_clip(tmp_path / "large.mp4", frames=12, size=(640, 360))
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path, streams=[
        StreamConfig(name="small", url=str(small), mode="fast"),
        StreamConfig(name="large", url=str(large), mode="fast", record="annotated")])  # full-size frames kept
    pipeline = Pipeline(tiny_classifier(), config, Metrics())
    await asyncio.to_thread(pipeline.start)
    try:
        deadline = time.monotonic() + 60
        while not pipeline.finished and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert pipeline.finished  # both ended: their latest frames no longer change
        app = create_app(pipeline, config, pipeline.metrics)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
            for name, aspect in (("small", 160 / 120), ("large", 640 / 360)):
                r = await client.get(f"/api/streams/{name}/snapshot.jpg")
                assert r.status_code == 200
                image = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
                assert image.shape[0] == PREVIEW_HEIGHT  # same height, so the overlay text has one size
                assert image.shape[1] == pytest.approx(PREVIEW_HEIGHT * aspect, abs=2)
                labels = json.loads(r.headers[LABELS_HEADER])
                status = (await client.get(f"/api/streams/{name}")).json()
                assert labels["seq"] == 11  # the last frame
                assert [p["label"] for p in labels["top"]] == [p["label"] for p in status["prediction"]]
                assert labels["smoothed"] == status["smoothed"]
                assert len(labels["top"]) == 4  # top-k (k=5, 4 classes) for the page's card
    finally:
        await asyncio.to_thread(pipeline.shutdown)


def test_the_page_takes_each_cards_labels_from_its_own_snapshot() -> None:
    page = resources.files("sightline.stream.service").joinpath("static/index.html").read_text()
    assert 'r.headers.get("X-Sightline-Labels")' in page and LABELS_HEADER == "X-Sightline-Labels"
    assert not re.search(r"\bs\.(smoothed|prediction)\b", page)  # no card label from the (later) status poll


def test_the_page_marks_the_big_label_as_smoothed_and_the_list_as_raw() -> None:
    page = resources.files("sightline.stream.service").joinpath("static/index.html").read_text()
    assert 'kind.textContent = labels.smoothed ? "smoothed" : "raw top-1"' in page
    assert '"this frame, raw top-k:"' in page
    assert "li.smoothing = s.smoothing" in page  # the settings for the label's explanation, from the status
