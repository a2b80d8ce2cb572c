"""What viewers see of a camera whose view input is not the one classified: the main stream, labels drawn from the
substream's latest result.

A packet tap on the view input (``streams[].inputs`` with the view role). Nothing is decoded while nobody looks:
packets pass by. While a preview, a WebRTC viewer or publishing wants pictures (``watched``), the tap decodes
from the next keyframe on, converts each picture to RGB (at most ``DISPLAY_MAX_HEIGHT`` lines) and hands it on
with the stream's current labels; the overlay is drawn when a picture is shown (``Labelled.annotated``), scaled to
its size. The recorded passthrough stays unannotated: it is the camera's own bytes (docs/inputs.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from fractions import Fraction

import av
from av.video.reformatter import VideoReformatter
from sightline.model.classifier import Prediction
from sightline.stream.frames import Frame, Result, Smoothed
from sightline.stream.outputs.sinks import Labelled
from sightline.stream.stats import InputStats

log = logging.getLogger(__name__)

DISPLAY_MAX_HEIGHT = 1080  # as the classify input's display pictures (4K cameras are shown at 1080 lines)

CurrentLabels = Callable[[], tuple[tuple[Prediction, ...], Smoothed | None, float | None]]


class ViewFeed:
    """Decodes the view input only while someone looks, and shows each picture with the latest labels."""

    name = "view"

    def __init__(self, stream: str, watched: Callable[[], bool], labels: CurrentLabels, fps: Callable[[], float],
                 show: Callable[[Labelled], None], counts: InputStats,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.watched = watched  # a preview looked a moment ago, or a viewer or publishing is attached
        self.labels = labels  # the classify input's latest top-k, smoothed label and latency
        self.fps = fps
        self.show = show
        self.counts = counts  # the view input's figures: its frames_decoded are the pictures decoded for viewers
        self.clock = clock
        self.errors = 0
        self._decoder: av.VideoStream | None = None
        self._time_base: Fraction | None = None
        self._rate: float | None = None
        self._keyframe_seen = False  # decoding starts at a keyframe (a picture without one is garbage)
        self._seq = 0
        self._to_rgb = VideoReformatter()

    def begin(self, stream: av.VideoStream) -> None:
        """A session opened: decode with its stream's own decoder (the reader never decodes this input)."""
        self._decoder = stream
        self._time_base = stream.time_base
        rate = stream.average_rate or stream.guessed_rate
        self._rate = float(rate) if rate else None
        self._keyframe_seen = False

    def submit(self, packet: av.Packet) -> None:
        if not self.watched():
            if self._keyframe_seen:  # nobody looks: let the decoder go, start again at a keyframe
                self._keyframe_seen = False
                if self._decoder is not None:
                    self._decoder.codec_context.flush_buffers()
            return
        if not self._keyframe_seen:
            if not packet.is_keyframe:
                return
            self._keyframe_seen = True
        try:
            frames = packet.decode()
        except av.FFmpegError as exc:  # a bad packet loses pictures until the next keyframe, not the feed
            self.errors += 1
            self._keyframe_seen = False
            if self.errors in (1, 10, 100):
                log.warning("stream %s: view input: cannot decode (%d so far): %s", self.stream, self.errors, exc)
            return
        for frame in frames:
            self._show(frame)

    def close(self) -> None:
        self._decoder = None
        self._to_rgb = VideoReformatter()  # its scaler threads go now, not when a GC finds this object

    def _show(self, frame: av.VideoFrame) -> None:
        self.counts.frames_decoded += 1
        if frame.height > DISPLAY_MAX_HEIGHT:
            width = round(frame.width * DISPLAY_MAX_HEIGHT / frame.height)
            picture = self._to_rgb.reformat(frame, width, DISPLAY_MAX_HEIGHT, "rgb24", interpolation="AREA")
        else:
            picture = self._to_rgb.reformat(frame, format="rgb24")
        image = picture.to_ndarray()
        now = self.clock()
        item = Frame(self.stream, self._seq, frame.pts, self._time_base, now, now, image, image, False, self._rate)
        self._seq += 1
        top, smoothed, latency_ms = self.labels()
        self.show(Labelled(Result(item, None, (), None), top, smoothed, self.fps(), latency_ms))
