"""ASGI middleware in front of the whole API: Host and Origin checks, the token, and the body cap.

Order matters and is the point of doing it here rather than in FastAPI dependencies: a request is
refused before any of its body is read. In turn:

1. ``Host`` must name this service: any IP address literal (a rebinding page cannot make a browser
   send one it does not own), ``localhost``, the bind address, or ``server.allowed_hosts``. A
   DNS-rebinding page reaches the service under the attacker's own name, so its requests fail here.
2. POST/PUT/PATCH/DELETE carrying an ``Origin`` must come from the service's own origin (the Origin's
   ``host[:port]`` equals ``Host``) or from ``server.allowed_origins``; with or without a token.
3. Those methods need what their route's ``Requirement`` asks (auth.py: admin for a change, viewer to watch),
   checked here as the route's own dependency checks it (401, 403).
4. A body larger than ``server.max_body_bytes`` is 413: a ``Content-Length`` over the cap is refused
   unread, a chunked body is counted as it arrives and refused when it passes the cap.

Refusals are small JSON bodies (``{"detail": ...}``) like FastAPI's own, and echo nothing the
client sent except a bounded host name.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from fastapi import HTTPException
from fastapi.routing import iter_route_contexts
from sightline.stream.service.auth import Auth, Requirement, requirement_of
from starlette.routing import Match

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_NAMES = frozenset({"localhost"})
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})
ECHO_LIMIT = 64  # characters of a refused Host echoed back


def host_name(host: str) -> str:
    """'Example.COM:8080' -> 'example.com'; '[::1]:80' -> '::1'; a trailing dot is dropped."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else host
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostPolicy:
    """Which Host names and Origins this service answers to."""

    def __init__(self, bind_host: str, allowed_hosts: Iterable[str] = (), allowed_origins: Iterable[str] = ()) -> None:
        names = {n.strip().lower().rstrip(".") for n in allowed_hosts if n.strip()}
        self.any_host = "*" in names
        self.suffixes = tuple(n for n in names if n.startswith("."))
        self.names = {n for n in names if not n.startswith(".")} | LOOPBACK_NAMES
        bind = host_name(bind_host)
        if bind not in WILDCARD_BINDS:
            self.names.add(bind)
        self.origins = {o.strip().lower().rstrip("/") for o in allowed_origins if o.strip()}

    def host_allowed(self, host: str | None) -> bool:
        if host is None:  # HTTP/1.0 without Host: not a browser, so not a rebinding page
            return True
        name = host_name(host)
        if not name:
            return False
        if self.any_host or is_ip_literal(name) or name in self.names:
            return True
        return any(name.endswith(suffix) or name == suffix[1:] for suffix in self.suffixes)

    def origin_allowed(self, origin: str, host: str | None) -> bool:
        origin = origin.strip().lower().rstrip("/")
        if origin in self.origins:
            return True
        scheme, sep, netloc = origin.partition("://")
        if not sep or scheme not in ("http", "https") or host is None:
            return False  # includes "null" (sandboxed frames, file: pages)
        return netloc == host.strip().lower()


class BodyTooLarge(Exception):
    pass


def route_requirement(scope: Scope) -> Requirement | None:
    """The requirement of the route that will answer ``scope`` (none matches: None, the router answers 404/405)."""
    for route in iter_route_contexts(scope["app"].router.routes):
        if route.matches(scope)[0] == Match.FULL:
            return requirement_of(route.original_route)
    return None


class ServiceGuard:
    """The middleware (see the module docstring); ``auth`` decides who may (auth.py)."""

    def __init__(self, app: ASGIApp, policy: HostPolicy, auth: Auth, max_body_bytes: int) -> None:
        self.app = app
        self.policy = policy
        self.auth = auth
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        host = headers.get("host")
        if not self.policy.host_allowed(host):
            shown = (host or "")[:ECHO_LIMIT]
            await _refuse(send, 403, f"host {shown!r} is not served here (server.allowed_hosts)")
            return
        method = scope.get("method", "GET").upper()
        if method in STATE_CHANGING:
            origin = headers.get("origin")
            if origin is not None and not self.policy.origin_allowed(origin, host):
                await _refuse(send, 403, "cross-origin request refused (server.allowed_origins)")
                return
            need = route_requirement(scope)
            if need is not None:
                try:
                    await self.auth.check(need, scope)
                except HTTPException as exc:
                    extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (exc.headers or {}).items()]
                    await _refuse(send, exc.status_code, exc.detail, extra)
                    return
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await _refuse(send, 400, "malformed Content-Length")
                return
            if int(declared) > self.max_body_bytes:
                await _refuse(send, 413, f"request body over {self.max_body_bytes} bytes (server.max_body_bytes)")
                return
        if declared is None and "transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body: nothing to count
            return
        try:
            body = await self._read_body(receive)
        except BodyTooLarge:
            await _refuse(send, 413, f"request body over {self.max_body_bytes} bytes (server.max_body_bytes)")
            return
        if body is None:
            return  # the client went away before its body arrived
        await self.app(scope, _replay(body, receive), send)

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, counted chunk by chunk; None when the client disconnects first."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _headers(scope: Scope) -> dict[str, str]:
    """Header names lowercased; the first value of each (a repeated Host is refused by uvicorn's parser)."""
    out: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.decode("latin-1").lower()
        if name not in out:
            out[name] = raw_value.decode("latin-1")
    return out


def _replay(body: bytes, receive: Receive) -> Receive:
    """The buffered body as one message, then the real channel (for http.disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _refuse(send: Send, status: int, detail: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode("ascii")),
               (b"cache-control", b"no-store"), (b"connection", b"close"), *(extra or [])]
    # connection: close -- a body left unread must not be parsed as the next request
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
