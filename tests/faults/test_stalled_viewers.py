"""Issue #11 row 9: MJPEG slots are counted atomically, and viewers that never read lose their slot.

Raw sockets on 127.0.0.1 with a tiny receive buffer connect, send a request and then read nothing
(past the status line): the server's write timeout must cut them off and free their slots.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from sightline import synthetic_media as media
from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.service.app import create_app
from sightline.stream.service.server import HttpServer

from tests.support.models import tiny_classifier

pytestmark = pytest.mark.timeout(120)

CAP = 4
WRITE_TIMEOUT_S = 1.0


@pytest_asyncio.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[HttpServer, Pipeline]]:
    # big, detailed frames at 30 fps, JPEG quality 100: a viewer that stops reading fills its buffers fast
    media.make_test_clip(tmp_path / "clip.mp4", frames=60, fps=30, size=(640, 480), pattern="photos")
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path, log_predictions=False,
                       server={"port": 0, "max_preview_clients": CAP, "mjpeg_fps": 30, "jpeg_quality": 100,
                               "write_timeout_s": WRITE_TIMEOUT_S},
                       streams=[StreamConfig(name="cam", url=str(tmp_path / "clip.mp4"), loop=True)])
    pipeline = Pipeline(tiny_classifier(), config, Metrics())
    await asyncio.to_thread(pipeline.start)
    server = HttpServer("127.0.0.1", 0, write_timeout_s=WRITE_TIMEOUT_S)
    await server.start(create_app(pipeline, config, pipeline.metrics))
    try:
        deadline = time.monotonic() + 30
        while pipeline.get("cam").output.latest is None:
            assert time.monotonic() < deadline, "no frame classified"
            await asyncio.sleep(0.1)
        yield server, pipeline
    finally:
        await server.stop()
        await asyncio.to_thread(pipeline.shutdown)


def stalled_viewer(port: int) -> socket.socket:
    """Connect with a tiny receive window and ask for the MJPEG preview; the caller then never reads the body."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(20)
    sock.connect(("127.0.0.1", port))
    return sock


def request(sock: socket.socket) -> None:
    sock.sendall(b"GET /api/streams/cam/mjpeg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")


def status_code(sock: socket.socket) -> int:
    line = b""
    while not line.endswith(b"\r\n"):
        byte = sock.recv(1)  # the status line only: the body stays unread
        if not byte:
            raise AssertionError(f"connection closed before a status line: {line!r}")
        line += byte
    return int(line.split()[1])


def cut_off(sock: socket.socket, within_s: float) -> bool:
    """Drain what the kernel still holds; True when the server has closed or reset the connection.

    Call it only once the server has dropped the viewer: draining a live viewer would make it a reader again.
    The deadline bounds the whole drain, not each recv, so a connection the server still feeds fails in time.
    """
    deadline = time.monotonic() + within_s
    try:
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return False


async def test_twenty_concurrent_viewers_with_a_cap_of_four_get_exactly_four_slots_and_stalled_ones_lose_them(
        service: tuple[HttpServer, Pipeline]) -> None:
    server, _ = service
    slots = server.app.state.preview_slots  # type: ignore[union-attr]
    socks = [await asyncio.to_thread(stalled_viewer, server.port) for _ in range(20)]
    try:
        for sock in socks:  # all twenty requests in flight together
            request(sock)
        codes = await asyncio.gather(*(asyncio.to_thread(status_code, s) for s in socks))
        assert sorted(codes) == [200] * CAP + [503] * (20 - CAP)
        admitted = [s for s, c in zip(socks, codes, strict=True) if c == 200]
        assert slots.in_use == CAP

        # the four admitted viewers read nothing more: within the write timeout (plus the time to fill their
        # buffers, with a wide margin for a busy machine) the server drops them and a new viewer gets in
        deadline = time.monotonic() + 45
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            while True:
                async with client.stream("GET", "/api/streams/cam/mjpeg") as r:
                    if r.status_code == 200:
                        break
                assert time.monotonic() < deadline, f"stalled viewers still hold {slots.in_use} slots"
                await asyncio.sleep(0.25)
        # one freed slot let the new viewer in; the other stalled viewers lose theirs on the same timeout
        deadline = time.monotonic() + 30
        while slots.in_use and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert slots.in_use == 0, f"stalled viewers still hold {slots.in_use} slots"
        for sock in admitted:
            assert await asyncio.to_thread(cut_off, sock, 15), "a stalled viewer's connection was left open"
    finally:
        for sock in socks:
            sock.close()
