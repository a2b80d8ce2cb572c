"""WebRTC viewing of the annotated video (``/watch``, ``POST /api/streams/{name}/watch``) on a cluster.

The controller passes the viewer's SDP offer to the worker that runs the stream (as ``webrtc_offer`` does for
a publisher's offer) and returns its answer. The worker (``PipelineWorker.watch_offer``) answers with a
``WatchHub`` (stream/outputs/viewers.py) on its own pipeline and event loop, so the stream is still drawn
and encoded once on its worker however many viewers watch, and the media flows from the worker's aiortc
straight to the viewer (not through the controller): the viewer must reach the worker's node (its host
candidates follow ``server.webrtc.interfaces`` / ``server.host`` read on the worker, as for WebRTC
publishing). Errors cross Ray as data and come back as the one-process status codes (404, 422, 429), plus
409 while the stream has no worker (moving, unplaced). No Ray import here.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException, status
from sightline.model.echo import bounded
from sightline.stream.errors import UnknownStreamError

if TYPE_CHECKING:
    from sightline.stream.cluster.controller import ClusterPipeline

OFFER_TIMEOUT_S = 30.0


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


class ClusterViewing:
    """``app.state.viewing`` with ``--ray`` (deps.py's ``Viewing``): the owning worker answers."""

    def __init__(self, cluster: ClusterPipeline) -> None:
        self.cluster = cluster

    async def watch(self, name: str, sdp: str) -> dict[str, str]:
        answer = await _ask(self.cluster, name, "watch_offer", sdp, timeout=OFFER_TIMEOUT_S + 5)
        return {"sdp": answer["sdp"], "type": answer["type"]}

    async def video_status(self, name: str) -> dict[str, Any]:
        return (await _ask(self.cluster, name, "video_status", timeout=10))["video"]
