"""RTSP over TCP interleaved, the config default, against a real server that speaks only that (GStreamer's
RTSP server): frames flow, the server dies -> ``reconnecting``, it comes back -> frames again."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sightline import synthetic_media as media
from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline

from tests.support.gst_rtsp import GstRtspServer, missing_gst
from tests.support.models import tiny_classifier
from tests.support.predictions import prediction_lines
from tests.support.waiting import wait_for

MISSING = missing_gst()
pytestmark = [pytest.mark.timeout(120), pytest.mark.slow, pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]


def test_rtsp_over_tcp_flows_reconnects_when_the_server_dies_and_resumes(tmp_path: Path) -> None:
    # 20 s of video: the server plays the file once per connection, longer than this test needs
    clip = media.make_test_clip(tmp_path / "cam.mp4", frames=500, fps=25, size=(160, 120))
    server = GstRtspServer(clip).start()
    stream = StreamConfig(name="gate", url=server.url, open_timeout_s=5, stall_timeout_s=2,
                          reconnect={"initial_s": 0.2, "max_s": 1.0})
    assert stream.transport == "tcp"  # the default is what this test is about
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path, streams=[stream])
    pipeline = Pipeline(tiny_classifier(), config, Metrics())
    pipeline.start()
    try:
        gate = pipeline.get("gate").stats
        status = pipeline.statuses
        wait_for(lambda: gate.state == "live" and gate.frames_inferred >= 15, 30, "frames over RTSP/TCP", status)

        server.kill()
        wait_for(lambda: gate.state == "reconnecting", 15, "the stream to notice the server is gone", status)
        time.sleep(1.0)  # frames decoded before the drop finish their way through the model
        down_at = gate.frames_inferred
        time.sleep(1.5)  # refused reconnects (backoff capped at 1 s) while the server is down: nothing new
        assert gate.state == "reconnecting" and gate.frames_inferred == down_at
        assert gate.reconnects >= 2

        server.start()
        wait_for(lambda: gate.frames_inferred >= down_at + 15, 30, "frames after the server came back", status)
        assert gate.state == "live"
    finally:
        pipeline.shutdown()
        server.stop()
    lines = prediction_lines(tmp_path / "out", "gate")
    assert len(lines) >= 30
