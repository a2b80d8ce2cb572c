"""uvicorn inside the service's own event loop, next to the pipeline.

The socket is bound up front, so a busy port is a clear error before the model loads (uvicorn
itself would ``sys.exit`` from inside a task). Signals stay with ``run_service``: it stops the
pipeline first, then this server, so a SIGTERM never cuts the HTTP side off a draining pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI
from sightline.stream.errors import StreamError
from sightline.stream.event_config import is_loopback_host
from uvicorn.protocols.http.auto import AutoHTTPProtocol

log = logging.getLogger(__name__)


class ServerBindError(StreamError):
    pass


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """run_service owns SIGINT/SIGTERM (it drains the pipeline, then stops us); install nothing."""
        yield


def write_timeout_protocol(timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol with TCP_NODELAY and a write timeout: a connection whose client has read nothing for
    ``timeout_s`` while the server waits to write (asyncio paused writing: the socket buffer is full)
    is aborted. uvicorn has no write timeout of its own, so a viewer that connects and never reads
    would hold its MJPEG slot, its buffers and its file descriptor for as long as it likes; the abort
    is an ordinary disconnect for the app (the body is cancelled, the slot released)."""

    class WriteTimeoutProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
        _write_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            # uvicorn writes a response's head and body separately: with Nagle on, the body waited for the
            # client's delayed ACK, 40 ms on every keep-alive request after the first (measured on loopback)
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().connection_made(transport)

        def pause_writing(self) -> None:
            super().pause_writing()
            if self._write_timer is None:
                self._write_timer = asyncio.get_running_loop().call_later(timeout_s, self._write_timed_out)

        def resume_writing(self) -> None:
            self._cancel_write_timer()
            super().resume_writing()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_write_timer()
            super().connection_lost(exc)

        def _cancel_write_timer(self) -> None:
            if self._write_timer is not None:
                self._write_timer.cancel()
                self._write_timer = None

        def _write_timed_out(self) -> None:
            self._write_timer = None
            log.info("closing a connection whose client read nothing for %gs (server.write_timeout_s)", timeout_s)
            self.transport.abort()

    return WriteTimeoutProtocol


class HttpServer:
    """Bind first (``bind``), serve an app later (``start``), stop after the pipeline (``stop``)."""

    def __init__(self, host: str, port: int, graceful_s: float = 3.0, write_timeout_s: float = 10.0) -> None:
        self.host = host
        self.requested_port = port
        self.graceful_s = graceful_s
        self.write_timeout_s = write_timeout_s
        self.app: FastAPI | None = None
        self._socket: socket.socket | None = None
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when the config asked for port 0)."""
        if self._socket is None:
            raise RuntimeError("the server is not bound")
        return int(self._socket.getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def bind(self) -> socket.socket:
        if self._socket is not None:
            return self._socket
        try:
            infos = socket.getaddrinfo(self.host, self.requested_port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
            family, _, _, _, address = infos[0]
            self._socket = socket.create_server(address, family=family, backlog=128)
        except OSError as exc:
            hint = ("; is another service using it? Pass --port N (0: any free port) or set server.port"
                    if exc.errno == errno.EADDRINUSE else "")
            raise ServerBindError(f"server: cannot listen on {self.host}:{self.requested_port}: "
                                  f"{os.strerror(exc.errno) if exc.errno else exc}{hint}") from None
        return self._socket

    async def start(self, app: FastAPI) -> None:
        """Serve ``app`` in a task; return once uvicorn accepts connections."""
        sock = self.bind()
        self.app = app
        config = uvicorn.Config(app, log_level="warning", log_config=None, access_log=False, lifespan="off",
                                timeout_graceful_shutdown=self.graceful_s,
                                http=write_timeout_protocol(self.write_timeout_s))
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="http-server")
        while not self._server.started:
            if self._task.done():
                task, self._task = self._task, None
                task.result()  # uvicorn's own error, if it raised one
                raise ServerBindError(f"server: uvicorn stopped during start-up on {self.host}:{self.requested_port}")
            await asyncio.sleep(0.01)
        log.info("serving HTTP on %s", self.url)
        credentials = app.state.auth.credentials
        if not is_loopback_host(self.host) and credentials.changes_open:  # server.insecure (auth.bind_problem)
            log.warning("serving on %s without an admin credential (server.insecure: true): anyone who may read can "
                        "also add and remove streams", self.host)
        if not is_loopback_host(self.host) and credentials.reads_open:  # server.public_read
            log.warning("serving on %s with server.public_read: true: anyone who can reach it can watch", self.host)

    def begin_closing(self) -> None:
        """The service is stopping: readiness fails, previews end, state changes are refused (503)."""
        if self.app is not None:
            self.app.state.closing.set()

    async def stop(self) -> None:
        """End previews and readiness first, then let uvicorn finish open requests (at most graceful_s)."""
        self.begin_closing()
        if self._server is None or self._task is None:
            if self._socket is not None:
                self._socket.close()
            self._socket = None
            return
        self._server.should_exit = True
        try:
            await self._task
        finally:
            self._task = self._server = None
            self._socket = None
