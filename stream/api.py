"""The HTTP API: stream management, status, previews, health and Prometheus metrics.

Handlers only move small objects; anything that blocks (probing a file, stopping a stream,
drawing and encoding JPEGs) runs in a worker thread. GET endpoints are open; with
``server.token`` set, POST and DELETE need ``Authorization: Bearer <token>``. No response and no
log line carries a stream URL's credentials (``redact_url``).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from importlib import resources
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from sightline.model.errors import ConfigError
from sightline.model.yamlconfig import dotted
from sightline.stream.config import RunConfig, StreamConfig, outside_media_root, redact_url
from sightline.stream.errors import StreamError
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline import DuplicateStreamError, Pipeline, StreamRuntime, UnknownStreamError
from sightline.stream.preview import MJPEG_MEDIA_TYPE, PreviewRenderer

log = logging.getLogger(__name__)

# A stream in one of these states counts as down for /readyz. "ended" (a file that played to its
# end) and "stopped" (stopped on request) are not running, so they count neither way.
DOWN_STATES = ("reconnecting", "failed")
NOT_RUNNING_STATES = ("ended", "stopped")
NO_STORE = {"Cache-Control": "no-store"}


class Prediction(BaseModel):
    index: int
    label: str
    prob: float


class SmoothedLabel(BaseModel):
    label: str
    prob: float


class StreamStatus(BaseModel):
    """One stream, as `GET /api/streams/{name}` reports it (latencies over the last 30 s, fps over 5 s)."""

    model_config = ConfigDict(extra="allow")

    name: str
    url: str
    mode: str
    state: str
    error: str | None
    fps: float
    p50_ms: float | None
    p99_ms: float | None
    frames_decoded: int
    frames_inferred: int
    dropped: dict[str, int]
    reconnects: int
    sink_errors: dict[str, int]
    corrupt_packets: int = Field(0, description="packets the decoder rejected or the demuxer flagged corrupt")
    frames_lost: dict[str, int] = Field(default_factory=dict,
                                        description="frames lost for good: source_gap (missing from the source, "
                                                    "by its timestamps), recorder_behind (not recorded)")
    records_lost: dict[str, int] = Field(default_factory=dict,
                                         description="output records not written (disk full), by sink")
    prediction: list[Prediction] | None
    smoothed: SmoothedLabel | None
    snapshot: str
    mjpeg: str


class SessionDescription(BaseModel):
    """A WebRTC SDP offer (request) or answer (response), as RTCPeerConnection.localDescription holds it."""

    sdp: str = Field(min_length=1, max_length=200_000)
    type: Literal["offer", "answer"]


class StreamList(BaseModel):
    streams: list[StreamStatus]


class Readiness(BaseModel):
    ready: bool
    reason: str | None
    model: dict[str, Any]
    streams_running: int
    streams_down: int
    down_share: float
    max_down_share: float


def readiness(pipeline: Pipeline, max_down_share: float, closing: bool = False) -> Readiness:
    """Ready unless closing, or more than ``max_down_share`` of the running streams is down.

    ``run_service`` starts the HTTP server only after the model is loaded and warmed up and the
    pipeline (inference worker, configured streams) has started, so a service that answers has its
    model. Running streams are those not ended/stopped; down means reconnecting or failed.
    """
    states = [s["state"] for s in pipeline.statuses()]
    running = [s for s in states if s not in NOT_RUNNING_STATES]
    down = sum(s in DOWN_STATES for s in running)
    share = down / len(running) if running else 0.0
    reason = None
    if closing:
        reason = "shutting down"
    elif share > max_down_share:
        reason = f"{down} of {len(running)} running streams are down (more than {max_down_share:.0%})"
    return Readiness(ready=reason is None, reason=reason, model=pipeline.classifier.describe(),
                     streams_running=len(running), streams_down=down, down_share=round(share, 4),
                     max_down_share=max_down_share)


def bearer_token_matches(header: str | None, token: str) -> bool:
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode("utf-8"), token.encode("utf-8"))


def validation_message(errors: list[dict[str, Any]]) -> str:
    """Request validation errors in the config's own style (``url: unsupported scheme 'ftp'``), no inputs echoed."""
    lines = []
    for err in errors:
        loc = tuple(err.get("loc", ()))
        if loc and loc[0] == "body":
            loc = loc[1:]
        loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
        msg = str(err.get("msg", "invalid"))
        if err.get("type") == "extra_forbidden":
            msg = "unknown key (check the spelling)"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        lines.append(f"{dotted(loc)}: {msg}" if loc else msg)
    return "\n".join(lines)


class MediaRootError(ConfigError):
    """A file source outside ``media_root``: refused (403), whatever the file is."""


def add_stream_checked(pipeline: Pipeline, stream: StreamConfig, config: RunConfig) -> None:
    """Blocking (probes the file): runs in a worker thread."""
    outside = outside_media_root(stream, config.media_root)
    if outside:
        raise MediaRootError(f"url: {outside}")
    pipeline.add_stream(stream)


def create_app(pipeline: Pipeline, config: RunConfig, metrics: Metrics | None) -> FastAPI:
    server = config.server
    app = FastAPI(title="Sightline", version="0.1.0",
                  description="Streaming video recognition: manage streams, watch annotated previews, "
                              "read per-stream FPS/latency; Prometheus metrics at /metrics.")
    app.state.token = server.token
    app.state.closing = asyncio.Event()
    app.state.preview_clients = 0
    previews = PreviewRenderer(pipeline, server.jpeg_quality)
    page = resources.files("sightline.stream").joinpath("static/index.html").read_bytes()
    publish_page = resources.files("sightline.stream").joinpath("static/publish.html").read_bytes()

    def require_token(request: Request) -> None:
        if server.token is None:
            return
        if not bearer_token_matches(request.headers.get("authorization"), server.token):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or wrong bearer token",
                                headers={"WWW-Authenticate": 'Bearer realm="sightline"'})

    def described(raw: dict[str, object]) -> dict[str, object]:
        name = raw["name"]
        return {**raw, "snapshot": f"/api/streams/{name}/snapshot.jpg", "mjpeg": f"/api/streams/{name}/mjpeg"}

    def find(name: str) -> StreamRuntime:
        try:
            return pipeline.get(name)
        except UnknownStreamError:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no stream named {name!r}") from None

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()]
        return JSONResponse({"detail": validation_message(list(exc.errors())), "errors": errors},
                            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers=NO_STORE)

    @app.get("/publish", response_class=HTMLResponse, include_in_schema=False)
    async def publish() -> HTMLResponse:
        return HTMLResponse(publish_page, headers=NO_STORE)

    @app.get("/healthz", tags=["health"], summary="The process is alive and its event loop answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], response_model=Readiness,
             summary="Ready: model warmed, and at most server.ready_max_down_share of the running streams down",
             responses={503: {"model": Readiness, "description": "not ready"}})
    async def readyz() -> JSONResponse:
        ready = readiness(pipeline, server.ready_max_down_share, app.state.closing.is_set())
        return JSONResponse(ready.model_dump(), status_code=200 if ready.ready else 503, headers=NO_STORE)

    @app.get("/metrics", tags=["health"], summary="Prometheus text exposition",
             response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    async def metrics_endpoint() -> Response:
        if metrics is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "metrics are disabled")
        pipeline.statuses()  # refreshes the windowed sightline_stream_fps gauges
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/streams", tags=["streams"], response_model=StreamList)
    async def list_streams() -> dict[str, object]:
        return {"streams": [described(s) for s in pipeline.statuses()]}

    @app.get("/api/streams/{name}", tags=["streams"], response_model=StreamStatus,
             responses={404: {"description": "no such stream"}})
    async def get_stream(name: str) -> dict[str, object]:
        return described(find(name).status())

    changes = APIRouter(dependencies=[Depends(require_token)],
                        responses={401: {"description": "server.token is set and the bearer token is missing or "
                                                        "wrong"}})

    @changes.post("/api/streams", tags=["streams"], status_code=status.HTTP_201_CREATED, response_model=StreamStatus,
                  summary="Add a stream (same fields as a `streams:` entry in the config)",
                  responses={403: {"description": "file outside media_root"}, 409: {"description": "name taken"},
                             422: {"description": "invalid fields, missing or unreadable file"},
                             503: {"description": "shutting down"}})
    async def add_stream(stream: StreamConfig) -> JSONResponse:
        if app.state.closing.is_set():
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "shutting down")
        if stream.name in pipeline.names():
            raise HTTPException(status.HTTP_409_CONFLICT, f"a stream named {stream.name!r} already exists")
        try:
            await asyncio.to_thread(add_stream_checked, pipeline, stream, config)
        except DuplicateStreamError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        except MediaRootError as exc:
            raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None
        except ConfigError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
        log.info("api: added stream %s (%s)", stream.name, redact_url(stream.url))
        body = described(pipeline.get(stream.name).status())
        return JSONResponse(body, status_code=status.HTTP_201_CREATED,
                            headers={"Location": f"/api/streams/{stream.name}"})

    @changes.delete("/api/streams/{name}", tags=["streams"], response_model=StreamStatus,
                    summary="Stop a stream: its source closes, in-flight frames drain, recordings are finalized",
                    responses={404: {"description": "no such stream"}})
    async def remove_stream(name: str) -> dict[str, object]:
        runtime = find(name)
        try:
            await asyncio.to_thread(pipeline.remove_stream, name)
        except UnknownStreamError:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no stream named {name!r}") from None
        previews.forget(name)
        log.info("api: removed stream %s", name)
        return described(runtime.status())

    @changes.post("/api/streams/{name}/webrtc", tags=["streams"], response_model=SessionDescription,
                  summary="Publish video to a webrtc:// stream: post the peer's SDP offer, get the answer",
                  responses={404: {"description": "no such stream"},
                             409: {"description": "not a webrtc:// stream"},
                             422: {"description": "not a usable offer (no video track, bad SDP)"}})
    async def webrtc_offer(name: str, offer: SessionDescription) -> dict[str, str]:
        runtime = find(name)
        if not runtime.config.is_webrtc:
            raise HTTPException(status.HTTP_409_CONFLICT, f"stream {name!r} is not a webrtc:// stream")
        try:
            sdp, kind = await pipeline.webrtc_offer(name, offer.sdp, offer.type)
        except UnknownStreamError:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no stream named {name!r}") from None
        except StreamError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
        log.info("api: WebRTC publisher for stream %s", name)
        return {"sdp": sdp, "type": kind}

    app.include_router(changes)

    @app.get("/api/streams/{name}/snapshot.jpg", tags=["previews"], response_class=Response,
             summary="The latest annotated frame",
             responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "no such stream"},
                        503: {"description": "no frame yet"}})
    async def snapshot(name: str) -> Response:
        try:
            jpeg = await previews.latest(name)
        except UnknownStreamError:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no stream named {name!r}") from None
        if jpeg is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"stream {name!r} has no frame yet",
                                headers={"Retry-After": "1"})
        return Response(jpeg, media_type="image/jpeg", headers=NO_STORE)

    @app.get("/api/streams/{name}/mjpeg", tags=["previews"], response_class=StreamingResponse,
             summary=f"Live annotated preview (multipart/x-mixed-replace, at most server.mjpeg_fps, "
                     f"default {server.mjpeg_fps:g})",
             responses={200: {"content": {MJPEG_MEDIA_TYPE: {}}}, 404: {"description": "no such stream"},
                        503: {"description": "too many open previews, or shutting down"}})
    async def mjpeg(name: str) -> StreamingResponse:
        runtime = find(name)
        if app.state.closing.is_set():
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "shutting down")
        if app.state.preview_clients >= server.max_preview_clients:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                                f"{server.max_preview_clients} previews are open (server.max_preview_clients)",
                                headers={"Retry-After": "5"})

        def opened() -> None:
            app.state.preview_clients += 1

        def closed() -> None:
            app.state.preview_clients -= 1

        parts = previews.mjpeg(runtime, server.mjpeg_fps, app.state.closing, opened, closed)
        return StreamingResponse(parts, media_type=MJPEG_MEDIA_TYPE,
                                 headers={**NO_STORE, "X-Accel-Buffering": "no"})

    return app
