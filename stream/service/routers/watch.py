"""WebRTC viewing of a stream's annotated video: ``GET /watch?stream=NAME`` and its signalling endpoint.

The page posts a recvonly SDP offer to ``POST /api/streams/{name}/watch`` (the viewer role: watching
changes nothing but the viewer count) and gets aiortc's answer from ``app.state.viewing`` (deps.py's ``Viewing``: this
process's viewers, stream/service/viewing.py, or the owning worker's on a cluster). At most
``annotated_video.max_viewers`` viewers per stream (429 beyond); MJPEG (``/api/streams/{name}/mjpeg``)
stays the fallback. The viewers themselves are stream/outputs/viewers.py.
"""

from __future__ import annotations

import asyncio
from importlib import resources

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field
from sightline.stream.service.auth import PAGE, VIEWER
from sightline.stream.service.deps import Viewing, get_closing, get_viewing, refuse_when_closing

NO_STORE = {"Cache-Control": "no-store"}


class WatchOffer(BaseModel):
    sdp: str = Field(min_length=1, max_length=200_000)
    type: str = Field(pattern="^offer$")


router = APIRouter()


@router.get("/watch", response_class=HTMLResponse, include_in_schema=False, dependencies=[Depends(PAGE)])
async def watch_page() -> HTMLResponse:
    page = resources.files("sightline.stream.service").joinpath("static/watch.html").read_bytes()
    return HTMLResponse(page, headers=NO_STORE)


@router.post("/api/streams/{name}/watch", tags=["previews"], dependencies=[Depends(VIEWER)],
             summary="Watch the annotated video over WebRTC: post a recvonly SDP offer, get the answer",
             responses={404: {"description": "no such stream"},
                        409: {"description": "the stream has ended (nothing left to watch), or on a cluster it has "
                                             "no worker now (being placed or moved)"},
                        422: {"description": "not a usable offer (no video, no H.264)"},
                        429: {"description": "annotated_video.max_viewers viewers are watching"},
                        503: {"description": "shutting down, or with --ray the stream's worker did not answer"}})
async def watch_offer(name: str, offer: WatchOffer, viewing: Viewing = Depends(get_viewing),
                      closing: asyncio.Event = Depends(get_closing)) -> dict[str, str]:
    refuse_when_closing(closing)  # after the body is validated: a bad offer is 422 whenever it comes
    return await viewing.watch(name, offer.sdp)


@router.get("/api/streams/{name}/video", tags=["previews"], dependencies=[Depends(VIEWER)],
            summary="The stream's annotated video: encoder, WebRTC viewers and publish state (URL redacted)",
            responses={404: {"description": "no such stream"},
                       409: {"description": "with --ray: the stream has no worker now (being placed or moved)"},
                       503: {"description": "with --ray: the stream's worker did not answer"}})
async def video_status(name: str, viewing: Viewing = Depends(get_viewing)) -> dict[str, object]:
    return await viewing.video_status(name)
