"""Retention: keeps ``output_dir`` within its limits, kind by kind (docs/storage.md).

A pass scans ``output_dir`` once (``os.scandir``, one ``stat`` per file) and then deletes, oldest first by last
write:

1. per kind, the files older than its ``max_age_days``;
2. per kind, while its total is over its ``max_gb``;
3. while the volume's free space is under ``min_free_gb``, across kinds in ``FLOOR_ORDER``.

It never deletes a file a writer has open (``StorageStats.is_open``) nor the active ``events.jsonl``. Within
recordings, plain footage goes before the footage of an event (see ``Retention``). A file it cannot delete
(vanished, EACCES) is counted, never raised. The figures go to ``StorageStats`` (status, ``/readyz``, metrics).

``RetentionThread`` runs a pass every ``interval_s`` on a thread of its own: a pass over 100,000 files takes
seconds of file-system calls, which must never sit on the event loop or a stream's thread.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from sightline.stream.config import RetentionConfig
from sightline.stream.storage.layout import (
    EVENT_HISTORY_DIR,
    EVENTS_DIR,
    EVENTS_LOG,
    KINDS,
    PREDICTIONS_DIR,
    RECORDINGS_DIR,
    Kind,
    parse_stamped,
    stamp,
)
from sightline.stream.storage.stats import StorageStats

log = logging.getLogger(__name__)

GB = 1_000_000_000  # max_gb and min_free_gb count in decimal gigabytes, as disks are sold
DAY_S = 86_400.0

FLOOR_ORDER: tuple[Kind, ...] = ("recordings", "predictions", "events", "event_history")
"""Who gives way first when the volume is short of space. Recordings are nearly all of the bytes, so the oldest
of them free the floor soonest and at the smallest loss; prediction logs are next in size and say less than the
pictures; event clips are the footage an operator asked to keep; the event history is a few bytes an event and
the only record of what happened."""

EventFootage = Callable[[], Iterable[tuple[str, float, float]]]
"""(stream, from, to) in wall seconds of every event still known, pre- and post-roll included: handed in by
the layer that owns the events (retention imports no events code)."""

DiskSpace = Callable[[str], tuple[int, int]]


def disk_space(path: str) -> tuple[int, int]:
    """(free bytes an unprivileged writer can use, size of the volume) of the volume holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


@dataclass(slots=True)
class StoredFile:
    path: str
    size: int
    mtime: float
    stream: str | None = None  # recordings: whose footage
    event: bool = False  # recordings: overlaps an event the events' retention still keeps


class Stopped(Exception):
    """The pass was asked to stop (shutdown): it ends where it is."""


def scan(root: str, stop: threading.Event | None = None) -> dict[Kind, list[StoredFile]]:
    """Every file retention looks after, by kind (layout.py names them), the active events.jsonl included."""
    found: dict[Kind, list[StoredFile]] = {kind: [] for kind in KINDS}
    for entry in _entries(root):
        if not entry.is_file(follow_symlinks=False):
            continue
        name = entry.name
        if name.endswith(".mp4"):  # a one-off run's recording, or one moved aside: <stream>[.<stamp>].mp4
            _add(found["recordings"], entry, _stem_stream(name))
        elif name == EVENTS_LOG:
            _add(found["event_history"], entry)
        elif name.endswith(".jsonl"):
            _add(found["predictions"], entry)
    for entry in _entries(os.path.join(root, RECORDINGS_DIR)):
        if entry.is_dir(follow_symlinks=False):
            _walk(entry.path, (".mp4",), found["recordings"], entry.name, stop)
    _walk(os.path.join(root, EVENTS_DIR), (".mp4", ".jpg"), found["events"], None, stop, deep=False)
    _walk(os.path.join(root, PREDICTIONS_DIR), (".jsonl",), found["predictions"], None, stop)
    _walk(os.path.join(root, EVENT_HISTORY_DIR), (".jsonl",), found["event_history"], None, stop, deep=False)
    return found


def _entries(folder: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return list(it)
    except OSError:  # not made yet, or removed meanwhile
        return []


def _walk(folder: str, suffixes: tuple[str, ...], into: list[StoredFile], stream: str | None,
          stop: threading.Event | None, deep: bool = True) -> None:
    pending = [folder]
    while pending:
        if stop is not None and stop.is_set():
            raise Stopped
        for entry in _entries(pending.pop()):
            if entry.name.endswith(suffixes) and entry.is_file(follow_symlinks=False):
                _add(into, entry, stream)
            elif deep and entry.is_dir(follow_symlinks=False):
                pending.append(entry.path)


def _add(into: list[StoredFile], entry: os.DirEntry[str], stream: str | None = None) -> None:
    try:
        st = entry.stat(follow_symlinks=False)
    except OSError:  # deleted between the listing and the stat
        return
    into.append(StoredFile(entry.path, st.st_size, st.st_mtime, stream))


def _stem_stream(name: str) -> str:
    parsed = parse_stamped(name)
    return parsed[0] if parsed is not None else name.rsplit(".", 1)[0]


def _start(file: StoredFile) -> float:
    """When a recording's content starts: a segment's name says it; a one-off recording (``<stream>.mp4``, or
    moved aside with the time it was moved) says nothing, and counts as covering all time up to its last write."""
    if os.path.basename(os.path.dirname(os.path.dirname(file.path))) != file.stream:
        return -math.inf  # not recordings/<stream>/<day>/<file>
    parsed = parse_stamped(os.path.basename(file.path))
    return parsed[1] if parsed is not None else -math.inf


class EventSpans:
    """The events' footage per stream, for ``overlaps`` in O(log n)."""

    def __init__(self, spans: Iterable[tuple[str, float, float]]) -> None:
        by_stream: dict[str, list[tuple[float, float]]] = {}
        for stream, begin, end in spans:
            by_stream.setdefault(stream, []).append((begin, end))
        self._begins: dict[str, list[float]] = {}
        self._reach: dict[str, list[float]] = {}  # the latest end among the spans that begin up to here
        for stream, spans_ in by_stream.items():
            spans_.sort()
            self._begins[stream] = [b for b, _ in spans_]
            self._reach[stream] = list(_running_max(e for _, e in spans_))

    def has(self, stream: str | None) -> bool:
        return stream in self._begins

    def overlaps(self, stream: str, begin: float, end: float) -> bool:
        i = bisect.bisect_right(self._begins[stream], end)  # spans that begin before this footage ends
        return i > 0 and self._reach[stream][i - 1] >= begin


def _running_max(values: Iterable[float]) -> Iterable[float]:
    best = -math.inf
    for value in values:
        best = max(best, value)
        yield best


class Retention:
    """One ``output_dir``'s retention.

    Footage of an event: a recording segment that overlaps an event's footage on its stream (the event's start
    minus the pre-roll to its end plus the post-roll) is kept as long as the events' ``max_age_days`` keeps the
    event, not as long as the recordings' age would, and within recordings it goes after the plain footage when
    space is short. ``clock`` is wall time (a test simulates days with it); ``disk`` reads the free space."""

    def __init__(self, output_dir: Path, config: RetentionConfig, stats: StorageStats,
                 event_footage: EventFootage = tuple, clock: Callable[[], float] = time.time,
                 disk: DiskSpace = disk_space) -> None:
        self.root = str(output_dir)
        self.config = config
        self.stats = stats
        self.event_footage = event_footage
        self.clock = clock
        self.disk = disk
        self._events_log = os.path.join(self.root, EVENTS_LOG)
        stats.min_free_bytes = int(config.min_free_gb * GB)

    def run_pass(self, stop: threading.Event | None = None) -> None:
        """One pass; with ``stop`` set it ends early (shutdown) and reports nothing."""
        started = time.perf_counter()
        try:
            self._pass(self.clock(), stop, started)
        except Stopped:
            log.info("retention: pass stopped by the shutdown")

    def _pass(self, now: float, stop: threading.Event | None, started: float) -> None:
        found = scan(self.root, stop)
        self._mark_event_footage(found["recordings"], now)
        deletions = _Deletions(self.stats, self._events_log, stop)
        for kind in KINDS:
            files = sorted(found[kind], key=lambda f: (f.event, f.mtime))  # oldest first, event footage last
            limits = getattr(self.config, kind)
            if limits.max_age_days is not None:
                files = deletions.older_than(kind, files, now - limits.max_age_days * DAY_S)
            if limits.max_gb is not None:
                files = deletions.down_to(kind, files, limits.max_gb * GB)
            found[kind] = files
        free, _ = self._disk()
        floor = self.stats.min_free_bytes
        for kind in FLOOR_ORDER:
            short = 0 if free is None else floor - (free + deletions.freed_total)
            if short <= 0:
                break
            found[kind] = deletions.down_to(kind, found[kind], sum(f.size for f in found[kind]) - short)
        behind = self._behind(found, None if free is None else free + deletions.freed_total, floor)
        deletions.tidy_day_folders(now)
        was_behind = self.stats.last_pass.behind
        duration = time.perf_counter() - started
        self.stats.on_pass({k: (sum(f.size for f in files), len(files)) for k, files in found.items()},
                           deletions.deleted, deletions.errors, self._disk(), duration, behind)
        deletions.report(duration)
        if behind is not None and was_behind is None:  # once a spell: the status says it while it lasts
            log.warning("retention behind: %s", behind)
        elif behind is None and was_behind is not None:
            log.info("retention keeps up again")

    def _disk(self) -> tuple[int | None, int | None]:
        """The volume's figures (of the nearest folder that exists: output_dir is made by its first writer)."""
        path = Path(self.root).absolute()
        while not path.exists() and path != path.parent:
            path = path.parent
        try:
            return self.disk(str(path))
        except OSError as exc:
            log.warning("retention: cannot read the free space of %s: %s", path, exc.strerror or exc)
            return None, None

    def _mark_event_footage(self, recordings: list[StoredFile], now: float) -> None:
        keep_s = self.config.events.max_age_days
        oldest = -math.inf if keep_s is None else now - keep_s * DAY_S
        spans = EventSpans((s, b, e) for s, b, e in self.event_footage() if e >= oldest)
        for f in recordings:
            if spans.has(f.stream):
                start = _start(f)  # a fast replay names segments by stream time, ahead of their last write
                f.event = spans.overlaps(f.stream, start, max(start, f.mtime))  # type: ignore[arg-type]

    def _behind(self, found: dict[Kind, list[StoredFile]], free: int | None, floor: int) -> str | None:
        reasons = []
        for kind in KINDS:
            budget = getattr(self.config, kind).max_gb
            total = sum(f.size for f in found[kind])
            if budget is not None and total > budget * GB:
                reasons.append(f"{kind} hold {total / GB:.2f} GB, over their {budget:g} GB (the rest is being written "
                               f"or could not be deleted)")
        if free is not None and free < floor:
            reasons.append(f"{free / GB:.2f} GB free, under the {self.config.min_free_gb:g} GB floor with nothing "
                           f"more of Sightline's to delete")
        return "; ".join(reasons) or None


class _Deletions:
    """What one pass deletes, and the counts of it."""

    def __init__(self, stats: StorageStats, events_log: str, stop: threading.Event | None) -> None:
        self.stats = stats
        self.events_log = events_log
        self.stop = stop
        self.deleted: dict[Kind, tuple[int, int]] = {kind: (0, 0) for kind in KINDS}
        self.freed_total = 0
        self.errors = 0
        self._day_folders: set[str] = set()

    def delete(self, kind: Kind, f: StoredFile) -> bool:
        """True when ``f`` is gone; False when it is in use or could not be deleted (counted)."""
        if self.stop is not None and self.stop.is_set():
            raise Stopped
        if f.path == self.events_log or self.stats.is_open(Path(f.path)):
            return False
        try:
            os.unlink(f.path)
        except OSError as exc:
            self.errors += 1
            log.debug("retention: cannot delete %s: %s", f.path, exc.strerror or exc)
            return False
        files, freed = self.deleted[kind]
        self.deleted[kind] = (files + 1, freed + f.size)
        self.freed_total += f.size
        if kind == "recordings" and f.stream is not None:
            self._day_folders.add(os.path.dirname(f.path))
        return True

    def older_than(self, kind: Kind, files: list[StoredFile], cutoff: float) -> list[StoredFile]:
        """Delete the plain files last written before ``cutoff``; the rest, in order."""
        kept = []
        for f in files:
            if f.event or f.mtime >= cutoff or not self.delete(kind, f):
                kept.append(f)
        return kept

    def down_to(self, kind: Kind, files: list[StoredFile], budget: float) -> list[StoredFile]:
        """Delete from the front of ``files`` (oldest first) until the rest is within ``budget`` bytes."""
        total = sum(f.size for f in files)
        kept = []
        for i, f in enumerate(files):
            if total <= budget:
                return kept + files[i:]
            if self.delete(kind, f):
                total -= f.size
            else:
                kept.append(f)
        return kept

    def tidy_day_folders(self, now: float) -> None:
        """Remove the day folders of recordings that this pass emptied, except today's (a writer may be about to
        create a file there)."""
        today = stamp(now)[:8]
        for folder in self._day_folders:
            if os.path.basename(folder).replace("-", "") < today:
                with contextlib.suppress(OSError):  # not empty
                    os.rmdir(folder)

    def report(self, duration_s: float) -> None:
        files = sum(n for n, _ in self.deleted.values())
        if files or self.errors:
            kinds = ", ".join(f"{kind} {n}" for kind, (n, _) in self.deleted.items() if n)
            log.info("retention: deleted %d files (%s), %.1f MB freed, %d could not be deleted, in %.2f s",
                     files, kinds or "none", self.freed_total / 1e6, self.errors, duration_s)


class RetentionThread:
    """Runs a retention pass at start and every ``interval_s`` after, on its own thread; ``stop`` ends it within
    a moment (a pass checks between folders and deletions)."""

    def __init__(self, retention: Retention, interval_s: float) -> None:
        self.retention = retention
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="retention", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.retention.run_pass(self._stop)
            except Exception:  # a bug must not end retention for the life of the process
                log.exception("retention: the pass failed")
            self._stop.wait(self.interval_s)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
