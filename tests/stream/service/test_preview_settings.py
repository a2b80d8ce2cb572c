"""Preview settings over a real socket (uvicorn on 127.0.0.1): server.jpeg_quality sets the JPEG quality of
snapshots and MJPEG parts, server.max_preview_clients caps open previews (503 beyond); and the warning for a
non-loopback bind without a token."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from PIL import Image
from sightline import synthetic_media as media
from sightline.stream.config import RunConfig, ServerConfig, StreamConfig
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.service.app import create_app
from sightline.stream.service.server import HttpServer

from tests.support.models import tiny_classifier

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]


def libjpeg_luma_dc_step(quality: int) -> int:
    """The first entry of libjpeg's luminance table (16 at quality 50) scaled as jpeg_quality_scaling does."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return max(1, min(255, (16 * scale + 50) // 100))


def quantization_step(jpeg: bytes) -> int:
    image = Image.open(io.BytesIO(jpeg))
    assert image.format == "JPEG"
    return image.quantization[0][0]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    root = tmp_path_factory.mktemp("previews")
    clip = media.make_test_clip(root / "clip.mp4", frames=30, fps=10, size=(160, 120))
    config = RunConfig(output_dir=root / "out", media_root=root, log_predictions=False,
                       streams=[StreamConfig(name="cam", url=str(clip), loop=True)])
    pipe = Pipeline(tiny_classifier(), config, Metrics())
    pipe.start()
    yield pipe
    pipe.shutdown()


async def serve(pipeline: Pipeline, **server: object) -> HttpServer:
    config = pipeline.config.model_copy(update={"server": ServerConfig(**server)})
    http = HttpServer("127.0.0.1", 0, write_timeout_s=config.server.write_timeout_s)
    await http.start(create_app(pipeline, config, pipeline.metrics))
    return http


@pytest_asyncio.fixture(loop_scope="module")
async def classified(pipeline: Pipeline) -> AsyncIterator[None]:
    deadline = time.monotonic() + 20
    while pipeline.get("cam").stats.frames_inferred == 0:
        assert time.monotonic() < deadline, pipeline.statuses()
        await asyncio.sleep(0.05)
    yield


async def first_mjpeg_part(response: httpx.Response, chunks: AsyncIterator[bytes] | None = None) -> bytes:
    """The first part. Pass ``chunks`` (``response.aiter_bytes()``) and keep it to keep the preview open: an
    abandoned iterator closes the connection whenever it is garbage-collected."""
    buffer = b""
    async for chunk in chunks if chunks is not None else response.aiter_bytes():
        buffer += chunk
        head, sep, rest = buffer.partition(b"\r\n\r\n")
        if sep and b"Content-Length:" in head:
            length = int(head.split(b"Content-Length:")[1].split(b"\r\n")[0])
            if len(rest) >= length:
                return rest[:length]
    raise AssertionError("the preview ended before its first part")


@pytest.mark.parametrize("quality", [30, 80, 95])
async def test_jpeg_quality_sets_snapshot_and_mjpeg_quality(pipeline: Pipeline, classified: None,
                                                            quality: int) -> None:
    http = await serve(pipeline, jpeg_quality=quality)
    try:
        async with httpx.AsyncClient(base_url=http.url, timeout=10) as client:
            snapshot = await client.get("/api/streams/cam/snapshot.jpg")
            assert snapshot.status_code == 200
            assert quantization_step(snapshot.content) == libjpeg_luma_dc_step(quality)
            async with client.stream("GET", "/api/streams/cam/mjpeg") as preview:
                assert quantization_step(await first_mjpeg_part(preview)) == libjpeg_luma_dc_step(quality)
    finally:
        await http.stop()


async def test_default_jpeg_quality_is_80() -> None:
    assert ServerConfig().jpeg_quality == 80 and libjpeg_luma_dc_step(80) == 6


async def test_previews_beyond_max_preview_clients_get_503(pipeline: Pipeline, classified: None) -> None:
    # The two open previews are not read past their first part: the server's write timeout would cut them off
    # (and free their slots) write_timeout_s after their buffers fill, which on a busy machine came before the
    # third request. The cap is under test here, not the timeout (tests/faults/test_stalled_viewers.py): long.
    http = await serve(pipeline, max_preview_clients=2, write_timeout_s=300)
    try:
        async with httpx.AsyncClient(base_url=http.url, timeout=10) as a, \
                httpx.AsyncClient(base_url=http.url, timeout=10) as b:
            async with a.stream("GET", "/api/streams/cam/mjpeg") as first, \
                    b.stream("GET", "/api/streams/cam/mjpeg") as second:
                assert first.status_code == second.status_code == 200
                first_chunks, second_chunks = first.aiter_bytes(), second.aiter_bytes()  # held: both stay open
                await first_mjpeg_part(first, first_chunks)
                await first_mjpeg_part(second, second_chunks)
                # streamed: were a third preview admitted, a plain GET would read its endless body and hang
                async with a.stream("GET", "/api/streams/cam/mjpeg") as refused:
                    assert refused.status_code == 503, "a third preview was admitted"
                    assert refused.headers["retry-after"] == "5"
                    assert "server.max_preview_clients" in json.loads(await refused.aread())["detail"]
                assert (await a.get("/api/streams/cam/snapshot.jpg")).status_code == 200  # snapshots are not capped
            # both previews closed: a new one is served again (the count is released when a client leaves)
            deadline = time.monotonic() + 10
            while True:
                async with a.stream("GET", "/api/streams/cam/mjpeg") as again:
                    if again.status_code == 200:
                        await first_mjpeg_part(again)
                        break
                assert time.monotonic() < deadline, "the closed previews were never released"
                await asyncio.sleep(0.2)
    finally:
        await http.stop()


CHANGES_OPEN = ("without an admin credential (server.insecure: true): anyone who may read can also add and remove "
                "streams")
READS_OPEN = "with server.public_read: true: anyone who can reach it can watch"
VIEWER = {"viewer_tokens": ["viewer-token-0123456789"]}


@pytest.mark.parametrize("server, warned", [
    ({"host": "0.0.0.0", **VIEWER}, [CHANGES_OPEN]),
    ({"host": "0.0.0.0", "token": "secret-token", **VIEWER}, []),
    ({"host": "0.0.0.0", "token": "secret-token", "public_read": True}, [READS_OPEN]),
    ({"host": "0.0.0.0", "public_read": True}, [CHANGES_OPEN, READS_OPEN]),
    ({"host": "127.0.0.1"}, []), ({"host": "::1", "public_read": True}, [])])
async def test_warning_for_a_non_loopback_bind_open_on_purpose(pipeline: Pipeline, caplog: pytest.LogCaptureFixture,
                                                               server: dict, warned: list[str]) -> None:
    """Only the decision is under test: the socket itself is bound to loopback (tests never listen beyond it)."""
    caplog.set_level(logging.WARNING, logger="sightline.stream.service.server")
    http = HttpServer(server["host"], 0)
    http._socket = socket.create_server(("127.0.0.1", 0))
    config = pipeline.config.model_copy(update={"server": ServerConfig(**server)})
    await http.start(create_app(pipeline, config, pipeline.metrics))
    await http.stop()
    warnings = [r.getMessage() for r in caplog.records if r.getMessage().startswith("serving on ")]
    assert warnings == [f"serving on {server['host']} {w}" for w in warned]


async def test_snapshot_before_the_first_frame_is_503_with_retry_after(pipeline: Pipeline, tmp_path: Path) -> None:
    http = await serve(pipeline)
    pipeline.add_stream(StreamConfig(name="dark", url="rtsp://127.0.0.1:9/none", reconnect={"initial_s": 5}))
    try:
        async with httpx.AsyncClient(base_url=http.url, timeout=10) as client:
            r = await client.get("/api/streams/dark/snapshot.jpg")
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert "has no frame yet" in r.json()["detail"]
    finally:
        await asyncio.to_thread(pipeline.remove_stream, "dark")
        await http.stop()
