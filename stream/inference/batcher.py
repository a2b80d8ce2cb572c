"""Dynamic batching across streams.

A batch closes when it holds ``max_batch`` frames to classify or when its oldest frame has waited
``max_wait_s`` since decode, whichever comes first. Frames are taken round-robin, one per stream per
round, starting at a different stream each batch, so a flooding stream cannot starve a slow one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sightline.stream.buffers import BoundedQueue, Policy
from sightline.stream.frames import Frame

# Frames that skip inference (infer_fps) ride along for the overlay; cap them per batch.
PASSENGERS_PER_SLOT = 4


@dataclass
class Batch:
    frames: list[Frame] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)  # streams whose queue closed and drained


class Batcher:
    def __init__(self, max_batch: int, max_wait_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.clock = clock
        self.bell = threading.Condition()
        self._queues: dict[str, BoundedQueue[Frame]] = {}
        self._start = 0

    def add_stream(self, name: str, capacity: int, policy: Policy,
                   on_drop: Callable[[Frame], None] | None = None) -> BoundedQueue[Frame]:
        queue: BoundedQueue[Frame] = BoundedQueue(capacity, policy, bell=self.bell, on_drop=on_drop)
        with self.bell:
            if name in self._queues:
                raise ValueError(f"stream {name!r} is already batched")
            self._queues[name] = queue
        return queue

    def close_stream(self, name: str) -> None:
        """Close a stream's queue (a stream that failed to start): it drains out and is forgotten."""
        with self.bell:
            queue = self._queues.get(name)
        if queue is not None:
            queue.close()

    def wake(self) -> None:
        with self.bell:
            self.bell.notify_all()

    def next_batch(self, timeout: float) -> Batch:
        """Wait up to ``timeout`` for a first frame, then up to max_wait for the batch to fill."""
        with self.bell:
            if not self.bell.wait_for(self._anything, timeout):
                return Batch()
            while not self._due():
                remaining = self._oldest() + self.max_wait_s - self.clock()
                if remaining <= 0:
                    break
                self.bell.wait(remaining)
            return Batch(self._collect(), self._take_ended())

    def _anything(self) -> bool:
        return any(len(q) or q.closed for q in self._queues.values())

    def _due(self) -> bool:
        if sum(len(q) for q in self._queues.values()) >= self.max_batch:
            return True
        if any(q.closed for q in self._queues.values()):
            return True  # a stream is ending: flush now rather than wait for company
        oldest = self._oldest()
        return oldest == float("inf") or self.clock() - oldest >= self.max_wait_s

    def _oldest(self) -> float:
        heads = [q.peek() for q in self._queues.values() if len(q)]
        return min((f.decoded_at for f in heads if f is not None), default=float("inf"))

    def _collect(self) -> list[Frame]:
        names = list(self._queues)
        if not names:
            return []
        self._start = (self._start + 1) % len(names)
        order = names[self._start:] + names[:self._start]
        frames: list[Frame] = []
        infer = 0
        limit = self.max_batch * PASSENGERS_PER_SLOT
        progress = True
        while progress and infer < self.max_batch and len(frames) < limit:
            progress = False
            for name in order:
                frame = self._queues[name].get_nowait()
                if frame is None:
                    continue
                frames.append(frame)
                infer += frame.infer
                progress = True
                if infer >= self.max_batch or len(frames) >= limit:
                    break
        return frames

    def _take_ended(self) -> list[str]:
        ended = [name for name, q in self._queues.items() if q.exhausted]
        for name in ended:
            del self._queues[name]
        return ended
