"""The annotated video of a stream, encoded once to H.264 and shared by every consumer.

Each stream's output thread hands its frames (with the labels to show) to this stream's
``AnnotatedEncoder`` sink. ``write`` never blocks: while nobody consumes the video it returns at
once; otherwise the frame goes into a small queue (``annotated_video.queue``) and, when that is
full, the oldest frame waiting is dropped and counted
(``sightline_annotated_frames_dropped_total{stage="encoder"}``), so a slow encoder never slows the
model. The encoder thread draws the overlay (as previews do, at ``annotated_video.height`` lines),
encodes with libx264 (constrained baseline, zero latency, Annex B with SPS/PPS before every
keyframe) and hands each ``av.Packet`` to every subscriber: the WebRTC viewers of the stream
(stream/outputs/viewers.py) and its RTSP/RTMP publisher (stream/outputs/publish.py). However many
subscribe, a frame is drawn and encoded once.

A subscriber that joins asks for a keyframe (the next frame is encoded as an IDR), so a new viewer
sees a picture at once instead of waiting for the next GOP. Subscribers receive packets through
``deliver``, which must not block (each keeps its own bounded queue).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable
from fractions import Fraction
from typing import Any, Protocol

import av
import numpy as np
from prometheus_client import Counter, Gauge, Histogram
from sightline.stream.buffers import BoundedQueue, drain
from sightline.stream.config import AnnotatedVideoConfig, StreamConfig
from sightline.stream.frames import FrameDemand
from sightline.stream.metrics import Metrics
from sightline.stream.outputs.sinks import Labelled, fit

log = logging.getLogger(__name__)


class HasStatus(Protocol):
    """The publisher as the encoder sees it (publish.py attaches itself; this module never imports it)."""

    def status(self) -> dict[str, object]: ...

MS = Fraction(1, 1000)
FULL_SIZE_WAIT = 10  # frames skipped at most, before the first, while waiting for a full-size picture
ENCODE_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)


class Subscriber(Protocol):
    def deliver(self, packet: av.Packet) -> None: ...

    def end(self) -> None: ...


# where annotated frames are dropped (the ``stage`` label of sightline_annotated_frames_dropped_total)
DROP_STAGES = ("encoder", "publish", "viewer")


class VideoOutMetrics:
    """The metrics of annotated video, WebRTC viewing and publishing, on the service's registry."""

    def __init__(self, metrics: Metrics) -> None:
        r = metrics.registry
        self.encode_seconds = Histogram("sightline_annotated_encode_seconds",
                                        "Time to draw and H.264-encode one annotated frame", ["stream"],
                                        buckets=ENCODE_BUCKETS, registry=r)
        self.encoders = Gauge("sightline_annotated_encoders", "Annotated-video encoders running (1 per stream "
                              "while anyone watches or it publishes)", ["stream"], registry=r)
        self.dropped = Counter("sightline_annotated_frames_dropped_total",
                               "Annotated frames not sent: encoder behind (encoder), publisher queue full "
                               "(publish), viewer behind (viewer)", ["stream", "stage"], registry=r)
        self.viewers = Gauge("sightline_watch_viewers", "WebRTC viewers of the annotated video", ["stream"],
                             registry=r)
        self.publish_up = Gauge("sightline_publish_up", "1 while the annotated video is being pushed to the "
                                "media server", ["stream"], registry=r)
        self.publish_reconnects = Counter("sightline_publish_reconnects_total",
                                          "Reconnections to the publish media server", ["stream"], registry=r)
        self.publish_packets = Counter("sightline_publish_packets_total", "Packets pushed to the media server",
                                       ["stream"], registry=r)

    def forget(self, stream: str) -> None:
        for metric in (self.encode_seconds, self.encoders, self.viewers, self.publish_up, self.publish_reconnects,
                       self.publish_packets):
            with contextlib.suppress(KeyError):
                metric.remove(stream)
        for stage in DROP_STAGES:
            with contextlib.suppress(KeyError):
                self.dropped.remove(stream, stage)


_METRICS: weakref.WeakKeyDictionary[Metrics, VideoOutMetrics] = weakref.WeakKeyDictionary()


def video_out_metrics(metrics: Metrics | None) -> VideoOutMetrics | None:
    """One set per ``Metrics`` (a registry refuses a second registration of a name)."""
    if metrics is None:
        return None
    found = _METRICS.get(metrics)
    if found is None:
        found = _METRICS[metrics] = VideoOutMetrics(metrics)
    return found


class AnnotatedEncoder:
    """One stream's annotated-video encoder: a sink of its output thread, a thread of its own."""

    name = "annotated_video"
    what = "the annotated video"

    def __init__(self, stream: str, config: AnnotatedVideoConfig, preview: FrameDemand | None = None,
                 metrics: VideoOutMetrics | None = None,
                 on_closed: Callable[[AnnotatedEncoder], None] | None = None) -> None:
        self.stream = stream
        self.config = config
        self.preview = preview
        self.metrics = metrics
        self.on_closed = on_closed
        self.queue: BoundedQueue[Labelled] = BoundedQueue(config.queue, "latest", on_drop=lambda _: self._dropped())
        self.frames_encoded = 0
        self.frames_dropped = 0
        self.size: tuple[int, int] | None = None  # (width, height) of the encoded video, fixed by the first frame
        self.fps = 25.0  # the frame rate the encoder was opened with
        self.closed = threading.Event()
        self.publisher: HasStatus | None = None  # set by the publisher that subscribes (streams[].publish)
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()
        self._want_key = True
        self._ctx: av.VideoCodecContext | None = None
        self._t0: float | None = None
        self._last_pts = -1
        self._waited = 0
        self._thread: threading.Thread | None = None

    # -- subscribers ---------------------------------------------------------------------------------

    def subscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            if self.closed.is_set():
                raise RuntimeError(f"stream {self.stream!r} has ended")
            self._subscribers.append(subscriber)
            self._want_key = True  # the newcomer starts with a keyframe, not at the next GOP
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"annotated-{self.stream}", daemon=True)
                self._thread.start()
                if self.metrics:
                    self.metrics.encoders.labels(self.stream).set(1)
        self._touch()

    def unsubscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def request_keyframe(self) -> None:
        self._want_key = True

    # -- sink (output thread) -------------------------------------------------------------------------

    def write(self, item: Labelled) -> None:
        if not self._subscribers:
            return
        self._touch()
        self.queue.put(item)

    def close(self) -> None:
        """The stream ended: encode what is queued, then end every subscriber."""
        with self._lock:
            self.closed.set()
            thread = self._thread
        self.queue.close()
        if thread is not None:
            thread.join(10)
        else:
            self._end_subscribers()
            if self.on_closed is not None:
                self.on_closed(self)

    # -- encoder thread ---------------------------------------------------------------------------------

    def _touch(self) -> None:
        if self.preview is not None:  # every frame, full size, while someone consumes the video
            self.preview.need_every_frame("an annotated-video viewer")

    def _dropped(self) -> None:
        self.frames_dropped += 1
        if self.metrics:
            self.metrics.dropped.labels(self.stream, "encoder").inc()

    def _run(self) -> None:
        try:
            drain(self.queue, self._encode_one, poll_s=0.25)
            self._flush()
        except Exception as exc:  # the encoder failing ends the annotated video, never the stream
            log.error("stream %s: annotated-video encoder failed: %s", self.stream, exc,
                      exc_info=log.isEnabledFor(logging.DEBUG))
        finally:
            self._ctx = None
            self._end_subscribers()
            if self.metrics:
                self.metrics.encoders.labels(self.stream).set(0)
            if self.on_closed is not None:
                self.on_closed(self)

    def _end_subscribers(self) -> None:
        with self._lock:
            subscribers, self._subscribers = self._subscribers, []
        for sub in subscribers:
            try:
                sub.end()
            except Exception as exc:  # one subscriber failing to end does not keep the others open
                log.warning("stream %s: ending an annotated-video consumer failed: %s", self.stream, exc)

    def _open(self, width: int, height: int, rate: float | None) -> av.VideoCodecContext:
        """``rate``: the source's nominal frame rate, carried by the frames (25 when it has none)."""
        fps = rate if rate and rate > 0 else 25.0
        self.fps = fps
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height = width, height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = MS
        ctx.framerate = Fraction(fps).limit_denominator(1001)
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline",
                       "crf": str(self.config.crf), "g": str(max(1, round(fps * self.config.gop_s))),
                       "forced-idr": "1", "threads": "1"}
        ctx.open()
        log.info("stream %s: annotated video %dx%d H.264 at ~%.0f fps", self.stream, width, height, fps)
        return ctx

    def _picture(self, item: Labelled) -> np.ndarray:
        picture = item.annotated(self.stream, self.config.height)
        if self.size is None:
            h, w = picture.shape[:2]
            self.size = (w - w % 2, h - h % 2)
        w, h = self.size
        ph, pw = picture.shape[:2]
        if (ph - ph % 2, pw - pw % 2) == (h, w):
            return picture[:h, :w]
        return fit(picture, w, h)

    def _pts(self, item: Labelled) -> int:
        t = item.result.frame.captured_at
        if self._t0 is None:
            self._t0 = t
        pts = max(self._last_pts + 1, round((t - self._t0) * 1000))
        self._last_pts = pts
        return pts

    def _encode_one(self, item: Labelled) -> None:
        if not self._subscribers:
            return
        if self.size is None and item.result.frame.display is None and self._waited < FULL_SIZE_WAIT:
            self._waited += 1  # the source starts keeping full-size pictures: size the video by one of those
            return
        started = time.perf_counter()
        picture = self._picture(item)
        if self._ctx is None:
            self._ctx = self._open(*self.size, item.result.frame.rate)  # type: ignore[misc]
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")
        frame.pts, frame.time_base = self._pts(item), MS
        if self._want_key:
            self._want_key = False
            frame.pict_type = av.video.frame.PictureType.I
        packets = self._ctx.encode(frame)
        self.frames_encoded += 1
        if self.metrics:
            self.metrics.encode_seconds.labels(self.stream).observe(time.perf_counter() - started)
        self._send(packets)

    def _flush(self) -> None:
        if self._ctx is not None:
            self._send(self._ctx.encode(None))

    def _send(self, packets: list[av.Packet]) -> None:
        if not packets:
            return
        with self._lock:
            subscribers = list(self._subscribers)
        for packet in packets:
            packet.time_base = MS
            for sub in subscribers:
                sub.deliver(packet)


class VideoOut:
    """The pipeline's annotated-video encoders, one per stream (made with the stream, ended with it)."""

    def __init__(self, config: AnnotatedVideoConfig, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = video_out_metrics(metrics)
        self._encoders: dict[str, AnnotatedEncoder] = {}
        self._lock = threading.Lock()

    def sink(self, stream: StreamConfig, preview: FrameDemand | None) -> AnnotatedEncoder:
        """The stream's encoder (a sink for its output). A publisher (``streams[].publish``) is attached by the
        stream factory: this module does not know the publisher."""
        encoder = AnnotatedEncoder(stream.name, self.config, preview, self.metrics, self._closed)
        if self.metrics:
            self.metrics.viewers.labels(stream.name).set(0)
            self.metrics.encoders.labels(stream.name).set(0)
            for stage in ("encoder", "viewer"):  # at 0 from the start; "publish" from the publisher that attaches
                self.metrics.dropped.labels(stream.name, stage)
        with self._lock:
            self._encoders[stream.name] = encoder
        return encoder

    def adopt(self, view: Any) -> None:
        """Serve a stream's viewers and publisher from ``view`` instead of an encoder (a ``RemuxedView``: the
        camera's packets as they came); it leaves with its stream, as an encoder does."""
        view.on_closed = self._closed
        if self.metrics:
            self.metrics.viewers.labels(view.stream).set(0)
            self.metrics.dropped.labels(view.stream, "viewer")
        with self._lock:
            self._encoders[view.stream] = view

    def get(self, stream: str) -> AnnotatedEncoder | None:
        return self._encoders.get(stream)

    def _closed(self, encoder: AnnotatedEncoder) -> None:
        with self._lock:
            if self._encoders.get(encoder.stream) is encoder:
                del self._encoders[encoder.stream]
        if self.metrics:
            self.metrics.forget(encoder.stream)
