"""JPEG previews for the HTTP API: snapshots and MJPEG, rendered in threads and shared between clients.

The output thread only keeps the latest ``Labelled`` frame; drawing the overlay and encoding the
JPEG happen here, on request, at most once per new frame however many clients watch. OpenCV
runs in worker threads (``asyncio.to_thread``), never in the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from sightline.stream.errors import UnknownStreamError
from sightline.stream.outputs.overlay import encode_jpeg
from sightline.stream.outputs.sinks import Labelled
from sightline.stream.pipeline.stream_runtime import StreamRuntime
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

if TYPE_CHECKING:
    from sightline.stream.pipeline.pipeline import Pipeline

BOUNDARY = "frame"
MJPEG_MEDIA_TYPE = f"multipart/x-mixed-replace; boundary={BOUNDARY}"
# Previews are drawn at one height whatever the stream's size (working-size 144p or a 4K camera), so
# every card on the page looks alike and its overlay text has one size; recordings keep the full size.
PREVIEW_HEIGHT = 360


def render_jpeg(item: Labelled, stream: str, quality: int) -> bytes:
    return encode_jpeg(item.annotated(stream, PREVIEW_HEIGHT), quality)


def mjpeg_part(jpeg: bytes) -> bytes:
    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode("ascii")
    return head + jpeg + b"\r\n"


class PreviewSlot:
    """One open preview; ``release`` may be called any number of times, it frees the slot once."""

    def __init__(self, slots: PreviewSlots) -> None:
        self._slots: PreviewSlots | None = slots

    def release(self) -> None:
        slots, self._slots = self._slots, None
        if slots is not None:
            slots.in_use -= 1


class PreviewSlots:
    """At most ``limit`` open MJPEG previews.

    ``take`` checks and counts in one step, in the event loop with no ``await`` in between, so N
    concurrent requests admit exactly ``limit`` (the count used to rise only once a body started, and
    20 concurrent requests got 5 slots of 4). The response releases its slot when it ends, however it ends.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0

    def take(self) -> PreviewSlot | None:
        if self.in_use >= self.limit:
            return None
        self.in_use += 1
        return PreviewSlot(self)


class MjpegResponse(StreamingResponse):
    """A StreamingResponse that holds a preview slot for exactly as long as it runs.

    A viewer that stops reading is cut off by the server's write timeout (``http_server``); the
    disconnect cancels the body and this releases the slot.
    """

    def __init__(self, content: AsyncIterator[bytes], slot: PreviewSlot, headers: dict[str, str]) -> None:
        super().__init__(content, media_type=MJPEG_MEDIA_TYPE, headers=headers)
        self.slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slot.release()


class PreviewRenderer:
    """Caches the JPEG of each stream's latest frame; a frame is rendered once, in a worker thread."""

    def __init__(self, pipeline: Pipeline, quality: int) -> None:
        self.pipeline = pipeline
        self.quality = quality
        self._cache: dict[str, tuple[Labelled, bytes]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def jpeg(self, name: str, item: Labelled) -> bytes:
        cached = self._cache.get(name)
        if cached is not None and cached[0] is item:
            return cached[1]
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            cached = self._cache.get(name)
            if cached is not None and cached[0] is item:
                return cached[1]
            data = await asyncio.to_thread(render_jpeg, item, name, self.quality)
            self._cache[name] = (item, data)
        self._prune()
        return data

    async def latest(self, name: str) -> tuple[bytes, Labelled] | None:
        """The stream's latest annotated frame as JPEG, with its labels; None before its first frame.

        Raises UnknownStreamError."""
        runtime = self.pipeline.get(name)
        runtime.watch_preview()
        item = runtime.output.latest
        return None if item is None else (await self.jpeg(name, item), item)

    def forget(self, name: str) -> None:
        self._cache.pop(name, None)
        self._locks.pop(name, None)

    def _prune(self) -> None:
        """Drop frames of streams that are gone (removed by the API or otherwise), so they can be freed."""
        live = set(self.pipeline.names())
        for name in [n for n in self._cache if n not in live]:
            self.forget(name)

    async def mjpeg(self, runtime: StreamRuntime, fps: float, closing: asyncio.Event) -> AsyncIterator[bytes]:
        """multipart/x-mixed-replace parts: each new frame at most ``fps`` times a second.

        Ends when the stream is removed (or replaced by one of the same name), when it finished and
        its last frame went out, or when the server closes. A client that disconnects cancels it.
        """
        name = runtime.config.name
        period = 1.0 / fps
        sent: Labelled | None = None
        while not closing.is_set():
            try:
                current = self.pipeline.get(name)
            except UnknownStreamError:
                return
            if current is not runtime:
                return
            finished = runtime.finished
            runtime.watch_preview()
            item = runtime.output.latest
            if item is not None and item is not sent:
                yield mjpeg_part(await self.jpeg(name, item))
                sent = item
            elif finished:
                return
            try:
                await asyncio.wait_for(closing.wait(), period)
            except asyncio.TimeoutError:
                continue
