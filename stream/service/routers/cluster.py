"""HTTP endpoints of a clustered service: workers, drain/resume, and Prometheus service discovery.

The router reads the controller from ``request.app.state.cluster`` (set by ``sightline run --ray``); a
one-process service answers 404 here. Drain and resume change state: they need the bearer token like
``POST /api/streams``. No Ray import here.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from sightline.model.echo import bounded
from sightline.stream.service.guard import bearer_token_matches

router = APIRouter(tags=["cluster"])


def controller(request: Request) -> Any:
    cluster = getattr(request.app.state, "cluster", None)
    if cluster is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "this service does not run on a cluster (sightline run --ray)")
    return cluster


def require_token(request: Request) -> None:
    token = getattr(request.app.state, "token", None)
    if token is not None and not bearer_token_matches(request.headers.get("authorization"), token):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or wrong bearer token",
                            headers={"WWW-Authenticate": 'Bearer realm="sightline"'})


@router.get("/api/workers", summary="Pipeline workers: node, capacity and asked frames/s, streams, draining")
async def list_workers(cluster: Any = Depends(controller)) -> dict[str, Any]:
    return {"workers": cluster.workers()}


@router.get("/api/cluster/targets", summary="Prometheus HTTP service discovery (http_sd_configs): one target per "
                                            "worker's metrics endpoint, labelled worker and node; [] without a "
                                            "cluster (the service's own /metrics has it all)")
async def targets(request: Request) -> list[dict[str, Any]]:
    cluster = getattr(request.app.state, "cluster", None)
    return [] if cluster is None else cluster.targets()


async def _change(cluster: Any, worker_id: str, action: str) -> dict[str, Any]:
    from sightline.stream.cluster.controller import UnknownWorkerError

    try:
        moved = await asyncio.to_thread(getattr(cluster, action), worker_id)
    except UnknownWorkerError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no worker named {bounded(worker_id, 40)!r}") from None
    worker = next(w for w in cluster.workers() if w["id"] == worker_id)
    return {"worker": worker, "moved": moved or []}


@router.post("/api/workers/{worker_id}/drain", dependencies=[Depends(require_token)],
             summary="Move every stream off this worker (stopped there, started elsewhere) and place none on it")
async def drain(worker_id: str, cluster: Any = Depends(controller)) -> dict[str, Any]:
    return await _change(cluster, worker_id, "drain")


@router.post("/api/workers/{worker_id}/resume", dependencies=[Depends(require_token)],
             summary="Place streams on this worker again after a drain")
async def resume(worker_id: str, cluster: Any = Depends(controller)) -> dict[str, Any]:
    return await _change(cluster, worker_id, "resume")
