"""Streams: list and read (viewer), add and remove (admin)."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from fastapi.responses import JSONResponse
from sightline.model.errors import ConfigError
from sightline.stream.capacity import CapacityStats
from sightline.stream.config import RunConfig, StreamConfig, outside_media_root, redact_url
from sightline.stream.errors import (
    DuplicateStreamError,
    StreamBusyError,
    StreamOutputError,
    TooManyStreamsError,
    UnknownStreamError,
)
from sightline.stream.pipeline.pipeline import Pipeline, StreamRuntime
from sightline.stream.service.auth import VIEWER
from sightline.stream.service.deps import (
    CHANGE,
    CLOSING_RESPONSES,
    get_capacity,
    get_config,
    get_pipeline,
    get_previews,
    get_storage,
    not_found,
    stream_named,
)
from sightline.stream.service.models import StreamList, StreamStatus
from sightline.stream.service.previews import PreviewRenderer
from sightline.stream.service.status import capacity_status, storage_status, stream_status
from sightline.stream.storage.stats import StorageStats

log = logging.getLogger(__name__)

router = APIRouter(tags=["streams"])
changes = APIRouter(tags=["streams"], dependencies=CHANGE, responses=CLOSING_RESPONSES)


class MediaRootError(ConfigError):
    """A file source outside ``media_root``: refused (403), whatever the file is."""


def add_stream_checked(pipeline: Pipeline, stream: StreamConfig, config: RunConfig) -> StreamRuntime:
    """Blocking (checks the file): runs in a worker thread."""
    outside = outside_media_root(stream, config.media_root)
    if outside:
        raise MediaRootError(f"url: {outside}")
    runtime = pipeline.add_stream(stream)
    pipeline.streams_changed_by_api = True  # the service now runs until it is told to stop (docs/streaming.md)
    return runtime


def stream_list(pipeline: Pipeline, capacity: CapacityStats | None, storage: StorageStats | None,
                states: list[str] | None, offset: int, limit: int | None) -> JSONResponse:
    """``GET /api/streams``, encoded. Blocking (thousands of streams on a cluster): runs in a worker thread, and
    is encoded here once rather than validated again against ``StreamList`` (the statuses are built by
    ``stream_status``, whose shape the API tests check against the schema)."""
    runtimes = pipeline.runtimes()
    end = None if limit is None else offset + limit
    if states:
        wanted = set(states)
        statuses = [s for s in map(stream_status, runtimes) if s["state"] in wanted]
        total, page = len(statuses), statuses[offset:end]
    else:
        total, page = len(runtimes), [stream_status(r) for r in runtimes[offset:end]]
    return JSONResponse({"streams": page, "total": total, "capacity": capacity_status(capacity),
                         "storage": storage_status(storage)})


@router.get("/api/streams", response_model=StreamList, dependencies=[Depends(VIEWER)],
            summary="Every stream's status, in the order they were added; a page of them with offset and limit, "
                    "only some states with state")
async def list_streams(pipeline: Pipeline = Depends(get_pipeline),
                       capacity: CapacityStats | None = Depends(get_capacity),
                       storage: StorageStats | None = Depends(get_storage),
                       state: list[str] | None = Query(None, max_length=16, description="only streams in these "
                                                       "states (repeat it: ?state=failed&state=reconnecting)"),
                       offset: int = Query(0, ge=0, le=1_000_000, description="skip this many (after the filter)"),
                       limit: int | None = Query(None, ge=1, le=10_000, description="at most this many")) -> Response:
    return await asyncio.to_thread(stream_list, pipeline, capacity, storage, state, offset, limit)


@router.get("/api/streams/{name}", response_model=StreamStatus, dependencies=[Depends(VIEWER)],
            responses={404: {"description": "no such stream"}})
async def get_stream(runtime: StreamRuntime = Depends(stream_named)) -> dict[str, object]:
    return stream_status(runtime)


@changes.post("/api/streams", status_code=status.HTTP_201_CREATED, response_model=StreamStatus,
              summary="Add a stream (same fields as a `streams:` entry in the config)",
              responses={403: {"description": "file outside media_root"},
                         409: {"description": "name taken, or its previous stream is still being removed"},
                         422: {"description": "invalid fields, missing or unreadable file"},
                         429: {"description": "server.max_streams streams are registered"},
                         503: {"description": "shutting down, or the stream's outputs cannot be opened"}})
async def add_stream(stream: StreamConfig, pipeline: Pipeline = Depends(get_pipeline),
                     config: RunConfig = Depends(get_config)) -> JSONResponse:
    try:  # the registry checks the name and the cap, once, under its lock
        runtime = await asyncio.to_thread(add_stream_checked, pipeline, stream, config)
    except DuplicateStreamError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except TooManyStreamsError as exc:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, str(exc), headers={"Retry-After": "5"}) from None
    except StreamOutputError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    except MediaRootError as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None
    except ConfigError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    log.info("api: added stream %s (%s)", stream.name, redact_url(stream.url))
    body = stream_status(runtime)  # not pipeline.get(): a racing DELETE may have removed it already
    return JSONResponse(body, status_code=status.HTTP_201_CREATED, headers={"Location": f"/api/streams/{stream.name}"})


@changes.delete("/api/streams/{name}", response_model=StreamStatus,
                summary="Stop a stream: its source closes, in-flight frames drain, recordings are finalized",
                responses={404: {"description": "no such stream"},
                           409: {"description": "the stream is already being removed"}})
async def remove_stream(name: str, pipeline: Pipeline = Depends(get_pipeline),
                        previews: PreviewRenderer = Depends(get_previews)) -> dict[str, object]:
    try:
        runtime = await asyncio.to_thread(pipeline.remove_stream, name)
        pipeline.streams_changed_by_api = True
    except UnknownStreamError:
        raise not_found(name) from None
    except StreamBusyError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    previews.forget(name)
    log.info("api: removed stream %s", name)
    return stream_status(runtime)


router.include_router(changes)
