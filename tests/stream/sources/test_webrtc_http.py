"""Issue #18: WebRTC publishing through HTTP, end to end: POST /api/streams/{name}/webrtc with a real aiortc peer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiortc import RTCSessionDescription
from sightline import synthetic_media as media
from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.service.app import create_app

from tests.stream.sources.test_webrtc import Camera
from tests.support.models import tiny_classifier
from tests.support.webrtc import loopback_peer, make_offer

pytestmark = pytest.mark.timeout(90)

TOKEN = "webrtc-http-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[Pipeline, httpx.AsyncClient]]:
    media.make_test_clip(tmp_path / "clip.mp4", frames=10, fps=10)
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path, log_predictions=False,
                       server={"token": TOKEN},
                       streams=[StreamConfig(name="cam", url="webrtc://cam"),
                                StreamConfig(name="file", url=str(tmp_path / "clip.mp4"), loop=True)])
    pipeline = Pipeline(tiny_classifier(), config, Metrics())
    await asyncio.to_thread(pipeline.start)
    app = create_app(pipeline, config, pipeline.metrics)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1",
                                     timeout=30) as client:
            yield pipeline, client
    finally:
        await asyncio.to_thread(pipeline.shutdown)


async def offer() -> tuple[object, dict[str, str]]:
    peer = loopback_peer()
    peer.addTrack(Camera())
    await make_offer(peer)
    return peer, {"sdp": peer.localDescription.sdp, "type": peer.localDescription.type}


async def test_publish_over_http_then_conflicts_and_bad_offers(service) -> None:
    pipeline, client = service
    peer, body = await offer()
    second, second_body = await offer()
    try:
        assert (await client.post("/api/streams/cam/webrtc", json=body)).status_code == 401  # token first
        r = await client.post("/api/streams/cam/webrtc", json=body, headers=AUTH)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["type"] == "answer" and "m=video" in answer["sdp"]
        await peer.setRemoteDescription(RTCSessionDescription(**answer))

        deadline = time.monotonic() + 40
        while (s := (await client.get("/api/streams/cam")).json())["frames_inferred"] < 5:
            assert time.monotonic() < deadline, s
            await asyncio.sleep(0.1)
        assert s["state"] == "live"

        r = await client.post("/api/streams/cam/webrtc", json=second_body, headers=AUTH)
        assert r.status_code == 409 and "connected publisher" in r.json()["detail"]
        r = await client.post("/api/streams/file/webrtc", json=second_body, headers=AUTH)
        assert r.status_code == 409 and "not a webrtc" in r.json()["detail"]
        assert (await client.post("/api/streams/nope/webrtc", json=second_body, headers=AUTH)).status_code == 404
        for bad in ({"sdp": "v=0\r\nm=video x\r\n", "type": "offer"}, {"sdp": "", "type": "offer"},
                    {"sdp": second_body["sdp"], "type": "pranswer"}):
            r = await client.post("/api/streams/cam/webrtc", json=bad, headers=AUTH)
            assert r.status_code in (409, 422), r.text  # schema errors are 422, a valid offer meets the publisher
        # the refused offers did not disturb the publisher
        before = (await client.get("/api/streams/cam")).json()["frames_inferred"]
        deadline = time.monotonic() + 20
        while (await client.get("/api/streams/cam")).json()["frames_inferred"] <= before:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    finally:
        await peer.close()
        await second.close()


async def test_a_malformed_offer_over_http_is_422(service) -> None:
    _, client = service
    for bad in ({"sdp": "v=0\r\nm=video x\r\n", "type": "offer"}, {"sdp": "garbage", "type": "offer"}):
        r = await client.post("/api/streams/cam/webrtc", json=bad, headers=AUTH)
        assert r.status_code == 422, r.text
    r = await client.post("/api/streams/cam/webrtc", json={"sdp": "", "type": "offer"}, headers=AUTH)
    assert r.status_code == 422  # schema: empty SDP
    r = await client.post("/api/streams/cam/webrtc", json={"sdp": "v=0", "type": "pranswer"}, headers=AUTH)
    assert r.status_code == 422
