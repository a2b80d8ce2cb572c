"""The RTSP test harness (tests/support/rtsp.py) against the real rtsp-server-perl, ffmpeg and PyAV.

These pin down the server behaviour the streaming source tests rely on: UDP works and TCP does
not, a stopped publisher is only noticed through the read timeout, a stopped server ends the
stream, and a path can be published again after a polite stop.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from sightline import synthetic_media as media

from tests.support.rtsp import RtspPublisher, RtspServer, missing_tools

MISSING = missing_tools()
pytestmark = [pytest.mark.skipif(MISSING is not None, reason=MISSING or ""), pytest.mark.timeout(60)]

FPS = 25
LOOP_FRAMES = 250


@pytest.fixture(scope="module")
def counter_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 s at 25 fps, 160x120, a keyframe every second, each frame stamped with its index."""
    path = tmp_path_factory.mktemp("rtsp") / "counter.mp4"
    return media.make_test_clip(path, frames=LOOP_FRAMES, fps=FPS, size=(160, 120))


@pytest.fixture(scope="module")
def server() -> Iterator[RtspServer]:
    """One server for the module (perl takes ~1 s to start); each test publishes on its own path."""
    with RtspServer() as srv:
        yield srv


@pytest.fixture
def path(request: pytest.FixtureRequest) -> str:
    return request.node.name.replace("[", "-").replace("]", "")


def open_udp(url: str, read_timeout: float = 5.0) -> av.container.InputContainer:
    return av.open(url, options={"rtsp_transport": "udp"}, timeout=(5.0, read_timeout))


def read_counters(container: av.container.InputContainer, n: int) -> list[int]:
    out: list[int] = []
    for frame in container.decode(video=0):
        out.append(media.read_frame_counter(frame.to_ndarray(format="rgb24")))
        if len(out) == n:
            break
    return out


def test_server_listens_on_private_ports_and_stops_without_leftovers() -> None:
    srv = RtspServer().start()
    ports = (srv.client_port, srv.source_port)
    assert all(port > 1024 for port in ports)
    for port in ports:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    srv.stop()
    assert not srv.running
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2)


def test_reader_decodes_published_frames_in_order_over_udp(server: RtspServer, counter_clip: Path, path: str) -> None:
    with RtspPublisher(server, path, counter_clip) as pub, open_udp(pub.url) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (160, 120)
        counters = read_counters(container, 30)
    assert len(counters) == 30
    assert counters[0] % FPS == 0, "decoding starts at a keyframe"
    # In order; UDP may in principle lose a frame on a starved machine, so allow a small gap.
    assert all(1 <= (b - a) % LOOP_FRAMES <= 3 for a, b in zip(counters, counters[1:], strict=False))


def test_tcp_transport_is_refused_by_this_server(server: RtspServer, counter_clip: Path, path: str) -> None:
    with RtspPublisher(server, path, counter_clip) as pub, pytest.raises(av.error.HTTPBadRequestError):
        av.open(pub.url, options={"rtsp_transport": "tcp"}, timeout=(5.0, 5.0))


def test_unpublished_path_is_not_found(server: RtspServer) -> None:
    with pytest.raises(av.error.HTTPNotFoundError):
        open_udp(server.url("nobody-here"))


def test_reader_times_out_soon_after_the_publisher_stops(server: RtspServer, counter_clip: Path, path: str) -> None:
    pub = RtspPublisher(server, path, counter_clip).start()
    with open_udp(pub.url, read_timeout=1.0) as container:
        assert len(read_counters(container, 5)) == 5
        pub.stop()
        stopped = time.monotonic()
        # No EOF: the server never tells readers; PyAV's read timeout fires (twice, see the module notes).
        with pytest.raises(av.error.ExitError):
            for _ in container.decode(video=0):
                pass
        assert time.monotonic() - stopped < 5.0


def test_path_can_be_published_again_for_a_new_reader(server: RtspServer, counter_clip: Path, path: str) -> None:
    pub = RtspPublisher(server, path, counter_clip).start()
    pub.stop()
    assert not server.is_published(path)
    pub.start()
    try:
        with open_udp(pub.url) as container:
            assert len(read_counters(container, 5)) == 5
    finally:
        pub.close()


def test_aborted_publisher_leaves_the_path_stale(server: RtspServer, counter_clip: Path, path: str) -> None:
    pub = RtspPublisher(server, path, counter_clip).start()
    pub.abort()
    assert server.is_published(path)
    with pytest.raises(RuntimeError, match="already published"):
        RtspPublisher(server, path, counter_clip).start()


def test_reader_reaches_end_of_stream_when_the_server_stops(counter_clip: Path) -> None:
    srv = RtspServer().start()
    pub = RtspPublisher(srv, "cam", counter_clip).start()
    try:
        with open_udp(pub.url) as container:
            assert len(read_counters(container, 5)) == 5
            srv.stop()
            stopped = time.monotonic()
            remaining = sum(1 for _ in container.decode(video=0))  # ends without an exception
        assert time.monotonic() - stopped < 3.0
        assert remaining < FPS
    finally:
        pub.close()
        srv.stop()


def test_transcoding_publisher_gives_keyframes_to_late_readers(server: RtspServer, tmp_path: Path, path: str) -> None:
    # One keyframe in 10 s: copied as is, a late reader would wait for the loop to come round.
    clip = media.make_test_clip(tmp_path / "one_gop.mp4", frames=LOOP_FRAMES, fps=FPS, gop=LOOP_FRAMES)
    with RtspPublisher(server, path, clip, transcode=True, gop=10) as pub:
        time.sleep(1.0)
        with open_udp(pub.url) as container:
            opened = time.monotonic()
            frames = [f.to_ndarray(format="rgb24") for f, _ in zip(container.decode(video=0), range(5), strict=False)]
            waited = time.monotonic() - opened
    assert len(frames) == 5 and all(np.asarray(f).shape == (120, 160, 3) for f in frames)
    assert waited < 5.0  # copied as is, the wait is ~8 s (measured)
