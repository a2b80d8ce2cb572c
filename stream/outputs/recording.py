"""A stream's recording, fed by its source with every decoded frame.

The model's copy of a live stream keeps only the newest frames (latency stays flat when the model
falls behind); a recording that took its frames from there would skip whatever the model skipped.
So the source hands each decoded frame, full size, to this writer as well, and the writer draws the
labels of the stream's latest classified frame on it. A live stream's recorder waits a moment
(``label_wait_s`` after the frame was decoded, at most) for the model to catch up with that frame, so
in the usual case the labels on a frame are its own or its predecessor's; a replay stream's recorder
waits until the model has seen the frame (``FAST_LABEL_WAIT_S`` at most), so its labels are exact.

Replay streams (``mode: fast``) lose nothing here either: the source waits while the queue is full.
A live stream does not wait long (it must keep reading its camera); a frame the encoder cannot take
in time is counted as lost (``frames_lost{reason="recorder_behind"}``) and the recording goes on.

Its files follow ``SegmentPlan`` (``SegmentedRecorder``): a new segment is a fresh encoder, so it starts at a keyframe.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

import av
import numpy as np
from sightline.model.classifier import Prediction
from sightline.stream.buffers import BoundedQueue, Consumer
from sightline.stream.frames import Frame, Smoothed
from sightline.stream.outputs.overlay import draw_overlay
from sightline.stream.outputs.segments import RisingClock, SegmentPlan
from sightline.stream.outputs.sinks import VideoRecorder
from sightline.stream.stats import StreamStats

log = logging.getLogger(__name__)

T = TypeVar("T")

RECORDING_QUEUE = 48  # frames waiting for the encoder (about 2 s at 25 fps)
LIVE_PUT_TIMEOUT_S = 0.1  # how long a live source waits for room before the frame is counted lost
LABEL_WAIT_S = 0.5
FAST_LABEL_WAIT_S = 30.0  # replay: nothing is real time, wait for the frame's own labels (bounded, in case of a bug)


class LabelSource(Protocol):
    """The stream's output: its latest labels, and a way to wait until it has seen a given frame."""

    def wait_handled(self, seq: int, timeout: float) -> bool: ...

    def current_labels(self) -> tuple[tuple[Prediction, ...], Smoothed | None, float | None]: ...


class SegmentedRecorder:
    """A stream's annotated recording: a ``VideoRecorder`` per file of its ``SegmentPlan``.

    A failed write (a full disk) closes the file as well as it can and is raised for the writer to count; the
    next file opens at a later frame once the plan allows (a fresh encoder: it starts with a keyframe)."""

    name = VideoRecorder.name

    def __init__(self, plan: SegmentPlan, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.plan = plan
        self.stream = plan.stream
        self.clock = clock  # the frames' captured_at clock
        self.wall = wall
        self.recorder: VideoRecorder | None = None
        self._rising = RisingClock()
        self._started = 0.0  # recording time of the open file's first frame

    def record(self, image: np.ndarray, src: Frame, annotate: Callable[[np.ndarray], np.ndarray]) -> None:
        fps = src.rate or 25.0
        t = self._rising.see(src.time_s if src.time_s is not None else src.captured_at, 1.0 / fps)
        if self.recorder is not None and self.plan.due(t - self._started):
            self.close()
        try:
            if self.recorder is None:
                path = self.plan.next_path(t, self.wall() - (self.clock() - src.captured_at))
                if path is None:
                    return  # a write failed a moment ago: not yet
                self.recorder, self._started = VideoRecorder(path, self.stream, fps), t
            self.recorder.record(image, src, annotate)
        except (av.FFmpegError, OSError) as exc:
            self.plan.failed(exc)
            self._close(quiet=True)
            raise
        self.plan.wrote()

    def close(self) -> None:
        self._close(quiet=False)

    def _close(self, quiet: bool) -> None:
        recorder, self.recorder = self.recorder, None
        if recorder is None:
            return
        try:
            recorder.close()
        except (av.FFmpegError, OSError) as exc:
            if not quiet:
                self.plan.failed(exc)
                raise
        finally:
            self.plan.closed(recorder.path, recorder.frames > 0)


class QueuedWriter(ABC, Generic[T]):
    """A ``VideoRecorder`` fed through a bounded, blocking queue on a thread of its own: what a stream's
    recording and an event's clip share. ``close`` encodes what is queued, then finalizes the file; a file
    that cannot be finalized is reported (``_failed``), never raised into the stream."""

    def __init__(self, recorder: VideoRecorder | SegmentedRecorder, capacity: int, thread: str) -> None:
        self.recorder = recorder
        self.queue: BoundedQueue[T] = BoundedQueue(capacity, "block")
        self.done = threading.Event()
        self.errors = 0
        self._consumer = Consumer(self.queue, thread, self._write, self._finalize)

    def start(self) -> None:
        self._consumer.start()

    def close(self) -> None:
        """No more items: encode what is queued, then finalize the file."""
        self.queue.close()

    def join(self, timeout: float | None = None) -> bool:
        return self._consumer.join(timeout)

    def _finalize(self) -> None:
        try:
            self.recorder.close()
        except Exception as exc:  # a file that cannot be finalized is reported; the stream is not stopped
            self._failed(exc, "finalizing")
        self.done.set()
        self._finished()

    def _finished(self) -> None:
        """After the file is closed (or could not be)."""

    @abstractmethod
    def _write(self, item: T) -> None:
        """Encode one item (on the writer's thread); a failure loses the item, not the file."""

    @abstractmethod
    def _failed(self, exc: BaseException, what: str) -> None:
        """Report a failure while ``what`` ("writing", "finalizing"): counted and logged, never raised."""


class RecordingWriter(QueuedWriter[Frame]):
    """One stream's recorder thread: every frame its source decoded, annotated, encoded in order."""

    def __init__(self, recorder: SegmentedRecorder, labels: LabelSource, stats: StreamStats, live: bool,
                 stop: threading.Event, clock: Callable[[], float] = time.monotonic,
                 capacity: int = RECORDING_QUEUE, label_wait_s: float = LABEL_WAIT_S,
                 put_timeout_s: float = LIVE_PUT_TIMEOUT_S) -> None:
        super().__init__(recorder, capacity, f"recorder-{recorder.stream}")
        self.labels = labels
        self.stats = stats
        self.live = live
        self.stop = stop
        self.clock = clock
        self.label_wait_s = label_wait_s
        self.put_timeout_s = put_timeout_s

    def submit(self, frame: Frame) -> None:
        """Called by the source thread for every decoded frame."""
        if self.live:
            if not self.queue.put(frame, timeout=self.put_timeout_s) and not self.queue.closed:
                self.stats.on_lost("recorder_behind")
            return
        while not self.stop.is_set():
            if self.queue.put(frame, timeout=0.25) or self.queue.closed:
                return

    def _write(self, frame: Frame) -> None:
        wait = frame.decoded_at + self.label_wait_s - self.clock() if self.live else FAST_LABEL_WAIT_S
        if wait > 0 and not self.labels.wait_handled(frame.seq, wait) and not self.live:
            log.warning("stream %s: frame %d still unclassified after %.0fs; recorded with older labels",
                        self.recorder.stream, frame.seq, wait)
        top, smoothed, latency_ms = self.labels.current_labels()
        fps = self.stats.fps()
        image = frame.display if frame.display is not None else frame.image
        name = self.recorder.stream

        def annotate(picture: np.ndarray) -> np.ndarray:
            return draw_overlay(picture, name, top, smoothed, fps, latency_ms)

        try:
            self.recorder.record(image, frame, annotate)
        except Exception as exc:  # an encoder/disk failure loses this frame, not the stream
            self._failed(exc, "writing")

    def _failed(self, exc: BaseException, what: str) -> None:
        self.errors += 1
        self.stats.on_sink_error(self.recorder.name)
        if self.errors in (1, 10, 100) or self.errors % 1000 == 0:
            log.error("stream %s: recorder failed %s (%d so far): %s", self.recorder.stream, what, self.errors, exc,
                      exc_info=log.isEnabledFor(logging.DEBUG))
