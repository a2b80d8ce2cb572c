"""Per-stream outputs. A sink that fails is logged and counted by the caller; inference never waits on it."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, Protocol

import av
import numpy as np
from sightline.model.classifier import Prediction
from sightline.stream.frames import Frame, Result, Smoothed
from sightline.stream.overlay import draw_overlay


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


class JsonlSink:
    """One JSON line per classified frame; flushed at least once a second and on close."""

    name = "jsonl"

    def __init__(self, path: Path, stream: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.stream = stream
        self._file: IO[str] = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._flushed_at = time.monotonic()

    def write(self, item: Labelled) -> None:
        result = item.result
        if result.probs is None:
            return
        frame = result.frame
        record = {
            "stream": self.stream,
            "seq": frame.seq,
            "pts": frame.pts,
            "time": None if frame.time_s is None else round(frame.time_s, 4),
            "top": [{"label": p.label, "prob": round(p.prob, 5)} for p in result.top],
            "smoothed": None if item.smoothed is None else {"label": item.smoothed.label,
                                                             "prob": round(item.smoothed.prob, 5)},
            "latency_ms": None if result.timings is None else round(result.timings.latency_s * 1000, 2),
        }
        self._file.write(json.dumps(record) + "\n")
        now = time.monotonic()
        if now - self._flushed_at >= 1.0:
            self._file.flush()
            self._flushed_at = now

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()


class VideoRecorder:
    """Annotated H.264 in fragmented MP4: every flushed fragment plays, even if the process is killed."""

    name = "recorder"

    def __init__(self, path: Path, stream: str, fps: Callable[[], float] | float = 25.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.stream = stream
        self._fps = fps
        self._container: av.container.OutputContainer | None = None
        self._video: av.VideoStream | None = None
        self._last_pts = -1
        self._t0: float | None = None
        self._last_t = 0.0
        self._offset = 0.0
        self.frames = 0

    def _open(self, width: int, height: int) -> tuple[av.container.OutputContainer, av.VideoStream]:
        fps = self._rate()
        container = av.open(str(self.path), mode="w", format="mp4",
                                  options={"movflags": "frag_keyframe+empty_moov+default_base_moof",
                                           # each fragment reaches the file when it is muxed: without this
                                           # FFmpeg's 32 KB write buffer held back everything a kill lost
                                           "flush_packets": "1"})
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
        image = item.annotated(self.stream)
        if self._container is None or self._video is None:
            container, video = self._open(image.shape[1], image.shape[0])
        else:
            container, video = self._container, self._video
        image = image[: video.height, : video.width]
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        pts = self._pts(item.result.frame)
        frame.pts, frame.time_base = pts, MS
        for packet in video.encode(frame):
            container.mux(packet)
        self.frames += 1

    def _rate(self) -> float:
        return self._fps() if callable(self._fps) else self._fps

    def _pts(self, src: Frame) -> int:
        """Milliseconds on the stream's clock, kept rising across file loops and reconnects."""
        t = src.time_s if src.time_s is not None else src.captured_at
        if self._t0 is None:
            self._t0 = t
        if t + self._offset < self._last_t:  # the clock went back (loop, reconnect): continue after the last frame
            self._offset = self._last_t - t + 1.0 / self._rate()
        self._last_t = t + self._offset
        pts = max(self._last_pts + 1, round((self._last_t - self._t0) * 1000))
        self._last_pts = pts
        return pts

    def close(self) -> None:
        if self._container is None or self._video is None:
            return
        for packet in self._video.encode(None):
            self._container.mux(packet)
        self._container.close()
        self._container = None
