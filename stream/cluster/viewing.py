"""WebRTC viewing of the annotated video (``/watch``, ``POST /api/streams/{name}/watch``) on a cluster.

The controller passes the viewer's SDP offer to the worker that runs the stream (as ``webrtc_offer`` does for
a publisher's offer) and returns its answer. The worker answers with watch.py's ``WatchHub`` on its own
pipeline and event loop, so the stream is still drawn and encoded once on its worker however many viewers
watch, and the media flows from the worker's aiortc straight to the viewer (not through the controller):
the viewer must reach the worker's node (its host candidates follow ``server.webrtc.interfaces`` /
``server.host`` read on the worker, as for WebRTC publishing). Errors cross Ray as data and come back as
the one-process status codes (404, 422, 429), plus 409 while the stream has no worker (moving, unplaced).
No Ray import here.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException, status
from sightline.model.echo import bounded
from sightline.stream.errors import UnknownStreamError

if TYPE_CHECKING:
    from sightline.stream.cluster.controller import ClusterPipeline
    from sightline.stream.cluster.worker import PipelineWorker

OFFER_TIMEOUT_S = 30.0
_HUB_LOCK = threading.Lock()


# -- on the worker -------------------------------------------------------------------------------------


def _hub(worker: PipelineWorker) -> Any:
    from sightline.stream.ice import IcePolicy
    from sightline.stream.service.routers.watch import WatchHub

    with _HUB_LOCK:
        hub = getattr(worker, "watch_hub", None)
        if hub is None:
            config = worker.config
            hub = WatchHub(worker.pipeline, IcePolicy.from_server(config.server),
                           config.annotated_video.max_viewers)
            worker.watch_hub = hub
        return hub


def _unknown(name: str) -> dict[str, Any]:
    return {"error": "unknown", "status": 404, "detail": f"no stream named {bounded(name, 80)!r}"}


def watch_on_worker(worker: PipelineWorker, name: str, sdp: str) -> dict[str, Any]:
    """{"sdp", "type"} or {"error", "status", "detail"}."""
    from sightline.stream.service.routers.watch import TooManyViewersError, WatchOfferError

    future = asyncio.run_coroutine_threadsafe(_hub(worker).watch(name, sdp), worker._loop)
    try:
        answer = future.result(timeout=OFFER_TIMEOUT_S)
    except UnknownStreamError:
        return _unknown(name)
    except TooManyViewersError as exc:
        return {"error": "viewers", "status": 429, "detail": str(exc)}
    except WatchOfferError as exc:
        return {"error": "offer", "status": 422, "detail": str(exc)}
    return {"sdp": answer.sdp, "type": answer.type}


def video_status_on_worker(worker: PipelineWorker, name: str) -> dict[str, Any]:
    from sightline.stream.service.routers.watch import video_status_of

    found = video_status_of(worker.pipeline, getattr(worker, "watch_hub", None), name)
    return _unknown(name) if found is None else {"video": {**found, "worker": worker.worker_id}}


def close_viewers(worker: PipelineWorker) -> None:
    hub = getattr(worker, "watch_hub", None)
    if hub is not None:
        asyncio.run_coroutine_threadsafe(hub.close(), worker._loop).result(timeout=OFFER_TIMEOUT_S)


# -- on the controller ---------------------------------------------------------------------------------


def _owner(cluster: ClusterPipeline, name: str) -> Any:
    try:
        runtime = cluster.get(name)
    except UnknownStreamError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no stream named {bounded(name, 80)!r}") from None
    handle = cluster.owner(runtime.placement)
    if handle is None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"stream {bounded(name, 80)!r} is {runtime.placement.state}: "
                                                      "no worker runs it now; try again", headers={"Retry-After": "2"})
    return handle


async def _ask(cluster: ClusterPipeline, name: str, call: str, *args: Any, timeout: float) -> dict[str, Any]:
    """``call`` on the worker that runs stream ``name``; its error answers raised as the one-process status codes."""
    handle = _owner(cluster, name)
    try:
        answer = await asyncio.wait_for(getattr(handle.actor, call).remote(name, *args), timeout)
    except Exception as exc:  # the worker died or is stuck: the monitor moves the stream
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            f"worker {handle.worker_id} did not answer ({type(exc).__name__}); try again",
                            headers={"Retry-After": "5"}) from None
    if "error" in answer:
        headers = {"Retry-After": "5"} if answer["status"] == 429 else None
        raise HTTPException(int(answer["status"]), answer["detail"], headers=headers)
    return answer


async def watch_offer(cluster: ClusterPipeline, name: str, sdp: str) -> dict[str, str]:
    answer = await _ask(cluster, name, "watch_offer", sdp, timeout=OFFER_TIMEOUT_S + 5)
    return {"sdp": answer["sdp"], "type": answer["type"]}


async def video_status(cluster: ClusterPipeline, name: str) -> dict[str, Any]:
    return (await _ask(cluster, name, "video_status", timeout=10))["video"]
