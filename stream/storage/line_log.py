"""Line logs (the prediction logs, the event history): every line reaches the disk whole or not at all, and a
log is rotated by size and age so that retention can delete its old files (docs/recordings.md)."""

from __future__ import annotations

import errno
import io
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from sightline.stream.storage.layout import Kind
from sightline.stream.storage.stats import StorageStats

log = logging.getLogger(__name__)


class RawFile(Protocol):
    """What a LineLog needs of a file: ``io.FileIO`` (unbuffered, so a write is one system call)."""

    closed: bool

    def write(self, data: bytes | memoryview, /) -> int | None: ...

    def truncate(self, size: int | None = None, /) -> int: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...

    def fileno(self) -> int: ...

    def close(self) -> None: ...


def create_exclusive(path: Path) -> RawFile:
    """A new file, never an existing one (``x``: O_EXCL), unbuffered."""
    return io.FileIO(path, "x")


class LineLog:
    """Appends lines to a file, whole lines or nothing; a file that is full or old gives way to a new one.

    Lines collect in memory and go out at least once every ``flush_s`` (checked on each ``append`` and ``tick``)
    and on close, as one write of complete lines. A write that fails part-way (ENOSPC, EIO) keeps the whole lines
    that reached the file and cuts the torn one off: the file is truncated back to the end of its last complete
    line, the lines that did not fit are counted as lost (``on_lost``), the failure goes to ``storage`` under
    ``kind`` and is raised for the caller to count. The next flush tries again with new lines, so a disk that
    frees up resumes the log by itself, without a torn line in between.

    A file is created exclusively (never an existing one) when its first line is written, at
    ``path_for(wall time of that line)``, and registered as open in ``storage`` (retention leaves it alone).
    A file that would pass ``max_bytes``, or is ``max_s`` old, is closed (after ``retire(path, start)`` when given:
    the event history moves it aside) and the next line starts a new one (``storage.rotate`` in the config).
    """

    def __init__(self, kind: Kind, path_for: Callable[[float], Path], max_bytes: float | None = None,
                 max_s: float | None = None, retire: Callable[[Path, float], None] | None = None,
                 storage: StorageStats | None = None,
                 on_lost: Callable[[int], None] | None = None, opener: Callable[[Path], RawFile] = create_exclusive,
                 flush_s: float = 1.0, max_buffer: int = 256 * 1024, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.kind = kind
        self.path_for = path_for
        self.max_bytes = max_bytes
        self.max_s = max_s
        self.retire = retire
        self.storage = storage if storage is not None else StorageStats()
        self.on_lost = on_lost
        self.opener = opener
        self.flush_s = flush_s
        self.max_buffer = max_buffer
        self.clock = clock
        self.wall = wall
        self.lost_lines = 0
        self.path: Path | None = None  # the file being written, None until the next line opens one
        self._file: RawFile | None = None
        self._started = 0.0  # wall time of the file's first line (its name says so)
        self._opened_at = 0.0  # clock() then: its age
        self._good = 0  # file size up to the end of the last complete line written
        self._pending = bytearray()
        self._pending_since: float | None = None  # wall time of the oldest pending line
        self._flushed_at = clock()

    def append(self, line: bytes) -> None:
        """One line (ending in a newline); written with the next flush, which may be this call's."""
        if self._pending_since is None:
            self._pending_since = self.wall()
        self._pending += line
        self.tick()

    def tick(self) -> None:
        """Flush when it is time (a sink calls this with every frame, so a quiet log still goes out each second)."""
        now = self.clock()
        if now - self._flushed_at >= self.flush_s or len(self._pending) >= self.max_buffer:
            self._flushed_at = now
            self.flush()

    def flush(self) -> None:
        """Rotate when due, then write the pending lines with one write (looping only on a short count)."""
        if self._file is not None and self._rotation_due():
            try:
                self._close_file()
            except OSError as exc:  # the file stays and takes the lines; rotating is tried again next flush
                self.storage.on_write_error(self.kind, exc)
        if not self._pending:
            return
        chunk = bytes(self._pending)
        started = self._pending_since if self._pending_since is not None else self.wall()
        self._pending.clear()
        self._pending_since = None
        done = 0
        try:
            file = self._file if self._file is not None else self._open(started)
            view = memoryview(chunk)
            while done < len(chunk):
                n = file.write(view[done:])
                if not n:
                    raise OSError(errno.EIO, "short write")
                done += n
        except OSError as exc:
            self._failed(chunk, done, exc)
        self._good += done
        self.storage.on_write_ok(self.kind)

    def close(self) -> None:
        """Flush what is pending and close the file (OSError: the last lines were lost, counted)."""
        try:
            self.flush()
        finally:
            self._close_file(retire=False)

    def _rotation_due(self) -> bool:
        if self._good == 0:  # a file without a line is never rotated away
            return False
        return ((self.max_bytes is not None and self._good + len(self._pending) > self.max_bytes)
                or (self.max_s is not None and self.clock() - self._opened_at >= self.max_s))

    def _open(self, started: float) -> RawFile:
        path = self.path_for(started)
        self._file = self.opener(path)
        self.path, self._started, self._opened_at, self._good = path, started, self.clock(), 0
        self.storage.opened(path)
        return self._file

    def _close_file(self, retire: bool = True) -> None:
        """Retire the file (OSError: it stays open), then fsync and close it."""
        file, path = self._file, self.path
        if file is None or path is None:
            return
        if retire and self.retire is not None:
            self.retire(path, self._started)  # a rename: the open file moves with its name
        self._file = self.path = None
        try:
            os.fsync(file.fileno())
        finally:
            file.close()
            self.storage.closed(path)

    def _failed(self, chunk: bytes, done: int, exc: OSError) -> None:
        """Keep the whole lines of ``chunk`` that reached the file, cut the torn one off, count and raise."""
        kept = chunk.rfind(b"\n", 0, done) + 1
        self._good += kept
        lines = chunk.count(b"\n", kept)
        if self._file is not None and self.path is not None:
            self._undo(self._file, self.path)
        self.lost_lines += lines
        if self.on_lost is not None:
            self.on_lost(lines)
        self.storage.on_write_error(self.kind, exc)
        name = self.path.name if self.path is not None else self.kind
        raise OSError(exc.errno, f"{name}: {lines} line(s) not written: "
                                 f"{exc.strerror or type(exc).__name__}") from exc

    def _undo(self, file: RawFile, path: Path) -> None:
        """Cut the file back to its last complete line (a torn line would poison every reader)."""
        try:
            file.truncate(self._good)
            file.seek(self._good)
        except OSError as exc:
            log.error("%s: cannot cut %s back to its last complete line: %s", self.kind, path.name,
                      exc.strerror or exc)
