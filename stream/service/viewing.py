"""Watching a stream's annotated video over WebRTC, on one process: what ``app.state.viewing`` is there.

The routes (routers/watch.py) talk to a ``Viewing`` (deps.py) and never ask which kind: this one answers
from the pipeline in this process with its ``WatchHub`` (stream/outputs/viewers.py); with ``--ray`` the
cluster's ``ClusterViewing`` asks the worker that runs the stream. Both raise ``HTTPException`` with the
same status codes.
"""

from __future__ import annotations

from fastapi import HTTPException, status
from sightline.model.echo import bounded
from sightline.stream.errors import UnknownStreamError
from sightline.stream.ice import IcePolicy
from sightline.stream.outputs.viewers import TooManyViewersError, WatchHub, WatchOfferError
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.service.deps import NAME_ECHO, not_found


def watch_hub(pipeline: Pipeline) -> WatchHub:
    config = pipeline.config
    video = config.annotated_video
    return WatchHub(pipeline.video_out, IcePolicy.from_server(config.server), video.max_viewers,
                    video.connect_timeout_s)


class LocalViewing:
    """The viewers of this process's streams (the hub is made by the first viewer)."""

    def __init__(self, pipeline: Pipeline, hub: WatchHub | None = None) -> None:
        self.pipeline = pipeline
        self._hub = hub

    @property
    def hub(self) -> WatchHub:
        if self._hub is None:
            self._hub = watch_hub(self.pipeline)
        return self._hub

    async def watch(self, name: str, sdp: str) -> dict[str, str]:
        try:
            answer = await self.hub.watch(name, sdp)
        except UnknownStreamError:
            if name in self.pipeline.names():  # registered, but its source is over: nothing left to watch
                raise HTTPException(status.HTTP_409_CONFLICT, f"stream {bounded(name, NAME_ECHO)!r} has ended: its "
                                    "annotated video is over (the recording or the event clips keep it)") from None
            raise not_found(name) from None
        except TooManyViewersError as exc:
            raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, str(exc), headers={"Retry-After": "5"}) from None
        except WatchOfferError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
        return {"sdp": answer.sdp, "type": answer.type}

    async def video_status(self, name: str) -> dict[str, object]:
        found = video_status_of(self.pipeline, self._hub, name)
        if found is None:
            raise not_found(name)
        return found


def video_status_of(pipeline: Pipeline, hub: WatchHub | None, name: str) -> dict[str, object] | None:
    """The stream's annotated-video status (None: no such stream)."""
    encoder = pipeline.video_out.get(name)
    if encoder is None or name not in pipeline.names():
        return None
    return {"name": name, "video": encoder.what, "encoding": encoder.subscribers > 0,
            "size": None if encoder.size is None else list(encoder.size),
            "frames_encoded": encoder.frames_encoded, "frames_dropped": encoder.frames_dropped,
            "viewers": 0 if hub is None else hub.count(name),
            "max_viewers": pipeline.config.annotated_video.max_viewers,
            "publish": None if encoder.publisher is None else encoder.publisher.status()}
