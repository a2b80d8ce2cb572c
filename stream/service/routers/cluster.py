"""HTTP endpoints of a clustered service: workers, drain/resume, and Prometheus service discovery.

The routes read ``app.state.cluster`` (deps.py's ``ClusterAdmin``, handed in by ``sightline run --ray``); a
one-process service answers 404 here. Drain and resume change state (admin); the worker list is a read
(viewer); the targets are Prometheus' (``server.metrics_token``). Nothing here imports the cluster (or Ray).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, status
from sightline.model.echo import bounded
from sightline.stream.service.auth import SCRAPE, VIEWER
from sightline.stream.service.deps import CHANGE, CLOSING_RESPONSES, ClusterAdmin, get_cluster

router = APIRouter(tags=["cluster"])
NO_CLUSTER = "this service does not run on a cluster (sightline run --ray)"
CHANGES: dict[str, Any] = {"dependencies": CHANGE,
                           "responses": {**CLOSING_RESPONSES, 404: {"description": f"no such worker, or {NO_CLUSTER}"}}}


async def controller(cluster: ClusterAdmin | None = Depends(get_cluster)) -> ClusterAdmin:
    if cluster is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NO_CLUSTER)
    return cluster


@router.get("/api/workers", summary="Pipeline workers: node, capacity and asked frames/s, streams, draining",
            dependencies=[Depends(VIEWER)],
            responses={404: {"description": NO_CLUSTER}})
async def list_workers(cluster: ClusterAdmin = Depends(controller)) -> dict[str, Any]:
    return {"workers": cluster.workers()}


@router.get("/api/cluster/targets", dependencies=[Depends(SCRAPE)],
            summary="Prometheus HTTP service discovery (http_sd_configs): one target per worker's metrics endpoint, "
                    "labelled worker and node; [] without a cluster (the service's own /metrics has it all)")
async def targets(cluster: ClusterAdmin | None = Depends(get_cluster)) -> list[dict[str, Any]]:
    return [] if cluster is None else cluster.targets()


async def _change(cluster: ClusterAdmin, worker_id: str, action: str) -> dict[str, Any]:
    try:
        moved = await asyncio.to_thread(getattr(cluster, action), worker_id)
    except LookupError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no worker named {bounded(worker_id, 40)!r}") from None
    worker = next(w for w in cluster.workers() if w["id"] == worker_id)
    return {"worker": worker, "moved": moved or []}


@router.post("/api/workers/{worker_id}/drain", **CHANGES,
             summary="Move every stream off this worker (stopped there, started elsewhere) and place none on it")
async def drain(worker_id: str, cluster: ClusterAdmin = Depends(controller)) -> dict[str, Any]:
    return await _change(cluster, worker_id, "drain")


@router.post("/api/workers/{worker_id}/resume", **CHANGES,
             summary="Place streams on this worker again after a drain")
async def resume(worker_id: str, cluster: ClusterAdmin = Depends(controller)) -> dict[str, Any]:
    return await _change(cluster, worker_id, "resume")
