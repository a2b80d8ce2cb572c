"""Recordings: a stream's segments that overlap a time range, and a segment's download (byte ranges supported).

Segments are found by their names alone (``recordings/<stream>/<YYYY-MM-DD>/<stream>.<UTC start>[-n].mp4``,
stream/storage/layout.py): the start is in the name, the end is the file's last write. A file name from the
request is checked whole before it touches the disk: the stream's name pattern, a stamped ``.mp4`` name of that
stream, a regular file (not a link) inside the stream's folder. Listing and checks read the disk, so they run in
FastAPI's thread pool (``def`` endpoints), never on the event loop.
"""

from __future__ import annotations

import calendar
import re
import stat
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi.responses import FileResponse, JSONResponse
from sightline.model.echo import bounded
from sightline.stream.config import RunConfig
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.service.auth import VIDEO
from sightline.stream.service.deps import get_config, get_pipeline, not_found
from sightline.stream.service.models import RecordingList
from sightline.stream.service.routers.events import parse_time
from sightline.stream.storage.layout import parse_stamped, recordings_dir, segment_folder
from sightline.stream.urls import NAME_PATTERN

router = APIRouter(tags=["recordings"], dependencies=[Depends(VIDEO)])

SUFFIX = ".mp4"
FILE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}\.mp4$")
DAY_S = 86400
LONGEST_SEGMENT_S = 3600  # storage.recordings.segment_s at most: a day's folder holds nothing that starts later
NO_STORE = {"Cache-Control": "no-store"}


def stream_folder(name: str, config: RunConfig, pipeline: Pipeline) -> Path:
    """The stream's recordings folder; 404 for a name that is no stream's and has no recordings."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise not_found(name)
    folder = recordings_dir(config.output_dir, name)
    if not folder.is_dir() and not any(r.config.name == name for r in pipeline.runtimes()):
        raise not_found(name)
    return folder


def is_open(pipeline: Pipeline, path: Path) -> bool:
    storage = getattr(pipeline, "storage", None)  # a cluster's controller records nothing itself
    return storage is not None and storage.is_open(path)


def day_start(folder: Path) -> float | None:
    """The UTC day a folder of segments holds (``2026-12-07``), in epoch seconds; None for any other name."""
    try:
        return float(calendar.timegm(time.strptime(folder.name, "%Y-%m-%d")))
    except ValueError:
        return None


def list_segments(folder: Path, name: str, since: float | None, until: float | None, pipeline: Pipeline,
                  base_url: str) -> list[dict[str, Any]]:
    """The segments of ``folder`` that overlap [since, until], oldest first."""
    if not folder.is_dir():
        return []
    found = []
    now = time.time()
    for day in sorted(folder.iterdir()):
        start_of_day = day_start(day)
        if start_of_day is None or not day.is_dir() or day.is_symlink():
            continue
        if (until is not None and start_of_day > until) or \
                (since is not None and start_of_day + DAY_S + LONGEST_SEGMENT_S < since):
            continue
        for path in day.iterdir():
            parsed = parse_stamped(path.name)
            if parsed is None or parsed[0] != name or path.suffix != SUFFIX:
                continue
            try:
                info = path.lstat()
            except FileNotFoundError:  # retention deleted it meanwhile
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            writing = is_open(pipeline, path)
            start, end = parsed[1], now if writing else info.st_mtime
            if (since is not None and end < since) or (until is not None and start > until):
                continue
            found.append({"file": path.name, "start": start, "end": end, "open": writing, "bytes": info.st_size,
                          "url": f"{base_url}/{path.name}", "_order": (start, parsed[2])})
    found.sort(key=lambda s: s.pop("_order"))
    return found


@router.get("/api/streams/{name}/recordings", response_model=RecordingList,
            summary="The stream's recording segments that overlap a time range (epoch seconds or ISO 8601), "
                    "oldest first",
            responses={404: {"description": "no such stream, and no recordings of that name"},
                       422: {"description": "since or until is neither epoch seconds nor an ISO 8601 time"}})
def recordings(name: str,
               since: str | None = Query(None, description="segments that end at or after this"),
               until: str | None = Query(None, description="segments that start at or before this"),
               config: RunConfig = Depends(get_config), pipeline: Pipeline = Depends(get_pipeline)) -> JSONResponse:
    start, end = parse_time(since, "since"), parse_time(until, "until")
    folder = stream_folder(name, config, pipeline)
    segments = list_segments(folder, name, start, end, pipeline, f"/api/streams/{name}/recordings")
    return JSONResponse(RecordingList(stream=name, segments=segments).model_dump(), headers=NO_STORE)


@router.get("/api/streams/{name}/recordings/{file}", response_class=FileResponse,
            summary="One recording segment (fragmented MP4); byte ranges supported",
            responses={200: {"content": {"video/mp4": {}}},
                       206: {"description": "the asked byte range (Range: bytes=...)",
                             "content": {"video/mp4": {}}},
                       404: {"description": "no such stream or segment"},
                       422: {"description": "not a segment's file name: <stream>.<UTC start>[-n].mp4"},
                       503: {"description": "the segment is still being written"}})
def segment(name: str, file: str, config: RunConfig = Depends(get_config),
            pipeline: Pipeline = Depends(get_pipeline)) -> FileResponse:
    folder = stream_folder(name, config, pipeline)
    parsed = parse_stamped(file) if FILE_PATTERN.fullmatch(file) else None
    if parsed is None or parsed[0] != name:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"not a segment of {name!r}: {bounded(file, 80)!r}")
    path = segment_folder(config.output_dir, name, parsed[1]) / file
    try:
        info = path.lstat()
        inside = path.parent.resolve().is_relative_to(folder.resolve())
    except OSError:
        info, inside = None, False
    if info is None or not inside or not stat.S_ISREG(info.st_mode):  # a link is never followed
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no segment {bounded(file, 80)!r}")
    if is_open(pipeline, path):
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the segment is still being written",
                            headers={"Retry-After": str(round(config.storage.recordings.segment_s))})
    return FileResponse(path, media_type="video/mp4")
