"""A camera's view input sent to WebRTC viewers and publishing as it came, without labels (``streams[].view: remux``).

The choice against the annotated video (annotated_video.py): no decode, no overlay, no encode, the camera's own
quality; what it loses is the labels (previews still draw them, from the view input decoded while watched:
``ViewFeed``). A packet tap on the view input that stands where the stream's ``AnnotatedEncoder`` would for its
subscribers (``subscribe``, ``size``, ``fps``, ``publisher``): the WebRTC viewers' tracks and the publisher take
its packets as they take the encoder's. Packets go through FFmpeg's ``h264_mp4toannexb`` and ``dump_extra``
bitstream filters, so each keyframe carries its SPS/PPS in-band (what a viewer joining mid-stream and the
publisher's muxer need), whatever container the camera's stream came in.

H.264 only (what aiortc and the publisher send); another codec is said once in the log and nobody gets a
picture. The camera decides its keyframes: a viewer that joins waits for the next one (no keyframe on demand),
and a stream with B-frames may stutter in a browser (a camera's live streams rarely have them).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from fractions import Fraction

import av
from av.bitstream import BitStreamFilterContext
from sightline.stream.outputs.annotated_video import Subscriber

log = logging.getLogger(__name__)

FILTERS = "h264_mp4toannexb,dump_extra"


class RemuxedView:
    """The view input's packets for the stream's WebRTC viewers and its publisher."""

    name = "remuxed_view"
    what = "the camera's own video (remuxed, no labels)"

    def __init__(self, stream: str, on_closed: Callable[[RemuxedView], None] | None = None) -> None:
        self.stream = stream
        self.on_closed = on_closed
        self.size: tuple[int, int] | None = None  # (width, height) of the input's video, once a session opened
        self.fps = 25.0
        self.closed = threading.Event()
        self.publisher: object | None = None  # set by the publisher that subscribes (streams[].publish)
        self.packets_sent = 0
        self.frames_encoded = 0  # nothing is encoded here (what the video status reports beside an encoder's)
        self.frames_dropped = 0
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()
        self._filters: BitStreamFilterContext | None = None
        self._refused: str | None = None  # the codec said in the log as not sendable

    # -- subscribers (any thread) ---------------------------------------------------------------------

    def subscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            if self.closed.is_set():
                raise RuntimeError(f"stream {self.stream!r} has ended")
            self._subscribers.append(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def request_keyframe(self) -> None:
        """The camera decides its keyframes: a subscriber waits for the next one."""
        return None

    # -- packet tap (the view input's thread) ---------------------------------------------------------

    def begin(self, stream: av.VideoStream) -> None:
        ctx = stream.codec_context
        if ctx.name != "h264":
            self._filters = None
            if self._refused != ctx.name:
                self._refused = ctx.name
                log.error("stream %s: view: remux sends H.264 only, and the view input is %s: WebRTC viewers and "
                          "publishing get no picture (use view: annotated)", self.stream, ctx.name)
            return
        self._filters = BitStreamFilterContext(FILTERS, stream)
        self.size = (ctx.width, ctx.height)
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else 25.0

    def submit(self, packet: av.Packet) -> None:
        if self._filters is None or not self._subscribers:
            return
        # the filter takes the packet's data (FFmpeg moves its reference): give it a copy, the source still decodes
        # the original (a keyframe of the classified input)
        copy = av.Packet(bytes(packet))
        copy.pts, copy.dts, copy.time_base, copy.is_keyframe = packet.pts, packet.dts, packet.time_base, \
            packet.is_keyframe
        try:
            sendable = self._filters.filter(copy)
        except av.FFmpegError as exc:  # one bad packet: the subscribers skip to the next keyframe
            log.debug("stream %s: view: a packet not remuxed: %s", self.stream, exc)
            return
        with self._lock:
            subscribers = list(self._subscribers)
        for out in sendable:
            if out.time_base is None:
                out.time_base = packet.time_base or Fraction(1, 90000)
            self.packets_sent += 1
            for subscriber in subscribers:
                subscriber.deliver(out)  # never blocks: each keeps its own bounded queue

    def close(self) -> None:
        """The input ended for good (the stream stopped): end every subscriber."""
        with self._lock:
            self.closed.set()
            subscribers, self._subscribers = self._subscribers, []
        self._filters = None
        for subscriber in subscribers:
            try:
                subscriber.end()
            except Exception as exc:  # one subscriber failing to end does not keep the others open
                log.warning("stream %s: ending a remuxed-view consumer failed: %s", self.stream, exc)
        if self.on_closed is not None:
            self.on_closed(self)
