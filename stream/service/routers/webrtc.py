"""WebRTC signalling: the publish page and the SDP offer/answer for ``webrtc://`` streams.

Signalling lives here, not in the pipeline: the core never imports aiortc (only a ``webrtc://``
stream's source does).
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import HTMLResponse
from sightline.stream.errors import PublisherConnectedError, StreamError
from sightline.stream.pipeline.stream_runtime import StreamRuntime
from sightline.stream.service.auth import PAGE
from sightline.stream.service.deps import CHANGE, CLOSING_RESPONSES, stream_named
from sightline.stream.service.models import SessionDescription

log = logging.getLogger(__name__)

router = APIRouter(tags=["streams"])
NO_STORE = {"Cache-Control": "no-store"}


@router.get("/publish", response_class=HTMLResponse, include_in_schema=False, dependencies=[Depends(PAGE)])
async def publish(request: Request) -> HTMLResponse:
    return HTMLResponse(request.app.state.pages["publish.html"], headers=NO_STORE)


@router.post("/api/streams/{name}/webrtc", response_model=SessionDescription,
             dependencies=CHANGE,
             summary="Publish video to a webrtc:// stream: post the peer's SDP offer, get the answer",
             responses={**CLOSING_RESPONSES, 404: {"description": "no such stream"},
                        409: {"description": "not a webrtc:// stream, or a publisher is connected"},
                        422: {"description": "not a usable offer (no video track, bad SDP)"}})
async def webrtc_offer(offer: SessionDescription, runtime: StreamRuntime = Depends(stream_named)) -> dict[str, str]:
    name = runtime.config.name
    source = runtime.source
    if not runtime.config.is_webrtc:  # the one "is it WebRTC" check (on a Ray cluster the source is remote)
        raise HTTPException(status.HTTP_409_CONFLICT, f"stream {name!r} is not a webrtc:// stream")
    if runtime.removing:
        raise HTTPException(status.HTTP_409_CONFLICT, f"stream {name!r} is being removed")
    try:
        answer = await source.accept(offer.sdp, offer.type)
    except PublisherConnectedError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except StreamError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    log.info("api: WebRTC publisher for stream %s", name)
    return {"sdp": answer.sdp, "type": answer.type}
