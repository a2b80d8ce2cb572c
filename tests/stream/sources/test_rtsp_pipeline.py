"""A real RTSP camera: the pipeline reads it, notices when it goes away, and picks it up again."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sightline import synthetic_media as media
from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline

from tests.support.models import tiny_classifier
from tests.support.predictions import prediction_lines
from tests.support.rtsp import RtspPublisher, RtspServer, missing_tools

pytestmark = [pytest.mark.timeout(120), pytest.mark.skipif(missing_tools() is not None, reason=str(missing_tools()))]


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_rtsp_stream_survives_publisher_restart_beside_a_file_stream(tmp_path: Path) -> None:
    clip = media.make_test_clip(tmp_path / "cam.mp4", frames=50, fps=25, size=(160, 120))
    side = media.make_test_clip(tmp_path / "side.mp4", frames=50, fps=25, size=(160, 120))
    with RtspServer() as server:
        publisher = RtspPublisher(server, "lobby", clip).start()
        config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path, streams=[
            StreamConfig(name="lobby", url=publisher.url, transport="udp", open_timeout_s=5, stall_timeout_s=1,
                         reconnect={"initial_s": 0.2, "max_s": 1.0}),
            StreamConfig(name="side", url=str(side), mode="realtime", loop=True),
        ])
        pipeline = Pipeline(tiny_classifier(), config, Metrics())
        pipeline.start()
        try:
            lobby = pipeline.get("lobby").stats
            wait_for(lambda: lobby.frames_inferred >= 20 and lobby.state == "live", 30, "frames over RTSP")

            publisher.stop()
            wait_for(lambda: lobby.state == "reconnecting", 15, "the stream to notice the publisher is gone")
            stalled_at = lobby.frames_inferred
            side_before = pipeline.get("side").stats.frames_inferred

            publisher = RtspPublisher(server, "lobby", clip).start()
            wait_for(lambda: lobby.frames_inferred >= stalled_at + 20, 30, "frames after the publisher returned")
            assert lobby.state == "live"
            assert lobby.reconnects >= 1
            assert pipeline.get("side").stats.frames_inferred > side_before  # the file stream never paused
        finally:
            publisher.stop()
            pipeline.shutdown()
    lines = prediction_lines(tmp_path / "out", "lobby")
    assert len(lines) >= 40
