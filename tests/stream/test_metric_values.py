"""Metric values from real pipeline runs, read back as Prometheus scrapes them (GET /metrics):
stream_up, stream_fps, reconnects_total and the output_behind / inference_error drop reasons."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families
from sightline import synthetic_media as media
from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.service.app import create_app
from sightline.stream.service.status import stream_status

from tests.support.models import tiny_classifier

pytestmark = pytest.mark.timeout(90)


def wait_for(check: Callable[[], bool], timeout: float, what: str, explain: Callable[[], object]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {explain()}"
        time.sleep(0.05)


async def scrape(pipeline: Pipeline) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    app = create_app(pipeline, pipeline.config, pipeline.metrics)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        text = (await client.get("/metrics")).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_stream_up_fps_and_reconnects_as_scraped(tmp_path: Path) -> None:
    fps = 10  # the camera's rate bounds the FPS gauge from above
    clip = media.make_test_clip(tmp_path / "clip.mp4", frames=30, fps=fps, size=(96, 64))
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path, streams=[
        StreamConfig(name="cam", url=str(clip), loop=True),
        StreamConfig(name="door", url="rtsp://127.0.0.1:9/x", open_timeout_s=1,
                     reconnect={"initial_s": 0.05, "max_s": 0.2})])
    pipeline = Pipeline(tiny_classifier(), config, Metrics())
    pipeline.start()
    try:
        cam, door = pipeline.get("cam").stats, pipeline.get("door").stats
        wait_for(lambda: cam.frames_inferred >= 25 and door.reconnects >= 3, 40, "frames and reconnects",
                 pipeline.statuses)
        reconnects_before = door.reconnects
        samples = asyncio.run(scrape(pipeline))
        reconnects_after = door.reconnects
        cam_fps = stream_status(pipeline.get("cam"))["fps"]
    finally:
        pipeline.shutdown()
    assert value(samples, "sightline_stream_up", stream="cam") == 1.0
    assert value(samples, "sightline_stream_up", stream="door") == 0.0
    assert value(samples, "sightline_stream_state", stream="door", state="reconnecting") == 1.0
    assert reconnects_before <= value(samples, "sightline_reconnects_total", stream="door") <= reconnects_after
    assert value(samples, "sightline_reconnects_total", stream="cam") == 0.0
    scraped_fps = value(samples, "sightline_stream_fps", stream="cam")
    assert 0 < scraped_fps <= fps * 1.25  # never above what the camera offers (+ window rounding)
    assert abs(scraped_fps - cam_fps) <= 2.0  # the scrape refreshed the gauge: same 5 s window as the API
    assert value(samples, "sightline_stream_fps", stream="door") == 0.0
    assert pipeline.get("cam").stats.state == "stopped"
    assert asyncio.run(scrape(pipeline))[("sightline_stream_up", (("stream", "cam"),))] == 0.0


def test_a_looping_file_stays_live_across_its_restarts(tmp_path: Path) -> None:
    """stream_up is 1 while the stream is live: a looping file reopening itself must not flap to connecting."""
    clip = media.make_test_clip(tmp_path / "clip.mp4", frames=5, fps=25, size=(96, 64))  # loops every 0.2 s
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path, log_predictions=False,
                       streams=[StreamConfig(name="cam", url=str(clip), loop=True)])
    metrics = Metrics()
    pipeline = Pipeline(tiny_classifier(), config, metrics)
    pipeline.start()
    try:
        stats = pipeline.get("cam").stats
        wait_for(lambda: stats.state == "live", 20, "the stream to go live", pipeline.statuses)
        transitions: list[str] = []
        set_state = stats.set_state
        stats.set_state = lambda state, error=None: (transitions.append(state), set_state(state, error))[1]
        start = stats.frames_decoded
        wait_for(lambda: stats.frames_decoded >= start + 15, 20, "three loops", pipeline.statuses)
        up = metrics.registry.get_sample_value("sightline_stream_up", {"stream": "cam"})
        seen = list(transitions)
    finally:
        pipeline.shutdown()
    assert set(seen) <= {"live"}, seen
    assert up == 1.0


class SlowSink:
    """A sink on a slow disk: the live stream's output thread falls behind."""

    name = "slow"

    def __init__(self) -> None:
        self.writes = 0

    def write(self, item) -> None:
        self.writes += 1
        time.sleep(0.15)

    def close(self) -> None:
        pass


def test_output_behind_drops_are_counted(tmp_path: Path) -> None:
    clip = media.make_test_clip(tmp_path / "clip.mp4", frames=60, fps=30, size=(96, 64))  # 2 s at 30 fps
    slow = SlowSink()
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path, log_predictions=False,
                       streams=[StreamConfig(name="cam", url=str(clip))])
    metrics = Metrics()
    pipeline = Pipeline(tiny_classifier(), config, metrics, extra_sinks=lambda _: [slow])
    assert asyncio.run(pipeline.run(duration=60)) == 0
    status = stream_status(pipeline.get("cam"))
    behind = status["dropped"].get("output_behind", 0)
    # 30 fps into a sink that takes 0.15 s per frame (~7 fps) with an 8-frame live output queue: at most
    # ~7 * 2 s + 8 + 1 frames reach the sink, so well over a third of the 60 are dropped as output_behind.
    assert behind >= 20, status
    assert slow.writes == status["frames_inferred"]  # a result counts once the output thread handled it
    assert status["frames_inferred"] + sum(status["dropped"].values()) == status["frames_decoded"] == 60
    assert metrics.registry.get_sample_value("sightline_frames_dropped_total",
                                             {"stream": "cam", "reason": "output_behind"}) == behind


class FailSecondCall(torch.nn.Module):
    """The network fails once (the second batch), as a device error would: that batch is lost, the rest served."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net
        self.calls = 0
        self.lock = threading.Lock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.lock:
            self.calls += 1
            call = self.calls
        if call == 2:
            raise RuntimeError("injected device failure")
        return self.net(x)


def test_inference_error_drops_are_counted_and_the_stream_goes_on(tmp_path: Path) -> None:
    clip = media.make_test_clip(tmp_path / "clip.mp4", frames=24, fps=25, size=(96, 64))
    classifier = tiny_classifier()
    classifier.network = FailSecondCall(classifier.network)
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path, model={"workers": 1},
                       batching={"max_batch": 4}, streams=[StreamConfig(name="c", url=str(clip), mode="fast")])
    metrics = Metrics()
    pipeline = Pipeline(classifier, config, metrics)
    assert asyncio.run(pipeline.run(duration=60)) == 0
    status = stream_status(pipeline.get("c"))
    errors = status["dropped"].get("inference_error", 0)
    assert status["state"] == "ended" and status["frames_decoded"] == 24
    assert 1 <= errors <= 4  # exactly one batch of at most max_batch frames was lost
    assert status["frames_inferred"] == 24 - errors
    assert len((tmp_path / "out" / "c.jsonl").read_text().splitlines()) == 24 - errors
    assert metrics.registry.get_sample_value("sightline_frames_dropped_total",
                                             {"stream": "c", "reason": "inference_error"}) == errors


def test_a_fresh_pipelines_counters_are_exported_at_zero(tmp_path: Path) -> None:
    """Every counter the docs list exists from the first scrape, before anything happened: a series that
    appears only with its first count makes rate()/increase() miss that count and dashboards say "no data"."""
    from sightline.stream.metrics import SWAP_RESULTS

    clip = media.make_test_clip(tmp_path / "clip.mp4", frames=30, fps=10, size=(96, 64))
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path, log_predictions=True,
                       annotated_video={"reconnect": {"initial_s": 5.0, "max_s": 5.0}},
                       streams=[StreamConfig(name="cam", url=str(clip), loop=True, record=True,
                                             publish="rtmp://127.0.0.1:9/live")])  # port 9 refuses: loopback only
    pipeline = Pipeline(tiny_classifier(), config, Metrics())
    pipeline.start()
    try:
        samples = asyncio.run(scrape(pipeline))
    finally:
        pipeline.shutdown()
    missing = []
    for sink in ("jsonl", "recorder", "annotated_video"):
        if value(samples, "sightline_sink_errors_total", stream="cam", sink=sink) != 0:
            missing.append(f"sink_errors {sink}")
    if value(samples, "sightline_records_lost_total", stream="cam", sink="jsonl") != 0:
        missing.append("records_lost jsonl")
    for result in SWAP_RESULTS:
        if value(samples, "sightline_model_swaps_total", result=result) != 0:
            missing.append(f"model_swaps {result}")
    if value(samples, "sightline_publish_packets_total", stream="cam") != 0:
        missing.append("publish_packets")
    if value(samples, "sightline_publish_reconnects_total", stream="cam") is None:  # the refused connect may count
        missing.append("publish_reconnects")
    for stage in ("encoder", "viewer", "publish"):
        if value(samples, "sightline_annotated_frames_dropped_total", stream="cam", stage=stage) is None:
            missing.append(f"annotated_frames_dropped {stage}")
    assert not missing, (missing, sorted(k for k in samples if k[0].endswith("_total")))
