"""Bounded frame queues with a named policy.

``latest``: live video. A full queue discards its oldest item and counts it, so the consumer always
sees the newest frames and latency stays flat when the GPU falls behind.
``block``: replay/evaluation. A full queue makes the producer wait; nothing is lost.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, Literal, TypeVar

T = TypeVar("T")
Policy = Literal["latest", "block"]


class BoundedQueue(Generic[T]):
    """Thread-safe. ``bell`` (shared by many queues) is notified on every put so one consumer can wait on all."""

    def __init__(self, capacity: int, policy: Policy, bell: threading.Condition | None = None,
                 on_drop: Callable[[T], None] | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.policy = policy
        self._items: deque[T] = deque()
        self._bell = bell or threading.Condition()
        self._space = threading.Condition(self._bell)  # shares the bell's lock
        self._on_drop = on_drop
        self._closed = False
        self.dropped = 0

    def put(self, item: T, timeout: float | None = None) -> bool:
        """Add ``item``. Returns False if it was not added (closed, or ``block`` timed out)."""
        dropped: T | None = None
        with self._bell:
            if self._closed:
                return False
            if len(self._items) >= self.capacity:
                if self.policy == "latest":
                    dropped = self._items.popleft()
                    self.dropped += 1
                elif not self._space.wait_for(self._has_space, timeout) or self._closed:
                    return False
            self._items.append(item)
            self._bell.notify_all()
        if dropped is not None and self._on_drop is not None:
            self._on_drop(dropped)
        return True

    def _has_space(self) -> bool:
        return self._closed or len(self._items) < self.capacity

    def get_nowait(self) -> T | None:
        with self._bell:
            if not self._items:
                return None
            item = self._items.popleft()
            self._space.notify_all()
            return item

    def get(self, timeout: float | None = None) -> T | None:
        """Wait for an item; None on timeout or when closed and empty."""
        with self._bell:
            if not self._bell.wait_for(lambda: self._items or self._closed, timeout):
                return None
            if not self._items:
                return None
            item = self._items.popleft()
            self._space.notify_all()
            return item

    def peek(self) -> T | None:
        with self._bell:
            return self._items[0] if self._items else None

    def close(self) -> None:
        """No more puts; consumers drain what is left, then see ``exhausted``."""
        with self._bell:
            self._closed = True
            self._bell.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def exhausted(self) -> bool:
        with self._bell:
            return self._closed and not self._items

    def __len__(self) -> int:
        return len(self._items)


class Consumer(Generic[T]):
    """One daemon thread that hands every item of ``queue`` to ``handle`` until the queue is closed and empty,
    then calls ``finalize`` (also when ``handle`` raised): an output, recorder or clip writer's thread."""

    def __init__(self, queue: BoundedQueue[T], name: str, handle: Callable[[T], None],
                 finalize: Callable[[], None]) -> None:
        self.queue = queue
        self._handle = handle
        self._finalize = finalize
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        """True when the thread has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            drain(self.queue, self._handle)
        finally:
            self._finalize()


def drain(queue: BoundedQueue[T], handle: Callable[[T], None], poll_s: float = 0.5) -> None:
    """Hand every item to ``handle`` until the queue is closed and empty (a consumer thread's loop)."""
    while True:
        item = queue.get(timeout=poll_s)
        if item is not None:
            handle(item)
        elif queue.exhausted:
            return
