"""Dependencies of every router: each reads what ``create_app`` put on ``request.app.state``.

Tests swap any of them with ``app.dependency_overrides[deps.x] = ...``. They are ``async``: FastAPI would run a
plain ``def`` dependency in its thread pool, a hop per dependency per request for what is an attribute read.

What a feature needs from the process it runs in is a small protocol here (``ModelControl``, ``Viewing``,
``ClusterAdmin``): ``create_app`` puts this process's implementation on ``app.state``; ``sightline run --ray``
hands in the cluster's. The service never imports the cluster; the cluster plugs in.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from fastapi import Depends, HTTPException, Request, status
from sightline.model.echo import bounded
from sightline.stream.capacity import CapacityStats
from sightline.stream.config import RunConfig, ServerConfig
from sightline.stream.errors import UnknownStreamError
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.pipeline.stream_runtime import StreamRuntime
from sightline.stream.service.auth import ADMIN, Auth
from sightline.stream.service.previews import PreviewRenderer, PreviewSlots
from sightline.stream.storage.stats import StorageStats

NAME_ECHO = 80  # a stream name from the request path is echoed at most this long (names are <= 64)


async def get_pipeline(request: Request) -> Pipeline:
    return request.app.state.pipeline


async def get_config(request: Request) -> RunConfig:
    return request.app.state.config


async def get_server(config: RunConfig = Depends(get_config)) -> ServerConfig:
    return config.server


async def get_metrics(request: Request) -> Metrics | None:
    return request.app.state.metrics


async def get_previews(request: Request) -> PreviewRenderer:
    return request.app.state.previews


async def get_preview_slots(request: Request) -> PreviewSlots:
    return request.app.state.preview_slots


async def get_auth(request: Request) -> Auth:
    return request.app.state.auth


async def get_closing(request: Request) -> asyncio.Event:
    return request.app.state.closing


class ModelControl(Protocol):
    """``GET``/``PUT /api/model``: the model in service, and a swap to another (HTTPException on refusal)."""

    async def describe(self) -> Any: ...

    async def swap(self, source: str, backend: str | None, precision: str | None) -> Any: ...


class Viewing(Protocol):
    """WebRTC viewing of a stream's annotated video (HTTPException: 404, 409, 422, 429, 503)."""

    async def watch(self, name: str, sdp: str) -> dict[str, str]: ...

    async def video_status(self, name: str) -> dict[str, object]: ...


class ClusterAdmin(Protocol):
    """The pipeline workers of ``sightline run --ray`` (``drain``/``resume`` raise LookupError: no such worker)."""

    def workers(self) -> list[dict[str, Any]]: ...

    def targets(self) -> list[dict[str, Any]]: ...

    def drain(self, worker_id: str) -> list[str]: ...

    def resume(self, worker_id: str) -> list[str]: ...


async def get_model_control(request: Request) -> ModelControl:
    return request.app.state.model_control


async def get_viewing(request: Request) -> Viewing:
    return request.app.state.viewing


async def get_cluster(request: Request) -> ClusterAdmin | None:
    return getattr(request.app.state, "cluster", None)


async def stream_states(pipeline: Pipeline = Depends(get_pipeline)) -> list[str]:
    """Every registered stream's state (what /readyz counts)."""
    return [r.stats.state for r in pipeline.runtimes()]


async def get_capacity(pipeline: Pipeline = Depends(get_pipeline)) -> CapacityStats | None:
    """The box's capacity counts; None for a cluster's controller (its workers count their own)."""
    return getattr(pipeline, "capacity", None)


async def get_storage(pipeline: Pipeline = Depends(get_pipeline)) -> StorageStats | None:
    """output_dir's disk figures; None for a cluster's controller (its workers keep their own)."""
    return getattr(pipeline, "storage", None)


async def model_info(pipeline: Pipeline = Depends(get_pipeline)) -> dict[str, Any]:
    return pipeline.classifier.describe()


def not_found(name: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no stream named {bounded(name, NAME_ECHO)!r}")


async def stream_named(name: str, pipeline: Pipeline = Depends(get_pipeline)) -> StreamRuntime:
    """The stream of the path's ``{name}``, or 404."""
    try:
        return pipeline.get(name)
    except UnknownStreamError:
        raise not_found(name) from None


def refuse_when_closing(closing: asyncio.Event) -> None:
    """From the shutdown signal on, a state change is refused (503)."""
    if closing.is_set():
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "shutting down")


async def not_closing(closing: asyncio.Event = Depends(get_closing)) -> None:
    refuse_when_closing(closing)


CLOSING_RESPONSES: dict[int | str, dict[str, Any]] = {
    503: {"description": "shutting down: from the stop signal (SIGTERM, Ctrl-C) on, every state change is refused"}}
CHANGE: list[Any] = [Depends(ADMIN), Depends(not_closing)]  # what every state-changing route depends on
