"""The HTTP API: stream management, status, previews, health and Prometheus metrics.

Handlers only move small objects; anything that blocks (probing a file, stopping a stream,
drawing and encoding JPEGs) runs in a worker thread. GET endpoints are open; with
``server.token`` set, POST and DELETE need ``Authorization: Bearer <token>``. ``ServiceGuard``
(service_guard.py) checks Host, Origin, the token and the body size before any handler runs. No response and no
log line carries a stream URL's credentials (``redact_url``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from importlib import resources
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from sightline.model.echo import bounded, echo
from sightline.model.errors import ConfigError
from sightline.model.yamlconfig import dotted
from sightline.stream.cluster.router import router as cluster_router
from sightline.stream.config import RunConfig, StreamConfig, outside_media_root, redact_url
from sightline.stream.errors import StreamError
from sightline.stream.events.api import router as events_router
from sightline.stream.metrics import Metrics
from sightline.stream.model_api import router as model_router
from sightline.stream.pipeline import (
    DuplicateStreamError,
    Pipeline,
    StreamBusyError,
    StreamOutputError,
    StreamRuntime,
    TooManyStreamsError,
    UnknownStreamError,
)
from sightline.stream.preview import MJPEG_MEDIA_TYPE, MjpegResponse, PreviewRenderer, PreviewSlots
from sightline.stream.service_guard import HostPolicy, ServiceGuard, bearer_token_matches
from sightline.stream.urls import scrub_urls
from sightline.stream.watch import router as watch_router
from sightline.stream.webrtc import PublisherConnectedError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

# A stream in one of these states counts as down for /readyz. "ended" (a file that played to its
# end) and "stopped" (stopped on request) are not running, so they count neither way.
DOWN_STATES = ("reconnecting", "failed")
NOT_RUNNING_STATES = ("ended", "stopped")
LABELS_HEADER = "X-Sightline-Labels"  # the snapshot's own labels, so a page shows text and picture of one frame
NO_STORE = {"Cache-Control": "no-store"}
NAME_ECHO = 80  # a stream name from the request path is echoed at most this long (names are <= 64)
DETAIL_LIMIT = 1000  # characters of an error detail (values inside it are bounded to 200 where they are quoted)


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


def validation_message(errors: list[dict[str, Any]]) -> str:
    """Request validation errors in the config's own style (``url: unsupported scheme 'ftp'``), no inputs echoed."""
    lines = []
    for err in errors:
        loc = tuple(err.get("loc", ()))
        if loc and loc[0] == "body":
            loc = loc[1:]
        loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
        msg = echo(err.get("msg", "invalid"))
        if err.get("type") == "extra_forbidden":
            msg = "unknown key (check the spelling)"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        lines.append(f"{dotted(loc)}: {msg}" if loc else msg)
    return "\n".join(lines)


class MediaRootError(ConfigError):
    """A file source outside ``media_root``: refused (403), whatever the file is."""


def add_stream_checked(pipeline: Pipeline, stream: StreamConfig, config: RunConfig) -> StreamRuntime:
    """Blocking (probes the file): runs in a worker thread."""
    outside = outside_media_root(stream, config.media_root)
    if outside:
        raise MediaRootError(f"url: {outside}")
    return pipeline.add_stream(stream)


def create_app(pipeline: Pipeline, config: RunConfig, metrics: Metrics | None) -> FastAPI:
    server = config.server
    app = FastAPI(title="Sightline", version="0.1.0",
                  description="Streaming video recognition: manage streams, watch annotated previews, "
                              "read per-stream FPS/latency; Prometheus metrics at /metrics.")
    app.state.token = server.token
    # Host/Origin, the token and the body cap, all before a byte of the body is read (service_guard.py)
    app.add_middleware(ServiceGuard, policy=HostPolicy(server.host, server.allowed_hosts, server.allowed_origins),
                       token=server.token, max_body_bytes=server.max_body_bytes)
    app.state.closing = asyncio.Event()
    app.state.preview_slots = PreviewSlots(server.max_preview_clients)
    app.state.pipeline = pipeline
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
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no stream named {bounded(name, NAME_ECHO)!r}") from None

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": [p if isinstance(p, int) else echo(p, 64) for p in e.get("loc", ())],
                   "msg": echo(e.get("msg", "invalid")), "type": e.get("type")} for e in exc.errors()]
        return JSONResponse({"detail": validation_message(list(exc.errors())), "errors": errors},
                            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(StarletteHTTPException)
    async def _bounded_detail(request: Request, exc: StarletteHTTPException) -> Response:
        """Every error detail, whoever raised it, is bounded and has its URLs redacted before it leaves."""
        if isinstance(exc.detail, str):
            exc = StarletteHTTPException(exc.status_code, bounded(scrub_urls(exc.detail), DETAIL_LIMIT), exc.headers)
        return await http_exception_handler(request, exc)

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
                  responses={403: {"description": "file outside media_root"},
                             409: {"description": "name taken, or its previous stream is still being removed"},
                             422: {"description": "invalid fields, missing or unreadable file"},
                             429: {"description": "server.max_streams streams are registered"},
                             503: {"description": "shutting down, or the stream's outputs cannot be opened"}})
    async def add_stream(stream: StreamConfig) -> JSONResponse:
        if app.state.closing.is_set():
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "shutting down")
        if stream.name in pipeline.names():
            raise HTTPException(status.HTTP_409_CONFLICT, f"a stream named {stream.name!r} already exists")
        try:
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
        body = described(runtime.status())  # not pipeline.get(): a racing DELETE may have removed it already
        return JSONResponse(body, status_code=status.HTTP_201_CREATED,
                            headers={"Location": f"/api/streams/{stream.name}"})

    @changes.delete("/api/streams/{name}", tags=["streams"], response_model=StreamStatus,
                    summary="Stop a stream: its source closes, in-flight frames drain, recordings are finalized",
                    responses={404: {"description": "no such stream"},
                               409: {"description": "the stream is already being removed"}})
    async def remove_stream(name: str) -> dict[str, object]:
        try:
            runtime = await asyncio.to_thread(pipeline.remove_stream, name)
        except UnknownStreamError:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no stream named {bounded(name, NAME_ECHO)!r}") from None
        except StreamBusyError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        previews.forget(name)
        log.info("api: removed stream %s", name)
        return described(runtime.status())

    @changes.post("/api/streams/{name}/webrtc", tags=["streams"], response_model=SessionDescription,
                  summary="Publish video to a webrtc:// stream: post the peer's SDP offer, get the answer",
                  responses={404: {"description": "no such stream"},
                             409: {"description": "not a webrtc:// stream, or a publisher is connected"},
                             422: {"description": "not a usable offer (no video track, bad SDP)"}})
    async def webrtc_offer(name: str, offer: SessionDescription) -> dict[str, str]:
        runtime = find(name)
        if not runtime.config.is_webrtc:
            raise HTTPException(status.HTTP_409_CONFLICT, f"stream {name!r} is not a webrtc:// stream")
        if runtime.removing:
            raise HTTPException(status.HTTP_409_CONFLICT, f"stream {name!r} is being removed")
        try:
            sdp, kind = await pipeline.webrtc_offer(name, offer.sdp, offer.type)
        except UnknownStreamError:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no stream named {bounded(name, NAME_ECHO)!r}") from None
        except PublisherConnectedError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        except StreamError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
        log.info("api: WebRTC publisher for stream %s", name)
        return {"sdp": sdp, "type": kind}

    app.include_router(changes)
    app.include_router(model_router)  # GET/PUT /api/model: hot-swap (model_api.py)
    app.include_router(watch_router)  # WebRTC viewing of the annotated video (watch.py)
    app.state.events = pipeline.events
    app.include_router(events_router)  # GET /api/events..., rules (stream/events/api.py)
    app.include_router(cluster_router)  # /api/workers, /api/cluster/targets: 404 unless run --ray

    @app.get("/api/streams/{name}/snapshot.jpg", tags=["previews"], response_class=Response,
             summary="The latest annotated frame; its labels as JSON in the X-Sightline-Labels header",
             responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "no such stream"},
                        503: {"description": "no frame yet"}})
    async def snapshot(name: str) -> Response:
        try:
            latest = await previews.latest(name)
        except UnknownStreamError:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no stream named {bounded(name, NAME_ECHO)!r}") from None
        if latest is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"stream {name!r} has no frame yet",
                                headers={"Retry-After": "1"})
        jpeg, item = latest
        labels = json.dumps(item.labels(), separators=(",", ":"))  # ASCII (\u escapes): header-safe
        return Response(jpeg, media_type="image/jpeg", headers={**NO_STORE, LABELS_HEADER: labels})

    @app.get("/api/streams/{name}/mjpeg", tags=["previews"], response_class=StreamingResponse,
             summary=f"Live annotated preview (multipart/x-mixed-replace, at most server.mjpeg_fps, "
                     f"default {server.mjpeg_fps:g})",
             responses={200: {"content": {MJPEG_MEDIA_TYPE: {}}}, 404: {"description": "no such stream"},
                        503: {"description": "too many open previews, or shutting down"}})
    async def mjpeg(name: str) -> StreamingResponse:
        runtime = find(name)
        if app.state.closing.is_set():
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "shutting down")
        slot = app.state.preview_slots.take()  # checked and counted in one step: no await in between
        if slot is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                                f"{server.max_preview_clients} previews are open (server.max_preview_clients)",
                                headers={"Retry-After": "5"})
        parts = previews.mjpeg(runtime, server.mjpeg_fps, app.state.closing)
        return MjpegResponse(parts, slot, headers={**NO_STORE, "X-Accel-Buffering": "no"})

    return app
