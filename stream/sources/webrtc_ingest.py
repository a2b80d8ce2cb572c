"""WebRTC ingest: a peer (a browser camera, or any WHIP-style publisher) sends video to a stream.

A stream configured with ``url: webrtc://<anything>`` waits for a publisher. The publisher posts an
SDP offer to ``POST /api/streams/{name}/webrtc``; ``WebRtcSource.accept`` answers it. aiortc
receives and decodes in the event loop; the coroutine only hands decoded pictures to the source's
thread, which scales and queues them exactly like a decoded file or RTSP frame. One publisher per
stream: a new offer replaces a previous peer that is not connected (a camera that reconnects is
simply the newest); while one is connected, another offer is refused (``PublisherConnectedError``).

ICE follows ``ice.IcePolicy``: servers only from the config (none by default), host candidates on
the configured addresses (loopback for a loopback-bound service). An offer aiortc cannot use is a
``StreamError`` and its peer is closed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

import av
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from sightline.stream.buffers import BoundedQueue
from sightline.stream.config import StreamConfig
from sightline.stream.errors import PublisherConnectedError, StreamError
from sightline.stream.frames import Frame, FrameDemand
from sightline.stream.ice import IcePolicy, host_candidates, keep_reachable_candidates
from sightline.stream.lifecycle import StreamState
from sightline.stream.sources.video_source import FrameSource, WorkingSize
from sightline.stream.stats import StreamStats

log = logging.getLogger(__name__)

WAITING = "waiting for a WebRTC publisher"
REASON_LIMIT = 160  # characters of aiortc's reason quoted back (it may quote the offer)


class WebRtcSource(FrameSource):
    def __init__(self, config: StreamConfig, queue: BoundedQueue[Frame], stats: StreamStats,
                 working_size: WorkingSize, keep_display: bool, stop: threading.Event,
                 clock: Callable[[], float] = time.monotonic, preview: FrameDemand | None = None,
                 ice: IcePolicy | None = None) -> None:
        super().__init__(config, queue, stats, working_size, keep_display, stop, clock, preview)
        self.ice = ice or IcePolicy()
        # aiortc -> thread hand-off: newest picture wins; what it replaces is a stale drop
        self._handoff: BoundedQueue[av.VideoFrame] = BoundedQueue(
            2, "latest", on_drop=lambda _: stats.on_dropped("stale"))
        self._peer: RTCPeerConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def accept(self, sdp: str, kind: str = "offer") -> RTCSessionDescription:
        """Answer a publisher's offer (runs in the event loop)."""
        if kind != "offer":
            raise StreamError(f"expected an SDP offer, got {kind!r}")
        if self.stop.is_set():
            raise StreamError(f"stream {self.config.name!r} is stopping")
        if self._peer is not None and self._peer.connectionState == "connected":
            raise PublisherConnectedError(f"stream {self.config.name!r} already has a connected publisher")
        await self._close_peer()
        self._loop = asyncio.get_running_loop()
        peer = RTCPeerConnection(self.ice.configuration())
        self._peer = peer

        @peer.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video" and self._reader is None:
                self._reader = asyncio.ensure_future(self._read(peer, track))

        @peer.on("connectionstatechange")
        async def on_state() -> None:
            if peer is self._peer and peer.connectionState in ("failed", "closed"):
                self.stats.set_state(StreamState.RECONNECTING, f"WebRTC peer {peer.connectionState}; {WAITING}")

        try:
            with host_candidates(self.ice.addresses):  # gathering happens in setLocalDescription
                await peer.setRemoteDescription(RTCSessionDescription(sdp=keep_reachable_candidates(sdp, self.ice),
                                                                      type=kind))
                await peer.setLocalDescription(await peer.createAnswer())
        except Exception as exc:  # aiortc's parser raises ValueError, AssertionError, IndexError...: all mean "bad SDP"
            await self._close_peer()
            reason = (str(exc) or type(exc).__name__)[:REASON_LIMIT]
            raise StreamError(f"stream {self.config.name!r}: unusable SDP offer ({reason})") from exc
        if not any(t.kind == "video" for t in (r.track for r in peer.getReceivers()) if t is not None):
            await self._close_peer()
            raise StreamError(f"stream {self.config.name!r}: the offer has no video track")
        log.info("stream %s: WebRTC publisher connected", self.config.name)
        return peer.localDescription

    async def _read(self, peer: RTCPeerConnection, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                break
            self._handoff.put(frame)
        if peer is self._peer and not self.stop.is_set():
            self.stats.set_state(StreamState.RECONNECTING, f"WebRTC publisher stopped sending; {WAITING}")

    async def _close_peer(self) -> None:
        peer, reader = self._peer, self._reader
        self._peer = self._reader = None
        if reader is not None:
            reader.cancel()
        if peer is not None:
            await peer.close()

    def wake(self) -> None:
        self._handoff.close()  # get() returns at once; _produce sees stop (a delete took ~125 ms more without)

    def _produce(self) -> None:
        self.stats.set_state(StreamState.CONNECTING, WAITING)
        while not self.stop.is_set():
            frame = self._handoff.get(timeout=0.25)
            if frame is None:
                continue
            now = self.clock()
            self._emit(frame, now, now)
        self._handoff.close()
        loop = self._loop
        if loop is not None and loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self._close_peer(), loop).result(timeout=5)
            except (TimeoutError, RuntimeError, asyncio.CancelledError) as exc:
                log.warning("stream %s: closing the WebRTC peer failed: %s", self.config.name, exc)
        self.stats.set_state(StreamState.STOPPED)
