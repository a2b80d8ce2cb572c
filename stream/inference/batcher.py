"""Dynamic batching across streams.

A batch closes when it holds ``max_batch`` frames to classify or when its oldest frame has waited
``max_wait_s`` since decode, whichever comes first. Frames are taken round-robin, one per stream per
round, and each batch starts with the stream after the last one the previous batch took from, so a
flooding stream cannot starve a slow one and, when the model is the bottleneck (more streams with
frames waiting than a batch holds), every stream gets its turn in the same number of batches.

Each frame to classify is counted in ``capacity`` (capacity.py): served when a batch takes it, shed when
its live queue drops it for a newer one; the service reports the box over capacity from those counts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sightline.stream.buffers import BoundedQueue, Policy
from sightline.stream.capacity import CapacityStats
from sightline.stream.frames import Frame

# Frames that skip inference (infer_fps) ride along for the overlay; cap them per batch.
PASSENGERS_PER_SLOT = 4


@dataclass
class Batch:
    frames: list[Frame] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)  # streams whose queue closed and drained


class Batcher:
    def __init__(self, max_batch: int, max_wait_s: float, clock: Callable[[], float] = time.monotonic,
                 capacity: CapacityStats | None = None) -> None:
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.clock = clock
        self.capacity = capacity if capacity is not None else CapacityStats(clock=clock)
        self.bell = threading.Condition()
        self._queues: dict[str, BoundedQueue[Frame]] = {}
        self._next = ""  # the stream the next batch starts with (the one after the last stream taken from)

    def add_stream(self, name: str, capacity: int, policy: Policy,
                   on_drop: Callable[[Frame], None] | None = None) -> BoundedQueue[Frame]:
        shed = self.capacity.on_shed

        def dropped(frame: Frame) -> None:
            if frame.infer:
                shed(name)
            if on_drop is not None:
                on_drop(frame)

        queue: BoundedQueue[Frame] = BoundedQueue(capacity, policy, bell=self.bell, on_drop=dropped)
        with self.bell:
            if name in self._queues:
                raise ValueError(f"stream {name!r} is already batched")
            self._queues[name] = queue
            self.capacity.add_stream(name)
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
        start = names.index(self._next) if self._next in self._queues else 0
        order = names[start:] + names[:start]
        frames: list[Frame] = []
        infer = 0
        limit = self.max_batch * PASSENGERS_PER_SLOT
        last = len(order) - 1
        progress = True
        while progress and infer < self.max_batch and len(frames) < limit:
            progress = False
            for i, name in enumerate(order):
                frame = self._queues[name].get_nowait()
                if frame is None:
                    continue
                frames.append(frame)
                if frame.infer:
                    infer += 1
                    self.capacity.on_served(name)
                progress = True
                last = i
                if infer >= self.max_batch or len(frames) >= limit:
                    break
        self._next = order[(last + 1) % len(order)]
        return frames

    def _take_ended(self) -> list[str]:
        ended = [name for name, q in self._queues.items() if q.exhausted]
        for name in ended:
            del self._queues[name]
            self.capacity.remove_stream(name)
        return ended
