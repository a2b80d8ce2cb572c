"""The registry of streams by name: who may be added, who is being removed, what is there now.

The registry is the lifecycle's bookkeeping: a name is registered only with its threads started
(``add`` builds and starts under the lock), and stays registered, refusing a new stream of that name,
until the one ``remove`` that claimed it has stopped it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol, TypeVar

from sightline.stream.errors import DuplicateStreamError, StreamBusyError, TooManyStreamsError, UnknownStreamError

if TYPE_CHECKING:  # a type only: the admission rules are read where no torch is loaded (a simulated worker)
    from sightline.stream.pipeline.stream_runtime import StreamRuntime


class Removable(Protocol):
    removing: bool


R = TypeVar("R", bound=Removable)


def check_admission(streams: Mapping[str, Removable], name: str, limit: int) -> None:
    """Whether a stream named ``name`` may be added now (raises why not). The caller holds its lock; the
    cluster's controller keeps the same rule over its placements."""
    existing = streams.get(name)
    if existing is not None:
        if existing.removing:
            raise DuplicateStreamError(f"stream {name!r} is still being removed; try again")
        raise DuplicateStreamError(f"a stream named {name!r} already exists")
    if len(streams) >= limit:
        raise TooManyStreamsError(f"{limit} streams are registered (server.max_streams); remove one first")


def claim_removal(streams: Mapping[str, R], name: str) -> R:
    """Mark a stream as being removed; exactly one caller gets it (a second gets StreamBusyError). The caller
    holds its lock."""
    item = streams.get(name)
    if item is None:
        raise UnknownStreamError(f"no stream named {name!r}")
    if item.removing:
        raise StreamBusyError(f"stream {name!r} is already being removed")
    item.removing = True
    return item


class StreamRegistry:
    def __init__(self, max_streams: int) -> None:
        self.max_streams = max_streams
        self._streams: dict[str, StreamRuntime] = {}
        self._lock = threading.Lock()

    def add(self, name: str, build: Callable[[], StreamRuntime],
            start: Callable[[StreamRuntime], None]) -> StreamRuntime:
        """Check the name and the cap, then build, register and start, all under the lock."""
        with self._lock:
            check_admission(self._streams, name, self.max_streams)
            runtime = build()
            start(runtime)
            self._streams[name] = runtime
            return runtime

    def claim(self, name: str) -> StreamRuntime:
        """Mark a stream as being removed; exactly one caller gets it (a second gets StreamBusyError)."""
        with self._lock:
            return claim_removal(self._streams, name)

    def forget(self, runtime: StreamRuntime) -> None:
        with self._lock:
            if self._streams.get(runtime.config.name) is runtime:
                del self._streams[runtime.config.name]

    def get(self, name: str) -> StreamRuntime:
        try:
            return self._streams[name]
        except KeyError:
            raise UnknownStreamError(f"no stream named {name!r}") from None

    def names(self) -> list[str]:
        return list(self._streams)

    def runtimes(self) -> list[StreamRuntime]:
        return list(self._streams.values())

    def __contains__(self, name: object) -> bool:
        return name in self._streams

    def __len__(self) -> int:
        return len(self._streams)
