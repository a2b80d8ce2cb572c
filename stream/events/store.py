"""Where events are kept: the rules in force, the recent events (for the API) and the event history on disk
(events.jsonl and its rotated files)."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from sightline.stream.buffers import BoundedQueue, Consumer
from sightline.stream.config import RotationConfig
from sightline.stream.event_config import EventRule
from sightline.stream.storage.layout import event_history_dir, events_log, free_stamped_path, stamped_files
from sightline.stream.storage.line_log import LineLog
from sightline.stream.storage.stats import StorageStats

log = logging.getLogger(__name__)

LOG_QUEUE = 4096  # event messages waiting for the disk (a stalled disk drops and counts beyond)
EVENT_ID_PATTERN = r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}"  # matched whole (re.fullmatch): no trailing newline


def is_event_id(value: object) -> bool:
    return isinstance(value, str) and re.fullmatch(EVENT_ID_PATTERN, value) is not None


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def valid_event(event: object) -> bool:
    """An event as the API, the queries and the clips rely on it: a line of events.jsonl that is not one (edited
    by hand, another program's, a torn write) is skipped and counted, never served."""
    if not isinstance(event, dict) or not is_event_id(event.get("id")):
        return False
    return (all(isinstance(event.get(k), str) for k in ("stream", "rule", "label"))
            and _number(event.get("start")) and _number(event.get("peak"))
            and (event.get("end") is None or _number(event.get("end")))
            and all(event.get(k) is None or isinstance(event.get(k), str)
                    for k in ("snapshot_url", "clip_url", "clip_error")))


def history_files(output_dir: Path) -> list[Path]:
    """The event history in the order it was written: the rotated files by their start, then events.jsonl."""
    return [*stamped_files(event_history_dir(output_dir), "events", ".jsonl"), events_log(output_dir)]


def _read_messages(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The event messages of one history file, and how many lines were not one (a torn or foreign line)."""
    messages, skipped = [], 0
    try:
        with path.open("rb") as f:
            for raw in f:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    msg = None
                if isinstance(msg, dict) and valid_event(msg.get("event")):
                    messages.append(msg)
                elif raw.strip():
                    skipped += 1
    except FileNotFoundError:  # no events.jsonl yet, or retention took a rotated file meanwhile
        pass
    return messages, skipped


class DuplicateRuleError(ValueError):
    pass


class TooManyRulesError(ValueError):
    pass


class RuleSet:
    """The rules in force; replaced whole on each change, so a reader's snapshot never changes under it."""

    def __init__(self, rules: Iterable[EventRule] = (), max_rules: int = 256) -> None:
        self._rules: tuple[EventRule, ...] = tuple(rules)
        self.max_rules = max_rules
        self._lock = threading.Lock()
        self.version = 0

    def snapshot(self) -> tuple[int, tuple[EventRule, ...]]:
        return self.version, self._rules

    def list(self) -> list[EventRule]:
        return list(self._rules)

    def add(self, rule: EventRule) -> None:
        with self._lock:
            if any(r.name == rule.name for r in self._rules):
                raise DuplicateRuleError(f"a rule named {rule.name!r} already exists")
            if len(self._rules) >= self.max_rules:
                raise TooManyRulesError(f"{len(self._rules)} rules are in force, events.max_rules allows no more")
            self._rules = (*self._rules, rule)
            self.version += 1

    def remove(self, name: str) -> EventRule:
        with self._lock:
            found = [r for r in self._rules if r.name == name]
            if not found:
                raise KeyError(name)
            self._rules = tuple(r for r in self._rules if r.name != name)
            self.version += 1
            return found[0]


class EventStore:
    """The last ``history`` events, newest version of each (a bus subscriber; queries from the API)."""

    def __init__(self, history: int) -> None:
        self.history = history
        self._events: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._newest_first: list[dict[str, Any]] | None = None  # by start; rebuilt on the first query after a change
        self._lock = threading.Lock()
        self._querying = threading.Lock()

    def on_message(self, msg: dict[str, Any]) -> None:
        event = msg["event"]
        with self._lock:
            self._newest_first = None
            self._events[event["id"]] = event
            self._events.move_to_end(event["id"])
            while len(self._events) > self.history:
                self._events.popitem(last=False)

    def load(self, files: Sequence[Path]) -> tuple[int, int]:
        """Read the events of earlier runs back, the last ``history``: (messages loaded, lines skipped).

        ``files`` are the history oldest first (``history_files``). The newest are read until they name
        ``history`` events, then replayed in order, so each event ends at its newest version; every message
        carries the whole event, so an event whose start and end lie in different files is whole too."""
        batches: list[list[dict[str, Any]]] = []
        ids: set[str] = set()
        skipped = 0
        for path in reversed(files):
            if len(ids) >= self.history:
                break
            messages, bad = _read_messages(path)
            skipped += bad
            ids.update(msg["event"]["id"] for msg in messages)
            batches.append(messages)
        loaded = 0
        for messages in reversed(batches):
            for msg in messages:
                self.on_message(msg)
            loaded += len(messages)
        with self._lock:
            for event in self._events.values():  # an event left open by a killed process is not ongoing now
                if event.get("end") is None:
                    event["end_reason"] = "unknown (the service stopped without ending it)"
        return loaded, skipped

    def get(self, event_id: str) -> dict[str, Any] | None:
        with self._lock:
            event = self._events.get(event_id)
            return None if event is None else dict(event)

    def query(self, stream: str | None = None, label: str | None = None, rule: str | None = None,
              since: float | None = None, until: float | None = None, limit: int = 50,
              offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
        """Events newest first (by start) that match every filter given; (total matching, the page).

        Seconds over a long history: the API runs it in a worker thread, never on the event loop. The history
        is sorted once per change (nearly sorted already: a linear pass), not once per query. One query runs at
        a time: the others wait on a lock, without the GIL, so 20 at once do not starve the event loop of it."""
        with self._querying:
            return self._query(stream, label, rule, since, until, limit, offset)

    def _query(self, stream: str | None, label: str | None, rule: str | None, since: float | None,
               until: float | None, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
        with self._lock:
            if self._newest_first is None:
                self._newest_first = sorted(self._events.values(), key=lambda e: e["start"], reverse=True)
            events = self._newest_first
        picked = [e for e in events
                  if (stream is None or e["stream"] == stream) and (label is None or e["label"] == label)
                  and (rule is None or e["rule"] == rule)
                  and (since is None or (e["end"] if e["end"] is not None else float("inf")) >= since)
                  and (until is None or e["start"] <= until)]
        return len(picked), [dict(e) for e in picked[offset:offset + limit]]


class EventLog:
    """Appends each event message as one JSON line to events.jsonl, on its own thread, and rotates it.

    events.jsonl is the file being appended to. When it passes ``storage.rotate``'s size or age it moves to
    ``event_history/events.<start>.jsonl`` and the next message starts a new one; a file an earlier run left
    there moves at start (named by its last write: its start is not known). GET /api/events reads them all
    back at start (``history_files``). Lines reach the file whole (storage/line_log.py); a failed write is
    reported under ``event_history`` and its lines counted (``lost``). A disk that stalls fills the bounded
    queue; messages beyond are dropped and counted (``dropped``), never waited for.
    """

    def __init__(self, output_dir: Path, rotate: RotationConfig, storage: StorageStats | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.path = events_log(output_dir)
        self.history_dir = event_history_dir(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._retire(self.path, self.path.stat().st_mtime)
        path = self.path
        self.lines = LineLog("event_history", lambda _wall: path, rotate.max_bytes, rotate.max_s, retire=self._retire,
                             storage=storage, flush_s=0.0, clock=clock, wall=wall)
        self.queue: BoundedQueue[bytes] = BoundedQueue(LOG_QUEUE, "block")
        self.dropped = 0
        self._writing = False
        self._consumer = Consumer(self.queue, "events-log", self._write, lambda: None)
        self._consumer.start()

    @property
    def lost(self) -> int:
        """Event messages a failed write lost."""
        return self.lines.lost_lines

    def on_message(self, msg: dict[str, Any]) -> None:
        line = (json.dumps(msg, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")
        if not self.queue.put(line, timeout=0) and not self.queue.closed:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.error("events.jsonl: %d event message(s) dropped (the disk is not keeping up)", self.dropped)

    def _retire(self, path: Path, start: float) -> None:
        os.rename(path, free_stamped_path(self.history_dir, "events", start, ".jsonl"))

    def _write(self, line: bytes) -> None:
        self._writing = True
        try:
            self.lines.append(line)  # flush_s 0: written at once
        except OSError as exc:
            if self.lost in (1, 10, 100) or self.lost % 1000 == 0:
                log.error("events.jsonl: %d event message(s) not written so far: %s", self.lost, exc.strerror or exc)
        finally:
            self._writing = False

    def flush(self, timeout: float) -> bool:
        """Wait until every queued line was written (or ``timeout``); False on timeout."""
        deadline = time.monotonic() + timeout
        while len(self.queue) or self._writing:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout: float = 10.0) -> None:
        self.queue.close()
        self._consumer.join(timeout)
        try:
            self.lines.close()
        except OSError as exc:
            log.error("events.jsonl: closing failed: %s", exc.strerror or exc)
