"""Which worker a stream goes to: the one with the most spare capacity (plain functions, no Ray).

A worker's capacity is the frames/s it can classify (measured at its start with full batches, or
``cluster.worker_fps``); its load is the frames/s its streams ask for (``infer_fps``, else the file's frame
rate, else ``cluster.default_stream_fps``). A stream fits a worker whose spare capacity covers what it asks
for; when none does, it is ``unplaced`` (reported, retried on every heartbeat), never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sightline.stream.config import StreamConfig


@dataclass(frozen=True)
class WorkerLoad:
    worker: str
    capacity_fps: float
    asked_fps: float
    streams: int
    max_streams: int
    accepting: bool = True  # False while draining

    @property
    def spare_fps(self) -> float:
        return self.capacity_fps - self.asked_fps


def asked_fps(stream: StreamConfig, default_fps: float, file_fps: float | None = None) -> float:
    """Frames/s the stream asks the model for."""
    native = file_fps if stream.is_file and file_fps else default_fps
    return min(stream.infer_fps, native) if stream.infer_fps else native


def file_rate(path: Path) -> float | None:
    """The first video stream's average frame rate, or None (unreadable files are refused before this)."""
    import av

    try:
        with av.open(str(path), timeout=5.0) as container:
            video = container.streams.video[0]
            rate = video.average_rate or video.guessed_rate
            return float(rate) if rate else None
    except (av.FFmpegError, IndexError, OSError):
        return None


def choose_worker(loads: list[WorkerLoad], asked: float) -> str | None:
    """The accepting worker with the most spare frames/s that covers ``asked`` (ties: fewest streams, then id)."""
    fits = [w for w in loads if w.accepting and w.streams < w.max_streams and w.spare_fps >= asked]
    if not fits:
        return None
    return min(fits, key=lambda w: (-w.spare_fps, w.streams, w.worker)).worker
