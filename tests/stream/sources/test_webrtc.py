"""WebRTC ingest with a real aiortc peer on loopback: a camera publishes to a webrtc:// stream."""

from __future__ import annotations

import asyncio
import fractions
from pathlib import Path

import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from sightline.model.errors import SightlineError
from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.sources.webrtc_ingest import WebRtcSource

from tests.support.models import tiny_classifier
from tests.support.predictions import prediction_lines
from tests.support.recordings import only_segment
from tests.support.webrtc import loopback_peer, make_offer

pytestmark = pytest.mark.timeout(90)


class Camera(VideoStreamTrack):
    """A synthetic 320x240 camera: a moving gradient, 30 fps."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        x = np.linspace(0, 255, 320, dtype=np.float32)
        image = np.empty((240, 320, 3), np.uint8)
        image[..., 0] = (x + self.sent * 4) % 256
        image[..., 1] = 128
        image[..., 2] = 255 - image[..., 0]
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = pts, fractions.Fraction(time_base)
        self.sent += 1
        return frame


async def offer(pipeline: Pipeline, name: str, sdp: str, kind: str) -> tuple[str, str]:
    """Signalling as the API's WebRTC router does it: the stream's source answers the offer."""
    source = pipeline.get(name).source
    assert isinstance(source, WebRtcSource)
    answer = await source.accept(sdp, kind)
    return answer.sdp, answer.type


async def publish(pipeline: Pipeline, name: str) -> tuple[RTCPeerConnection, Camera]:
    camera = Camera()
    peer = loopback_peer()
    peer.addTrack(camera)
    await make_offer(peer)
    sdp, kind = await offer(pipeline, name, peer.localDescription.sdp, peer.localDescription.type)
    await peer.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
    return peer, camera


async def wait_for(check, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.1)


@pytest.fixture
def pipeline(tmp_path: Path):
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path,
                       streams=[StreamConfig(name="cam", url="webrtc://cam", record="annotated")])
    p = Pipeline(tiny_classifier(), config, Metrics())
    p.start()
    yield p
    p.shutdown()


async def test_a_webrtc_publisher_is_classified_and_can_reconnect(pipeline: Pipeline, tmp_path: Path) -> None:
    stats = pipeline.get("cam").stats
    assert stats.state == "connecting" and "waiting" in stats.error
    peer, camera = await publish(pipeline, "cam")
    await wait_for(lambda: stats.frames_inferred >= 15, 40)
    assert stats.state == "live"
    await peer.close()
    await wait_for(lambda: stats.state == "reconnecting", 20)

    before = stats.frames_inferred
    peer, camera = await publish(pipeline, "cam")  # the camera comes back: same stream, no restart
    await wait_for(lambda: stats.frames_inferred >= before + 10, 40)
    await peer.close()
    await asyncio.to_thread(pipeline.remove_stream, "cam")
    lines = prediction_lines(tmp_path / "out", "cam")
    assert len(lines) >= 25
    with av.open(str(only_segment(tmp_path / "out", "cam"))) as recording:
        assert sum(1 for _ in recording.decode(video=0)) >= len(lines)


async def test_offers_for_other_streams_or_without_video_are_refused(pipeline: Pipeline, tmp_path: Path) -> None:
    clip_config = StreamConfig(name="file", url=str(tmp_path / "x.mp4"))
    with pytest.raises(SightlineError):
        pipeline.add_stream(clip_config)  # no such file: refused before anything starts
    peer = loopback_peer()
    peer.createDataChannel("chat")
    await make_offer(peer)
    with pytest.raises(SightlineError, match="no video track"):
        await offer(pipeline, "cam", peer.localDescription.sdp, "offer")
    await peer.close()
    with pytest.raises(SightlineError, match="no stream named"):
        await offer(pipeline, "nope", "v=0", "offer")


def test_webrtc_streams_cannot_be_fast() -> None:
    with pytest.raises(ValueError, match="needs a file"):
        StreamConfig(name="cam", url="webrtc://cam", mode="fast")
