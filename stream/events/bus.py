"""The event bus: the one place every event message passes through.

The rule engine publishes each message once; outputs (events.jsonl, MQTT, webhooks, metrics, the
API's recent list) subscribe. A message is a plain dict::

    {"type": "start" | "update" | "end",
     "event": {"id", "stream", "rule", "label", "start", "end" (None until "end"), "peak",
               "snapshot_url", "clip_url" (None until the clip is written),
               optionally "clip_error" (the clip is incomplete: a write error cut it short)}}

An ``update`` can follow an ``end``: the event's clip failed after its end message (post-roll).

Contract: ``publish`` never blocks and never raises because of a subscriber. A subscriber is called
synchronously on the publisher's thread/loop and must return at once (outputs put the message on
their own bounded queue and count what they drop). A subscriber that raises is logged (rate-limited)
and counted in ``subscriber_errors``; the others still get the message. Each subscriber gets its own
deep copy, so one cannot change what another sees.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

MESSAGE_TYPES = ("start", "update", "end")
EVENT_FIELDS = ("id", "stream", "rule", "label", "start", "end", "peak", "snapshot_url", "clip_url")

Subscriber = Callable[[dict[str, Any]], None]


def validate_message(msg: dict[str, Any]) -> None:
    """Raise ValueError when ``msg`` does not have the contract's shape."""
    if not isinstance(msg, dict) or msg.get("type") not in MESSAGE_TYPES:
        raise ValueError(f"event message type must be one of {MESSAGE_TYPES}")
    event = msg.get("event")
    if not isinstance(event, dict):
        raise ValueError("event message needs an 'event' dict")
    missing = [k for k in EVENT_FIELDS if k not in event]
    if missing:
        raise ValueError(f"event is missing {missing}")


class EventBus:
    """Synchronous fan-out of event messages to non-blocking subscribers."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()
        self.published = 0
        self.subscriber_errors = 0
        self._last_error_log = 0.0

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Add ``fn``; returns a function that removes it again."""
        with self._lock:
            self._subscribers = [*self._subscribers, fn]

        def unsubscribe() -> None:
            self.unsubscribe(fn)

        return unsubscribe

    def unsubscribe(self, fn: Subscriber) -> None:
        with self._lock:
            self._subscribers = [s for s in self._subscribers if s is not fn]

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, msg: dict[str, Any]) -> None:
        validate_message(msg)
        self.published += 1
        for fn in self._subscribers:  # a snapshot: the list is replaced, never mutated
            try:
                fn(copy.deepcopy(msg))
            except Exception:  # noqa: BLE001 - a bad subscriber must not stop the others
                self.subscriber_errors += 1
                now = time.monotonic()
                if now - self._last_error_log > 10.0:
                    self._last_error_log = now
                    log.exception("event subscriber %r failed (%d failures so far)", fn, self.subscriber_errors)
