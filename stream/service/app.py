"""The app factory: middleware, error handlers, ``app.state``, and one router per resource.

Handlers only move small objects; anything that blocks (checking a file, stopping a stream, drawing
and encoding JPEGs) runs in a worker thread. Who may read and who may change is auth.py's (one
dependency per route); ``ServiceGuard`` (guard.py) checks Host, Origin, a state change's credential and
the body size before any handler runs. No response and no log line carries a
stream URL's credentials (``redact_url``, ``scrub_urls``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sightline.model.echo import bounded, echo
from sightline.model.yamlconfig import dotted
from sightline.stream.config import RunConfig
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.service import contract
from sightline.stream.service.auth import Auth
from sightline.stream.service.deps import ClusterAdmin, ModelControl, Viewing
from sightline.stream.service.guard import HostPolicy, ServiceGuard
from sightline.stream.service.model_control import LocalModelControl
from sightline.stream.service.previews import PreviewRenderer, PreviewSlots
from sightline.stream.service.routers import cluster as cluster_routes
from sightline.stream.service.routers import (
    events,
    health,
    model,
    previews,
    recordings,
    session,
    streams,
    watch,
    webrtc,
)
from sightline.stream.service.viewing import LocalViewing
from sightline.stream.urls import scrub_urls
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
DETAIL_LIMIT = 1000  # characters of an error detail (values inside it are bounded to 200 where they are quoted)


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


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [{"loc": [p if isinstance(p, int) else echo(p, 64) for p in e.get("loc", ())],
               "msg": echo(e.get("msg", "invalid")), "type": e.get("type")} for e in exc.errors()]
    return JSONResponse({"detail": validation_message(list(exc.errors())), "errors": errors},
                        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


def allowed_methods(request: Request) -> str:
    """Every method some route serves at the request's path: Starlette's 405 names only the first route's."""
    routes = request.app.router.routes
    return ", ".join(m for m in METHODS if any(r.matches({**request.scope, "method": m})[0] == Match.FULL
                                               for r in routes))


async def _bounded_detail(request: Request, exc: StarletteHTTPException) -> Response:
    """Every error detail, whoever raised it, is bounded and has its URLs redacted before it leaves; a 405's
    ``Allow`` lists every method of the path (RFC 9110), not those of the first route that matched it."""
    headers = exc.headers
    if exc.status_code == status.HTTP_405_METHOD_NOT_ALLOWED:
        headers = {**(headers or {}), "Allow": allowed_methods(request)}
    detail = bounded(scrub_urls(exc.detail), DETAIL_LIMIT) if isinstance(exc.detail, str) else exc.detail
    return await http_exception_handler(request, StarletteHTTPException(exc.status_code, detail, headers))


def create_app(pipeline: Pipeline, config: RunConfig, metrics: Metrics | None, *,
               model_control: ModelControl | None = None, viewing: Viewing | None = None,
               cluster: ClusterAdmin | None = None) -> FastAPI:
    """The API over ``pipeline``. One process: leave the keywords out (this process's model and viewers).
    ``sightline run --ray`` hands in the cluster's model control, viewing and admin (deps.py's protocols)."""
    server = config.server
    # No /docs or /redoc: FastAPI's pages load Swagger UI / ReDoc from a public CDN, so they are blank offline and
    # make the operator's browser call a third party. The schema stays at /openapi.json (docs/service.md).
    app = FastAPI(title="Sightline", version="0.1.0", docs_url=None, redoc_url=None,
                  description="Streaming video recognition: manage streams, watch annotated previews, "
                              "read per-stream FPS/latency; Prometheus metrics at /metrics.")
    auth = Auth(server, metrics)
    # Host/Origin, a state change's credential and the body cap, all before a byte of the body is read (guard.py)
    app.add_middleware(ServiceGuard, policy=HostPolicy(server.host, server.allowed_hosts, server.allowed_origins),
                       auth=auth, max_body_bytes=server.max_body_bytes)
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _bounded_detail)  # type: ignore[arg-type]
    # What the routers' dependencies (deps.py) read
    app.state.pipeline = pipeline
    app.state.config = config
    app.state.metrics = metrics
    app.state.auth = auth  # SIGHUP hands it new credentials (serve.py)
    app.state.closing = asyncio.Event()
    app.state.preview_slots = PreviewSlots(server.max_preview_clients)
    app.state.previews = PreviewRenderer(pipeline, server.jpeg_quality)
    app.state.pages = {name: previews.page(name) for name in ("index.html", "publish.html", "login.html")}
    app.state.model_control = model_control if model_control is not None else LocalModelControl(pipeline)
    app.state.viewing = viewing if viewing is not None else LocalViewing(pipeline)
    app.state.cluster = cluster  # /api/workers, /api/cluster/targets: 404 / [] without one
    app.state.events = getattr(pipeline, "events", None)  # the event hub, when one is attached (pipeline/build.py)
    for router in (health.router, session.router, streams.router, previews.router, recordings.router, webrtc.router,
                   model.router,
                   watch.router, events.router, cluster_routes.router):
        app.include_router(router)
    contract.install(app)  # /openapi.json says what the service answers (contract.py)
    return app
