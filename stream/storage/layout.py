"""Where each kind of output lives under ``output_dir``, and what its name says (docs/storage.md).

Every file Sightline writes belongs to one of four kinds, each with its own retention:

- ``recordings``: a stream that runs until stopped records segments,
  ``recordings/<stream>/<YYYY-MM-DD>/<stream>.<start>.mp4``; a file replay records ``<stream>.mp4``.
- ``events``: event clips and snapshots, ``events/<event id>.mp4`` / ``.jpg``.
- ``predictions``: prediction logs, ``predictions/<stream>/<stream>.<start>.jsonl`` (rotated), or
  ``<stream>.jsonl`` for a file replay.
- ``event_history``: ``events.jsonl`` (the file being appended to) and its rotated files,
  ``event_history/events.<start>.jsonl``.

``<start>`` is the UTC time of the file's first content, ``20261207T124501Z``; a name already taken gets
``-2``, ``-3``... (nothing is ever overwritten). Names sort by time within a folder, so a tool finds the
footage of a time range from the names alone.
"""

from __future__ import annotations

import calendar
import glob
import re
import time
from pathlib import Path
from typing import Literal

Kind = Literal["recordings", "events", "predictions", "event_history"]
KINDS: tuple[Kind, ...] = ("recordings", "events", "predictions", "event_history")

STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
_STAMPED = re.compile(r"^(?P<stem>.+)\.(?P<stamp>[0-9]{8}T[0-9]{6}Z)(?:-(?P<n>[0-9]+))?$")
MAX_SUFFIX_TRIES = 1000

RECORDINGS_DIR = "recordings"
EVENTS_DIR = "events"
PREDICTIONS_DIR = "predictions"
EVENT_HISTORY_DIR = "event_history"
EVENTS_LOG = "events.jsonl"


def stamp(wall: float) -> str:
    """``20261207T124501Z``: the UTC second of ``wall`` (seconds since the epoch)."""
    return time.strftime(STAMP_FORMAT, time.gmtime(wall))


def parse_stamped(name: str) -> tuple[str, float, int] | None:
    """``cam.20261207T124501Z-2.mp4`` -> ("cam", epoch seconds, 2); None for a name without a stamp."""
    stem = name.rsplit(".", 1)[0] if "." in name else name
    match = _STAMPED.match(stem)
    if match is None:
        return None
    try:
        wall = calendar.timegm(time.strptime(match["stamp"], STAMP_FORMAT))
    except ValueError:
        return None
    return match["stem"], float(wall), int(match["n"] or 1)


def stamped_name(stem: str, wall: float, suffix: str, n: int = 1) -> str:
    """``cam`` + start + ``.mp4`` -> ``cam.20261207T124501Z.mp4`` (n == 1) or ``cam.20261207T124501Z-2.mp4``."""
    tag = stamp(wall) if n == 1 else f"{stamp(wall)}-{n}"
    return f"{stem}.{tag}{suffix}"


def free_stamped_path(folder: Path, stem: str, wall: float, suffix: str) -> Path:
    """The first free ``stem.<start>[-n]suffix`` in ``folder`` (made if missing). Free when looked at: the caller
    creates it exclusively (O_EXCL) or checks again, as only this process writes ``output_dir``."""
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(1, MAX_SUFFIX_TRIES + 1):
        path = folder / stamped_name(stem, wall, suffix, n)
        if not path.exists():
            return path
    raise FileExistsError(f"{folder}: {MAX_SUFFIX_TRIES} files named {stem}.{stamp(wall)}*{suffix} already exist")


def stamped_files(folder: Path, stem: str, suffix: str) -> list[Path]:
    """The ``stem.<start>[-n]suffix`` files in ``folder``, oldest first (by start, then n): the order written."""
    found = []
    for path in folder.glob(f"{glob.escape(stem)}.*{suffix}") if folder.is_dir() else ():
        parsed = parse_stamped(path.name)
        if parsed is not None and parsed[0] == stem and path.name.endswith(suffix):
            found.append((parsed[1], parsed[2], path))
    return [path for _, _, path in sorted(found)]


def recordings_dir(output_dir: Path, stream: str) -> Path:
    return output_dir / RECORDINGS_DIR / stream


def segment_folder(output_dir: Path, stream: str, wall: float) -> Path:
    """One folder per stream and UTC day: a month of one-minute segments is 30 folders of 1440 files."""
    return recordings_dir(output_dir, stream) / time.strftime("%Y-%m-%d", time.gmtime(wall))


def predictions_dir(output_dir: Path, stream: str) -> Path:
    return output_dir / PREDICTIONS_DIR / stream


def events_dir(output_dir: Path) -> Path:
    return output_dir / EVENTS_DIR


def event_history_dir(output_dir: Path) -> Path:
    return output_dir / EVENT_HISTORY_DIR


def events_log(output_dir: Path) -> Path:
    return output_dir / EVENTS_LOG
