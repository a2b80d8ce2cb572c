"""Health: liveness and readiness (open: probes carry no credential), Prometheus metrics (server.metrics_token)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sightline.stream.capacity import CapacityStats
from sightline.stream.config import ServerConfig
from sightline.stream.metrics import Metrics, exposition
from sightline.stream.service.auth import SCRAPE
from sightline.stream.service.deps import (
    get_capacity,
    get_closing,
    get_metrics,
    get_server,
    get_storage,
    model_info,
    stream_states,
)
from sightline.stream.service.models import Readiness
from sightline.stream.service.status import readiness
from sightline.stream.storage.stats import StorageStats

router = APIRouter(tags=["health"])
NO_STORE = {"Cache-Control": "no-store"}


@router.get("/healthz", summary="The process is alive and its event loop answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness,
            summary="Ready: model warmed, and at most server.ready_max_down_share of the running streams down; "
                    "over capacity or with writes failing (a full disk) it stays ready and says so "
                    "(over_capacity, capacity, detail)",
            responses={503: {"model": Readiness, "description": "not ready"}})
async def readyz(states: list[str] = Depends(stream_states), model: dict[str, Any] = Depends(model_info),
                 server: ServerConfig = Depends(get_server),
                 closing: asyncio.Event = Depends(get_closing),
                 capacity: CapacityStats | None = Depends(get_capacity),
                 storage: StorageStats | None = Depends(get_storage)) -> JSONResponse:
    ready = readiness(states, model, server.ready_max_down_share, closing.is_set(), capacity, storage)
    return JSONResponse(ready.model_dump(), status_code=200 if ready.ready else 503, headers=NO_STORE)


@router.get("/metrics", summary="Prometheus text exposition (computed from the statistics at scrape time)",
            dependencies=[Depends(SCRAPE)],
            response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, 404: {"description": "metrics are disabled"}})
async def metrics_endpoint(metrics: Metrics | None = Depends(get_metrics)) -> Response:
    if metrics is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "metrics are disabled")
    return Response(exposition(metrics.registry), media_type=CONTENT_TYPE_LATEST)
