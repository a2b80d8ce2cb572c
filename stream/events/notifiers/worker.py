"""One bounded queue and one thread per output: the event bus never waits for a broker or a receiver.

``OutputWorker.submit`` is the bus subscriber. It only puts the message on the output's queue
(``put_nowait``); when the queue is full the message is dropped, counted and logged (rate-limited),
so a broker or receiver that is down can cost events but never time on the publisher's thread.
The worker thread hands messages to a ``Delivery`` one at a time, in order.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from sightline.stream.events.notifiers.metrics import BoundOutputMetrics

log = logging.getLogger(__name__)

LOG_EVERY_S = 10.0


class GiveUp(Exception):
    """The delivery gave the message up for good; ``reason`` is one of metrics.DROP_REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class Stopped(Exception):
    """The output is closing: the message in hand was not (known to be) delivered."""


class Delivery(Protocol):
    def start(self) -> None: ...

    def deliver(self, msg: dict[str, Any], abort: threading.Event) -> None:
        """Return once delivered; raise GiveUp, or Stopped as soon as ``abort`` is set."""

    def close(self) -> None: ...


class RateLimitedLog:
    """At most one line per ``every_s`` per key, saying how many were held back."""

    def __init__(self, every_s: float = LOG_EVERY_S) -> None:
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def warning(self, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -self.every_s) < self.every_s:
                self._held[key] = self._held.get(key, 0) + 1
                return
            self._last[key] = now
            held = self._held.pop(key, 0)
        suffix = f" ({held} similar messages held back)" if held else ""
        log.warning(message + suffix, *args)


class OutputWorker:
    def __init__(self, name: str, delivery: Delivery, queue_size: int, metrics: BoundOutputMetrics,
                 accepts: Callable[[dict[str, Any]], bool] = lambda msg: True) -> None:
        self.name = name
        self.delivery = delivery
        self.metrics = metrics
        self.accepts = accepts
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=queue_size)
        self._closing = False
        self._stop = threading.Event()  # finish what is queued, then exit
        self._abort = threading.Event()  # give up the message in hand and exit
        self._thread = threading.Thread(target=self._run, name=f"event-output-{name}", daemon=True)
        self._log = RateLimitedLog()
        metrics.queue_depth.set_function(self._queue.qsize)

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self.delivery.start()
        self._thread.start()

    def submit(self, msg: dict[str, Any]) -> None:
        """The bus subscriber: never blocks, never raises for a full queue."""
        if not self.accepts(msg):
            return
        if self._closing:
            self.metrics.dropped["shutdown"].inc()
            return
        try:
            self._queue.put_nowait(msg)
        except queue.Full:
            self.metrics.dropped["queue_full"].inc()
            self._log.warning("queue_full", "event output %s: queue full (%d), a %s message was dropped",
                              self.name, self._queue.maxsize, msg.get("type"))

    def close(self, drain_s: float = 2.0, abort_s: float = 3.0) -> None:
        """Stop taking messages, deliver what is queued for up to ``drain_s``, count the rest as dropped."""
        close_together([self], drain_s, abort_s)

    def begin_close(self) -> None:
        self._closing = True
        self._stop.set()

    def join_until(self, deadline: float) -> bool:
        """Wait for the worker thread until ``deadline`` (monotonic); True when it has ended."""
        if self._thread.is_alive():
            self._thread.join(max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive()

    def abort(self) -> None:
        """Give up the message in hand (between attempts; an attempt in flight ends at its own timeout)."""
        self._abort.set()

    def finish_close(self) -> None:
        """Count what was never delivered and release the delivery's connection."""
        left = 0
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
            left += 1
        if left:
            self.metrics.dropped["shutdown"].inc(left)
            log.warning("event output %s: %d messages not delivered before shutdown", self.name, left)
        if self._thread.is_alive():  # a daemon thread: it cannot hold the process; its message is lost
            log.warning("event output %s: a delivery still in flight at shutdown is abandoned", self.name)
        self.delivery.close()

    def _run(self) -> None:
        while True:
            try:
                msg = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if self._abort.is_set():
                self.metrics.dropped["shutdown"].inc()
                continue
            try:
                self.delivery.deliver(msg, self._abort)
            except GiveUp as exc:
                self.metrics.dropped[exc.reason].inc()
                self._log.warning(f"giveup-{exc.reason}", "event output %s: a %s message was dropped (%s): %s",
                                  self.name, msg.get("type"), exc.reason, exc)
            except Stopped:
                self.metrics.dropped["shutdown"].inc()
            except Exception:  # noqa: BLE001 - a bug in one delivery must not stop the output
                self.metrics.dropped["rejected"].inc()
                log.exception("event output %s: delivery failed unexpectedly", self.name)
            else:
                self.metrics.delivered.inc()


def close_together(workers: list[OutputWorker], drain_s: float = 2.0, abort_s: float = 3.0) -> None:
    """Close outputs in parallel under one budget (``drain_s`` to deliver what is queued, then ``abort_s`` for
    the message in hand): 32 stalled webhooks cost what one does, not 32 times as much."""
    for worker in workers:
        worker.begin_close()
    deadline = time.monotonic() + drain_s
    for worker in workers:
        worker.join_until(deadline)
    for worker in workers:
        worker.abort()
    deadline = time.monotonic() + abort_s
    for worker in workers:
        worker.join_until(deadline)
    for worker in workers:
        worker.finish_close()
