"""Per-stream outputs. A sink that fails is logged and counted by the caller; inference never waits on it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import av
import cv2
import numpy as np
from sightline.model.classifier import Prediction
from sightline.stream.frames import Frame, Result, Smoothed
from sightline.stream.outputs.files import fresh_output
from sightline.stream.outputs.overlay import draw_overlay
from sightline.stream.outputs.segments import MP4_OPTIONS, RisingClock

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Labelled:
    """A frame with the labels to show: its own result, or the stream's latest when it was not classified."""

    result: Result
    top: tuple[Prediction, ...]
    smoothed: Smoothed | None
    fps: float
    latency_ms: float | None

    def annotated(self, stream: str, height: int | None = None) -> np.ndarray:
        """The frame with its labels drawn; at ``height`` lines (aspect kept) when given, as previews are."""
        frame = self.result.frame
        image = frame.display if frame.display is not None else frame.image
        if height is not None and image.shape[0] != height:
            image = resize_to_height(image, height)
        return draw_overlay(image, stream, self.top, self.smoothed, self.fps, self.latency_ms)

    def labels(self) -> dict[str, object]:
        """What the overlay of this frame says, as data (the page shows it beside the picture)."""
        frame = self.result.frame
        return {"seq": frame.seq, "time": None if frame.time_s is None else round(frame.time_s, 4),
                "smoothed": None if self.smoothed is None else {"label": self.smoothed.label,
                                                                "prob": round(self.smoothed.prob, 5)},
                "top": [{"label": p.label, "prob": round(p.prob, 5)} for p in self.top]}


def resize_to_height(image: np.ndarray, height: int) -> np.ndarray:
    import cv2

    width = max(2, round(image.shape[1] * height / image.shape[0]))
    interpolation = cv2.INTER_AREA if height < image.shape[0] else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


class Sink(Protocol):
    name: str

    def write(self, item: Labelled) -> None: ...

    def close(self) -> None: ...


# Recorder timestamps are milliseconds. The MP4 muxer rewrites the stream's time base when it writes its
# header, so frames carry this constant rather than reading the stream's.
MS = Fraction(1, 1000)


class VideoRecorder:
    """Annotated H.264 in fragmented MP4: every flushed fragment plays, even if the process is killed.

    The recording keeps the size of the first frame. A source that changes resolution mid-stream is
    followed by scaling each later picture to fit that size, aspect ratio kept, black bars where it
    differs (one file per stream, whatever the camera does; see docs/recordings.md). An earlier file
    of the same name is moved aside first, never overwritten.
    """

    name = "recorder"

    def __init__(self, path: Path, stream: str, fps: float = 25.0) -> None:
        self.path = path
        self.stream = stream
        self.fps = fps  # until a frame says its source's rate (``Frame.rate``): data, not a call into the source
        self._container: av.container.OutputContainer | None = None
        self._video: av.VideoStream | None = None
        self._last_pts = -1
        self._t0: float | None = None
        self._clock = RisingClock()
        self.frames = 0
        self.rescaled = 0  # pictures whose size differed from the recording's (resolution changes)

    def _open(self, width: int, height: int) -> tuple[av.container.OutputContainer, av.VideoStream]:
        fps = self.fps
        fresh_output(self.path)
        container = av.open(str(self.path), mode="w", format="mp4", options=MP4_OPTIONS)
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        video = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        video.width, video.height = width - width % 2, height - height % 2
        video.pix_fmt = "yuv420p"
        video.time_base = MS
        video.codec_context.time_base = MS  # else pts are rounded to 1/rate and a faster source collides
        if codec == "libx264":
            video.options = {"preset": "veryfast", "crf": "23", "g": str(max(1, round(fps * 2)))}
        self._container, self._video = container, video
        return container, video

    def write(self, item: Labelled) -> None:
        frame = item.result.frame
        image = frame.display if frame.display is not None else frame.image
        self.record(image, frame, lambda picture: draw_overlay(picture, self.stream, item.top, item.smoothed,
                                                               item.fps, item.latency_ms))

    def record(self, image: np.ndarray, src: Frame, annotate: Callable[[np.ndarray], np.ndarray]) -> None:
        """Encode one picture: fitted to the recording's size first, then annotated (legible at that size)."""
        if src.rate:
            self.fps = src.rate
        if self._container is None or self._video is None:
            container, video = self._open(image.shape[1], image.shape[0])
        else:
            container, video = self._container, self._video
        h, w = image.shape[:2]
        if (h - h % 2, w - w % 2) == (video.height, video.width):
            image = image[: video.height, : video.width]  # yuv420p wants even sizes: drop an odd last row/column
        else:
            self.rescaled += 1
            image = fit(image, video.width, video.height)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(annotate(image)), format="rgb24")
        pts = self._pts(src)
        frame.pts, frame.time_base = pts, MS
        for packet in video.encode(frame):
            container.mux(packet)
        self.frames += 1

    def _pts(self, src: Frame) -> int:
        """Milliseconds on the stream's clock, kept rising across file loops, reconnects and timestamp resets."""
        t = self._clock.see(src.time_s if src.time_s is not None else src.captured_at, 1.0 / self.fps)
        if self._t0 is None:
            self._t0 = t
        pts = max(self._last_pts + 1, round((t - self._t0) * 1000))
        self._last_pts = pts
        return pts

    def close(self) -> None:
        if self._container is None or self._video is None:
            return
        container, video = self._container, self._video
        # Drop our references first: the encoder (and libx264's threads) is freed when its stream object
        # is, and a recorder kept alive by a reference cycle would otherwise hold them until a full GC.
        self._container = self._video = None
        try:
            for packet in video.encode(None):
                container.mux(packet)
        finally:
            container.close()


def fit(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` scaled to fit ``width``×``height`` with its aspect ratio kept, centred on black."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    scale = min(width / w, height / h)
    new_w, new_h = max(1, min(width, round(w * scale))), max(1, min(height, round(h * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    scaled = cv2.resize(np.ascontiguousarray(image), (new_w, new_h), interpolation=interpolation)
    if (new_h, new_w) == (height, width):
        return scaled
    out = np.zeros((height, width, 3), np.uint8)
    y, x = (height - new_h) // 2, (width - new_w) // 2
    out[y:y + new_h, x:x + new_w] = scaled
    return out
