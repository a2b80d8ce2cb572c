"""The registry of streams by name: who may be added, who is being removed, what is there now.

The registry is the lifecycle's bookkeeping: a name is registered only with its threads started
(``add`` builds and starts under the lock), and stays registered, refusing a new stream of that name,
until the one ``remove`` that claimed it has stopped it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from sightline.stream.errors import DuplicateStreamError, StreamBusyError, TooManyStreamsError, UnknownStreamError
from sightline.stream.pipeline.stream_runtime import StreamRuntime


class StreamRegistry:
    def __init__(self, max_streams: int) -> None:
        self.max_streams = max_streams
        self._streams: dict[str, StreamRuntime] = {}
        self._lock = threading.Lock()

    def add(self, name: str, build: Callable[[], StreamRuntime],
            start: Callable[[StreamRuntime], None]) -> StreamRuntime:
        """Check the name and the cap, then build, register and start, all under the lock."""
        with self._lock:
            existing = self._streams.get(name)
            if existing is not None:
                if existing.removing:
                    raise DuplicateStreamError(f"stream {name!r} is still being removed; try again")
                raise DuplicateStreamError(f"a stream named {name!r} already exists")
            if len(self._streams) >= self.max_streams:
                raise TooManyStreamsError(f"{self.max_streams} streams are registered (server.max_streams); "
                                          "remove one first")
            runtime = build()
            start(runtime)
            self._streams[name] = runtime
            return runtime

    def claim(self, name: str) -> StreamRuntime:
        """Mark a stream as being removed; exactly one caller gets it (a second gets StreamBusyError)."""
        with self._lock:
            runtime = self._streams.get(name)
            if runtime is None:
                raise UnknownStreamError(f"no stream named {name!r}")
            if runtime.removing:
                raise StreamBusyError(f"stream {name!r} is already being removed")
            runtime.removing = True
            return runtime

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
