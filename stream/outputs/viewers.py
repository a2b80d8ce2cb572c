"""WebRTC viewers of a stream's annotated video: one aiortc peer per viewer, fed the shared encoder's packets.

Each viewer's track hands aiortc the H.264 packets of the stream's shared ``AnnotatedEncoder``
(annotated_video.py): aiortc packetizes pre-encoded ``av.Packet`` objects without encoding them again
(``RTCRtpSender._next_encoded_frame``), so a stream is drawn and encoded once however many viewers watch.
A viewer's request for a keyframe (RTCP PLI/FIR) is passed to that encoder. A viewer that falls behind
(its queue of ``VIEWER_QUEUE`` packets full) loses packets up to the next keyframe, counted as
``sightline_annotated_frames_dropped_total{stage="viewer"}``; the others are not held up.

At most ``annotated_video.max_viewers`` viewers per stream. ICE follows the service's ``IcePolicy``
(stream/ice.py): servers from the config only (none by default, no public STUN), host candidates on the
configured addresses. The HTTP side (page, signalling) is ``stream/service/routers/watch.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import av
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from sightline.stream.errors import UnknownStreamError
from sightline.stream.ice import IcePolicy, host_candidates, keep_reachable_candidates
from sightline.stream.outputs.annotated_video import AnnotatedEncoder, VideoOut, VideoOutMetrics

log = logging.getLogger(__name__)

VIEWER_QUEUE = 60  # packets (frames) waiting for one viewer's sender: ~2 s at 30 fps
REASON_LIMIT = 160


class ViewerTrack(MediaStreamTrack):
    """A video track whose ``recv`` returns the shared encoder's packets (aiortc sends them as they are)."""

    kind = "video"

    def __init__(self, encoder: AnnotatedEncoder, loop: asyncio.AbstractEventLoop,
                 metrics: VideoOutMetrics | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.loop = loop
        self.metrics = metrics
        self.packets: asyncio.Queue[av.Packet | None] = asyncio.Queue()
        self.sent = 0
        self.dropped = 0
        self._skip_to_key = True  # a decoder starts at a keyframe

    # encoder thread
    def deliver(self, packet: av.Packet) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop closed under us (service shutting down)
            self.loop.call_soon_threadsafe(self._put, packet)

    def end(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.packets.put_nowait, None)

    # event loop
    def _put(self, packet: av.Packet) -> None:
        if self._skip_to_key and not packet.is_keyframe:
            self._drop()
            return
        if self.packets.qsize() >= VIEWER_QUEUE:
            self._skip_to_key = True
            self.encoder.request_keyframe()
            self._drop()
            return
        self._skip_to_key = False
        self.packets.put_nowait(packet)

    def _drop(self) -> None:
        self.dropped += 1
        if self.metrics:
            self.metrics.dropped.labels(self.encoder.stream, "viewer").inc()

    async def recv(self) -> av.Packet:  # type: ignore[override]  (aiortc accepts packets from a track)
        if self.readyState != "live":
            raise MediaStreamError
        packet = await self.packets.get()
        if packet is None:
            self.stop()
            raise MediaStreamError
        self.sent += 1
        return packet


class Viewer:
    def __init__(self, peer: RTCPeerConnection, track: ViewerTrack) -> None:
        self.peer = peer
        self.track = track


class WatchHub:
    """The WebRTC viewers of every stream; at most ``max_viewers`` per stream."""

    def __init__(self, video_out: VideoOut, ice: IcePolicy, max_viewers: int, connect_timeout_s: float = 30.0) -> None:
        self.video_out = video_out
        self.ice = ice
        self.max_viewers = max_viewers
        self.connect_timeout_s = connect_timeout_s
        self.viewers: dict[str, list[Viewer]] = {}
        self._deadlines: set[asyncio.Task[None]] = set()

    def count(self, stream: str) -> int:
        return len(self.viewers.get(stream, []))

    def _gauge(self, stream: str) -> None:
        metrics = self.video_out.metrics
        if metrics:
            metrics.viewers.labels(stream).set(self.count(stream))

    async def watch(self, stream: str, sdp: str) -> RTCSessionDescription:
        encoder = self.video_out.get(stream)
        if encoder is None or encoder.closed.is_set():
            raise UnknownStreamError(f"no stream named {stream!r}")
        if self.count(stream) >= self.max_viewers:
            raise TooManyViewersError(f"stream {stream!r} has {self.max_viewers} viewers "
                                      "(annotated_video.max_viewers); try the MJPEG preview")
        loop = asyncio.get_running_loop()
        metrics = self.video_out.metrics
        track = ViewerTrack(encoder, loop, metrics)
        peer = RTCPeerConnection(self.ice.configuration())
        viewer = Viewer(peer, track)
        self.viewers.setdefault(stream, []).append(viewer)  # counted at once: no await since the check
        self._gauge(stream)

        @track.on("ended")
        async def on_ended() -> None:  # the stream ended (or the viewer left): free the peer
            await self._leave(stream, viewer)

        @peer.on("connectionstatechange")
        async def on_state() -> None:
            if peer.connectionState in ("failed", "closed"):
                await self._leave(stream, viewer)

        try:
            # made before the offer is applied, so the offer's video section pairs with it and its codecs
            # are negotiated against H.264 only (the packets are H.264)
            transceiver = peer.addTransceiver(track, direction="sendonly")
            h264 = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == "video/H264"]
            transceiver.setCodecPreferences(h264)
            transceiver.sender._send_keyframe = encoder.request_keyframe  # PLI/FIR: ask the shared encoder
            with host_candidates(self.ice.addresses):
                await peer.setRemoteDescription(RTCSessionDescription(sdp=keep_reachable_candidates(sdp, self.ice),
                                                                      type="offer"))
                if transceiver.mid is None:
                    raise ValueError("the offer has no video to receive")
                await peer.setLocalDescription(await peer.createAnswer())
        except Exception as exc:  # aiortc's parser raises ValueError, AssertionError...: all mean "unusable offer"
            await self._leave(stream, viewer)
            reason = (str(exc) or type(exc).__name__)[:REASON_LIMIT]
            raise WatchOfferError(f"stream {stream!r}: unusable SDP offer ({reason})") from exc
        if "H264" not in peer.localDescription.sdp:
            await self._leave(stream, viewer)
            raise WatchOfferError(f"stream {stream!r}: the viewer cannot receive H.264")
        try:
            encoder.subscribe(track)
        except RuntimeError as exc:  # the stream ended meanwhile
            await self._leave(stream, viewer)
            raise UnknownStreamError(str(exc)) from None
        log.info("stream %s: WebRTC viewer joined (%d watching)", stream, self.count(stream))
        deadline = asyncio.create_task(self._connect_deadline(stream, viewer), name=f"viewer-deadline-{stream}")
        self._deadlines.add(deadline)
        deadline.add_done_callback(self._deadlines.discard)
        return peer.localDescription

    async def _connect_deadline(self, stream: str, viewer: Viewer) -> None:
        """A viewer that has not connected in ``connect_timeout_s`` is dropped: an offer with no usable ICE
        candidate never connects, and would hold one of ``max_viewers`` slots for good."""
        await asyncio.sleep(self.connect_timeout_s)
        if viewer.peer.connectionState != "connected" and viewer in self.viewers.get(stream, []):
            log.info("stream %s: WebRTC viewer not connected after %g s (annotated_video.connect_timeout_s), "
                     "dropped", stream, self.connect_timeout_s)
            await self._leave(stream, viewer)

    async def _leave(self, stream: str, viewer: Viewer) -> None:
        viewers = self.viewers.get(stream, [])
        if viewer in viewers:
            viewers.remove(viewer)
            if not viewers:
                self.viewers.pop(stream, None)
            viewer.track.encoder.unsubscribe(viewer.track)
            self._gauge(stream)
            log.info("stream %s: WebRTC viewer left (%d watching)", stream, self.count(stream))
        viewer.track.stop()
        await viewer.peer.close()

    async def close(self) -> None:
        for task in list(self._deadlines):
            task.cancel()
        for stream, viewers in list(self.viewers.items()):
            for viewer in list(viewers):
                await self._leave(stream, viewer)


class TooManyViewersError(Exception):
    pass


class WatchOfferError(Exception):
    pass
