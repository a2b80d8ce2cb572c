"""Pre-roll ring and event clip writer.

The ring holds each stream's last ``preroll_s`` seconds (plus the longest ``min_duration_s`` of its
rules: an event is known only that long after its start) as JPEG (already annotated, scaled to the
clip's height): about 30-60 KB a frame at 480 lines instead of 2.7 MB raw at 720p, and capped in
bytes as well (``preroll_max_mb``), oldest first out. An event's clip starts with the ring's frames
from ``start - preroll_s`` on and goes on with live frames until ``end + postroll_s``.

A ``ClipWriter`` encodes on its own thread (H.264 in fragmented MP4, as recordings are: every
fragment reaches the file when muxed, so a clip cut short by a kill still plays up to there; a
SIGTERM closes it properly). Frames reach it through a bounded queue; a live stream never waits
more than a moment on it (a frame it cannot take is counted in ``dropped``).

A frame that cannot be written (a full disk: ``OSError`` ENOSPC from the muxer) or a file that cannot be
finalized makes the clip **incomplete**: ``error`` keeps the first failure, and ``on_failed`` is called
once, on the writer's thread, when it happens (the hub counts it and the event says so: ``clip_error``).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from sightline.stream.outputs.recording import QueuedWriter
from sightline.stream.outputs.sinks import VideoRecorder

log = logging.getLogger(__name__)

CLIP_QUEUE = 256  # JPEG frames waiting for the encoder (about 10 MB at 480 lines)
LIVE_PUT_TIMEOUT_S = 0.05


@dataclass(frozen=True, slots=True)
class ClipFrame:
    """One picture for a clip: time on the stream's clock (``t``) and the annotated picture as JPEG."""

    t: float
    jpeg: bytes
    rate: float | None = None  # the clip's nominal frame rate (VideoRecorder reads it as ``Frame.rate``)

    # what VideoRecorder reads for timestamps
    @property
    def time_s(self) -> float:
        return self.t

    @property
    def captured_at(self) -> float:
        return self.t


class Clip(Protocol):
    """What ``note_failure`` needs of a clip (a ``ClipWriter`` of frames, a ``PacketClip`` of packets)."""

    stream: str
    path: Path
    errors: int
    error: str | None
    on_failed: Callable[[Any], None] | None


def note_failure(clip: Clip, exc: BaseException, what: str) -> None:
    """A clip's write or finalize failed: count it, keep the first reason in ``error`` (the clip is incomplete) and
    call its ``on_failed`` once, on the writer's thread (the hub counts it and the event says so)."""
    clip.errors += 1
    if clip.error is not None:
        return
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc) or type(exc).__name__)
    clip.error = f"{what} failed: {reason}"
    if clip.on_failed is not None:
        try:
            clip.on_failed(clip)
        except Exception:  # a bad callback must not stop the clip's thread
            log.exception("stream %s: clip %s: reporting its failure failed", clip.stream, clip.path.name)


class PrerollRing:
    """The last ``seconds`` of a stream's clip frames, at most ``max_bytes`` of JPEG."""

    def __init__(self, seconds: float, max_bytes: int) -> None:
        self.seconds = seconds
        self.max_bytes = max_bytes
        self._frames: deque[ClipFrame] = deque()
        self.bytes = 0
        self.evicted_for_memory = 0

    def add(self, frame: ClipFrame) -> None:
        self._frames.append(frame)
        self.bytes += len(frame.jpeg)
        while self._frames and (frame.t - self._frames[0].t > self.seconds or self.bytes > self.max_bytes):
            old = self._frames.popleft()
            self.bytes -= len(old.jpeg)
            if frame.t - old.t <= self.seconds:
                self.evicted_for_memory += 1

    def since(self, t: float) -> list[ClipFrame]:
        return [f for f in self._frames if f.t >= t]

    def __len__(self) -> int:
        return len(self._frames)


class ClipWriter(QueuedWriter[ClipFrame]):
    """One event's clip: frames in, an MP4 out, on a thread of its own."""

    def __init__(self, path: Path, stream: str, fps: Callable[[], float], live: bool,
                 on_done: Callable[[ClipWriter], None] | None = None, capacity: int = CLIP_QUEUE,
                 on_failed: Callable[[ClipWriter], None] | None = None) -> None:
        super().__init__(VideoRecorder(path, stream, fps=fps()), capacity, f"clip-{stream}")
        self.path = path
        self.stream = stream
        self.live = live
        self.on_done = on_done
        self.on_failed = on_failed
        self.error: str | None = None  # the first write/finalize failure: the clip is incomplete
        self.dropped = 0
        self.first_t: float | None = None
        self.last_t: float | None = None
        self.stop_after: float | None = None  # the clip ends with the first frame past this time

    def add(self, frame: ClipFrame) -> None:
        if self.last_t is not None and frame.t <= self.last_t:
            return  # already have it (the ring and the live frames overlap by one)
        ok = self.queue.put(frame, timeout=LIVE_PUT_TIMEOUT_S if self.live else None)
        if ok:
            self.last_t = frame.t
            if self.first_t is None:
                self.first_t = frame.t
        elif not self.queue.closed:
            self.dropped += 1

    def wants(self, t: float) -> bool:
        return self.stop_after is None or t <= self.stop_after

    def _finished(self) -> None:
        if self.on_done is not None:
            self.on_done(self)

    def _write(self, frame: ClipFrame) -> None:
        try:
            image = cv2.imdecode(np.frombuffer(frame.jpeg, np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError("undecodable JPEG")
            rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            self.recorder.record(rgb, frame, lambda picture: picture)  # type: ignore[arg-type]
        except Exception as exc:  # a frame lost, not the clip
            self._failed(exc, "writing")

    def _failed(self, exc: BaseException, what: str) -> None:
        note_failure(self, exc, what)
        if what == "finalizing":
            log.error("stream %s: finalizing clip %s failed: %s", self.stream, self.path.name, exc)
        elif self.errors in (1, 10, 100):
            log.error("stream %s: clip %s lost a frame (%d so far): %s", self.stream, self.path.name,
                      self.errors, exc)
