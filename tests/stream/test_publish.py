"""Publishing the annotated video to a real RTSP server (Debian's rtsp-server-perl), read back by PyAV.

The clip is a flat grey picture, so the overlay is what differs: a dark label panel in the top-left
corner (stream/overlay.py darkens it to ~2/5 of the picture plus white text). A frame the reader
decodes must show that panel where the stream's snapshot shows it.
"""

from __future__ import annotations

import time
from pathlib import Path

import av
import numpy as np
import pytest
from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline import Pipeline

from tests.support.annotated import assert_overlay, grey_clip
from tests.support.models import tiny_classifier
from tests.support.rtsp import RtspServer, missing_tools

pytestmark = [pytest.mark.timeout(90)]


def read_frames(url: str, count: int, timeout: float = 20.0) -> list[np.ndarray]:
    """Open ``url`` as a separate RTSP reader (UDP, as the server wants) and decode ``count`` frames."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with av.open(url, options={"rtsp_transport": "udp"}, timeout=(5, 3)) as container:
                frames = []
                for frame in container.decode(video=0):
                    frames.append(frame.to_ndarray(format="rgb24"))
                    if len(frames) >= count:
                        return frames
        except (av.FFmpegError, OSError) as exc:  # not published yet, or published a moment ago
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"no {count} frames from {url} within {timeout:.0f}s: {last}")


@pytest.mark.slow
def test_publish_to_rtsp_server_reconnects_after_restart(tmp_path: Path) -> None:
    reason = missing_tools()
    if reason:
        pytest.fail(reason)  # CI installs rtsp-server-perl: a missing server is a failure, not a skip
    clip = grey_clip(tmp_path / "grey.mp4")
    server = RtspServer().start()
    try:
        target = server.publish_url("annotated")
        target = target.replace("rtsp://", "rtsp://user:secret@")  # credentials in the URL stay out of logs
        config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path, log_predictions=False,
                           annotated_video={"height": 240, "reconnect": {"initial_s": 0.2, "max_s": 1.0}},
                           streams=[StreamConfig(name="cam", url=str(clip), loop=True, publish=target)])
        metrics = Metrics()
        pipeline = Pipeline(tiny_classifier(), config, metrics)
        pipeline.start()
        try:
            publisher = pipeline.video_out.get("cam").publisher
            server.wait_published("annotated", timeout=20)
            frames = read_frames(server.url("annotated"), 10)
            snapshot = pipeline.snapshot("cam")
            assert frames[-1].shape == (240, 320, 3)
            assert_overlay(frames[-1], snapshot)
            assert publisher.state == "live" and "secret" not in publisher.status()["url"]
            encoded = pipeline.video_out.get("cam").frames_encoded

            # the media server goes away and comes back on the same ports: the publisher reconnects
            ports = {"client_port": server.client_port, "source_port": server.source_port}
            server.stop()
            deadline = time.monotonic() + 15
            while publisher.state == "live" and time.monotonic() < deadline:
                time.sleep(0.1)
            assert publisher.state != "live"
            assert pipeline.get("cam").stats.state == "live"  # the stream itself goes on
            server = RtspServer().start(**ports)
            server.wait_published("annotated", timeout=20)
            frames = read_frames(server.url("annotated"), 10)
            assert_overlay(frames[-1], pipeline.snapshot("cam"))
            assert publisher.reconnects >= 1 and publisher.state == "live"
            assert pipeline.video_out.get("cam").frames_encoded > encoded
            text = metrics.registry.get_sample_value("sightline_publish_reconnects_total", {"stream": "cam"})
            assert text is not None and text >= 1
            assert metrics.registry.get_sample_value("sightline_publish_up", {"stream": "cam"}) == 1
        finally:
            pipeline.shutdown()
    finally:
        server.stop()
    assert publisher.state == "stopped"
