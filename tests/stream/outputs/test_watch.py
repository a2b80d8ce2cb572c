"""WebRTC viewing of the annotated video: headless Chromium on /watch, plus a second (aiortc) viewer.

Chromium's decoded picture is drawn to a canvas and compared with the stream's snapshot (the clip is
flat grey, so the overlay panel is what the comparison finds). Two viewers share one encoder: the
stream encodes each frame once (the encode-time histogram counts encodes) while both viewers are sent
its packets.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import subprocess
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from aiortc import RTCSessionDescription
from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.service.app import create_app
from sightline.stream.service.server import HttpServer

from tests.support import browsers
from tests.support.annotated import GREY, assert_overlay, grey_clip
from tests.support.models import tiny_classifier
from tests.support.processes import stop_process
from tests.support.webrtc import loopback_peer, make_offer

TOKEN = "watch-test-token"
WATCH_ARGS = ("--autoplay-policy=no-user-gesture-required", "--allow-loopback-in-peer-connection",
              "--window-size=800,600")
pytestmark = [pytest.mark.timeout(120)]

DECODED = """return (async () => {
  const w = window.sightlineWatch;
  if (!w || !w.pc) return null;
  let decoded = 0;
  (await w.pc.getStats()).forEach((r) => { if (r.type === "inbound-rtp" && r.kind === "video")
    decoded = r.framesDecoded || 0; });
  return {decoded, width: w.video.videoWidth, height: w.video.videoHeight, mode: w.mode,
          status: document.getElementById("status").textContent};
})();"""
CAPTURE = """const v = window.sightlineWatch.video;
const c = document.createElement("canvas");
c.width = v.videoWidth; c.height = v.videoHeight;
c.getContext("2d").drawImage(v, 0, 0);
return c.toDataURL("image/png");"""


class WebDriver(browsers.WebDriver):
    def __init__(self, url: str, profile: Path) -> None:
        super().__init__(url, profile, WATCH_ARGS)


def start_driver() -> tuple[subprocess.Popen[bytes], str]:
    if browsers.chromedriver() is None or browsers.chromium() is None:
        pytest.fail("chromium and chromium-driver (Debian packages) are needed")  # CI installs them
    return browsers.start_chromedriver()


async def wait_for(check, timeout: float, what: str, interval: float = 0.2):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"{what} within {timeout:.0f}s (last: {last})")


async def aiortc_viewer(base: str, stream: str, token: str | None) -> tuple[object, list[np.ndarray], int]:
    """A second viewer: an aiortc peer that decodes what it is sent. Returns (peer, frames list, status)."""
    peer = loopback_peer()
    peer.addTransceiver("video", direction="recvonly")
    frames: list[np.ndarray] = []

    @peer.on("track")
    def on_track(track) -> None:  # noqa: ANN001
        async def read() -> None:
            while True:
                try:
                    frame = await track.recv()
                except Exception:  # noqa: BLE001 -- the track ended
                    return
                frames.append(frame.to_ndarray(format="rgb24"))
        asyncio.ensure_future(read())

    await make_offer(peer)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        r = await client.post(f"/api/streams/{stream}/watch", headers=headers,
                              json={"sdp": peer.localDescription.sdp, "type": "offer"})
    if r.status_code == 200:
        await peer.setRemoteDescription(RTCSessionDescription(**r.json()))
    return peer, frames, r.status_code


@pytest.mark.slow
async def test_chromium_watches_annotated_video_and_two_viewers_share_one_encoder(tmp_path: Path) -> None:
    clip = grey_clip(tmp_path / "grey.mp4", seconds=2.0)
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path, log_predictions=False,
                       server={"token": TOKEN, "port": 0},
                       annotated_video={"height": 240, "max_viewers": 2},
                       streams=[StreamConfig(name="cam", url=str(clip), loop=True)])
    metrics = Metrics()
    pipeline = Pipeline(tiny_classifier(), config, metrics)
    await asyncio.to_thread(pipeline.start)
    server = HttpServer("127.0.0.1", 0)
    app = create_app(pipeline, config, metrics)
    await server.start(app)
    driver, driver_url = await asyncio.to_thread(start_driver)
    web = None
    peers = []
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            page = await client.get("/watch?stream=cam")
            assert page.status_code == 200 and "sightlineWatch" in page.text
            assert 'href = "/watch?stream="' in (await client.get("/")).text  # the cards' Watch link
            r = await client.post("/api/streams/cam/watch", json={"sdp": "v=0", "type": "offer"})
            assert r.status_code == 422  # watching is a read: open on a loopback bind without viewer credentials
        encoder = pipeline.video_out.get("cam")
        assert encoder.subscribers == 0  # nothing encoded while nobody watches

        web = await asyncio.to_thread(WebDriver, driver_url, tmp_path / "profile")
        await asyncio.to_thread(web.open, f"{server.url}/watch?stream=cam#token={TOKEN}")

        seen: list[object] = []

        async def decoded() -> dict | None:
            state = await asyncio.to_thread(web.run, DECODED)
            seen.append(state)
            return state if state and state["decoded"] >= 10 and state["width"] > 0 else None

        try:
            state = await wait_for(decoded, 40, "Chromium decoding 10 frames")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: page said {seen[-3:]}, encoder {encoder.frames_encoded} frames, "
                                 f"{encoder.subscribers} subscribers") from None
        assert state["mode"] == "webrtc" and (state["width"], state["height"]) == (320, 240), state
        url = await asyncio.to_thread(web.run, CAPTURE)
        png = base64.b64decode(url.split(",", 1)[1])
        picture = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert_overlay(picture, pipeline.snapshot("cam"))
        # every candidate pair the service's ICE checked for Chromium is loopback to loopback (aioice's check list)
        chromium_peer = app.state.viewing.hub.viewers["cam"][0].peer
        ice = chromium_peer.getTransceivers()[0].sender.transport.transport.iceGatherer._connection
        pairs = [(p.local_candidate.host, p.remote_addr[0]) for p in ice._check_list]
        assert pairs and all(ipaddress.ip_address(a).is_loopback for pair in pairs for a in pair), pairs

        # a second viewer (aiortc): the same encoder feeds both
        peer, frames, code = await aiortc_viewer(server.url, "cam", TOKEN)
        peers.append(peer)
        assert code == 200

        async def second_decodes() -> bool:
            return len(frames) >= 10

        await wait_for(second_decodes, 30, "the second viewer decoding 10 frames")
        assert_overlay(frames[-1], pipeline.snapshot("cam"))
        assert encoder.subscribers == 2 and pipeline.video_out.get("cam") is encoder
        assert metrics.registry.get_sample_value("sightline_watch_viewers", {"stream": "cam"}) == 2
        assert metrics.registry.get_sample_value("sightline_annotated_encoders", {"stream": "cam"}) == 1
        hub = app.state.viewing.hub
        tracks = [v.track for v in hub.viewers["cam"]]
        sent = sum(t.sent for t in tracks)
        encodes = metrics.registry.get_sample_value("sightline_annotated_encode_seconds_count", {"stream": "cam"})
        assert encodes == encoder.frames_encoded
        assert all(t.sent > 0 for t in tracks) and sent > encodes  # packets went to two viewers, encoded once

        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            video = (await client.get("/api/streams/cam/video")).json()
        assert video["viewers"] == 2 and video["encoding"] and video["size"] == [320, 240], video
        assert video["publish"] is None

        # the cap: a third viewer is refused
        third, _, code = await aiortc_viewer(server.url, "cam", TOKEN)
        peers.append(third)
        assert code == 429
    finally:
        if web is not None:
            await asyncio.to_thread(web.close)
        await asyncio.to_thread(stop_process, driver)
        for peer in peers:
            await peer.close()
        await server.stop()
        await asyncio.to_thread(pipeline.shutdown)
    assert "cam" not in app.state.viewing.hub.viewers  # the stream ended: its viewers were closed


async def test_a_viewer_that_never_connects_frees_its_slot_at_the_deadline(tmp_path: Path) -> None:
    """An offer with no usable ICE candidate never connects: before, it held one of max_viewers slots for good
    (real viewers got 429); now it is dropped after annotated_video.connect_timeout_s."""
    clip = grey_clip(tmp_path / "grey.mp4", seconds=2.0)
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path, log_predictions=False,
                       server={"token": TOKEN}, annotated_video={"height": 240, "max_viewers": 1,
                                                                "connect_timeout_s": 1},
                       streams=[StreamConfig(name="cam", url=str(clip), loop=True)])
    pipeline = Pipeline(tiny_classifier(), config, Metrics())
    await asyncio.to_thread(pipeline.start)
    app = create_app(pipeline, config, pipeline.metrics)
    peers = []

    async def offer_without_candidates() -> int:
        peer = loopback_peer()
        peers.append(peer)
        peer.addTransceiver("video", direction="recvonly")
        await make_offer(peer)
        sdp = "\r\n".join(line for line in peer.localDescription.sdp.split("\r\n") if "candidate" not in line)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1",
                                     headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as client:
            return (await client.post("/api/streams/cam/watch", json={"sdp": sdp, "type": "offer"})).status_code

    try:
        await wait_for_encoder(pipeline)
        assert await offer_without_candidates() == 200
        assert await offer_without_candidates() == 429  # the one slot is held
        hub = app.state.viewing.hub
        deadline = time.monotonic() + 10
        while hub.count("cam"):
            assert time.monotonic() < deadline, "the unconnected viewer kept its slot"
            await asyncio.sleep(0.1)
        assert await offer_without_candidates() == 200  # the slot is free again
    finally:
        for peer in peers:
            await peer.close()
        await app.state.viewing.hub.close()
        await asyncio.to_thread(pipeline.shutdown)


async def wait_for_encoder(pipeline: Pipeline, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while pipeline.video_out.get("cam") is None:
        assert time.monotonic() < deadline, "no annotated encoder for the stream"
        await asyncio.sleep(0.1)


async def test_view_remux_sends_a_viewer_the_cameras_own_packets(tmp_path: Path) -> None:
    """``view: remux``: a WebRTC viewer gets the source's H.264 as it came (its size, no labels, nothing encoded)."""
    clip = grey_clip(tmp_path / "grey.mp4", seconds=2.0, size=(192, 144))
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path, log_predictions=False,
                       server={"token": TOKEN, "port": 0}, annotated_video={"height": 240},
                       streams=[StreamConfig(name="cam", url=str(clip), loop=True, view="remux", infer_fps=1)])
    metrics = Metrics()
    pipeline = Pipeline(tiny_classifier(), config, metrics)
    await asyncio.to_thread(pipeline.start)
    server = HttpServer("127.0.0.1", 0)
    app = create_app(pipeline, config, metrics)
    await server.start(app)
    peer = None
    try:
        relay = pipeline.video_out.get("cam")
        peer, frames, code = await aiortc_viewer(server.url, "cam", TOKEN)
        assert code == 200

        async def decodes() -> bool:
            return len(frames) >= 10

        await wait_for(decodes, 30, "the viewer decoding 10 frames")
        assert frames[-1].shape == (144, 192, 3)  # the source's size, not annotated_video.height
        assert np.abs(frames[-1].astype(int) - GREY).max() < 16  # flat grey: no label panel
        assert relay.subscribers == 1 and relay.frames_encoded == 0 and relay.packets_sent >= 10
        assert metrics.registry.get_sample_value("sightline_annotated_encoders", {"stream": "cam"}) is None
        assert pipeline.get("cam").stats.decode.mode == "keyframes"  # the viewer made the source decode nothing more
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            video = (await client.get("/api/streams/cam/video")).json()
        assert video["video"].startswith("the camera's own video") and video["size"] == [192, 144], video
    finally:
        if peer is not None:
            await peer.close()
        await server.stop()
        await asyncio.to_thread(pipeline.shutdown)
