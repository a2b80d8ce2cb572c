"""The disk, in plain numbers: bytes per kind, free space, what retention deleted, write failures per kind.

Writers (recordings, clips, prediction logs, the event history) call ``on_write_error`` when a write fails and
``on_write_ok`` when one succeeds again; the retention pass fills in the sizes and what it deleted. The service
(status, ``/readyz``) and ``metrics.py`` only read. A kind is *failing* from its first failed write until its next
successful one: a full disk shows while it lasts and clears by itself when space returns.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sightline.stream.storage.layout import KINDS, Kind

log = logging.getLogger(__name__)


@dataclass(slots=True)
class KindFigures:
    """One kind of output on disk."""

    bytes: int = 0  # as of the last retention pass
    files: int = 0
    deleted_files: int = 0  # by retention, since start
    freed_bytes: int = 0
    write_errors: int = 0  # failed writes, since start
    failing: str | None = None  # the last failure while writes of this kind fail (cleared by a good write)
    failing_since: float | None = None


@dataclass(slots=True)
class PassFigures:
    """The last retention pass."""

    passes: int = 0
    finished_at: float | None = None  # wall time
    duration_s: float = 0.0
    deleted_files: int = 0
    freed_bytes: int = 0
    behind: str | None = None  # why the pass could not bring the disk within its limits, None when it did
    errors: int = 0  # files it could not delete, since start


@dataclass
class StorageStats:
    """Shared by every writer of one ``output_dir``; thread-safe."""

    clock: Callable[[], float] = time.time
    kinds: dict[Kind, KindFigures] = field(default_factory=lambda: {k: KindFigures() for k in KINDS})
    free_bytes: int | None = None  # on output_dir's volume, as of the last pass
    total_bytes: int | None = None
    min_free_bytes: int = 0  # the floor retention keeps free (storage.retention.min_free_gb)
    last_pass: PassFigures = field(default_factory=PassFigures)
    _open: set[Path] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def on_write_error(self, kind: Kind, exc: BaseException | str) -> None:
        """``exc``: the failure, or what the writer already made of it (an event clip's ``error``)."""
        if isinstance(exc, str):
            reason = exc
        else:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc) or type(exc).__name__)
        with self._lock:
            figures = self.kinds[kind]
            figures.write_errors += 1
            first = figures.failing is None
            figures.failing = reason
            if first:
                figures.failing_since = self.clock()
        if first:
            log.error("%s: writes are failing: %s (the streams go on; writing resumes by itself)", kind, reason)

    def on_write_ok(self, kind: Kind) -> None:
        figures = self.kinds[kind]
        if figures.failing is None:  # the hot path: no lock while all is well
            return
        with self._lock:
            if figures.failing is None:
                return
            since, figures.failing, figures.failing_since = figures.failing_since, None, None
        log.warning("%s: writing again after %.0fs of failures", kind, self.clock() - (since or self.clock()))

    def opened(self, path: Path) -> None:
        """A file being written: retention never deletes it."""
        with self._lock:
            self._open.add(path)

    def closed(self, path: Path) -> None:
        with self._lock:
            self._open.discard(path)

    def is_open(self, path: Path) -> bool:
        with self._lock:
            return path in self._open

    def on_pass(self, sizes: dict[Kind, tuple[int, int]], deleted: dict[Kind, tuple[int, int]], errors: int,
                disk: tuple[int | None, int | None], duration_s: float, behind: str | None) -> None:
        """A retention pass's result: (bytes, files) per kind left, (files, bytes) it deleted per kind, the files it
        could not delete, (free, volume) bytes after it, and why it could not keep the limits (None: it did)."""
        with self._lock:
            for kind, (size, files) in sizes.items():
                self.kinds[kind].bytes, self.kinds[kind].files = size, files
            for kind, (files, freed) in deleted.items():
                self.kinds[kind].deleted_files += files
                self.kinds[kind].freed_bytes += freed
            self.free_bytes, self.total_bytes = disk
            p = self.last_pass
            p.passes += 1
            p.finished_at = self.clock()
            p.duration_s = duration_s
            p.deleted_files = sum(files for files, _ in deleted.values())
            p.freed_bytes = sum(freed for _, freed in deleted.values())
            p.behind = behind
            p.errors += errors

    def figures(self) -> dict[str, object]:
        """The JSON of ``GET /api/streams``' ``storage`` (service/status.py's ``StorageFigures``)."""
        with self._lock:
            return {"free_bytes": self.free_bytes, "volume_bytes": self.total_bytes,
                    "min_free_bytes": self.min_free_bytes,
                    "kinds": {kind: asdict(f) for kind, f in self.kinds.items()},
                    "retention": asdict(self.last_pass), "problems": self._problems()}

    def problems(self) -> list[str]:
        """One line per kind whose writes fail, and retention falling behind: ``/readyz``'s detail and the status."""
        with self._lock:
            return self._problems()

    def _problems(self) -> list[str]:
        lines = [f"{kind} writes failing: {f.failing} ({f.write_errors} failed writes so far)"
                 for kind, f in self.kinds.items() if f.failing is not None]
        if self.last_pass.behind is not None:
            lines.append(f"retention behind: {self.last_pass.behind}")
        return lines
