"""Pushing a stream's annotated video to a media server: ``streams[].publish: rtsp://...`` (or rtmp://).

The publisher subscribes to the stream's ``AnnotatedEncoder`` (stream/outputs/annotated_video.py), or with
``streams[].view: remux`` to its ``RemuxedView`` (the camera's own H.264, no labels): it sends the packets that
source made for everyone (no second encode) with FFmpeg's RTSP muxer (ANNOUNCE +
RECORD; RTP over UDP, falling back to TCP) or its FLV muxer over RTMP.

- Never slows inference: ``deliver`` (the encoder's thread) puts a packet in a bounded queue
  (``annotated_video.publish_queue``) without waiting. A packet that does not fit, or arrives while
  the server is away, is dropped and counted (``sightline_annotated_frames_dropped_total{stage="publish"}``);
  after a drop the publisher skips to the next keyframe (a decoder cannot use the packets in between).
- Reconnects: when connecting or sending fails (the server went away, refused, closed), the
  publisher waits ``annotated_video.reconnect`` backoff (doubling from initial_s to max_s, with
  jitter, reset once connected), connects again and starts at a keyframe (it asks the encoder for
  one). ``sightline_publish_up`` and ``sightline_publish_reconnects_total`` say how it goes.
- Secrets: the URL is validated whole by the config; logs and errors show it through ``redact_url``.
"""

from __future__ import annotations

import logging
import random
import threading
from fractions import Fraction

import av
from sightline.stream.buffers import BoundedQueue
from sightline.stream.config import AnnotatedVideoConfig, parse_stream_url, redact_url
from sightline.stream.outputs.annotated_video import AnnotatedEncoder, VideoOutMetrics
from sightline.stream.outputs.remux_view import RemuxedView
from sightline.stream.urls import scrub_urls

log = logging.getLogger(__name__)

OPEN_TIMEOUT_S = 5.0
FORMATS = {"rtsp": "rtsp", "rtsps": "rtsp", "rtmp": "flv", "rtmps": "flv"}


class Publisher:
    """One stream's push to a media server: a thread, a bounded packet queue, reconnect with backoff."""

    def __init__(self, stream: str, url: str, config: AnnotatedVideoConfig,
                 metrics: VideoOutMetrics | None = None) -> None:
        self.stream = stream
        self.url = url
        self.shown_url = redact_url(url)
        self.format = FORMATS[parse_stream_url(url).scheme]
        self.config = config
        self.metrics = metrics
        self.queue: BoundedQueue[av.Packet] = BoundedQueue(config.publish_queue, "block")
        self.state = "connecting"
        self.error: str | None = None
        self.connects = 0
        self.reconnects = 0
        self.packets_sent = 0
        self.dropped = 0
        self._connected = False
        self._skip_to_key = True
        self._encoder: AnnotatedEncoder | RemuxedView | None = None  # the packets' source (streams[].view)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"publish-{stream}", daemon=True)

    def attach(self, encoder: AnnotatedEncoder | RemuxedView) -> Publisher:
        self._encoder = encoder
        if self.metrics:  # its counters exist at 0 from the start, not from the first packet or failure
            self.metrics.publish_packets.labels(self.stream)
            self.metrics.publish_reconnects.labels(self.stream)
            self.metrics.dropped.labels(self.stream, "publish")
        self._set_state("connecting")
        encoder.publisher = self
        self._thread.start()
        encoder.subscribe(self)
        return self

    # -- subscriber (encoder thread) -------------------------------------------------------------------

    def deliver(self, packet: av.Packet) -> None:
        if self._skip_to_key and not packet.is_keyframe:
            self._drop()
            return
        if not self._connected or not self.queue.put(packet, timeout=0):
            self._skip_to_key = True
            self._drop()
            return
        self._skip_to_key = False

    def end(self) -> None:
        """The stream ended: send what is queued, then close the connection."""
        self._stop.set()
        self.queue.close()
        self._thread.join(10)

    def _drop(self) -> None:
        self.dropped += 1
        if self.metrics:
            self.metrics.dropped.labels(self.stream, "publish").inc()

    # -- publisher thread -------------------------------------------------------------------------------

    def _set_state(self, state: str, error: str | None = None) -> None:
        self.state, self.error = state, error
        if self.metrics:
            self.metrics.publish_up.labels(self.stream).set(1 if state == "live" else 0)

    def _run(self) -> None:
        delay = self.config.reconnect.initial_s
        while not self._stop.is_set():
            try:
                self._session()
                delay = self.config.reconnect.initial_s
            except Exception as exc:  # any FFmpeg/network error: the server is away; try again later
                reason = scrub_urls(str(exc) or type(exc).__name__)[:200]
                self._set_state("reconnecting", reason)
                if self.connects == 0 or self.reconnects in (0, 1, 10, 100) or self.reconnects % 1000 == 0:
                    log.warning("stream %s: publishing to %s failed (%s); retrying in %.1fs", self.stream,
                                self.shown_url, reason, delay)
            finally:
                self._connected = False
            if self._stop.is_set():
                break
            wait = delay * (1 - random.uniform(0, self.config.reconnect.jitter))
            if self._stop.wait(wait):
                break
            delay = min(delay * 2, self.config.reconnect.max_s)
            self.reconnects += 1
            if self.metrics:
                self.metrics.publish_reconnects.labels(self.stream).inc()
        self._set_state("stopped")

    def _session(self) -> None:
        """Connect, then send until the stream ends (returns) or the server fails (raises)."""
        encoder = self._encoder
        while encoder is not None and encoder.size is None and not self._stop.is_set():
            self._stop.wait(0.05)  # the video's size is known once the first frame is encoded
        if self._stop.is_set() or encoder is None or encoder.size is None:
            return
        width, height = encoder.size
        options = {"timeout": str(int(OPEN_TIMEOUT_S * 1_000_000))} if self.format == "rtsp" else {}
        self._set_state("connecting")
        container = av.open(self.url, "w", format=self.format, options=options, timeout=OPEN_TIMEOUT_S)
        try:
            rate = Fraction(encoder.fps).limit_denominator(1001)
            stream = container.add_mux_stream("h264", rate=rate, width=width, height=height)
            self._drain_stale()
            self._skip_to_key = True
            self._connected = True
            encoder.request_keyframe()
            first = True
            origin = 0
            while True:
                packet = self.queue.get(timeout=0.25)
                if packet is None:
                    if self.queue.exhausted:
                        return
                    continue
                if first:
                    origin = packet.pts or 0  # each connection's timestamps start at 0
                copy = av.Packet(bytes(packet))  # the encoder's packet is shared: the muxer rebases its own copy
                dts = packet.pts if packet.dts is None else packet.dts
                copy.pts, copy.dts, copy.time_base = packet.pts - origin, dts - origin, packet.time_base
                copy.is_keyframe = packet.is_keyframe
                copy.stream = stream
                container.mux(copy)
                self.packets_sent += 1
                if self.metrics:
                    self.metrics.publish_packets.labels(self.stream).inc()
                if first:
                    first = False
                    self.connects += 1
                    self._set_state("live")
                    log.info("stream %s: publishing %s to %s", self.stream, encoder.what, self.shown_url)
        finally:
            self._connected = False
            try:
                container.close()
            except Exception as exc:  # the server is gone: closing (TEARDOWN, trailer) fails too
                log.debug("stream %s: closing the publish connection: %s", self.stream, exc)

    def _drain_stale(self) -> None:
        while self.queue.get_nowait() is not None:
            pass

    def status(self) -> dict[str, object]:
        return {"url": self.shown_url, "state": self.state, "error": self.error, "reconnects": self.reconnects,
                "packets_sent": self.packets_sent, "dropped": self.dropped}

