"""Publishing the annotated video to a real RTSP server (Debian's rtsp-server-perl), read back by PyAV.

The clip is a flat grey picture, so the overlay is what differs: a dark label panel in the top-left
corner (stream/outputs/overlay.py darkens it to ~2/5 of the picture plus white text). A frame the reader
decodes must show that panel where the stream's snapshot shows it.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.service.app import create_app

from tests.support.annotated import GREY, assert_overlay, grey_clip
from tests.support.models import tiny_classifier
from tests.support.processes import stop_process
from tests.support.rtsp import RtspServer, free_tcp_port, missing_tools

pytestmark = [pytest.mark.timeout(90)]


async def get_json(app: object, path: str) -> dict:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        return (await client.get(path)).json()


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


def test_rtmp_publish_read_back_by_an_ffmpeg_listener(tmp_path: Path) -> None:
    """RTMP out (FLV): ``ffmpeg -listen 1`` plays the media server and writes what it receives."""
    clip = grey_clip(tmp_path / "grey.mp4")
    port = free_tcp_port()
    received = tmp_path / "received.mp4"
    listener = subprocess.Popen(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "warning", "-listen", "1",
                                 "-timeout", "30", "-i", f"rtmp://127.0.0.1:{port}/live/streamkey",
                                 "-frames:v", "15", "-c", "copy", "-y", str(received)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path, log_predictions=False,
                       annotated_video={"height": 240, "reconnect": {"initial_s": 0.2, "max_s": 1.0}},
                       streams=[StreamConfig(name="cam", url=str(clip), loop=True,
                                             publish=f"rtmp://127.0.0.1:{port}/live/streamkey")])
    pipeline = Pipeline(tiny_classifier(), config, Metrics())
    pipeline.start()
    try:
        _, err = listener.communicate(timeout=40)
        assert listener.returncode == 0, err.decode(errors="replace")
        with av.open(str(received)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) >= 10 and frames[-1].shape == (240, 320, 3)
        assert_overlay(frames[-1], pipeline.snapshot("cam"))
        status = pipeline.video_out.get("cam").publisher.status()
        assert "streamkey" not in str(status) and status["packets_sent"] >= 15  # the RTMP key is a secret
        video = asyncio.run(get_json(create_app(pipeline, config, None), "/api/streams/cam/video"))
        assert video["publish"]["url"] == f"rtmp://127.0.0.1:{port}/live/***" and video["encoding"], video
    finally:
        stop_process(listener)
        pipeline.shutdown()


def test_view_remux_publishes_the_cameras_own_video_without_labels(tmp_path: Path) -> None:
    """``view: remux``: the source's own H.264 packets go out (its size, no overlay, nothing encoded); the stream is
    classified as before and its snapshot still has the labels."""
    clip = grey_clip(tmp_path / "grey.mp4", size=(192, 144))
    port = free_tcp_port()
    received = tmp_path / "received.mp4"
    listener = subprocess.Popen(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "warning", "-listen", "1",
                                 "-timeout", "30", "-i", f"rtmp://127.0.0.1:{port}/live/key",
                                 "-frames:v", "30", "-c", "copy", "-y", str(received)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path, log_predictions=False,
                       annotated_video={"height": 240, "reconnect": {"initial_s": 0.2, "max_s": 1.0}},
                       streams=[StreamConfig(name="cam", url=str(clip), loop=True, view="remux", infer_fps=1,
                                             publish=f"rtmp://127.0.0.1:{port}/live/key")])
    pipeline = Pipeline(tiny_classifier(), config, Metrics())
    pipeline.start()
    try:
        _, err = listener.communicate(timeout=40)
        assert listener.returncode == 0, err.decode(errors="replace")
        with av.open(str(received)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) >= 25 and frames[-1].shape == (144, 192, 3)  # the source's size, not annotated_video's
        assert np.abs(frames[-1].astype(int) - GREY).max() < 12  # grey everywhere: no label panel drawn
        relay = pipeline.video_out.get("cam")
        assert relay.frames_encoded == 0 and relay.packets_sent >= 30 and relay.publisher.status()["packets_sent"]
        stats = pipeline.get("cam").stats
        assert stats.frames_inferred > 0 and stats.decode.mode == "keyframes"  # publishing decodes nothing more
        assert pipeline.get("cam").output.latest.top  # previews keep the labels (drawn on the classified frames)
    finally:
        stop_process(listener)
        pipeline.shutdown()


def test_unreachable_server_drops_and_counts_while_inference_goes_on(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    clip = grey_clip(tmp_path / "grey.mp4", seconds=1.0)
    port = free_tcp_port()  # nothing listens there
    url = f"rtsp://admin:hunter2@127.0.0.1:{port}/annotated"
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path, log_predictions=False,
                       annotated_video={"height": 120, "reconnect": {"initial_s": 0.1, "max_s": 0.3}},
                       streams=[StreamConfig(name="cam", url=str(clip), loop=True, publish=url)])
    metrics = Metrics()
    pipeline = Pipeline(tiny_classifier(), config, metrics)
    pipeline.start()
    try:
        publisher = pipeline.video_out.get("cam").publisher
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (publisher.reconnects < 2 or publisher.dropped < 10):
            time.sleep(0.1)
        stats = pipeline.get("cam").stats
        assert stats.state == "live" and stats.frames_inferred > 10
        assert publisher.state in ("connecting", "reconnecting")  # trying again, never "live"
        assert publisher.reconnects >= 2 and publisher.dropped >= 10
        dropped = metrics.registry.get_sample_value("sightline_annotated_frames_dropped_total",
                                                    {"stream": "cam", "stage": "publish"})
        assert dropped is not None and dropped >= 10
        assert metrics.registry.get_sample_value("sightline_publish_up", {"stream": "cam"}) == 0
    finally:
        pipeline.shutdown()
    assert publisher.state == "stopped"
    assert "hunter2" not in caplog.text and "hunter2" not in str(publisher.status())


@pytest.mark.parametrize("url", ["ftp://host/x", "http://host/x", "rtsp://host:99999/x", "/tmp/file.mp4",
                                 "rtsp://ho st/x"])
def test_publish_url_is_validated_whole(url: str) -> None:
    with pytest.raises(ValueError) as info:
        StreamConfig(name="cam", url="webrtc://cam", publish=url)
    assert "publish" in str(info.value)


def test_publish_url_schemes_accepted() -> None:
    for url in ("rtsp://user:pw@127.0.0.1:8554/out", "rtsps://nvr.example:322/a", "rtmp://127.0.0.1/live/key",
                "rtmps://live.example/app/key"):
        assert StreamConfig(name="cam", url="webrtc://cam", publish=url).publish == url
