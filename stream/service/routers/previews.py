"""Previews: the viewing page, the latest annotated snapshot, the MJPEG stream."""

from __future__ import annotations

import asyncio
import json
from importlib import resources

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from sightline.stream.errors import UnknownStreamError
from sightline.stream.pipeline.stream_runtime import StreamRuntime
from sightline.stream.service.auth import PAGE, VIDEO
from sightline.stream.service.deps import (
    get_closing,
    get_preview_slots,
    get_previews,
    get_server,
    not_found,
    stream_named,
)
from sightline.stream.service.previews import MJPEG_MEDIA_TYPE, MjpegResponse, PreviewRenderer, PreviewSlots

router = APIRouter(tags=["previews"])
LABELS_HEADER = "X-Sightline-Labels"  # the snapshot's own labels, so a page shows text and picture of one frame
NO_STORE = {"Cache-Control": "no-store"}


def page(name: str) -> bytes:
    return resources.files("sightline.stream.service").joinpath(f"static/{name}").read_bytes()


@router.get("/", response_class=HTMLResponse, include_in_schema=False, dependencies=[Depends(PAGE)])
async def index(request: Request) -> HTMLResponse:
    return HTMLResponse(request.app.state.pages["index.html"], headers=NO_STORE)


@router.get("/api/streams/{name}/snapshot.jpg", response_class=Response, dependencies=[Depends(VIDEO)],
            summary="The latest annotated frame; its labels as JSON in the X-Sightline-Labels header",
            responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "no such stream"},
                       503: {"description": "no frame yet"}})
async def snapshot(name: str, previews: PreviewRenderer = Depends(get_previews)) -> Response:
    try:
        latest = await previews.latest(name)
    except UnknownStreamError:
        raise not_found(name) from None
    if latest is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"stream {name!r} has no frame yet",
                            headers={"Retry-After": "1"})
    jpeg, item = latest
    labels = json.dumps(item.labels(), separators=(",", ":"))  # ASCII (\u escapes): header-safe
    return Response(jpeg, media_type="image/jpeg", headers={**NO_STORE, LABELS_HEADER: labels})


@router.get("/api/streams/{name}/mjpeg", response_class=StreamingResponse, dependencies=[Depends(VIDEO)],
            summary="Live annotated preview (multipart/x-mixed-replace, at most server.mjpeg_fps)",
            responses={200: {"content": {MJPEG_MEDIA_TYPE: {}}}, 404: {"description": "no such stream"},
                       503: {"description": "too many open previews, or shutting down"}})
async def mjpeg(runtime: StreamRuntime = Depends(stream_named), previews: PreviewRenderer = Depends(get_previews),
                slots: PreviewSlots = Depends(get_preview_slots), closing: asyncio.Event = Depends(get_closing),
                server=Depends(get_server)) -> StreamingResponse:
    if closing.is_set():
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "shutting down")
    slot = slots.take()  # checked and counted in one step: no await in between
    if slot is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            f"{server.max_preview_clients} previews are open (server.max_preview_clients)",
                            headers={"Retry-After": "5"})
    parts = previews.mjpeg(runtime, server.mjpeg_fps, closing)
    return MjpegResponse(parts, slot, headers={**NO_STORE, "X-Accel-Buffering": "no"})
