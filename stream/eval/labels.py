"""Ground truth for replay evaluation: ``labels.csv`` segments, checked before any video is decoded.

Every problem in the file is reported at once, each with its line number, so a user fixes the file in
one pass instead of one error per run.
"""

from __future__ import annotations

import csv
import difflib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sightline.model.errors import ConfigError

COLUMNS = ("video", "start_s", "end_s", "label")
MAX_LISTED = 8  # problems named in one error line; the rest are counted


class LabelsError(ConfigError):
    """labels.csv (or the videos it names) cannot be used for an evaluation."""


@dataclass(frozen=True)
class Segment:
    """``label`` is shown from ``start_s`` (inclusive) to ``end_s`` (exclusive) of ``video``."""

    video: str
    start_s: float
    end_s: float
    label: str
    line: int

    def describe(self) -> str:
        return f"line {self.line} ({self.start_s:g}-{self.end_s:g} s {self.label})"


@dataclass(frozen=True)
class VideoJob:
    """One video to replay: its name in labels.csv, the file, and its segments in time order."""

    name: str
    path: Path
    segments: tuple[Segment, ...]


def join_problems(problems: Sequence[str]) -> str:
    shown = "; ".join(problems[:MAX_LISTED])
    more = len(problems) - MAX_LISTED
    return shown + (f"; and {more} more" if more > 0 else "")


class Problems:
    """Every problem found before an evaluation starts, by kind, so that one run reports them all.

    ``sightline eval`` checks the videos (found? readable?) and the labels against each model before any
    frame is decoded; a user with a missing file, an unreadable clip and a misspelt label learns all three
    at once, each kind with its count, instead of one per run. Raised as one ``LabelsError`` (one line)."""

    def __init__(self) -> None:
        self._kinds: dict[str, tuple[int, list[str]]] = {}

    def add(self, kind: str, text: str, count: int = 1) -> None:
        n, texts = self._kinds.get(kind, (0, []))
        self._kinds[kind] = (n + count, [*texts, text])

    def __bool__(self) -> bool:
        return bool(self._kinds)

    def counts(self) -> dict[str, int]:
        return {kind: n for kind, (n, _) in self._kinds.items()}

    def message(self) -> str:
        parts = [f"{kind}{f' ({n})' if n > 1 else ''}: {join_problems(texts)}"
                 for kind, (n, texts) in self._kinds.items()]
        if len(parts) == 1:
            return parts[0]
        total = sum(n for n, _ in self._kinds.values())
        return f"{total} problems of {len(parts)} kinds, nothing was replayed: " + " | ".join(parts)

    def raise_if_any(self) -> None:
        if self:
            raise LabelsError(self.message())


def parse_time(text: str) -> float:
    """Seconds (``12.5``) or a clock time (``1:02.5``, ``0:01:02.5``); raises ValueError otherwise."""
    text = text.strip()
    if not re.fullmatch(r"(\d+:){0,2}\d+(\.\d*)?|\.\d+", text):
        raise ValueError(text)
    seconds = 0.0
    for part in text.split(":"):
        seconds = seconds * 60 + float(part)
    if not math.isfinite(seconds):
        raise ValueError(text)
    return seconds


def read_labels(path: Path) -> dict[str, list[Segment]]:
    """Segments per video name (in time order), or LabelsError naming every malformed row and every overlap."""
    if not path.is_file():
        raise LabelsError(f"{path}: no such labels file")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            rows = [(reader.line_num, row) for row in reader  # line_num: the line each row ends on
                    if any(cell.strip() for cell in row) and not row[0].lstrip().startswith("#")]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise LabelsError(f"{path}: not a readable CSV file ({exc})") from None
    if not rows:
        raise LabelsError(f"{path}: empty; expected a header {','.join(COLUMNS)} and one row per segment")
    header_line, header = rows[0]
    names = [cell.strip().lower() for cell in header]
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise LabelsError(f"{path}: line {header_line}: the header must name the columns {','.join(COLUMNS)} "
                          f"(missing: {', '.join(missing)})")
    where = {c: names.index(c) for c in COLUMNS}
    problems: list[str] = []
    segments: dict[str, list[Segment]] = {}
    for line, row in rows[1:]:
        segment = _parse_row(line, row, where, len(names), problems)
        if segment is not None:
            segments.setdefault(segment.video, []).append(segment)
    for video in segments:
        segments[video].sort(key=lambda s: (s.start_s, s.end_s))
    problems.extend(overlaps(segments))
    if problems:
        raise LabelsError(f"{path}: {join_problems(problems)}")
    if not segments:
        raise LabelsError(f"{path}: no segments; expected one row per segment after the header")
    return segments


def _parse_row(line: int, row: list[str], where: dict[str, int], width: int, problems: list[str]) -> Segment | None:
    if len(row) != width:
        problems.append(f"line {line}: expected {width} fields, found {len(row)}")
        return None
    video, label = row[where["video"]].strip(), row[where["label"]].strip()
    before = len(problems)
    if not video:
        problems.append(f"line {line}: empty video")
    if not label:
        problems.append(f"line {line}: empty label")
    times = []
    for column in ("start_s", "end_s"):
        text = row[where[column]]
        try:
            times.append(parse_time(text))
        except ValueError:
            problems.append(f"line {line}: {column} {text.strip()!r} is not a time in seconds")
    if len(problems) > before:
        return None
    start, end = times
    if end <= start:
        problems.append(f"line {line}: end_s {end:g} must be after start_s {start:g}")
        return None
    return Segment(video, start, end, label, line)


def overlaps(segments: dict[str, list[Segment]]) -> list[str]:
    """One problem per pair of segments of a video that overlap (touching ends are fine). Segments are sorted."""
    problems = []
    for video, segs in segments.items():
        latest: Segment | None = None  # the segment reaching furthest so far
        for seg in segs:
            if latest is not None and seg.start_s < latest.end_s:
                problems.append(f"overlapping segments in {video}: {latest.describe()} and {seg.describe()}")
            if latest is None or seg.end_s > latest.end_s:
                latest = seg
    return problems


def check_classes(segments: dict[str, list[Segment]], class_names: Sequence[str], model: str,
                  background: str | None = None, problems: Problems | None = None) -> None:
    """Every label (and the background class) must be one of the model's classes.

    With ``problems`` what is wrong is added there; without, it is raised at once."""
    found = problems if problems is not None else Problems()
    known = set(class_names)
    listing = (f"the classes of {model}: {', '.join(class_names)}" if len(class_names) <= 12
               else f"{model} has {len(class_names)} classes; see `sightline info {model}`")
    if background is not None and background not in known:
        found.add("--background not in the model's classes",
                  f"{background!r} is not one of them ({listing}){_hints([background], class_names)}")
    unknown = sorted({s.label for segs in segments.values() for s in segs} - known)
    if unknown:
        listed = ", ".join(repr(u) for u in unknown[:20]) + (f" and {len(unknown) - 20} more"
                                                             if len(unknown) > 20 else "")
        found.add("labels not in the model's classes", f"{listed} ({listing}){_hints(unknown, class_names)}",
                  count=len(unknown))
    if problems is None:
        found.raise_if_any()


def _hints(unknown: Sequence[str], class_names: Sequence[str]) -> str:
    hints = []
    for label in unknown:
        close = difflib.get_close_matches(label, class_names, n=1)
        if close:
            hints.append(f"{label!r} -> {close[0]!r}")
    return f"; did you mean {', '.join(hints)}" if hints else ""


def resolve_videos(labels_path: Path, segments: dict[str, list[Segment]],
                   videos: Sequence[Path] = (), problems: Problems | None = None) -> list[VideoJob]:
    """The videos to replay: ``videos`` when given (matched to labels.csv by name), else every video it names.

    Names in labels.csv are paths relative to the CSV's folder (or absolute). A given video matches the
    row whose name equals its path as typed, or else its file name. With ``problems``, what is wrong is
    added there and the videos that exist are returned; without, it is raised at once.
    """
    found = problems if problems is not None else Problems()
    jobs: list[VideoJob] = []
    if videos:
        for video in videos:
            try:
                name = _match(video, segments)
            except LabelsError as exc:
                found.add("--video not matched to labels.csv", str(exc))
                continue
            if not video.is_file():
                found.add("videos not found", str(video))
                continue
            jobs.append(VideoJob(name, video, tuple(segments[name])))
    else:
        base = labels_path.parent
        for name, segs in segments.items():
            path = Path(name) if Path(name).is_absolute() else base / name
            if not path.is_file():
                found.add("videos not found", f"{name} (looked for {path})")
                continue
            jobs.append(VideoJob(name, path, tuple(segs)))
    seen: dict[Path, str] = {}
    unique = []
    for job in jobs:
        key = job.path.resolve()
        if key in seen:
            found.add("videos given twice", f"{job.path} (as {seen[key]!r} and {job.name!r})")
            continue
        seen[key] = job.name
        unique.append(job)
    if problems is None:
        found.raise_if_any()
    return unique


def _match(video: Path, segments: dict[str, list[Segment]]) -> str:
    typed = str(video)
    if typed in segments:
        return typed
    by_file = [name for name in segments if Path(name).name == video.name]
    if len(by_file) == 1:
        return by_file[0]
    if len(by_file) > 1:
        raise LabelsError(f"--video {typed}: its file name matches several videos in labels.csv "
                          f"({', '.join(by_file)}); give the path as labels.csv writes it")
    names = ", ".join(list(segments)[:10]) + (" ..." if len(segments) > 10 else "")
    raise LabelsError(f"--video {typed}: no segments for it in labels.csv (its videos: {names})")
