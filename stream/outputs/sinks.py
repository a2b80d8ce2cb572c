"""Per-stream outputs. A sink that fails is logged and counted by the caller; inference never waits on it."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import time
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


class JsonlSink:
    """One JSON line per classified frame; lines reach the file whole or not at all.

    Lines collect in memory and go out at least once a second (and on close) as one write of complete
    lines. A write that fails part-way (ENOSPC, EIO) keeps the whole lines that reached the file and
    cuts the torn one off: the file is truncated back to the end of the last complete line, the lines
    that did not fit are counted as lost (``on_lost``) and the error is raised for the caller to count
    and log. The next flush tries again with new lines, so a disk
    that frees up resumes the log without a torn line in between. An earlier file of the same name is
    moved aside first (``outputs.fresh_output``), never truncated.
    """

    name = "jsonl"

    def __init__(self, path: Path, stream: str, on_lost: Callable[[int], None] | None = None,
                 opener: Callable[[Path], RawFile] | None = None, flush_s: float = 1.0,
                 max_buffer: int = 256 * 1024) -> None:
        self.path = fresh_output(path)
        self.stream = stream
        self.on_lost = on_lost
        self.flush_s = flush_s
        self.max_buffer = max_buffer
        self.lost_lines = 0
        self._file: RawFile = (opener or _create_exclusive)(self.path)
        self._good = 0  # file size up to the end of the last complete line written
        self._pending = bytearray()
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
            "model": None if result.model is None else result.model.id,
        }
        self._pending += (json.dumps(record) + "\n").encode("utf-8")
        now = time.monotonic()
        if now - self._flushed_at >= self.flush_s or len(self._pending) >= self.max_buffer:
            self._flushed_at = now
            self.flush()

    def flush(self) -> None:
        """Write the pending lines with one write (looping only on a short count); undo it on failure."""
        if not self._pending:
            return
        chunk = bytes(self._pending)
        self._pending.clear()
        view = memoryview(chunk)
        done = 0
        try:
            while done < len(chunk):
                n = self._file.write(view[done:])
                if not n:
                    raise OSError(errno.EIO, "short write")
                done += n
        except OSError as exc:
            kept = chunk.rfind(b"\n", 0, done) + 1  # the whole lines that reached the file stay
            self._good += kept
            lines = chunk.count(b"\n", kept)
            self._undo()
            self.lost_lines += lines
            if self.on_lost is not None:
                self.on_lost(lines)
            raise OSError(exc.errno, f"{self.path.name}: {lines} line(s) not written: "
                                     f"{exc.strerror or type(exc).__name__}") from exc
        self._good += done

    def _undo(self) -> None:
        """Cut the file back to its last complete line (a torn line would poison every reader)."""
        try:
            self._file.truncate(self._good)
            self._file.seek(self._good)
        except OSError as exc:
            log.error("stream %s: cannot cut %s back to its last complete line: %s", self.stream, self.path.name,
                      exc.strerror or exc)

    def close(self) -> None:
        if self._file.closed:
            return
        try:
            self.flush()
            os.fsync(self._file.fileno())
        finally:
            self._file.close()


class RawFile(Protocol):
    """What JsonlSink needs of a file: ``io.FileIO`` (unbuffered, so a write is one system call)."""

    closed: bool

    def write(self, data: bytes | memoryview, /) -> int | None: ...

    def truncate(self, size: int | None = None, /) -> int: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...

    def fileno(self) -> int: ...

    def close(self) -> None: ...


def _create_exclusive(path: Path) -> RawFile:
    """A new file, never an existing one (``x``: O_EXCL), unbuffered."""
    return io.FileIO(path, "x")


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
