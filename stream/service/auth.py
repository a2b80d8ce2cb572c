"""Who is asking, and may they: the one place that decides (docs/security.md has the threat model).

Two roles: ``viewer`` (watch video, read events, statuses and the page) and ``admin`` (every state change too).
A request proves one with, in this order:

- ``Authorization: Bearer``: ``server.token`` is admin, an entry of ``server.viewer_tokens`` is viewer;
- ``Authorization: Basic``, on video reads only (players that can neither log in nor send a bearer header: VLC,
  ffplay): a user's name and password, or any name with a token as the password; never more than viewer;
- the session cookie ``POST /login`` sets for a user of ``server.users`` (that user's role).

Reads need no credential on a loopback bind without viewer credentials (as before roles existed), or with
``server.public_read``. State changes need none only where no admin credential exists (a loopback bind, or
``server.insecure``): then they need what reads need. ``/metrics`` and ``/api/cluster/targets`` need
``server.metrics_token`` when it is set, and nothing else.

A route says what it needs with one dependency (``VIEWER``, ``VIDEO``, ``PAGE``, ``ADMIN``, ``SCRAPE``); the guard
(guard.py) asks the same ``Requirement`` before a state change's body is read, and contract.py turns it into the
OpenAPI ``security`` of the operation. Tokens, passwords and session ids are compared in constant time and never
logged; failed logins are rate-limited per client address and counted (``sightline_login_failures_total``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import secrets
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request, status
from sightline.model.errors import ConfigError
from sightline.stream.config import ServerConfig, UserConfig
from sightline.stream.event_config import is_loopback_host
from sightline.stream.metrics import Metrics
from sightline.stream.passwords import verify_password

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

RANK = {"viewer": 1, "admin": 2}
SESSION_COOKIE = "sightline_session"
LOGIN_PAGE = "/login"
MAX_SESSIONS = 10_000  # logged-in browsers at most; the oldest session ends first beyond
MAX_LIMITED = 100_000  # client addresses with recent failures remembered at most
VERIFIED_CACHE = 256  # Basic name/password pairs remembered as right (PBKDF2 costs ~0.3 s a check)
# an unknown name is checked against this hash (of a random password): it costs what a known name costs
DUMMY_HASH = "pbkdf2_sha256$600000$GShouanMLfDIP7n2bnWl0w$GQBGXzGw5nM6HdwT4gKbY79uykzBhXvsmsz+nP36CqI"


@dataclass(frozen=True)
class Principal:
    name: str  # a user's name, "token", or "anonymous" where reads or changes are open
    role: str  # viewer or admin


@dataclass(frozen=True)
class Requirement:
    """What a route needs; as a dependency it answers the ``Principal`` (401, 403, or for a page 303 to /login)."""

    role: str  # viewer, admin, or scrape (the metrics token)
    basic: bool = False  # HTTP Basic accepted: video reads, for players
    page: bool = False  # a browser page: sent to the login page rather than refused

    async def __call__(self, request: Request) -> Principal:
        return await request.app.state.auth.check(self, request.scope)


def requirement_of(route: Any) -> Requirement | None:
    """What a route needs (the ``Requirement`` among its dependencies), or None: an open route."""
    dependant = getattr(route, "dependant", None)
    stack = [dependant] if dependant is not None else []
    while stack:
        current = stack.pop()
        if isinstance(current.call, Requirement):
            return current.call
        stack.extend(current.dependencies)
    return None


def security_of(need: Requirement) -> list[dict[str, list[str]]]:
    """The OpenAPI ``security`` of an operation that needs ``need`` (alternatives: any one of them will do)."""
    if need.role == "scrape":
        return [{"metrics": []}]
    return [{"bearer": []}, {"cookie": []}, *([{"basic": []}] if need.basic else [])]


SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer",
               "description": "server.token (SIGHTLINE_TOKEN): admin; an entry of server.viewer_tokens "
                              "(SIGHTLINE_VIEWER_TOKEN): viewer. Reads need none on a loopback bind without viewer "
                              "credentials, or with server.public_read"},
    "cookie": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE,
               "description": "the session POST /login sets for a user of server.users (that user's role)"},
    "basic": {"type": "http", "scheme": "basic",
              "description": "video reads only (players): a user's name and password, or any name and a token; "
                             "at most the viewer role"},
    "metrics": {"type": "http", "scheme": "bearer", "description": "server.metrics_token, when it is set"},
}

VIEWER = Requirement("viewer")
VIDEO = Requirement("viewer", basic=True)  # one line for a video route: dependencies=[Depends(VIDEO)]
PAGE = Requirement("viewer", page=True)
ADMIN = Requirement("admin")
SCRAPE = Requirement("scrape")


def viewer_credentials(server: ServerConfig) -> bool:
    return bool(server.viewer_tokens or server.users)


def admin_credentials(server: ServerConfig) -> bool:
    return server.token is not None or any(u.role == "admin" for u in server.users)


def reads_open(server: ServerConfig) -> bool:
    return server.public_read or (is_loopback_host(server.host) and not viewer_credentials(server))


def bind_problem(server: ServerConfig) -> str | None:
    """Why ``server`` may not serve as configured (one line), or None."""
    if not server.enabled or is_loopback_host(server.host):
        return None
    problems = []
    if not admin_credentials(server) and not server.insecure:
        problems.append("set server.token (or SIGHTLINE_TOKEN), or server.insecure: true to serve it without one")
    if not viewer_credentials(server) and not server.public_read:
        problems.append("set viewer credentials (server.viewer_tokens, SIGHTLINE_VIEWER_TOKEN or server.users), or "
                        "server.public_read: true to let anyone who reaches it watch")
    if not problems:
        return None
    return f"server.host {server.host!r} is not a loopback address: " + "; and ".join(problems)


def require_safe_bind(server: ServerConfig) -> None:
    problem = bind_problem(server)
    if problem is not None:
        raise ConfigError(problem)


def _headers(scope: Scope, name: bytes) -> list[str]:
    return [v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == name]


def _header(scope: Scope, name: bytes) -> str | None:
    values = _headers(scope, name)
    return values[0] if values else None


def _trusted(address: str, proxies: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in proxies)


def client_address(scope: Scope, proxies: tuple[Network, ...]) -> str:
    """The client's address: the peer's, or from a trusted proxy the last X-Forwarded-For hop it did not add."""
    peer = (scope.get("client") or ("unknown", 0))[0]
    if not _trusted(peer, proxies):
        return peer
    hops = [h.strip() for value in _headers(scope, b"x-forwarded-for") for h in value.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, proxies):
            return hop
    return hops[0] if hops else peer


def over_tls(scope: Scope, proxies: tuple[Network, ...]) -> bool:
    """TLS to this service, or to a trusted proxy that says so (X-Forwarded-Proto): the cookie is then Secure."""
    if scope.get("scheme") == "https":
        return True
    peer = (scope.get("client") or ("", 0))[0]
    forwarded = [p.strip().lower() for value in _headers(scope, b"x-forwarded-proto") for p in value.split(",")]
    return _trusted(peer, proxies) and bool(forwarded) and forwarded[-1] == "https"


def _matches(given: bytes, secret: bytes | None) -> bool:
    return secret is not None and hmac.compare_digest(given, secret)


def _bearer(authorization: str | None) -> bytes | None:
    scheme, _, value = (authorization or "").partition(" ")
    return value.strip().encode("utf-8", "replace") if scheme.lower() == "bearer" else None


def scrape_allowed(authorization: str | None, metrics_token: str | None) -> bool:
    """A Prometheus scrape (the service's /metrics, a cluster worker's own endpoint): the metrics token when set."""
    if metrics_token is None:
        return True
    given = _bearer(authorization)
    return given is not None and _matches(given, metrics_token.encode("utf-8"))


@dataclass(frozen=True)
class Credentials:
    """``server``'s credentials and policy as one value: SIGHUP swaps it whole (``Auth.update``)."""

    admin_token: bytes | None
    viewer_tokens: tuple[bytes, ...]
    metrics_token: str | None
    users: dict[str, UserConfig]
    reads_open: bool
    changes_open: bool
    proxies: tuple[Network, ...]
    session_ttl_s: float

    @classmethod
    def of(cls, server: ServerConfig) -> Credentials:
        def raw(token: str | None) -> bytes | None:
            return None if token is None else token.encode("utf-8")

        return cls(raw(server.token), tuple(t.encode("utf-8") for t in server.viewer_tokens),
                   server.metrics_token, {u.name: u for u in server.users}, reads_open(server),
                   not admin_credentials(server),
                   tuple(ipaddress.ip_network(p, strict=False) for p in server.trusted_proxies), server.session_ttl_s)

    def token_role(self, given: bytes) -> str | None:
        """The role of a bearer token; every token is compared, so the time says nothing about which matched."""
        admin = _matches(given, self.admin_token)
        viewer = any([_matches(given, t) for t in self.viewer_tokens])
        return "admin" if admin else "viewer" if viewer else None


@dataclass
class _Session:
    name: str
    password_hash: str  # a session ends when its user's password changes or the user goes
    expires: float


class Sessions:
    """Logged-in browsers, in memory: a restart logs everybody out. Keyed by a hash of the cookie's random id."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._by_key: dict[bytes, _Session] = {}

    @staticmethod
    def _key(session_id: str) -> bytes:
        return hashlib.sha256(session_id.encode("utf-8", "replace")).digest()

    def open(self, user: UserConfig, ttl_s: float) -> str:
        now = self.clock()
        if len(self._by_key) >= MAX_SESSIONS:
            self._by_key = {k: s for k, s in self._by_key.items() if s.expires > now}
            while len(self._by_key) >= MAX_SESSIONS:
                del self._by_key[next(iter(self._by_key))]  # the oldest
        session_id = secrets.token_urlsafe(32)
        self._by_key[self._key(session_id)] = _Session(user.name, user.password_hash, now + ttl_s)
        return session_id

    def principal(self, session_id: str, users: dict[str, UserConfig]) -> Principal | None:
        key = self._key(session_id)
        session = self._by_key.get(key)
        if session is None:
            return None
        user = users.get(session.name)
        if session.expires <= self.clock() or user is None or user.password_hash != session.password_hash:
            self._by_key.pop(key, None)
            return None
        return Principal(user.name, user.role)

    def close(self, session_id: str) -> None:
        self._by_key.pop(self._key(session_id), None)


class LoginLimiter:
    """At most ``max_failures`` failed logins per client address (an IPv6 /64) within ``window_s``."""

    def __init__(self, max_failures: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.clock = clock
        self._failures: dict[str, list[float]] = {}

    @staticmethod
    def _key(address: str) -> str:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return address
        return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else str(ip)

    def _recent(self, key: str) -> list[float]:
        since = self.clock() - self.window_s
        recent = [t for t in self._failures.get(key, ()) if t > since]
        if recent:
            self._failures[key] = recent
        else:
            self._failures.pop(key, None)
        return recent

    def retry_after(self, address: str) -> float:
        """Seconds until ``address`` may try again; 0 when it may now."""
        recent = self._recent(self._key(address))
        if len(recent) < self.max_failures:
            return 0.0
        return max(0.0, recent[-self.max_failures] + self.window_s - self.clock())

    def failed(self, address: str) -> None:
        if len(self._failures) >= MAX_LIMITED:
            for key in list(self._failures):
                self._recent(key)
        self._failures.setdefault(self._key(address), []).append(self.clock())

    def succeeded(self, address: str) -> None:
        self._failures.pop(self._key(address), None)


def _refusal(code: int, detail: str, challenge: str | None = None) -> HTTPException:
    return HTTPException(code, detail, headers={"WWW-Authenticate": challenge} if challenge else None)


class Auth:
    """The credentials in force, the sessions and the login limiter of one service (``app.state.auth``)."""

    def __init__(self, server: ServerConfig, metrics: Metrics | None, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.metrics = metrics
        self.host = server.host  # the bound address: a new one in the file takes a restart
        self.credentials = Credentials.of(server)
        self.sessions = Sessions(clock)
        self.limiter = LoginLimiter(server.login_max_failures, server.login_window_s, clock)
        self._verified: dict[bytes, str] = {}

    def update(self, server: ServerConfig) -> None:
        """New credentials (SIGHUP): in force for the next request. Sessions of removed users, or of users whose
        password changed, end; a bearer token removed from the config is refused from now on. Credentials the
        service would refuse to start with are refused (ConfigError), and the old ones stay."""
        server = server.model_copy(update={"host": self.host})
        require_safe_bind(server)
        self.credentials = Credentials.of(server)
        self.limiter.max_failures, self.limiter.window_s = server.login_max_failures, server.login_window_s
        self._verified.clear()

    # -- the decision --------------------------------------------------------------------------------

    async def check(self, need: Requirement, scope: Scope) -> Principal:
        """The principal ``need`` lets in, or an HTTPException saying why not."""
        creds = self.credentials
        authorization = _header(scope, b"authorization")
        scheme, _, value = (authorization or "").partition(" ")
        bearer = _bearer(authorization)
        if need.role == "scrape":
            if scrape_allowed(authorization, creds.metrics_token):
                return Principal("scraper", "viewer")
            raise _refusal(status.HTTP_401_UNAUTHORIZED, "missing or wrong bearer token (server.metrics_token)",
                           'Bearer realm="sightline-metrics"')
        wanted = "viewer" if need.role == "admin" and creds.changes_open else need.role
        anonymous = Principal("anonymous", "admin" if creds.changes_open else "viewer")
        open_here = wanted == "viewer" and creds.reads_open  # a wrong credential costs nothing where none is needed
        principal: Principal | None = None
        if bearer is not None:
            role = creds.token_role(bearer)
            if role is None and not open_here:
                raise self._unauthorized(need, scope, "wrong bearer token")
            principal = Principal("token", role) if role is not None else None
        elif scheme.lower() == "basic" and need.basic and not open_here:
            principal = await self._basic(value.strip(), scope)
        else:
            cookie = _cookie(scope, SESSION_COOKIE)
            principal = self.sessions.principal(cookie, creds.users) if cookie else None
        if principal is None:
            if open_here:
                return anonymous
            raise self._unauthorized(need, scope, "log in, or send a bearer token")
        if RANK[principal.role] < RANK[wanted]:
            raise _refusal(status.HTTP_403_FORBIDDEN, f"the {principal.role} role may not do this (admin only)")
        return principal

    def _unauthorized(self, need: Requirement, scope: Scope, detail: str) -> HTTPException:
        if need.page:
            return HTTPException(status.HTTP_303_SEE_OTHER, "log in first", headers={"Location": LOGIN_PAGE})
        # a browser (Sec-Fetch-Mode) is sent to /login by the page; a Basic challenge would pop a password dialog
        player = need.basic and _header(scope, b"sec-fetch-mode") is None
        return _refusal(status.HTTP_401_UNAUTHORIZED, detail,
                        'Basic realm="sightline", charset="UTF-8"' if player else 'Bearer realm="sightline"')

    async def who(self, scope: Scope) -> Principal | None:
        """The principal of a request to an open route (the page asks who is logged in); None: nobody."""
        try:
            return await self.check(VIEWER, scope)
        except HTTPException:
            return None

    def may_change(self, principal: Principal | None) -> bool:
        return principal is not None and (principal.role == "admin" or self.credentials.changes_open)

    # -- passwords: the login page and HTTP Basic ----------------------------------------------------

    async def _basic(self, value: str, scope: Scope) -> Principal:
        try:
            name, sep, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            name, sep, password = "", "", ""
        if not sep:
            raise _refusal(status.HTTP_401_UNAUTHORIZED, "malformed Basic credentials", 'Basic realm="sightline"')
        if self.credentials.token_role(password.encode("utf-8")) is not None:
            return Principal("token", "viewer")
        user = await self.verify(name, password, scope)
        if user is None:
            raise _refusal(status.HTTP_401_UNAUTHORIZED, "wrong name or password", 'Basic realm="sightline"')
        return Principal(user.name, "viewer")

    async def verify(self, name: str, password: str, scope: Scope) -> UserConfig | None:
        """The user ``name`` if ``password`` is theirs; rate-limited per client address (429), failures counted.
        PBKDF2 runs in a worker thread: never on the event loop."""
        address = client_address(scope, self.credentials.proxies)
        wait = self.limiter.retry_after(address)
        if wait > 0:
            self._count("limited")
            raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, "too many failed logins from this address; "
                                "try again later", headers={"Retry-After": str(int(wait) + 1)})
        user = self.credentials.users.get(name)
        encoded = user.password_hash if user is not None else DUMMY_HASH
        key = hashlib.sha256(b"\0".join(s.encode("utf-8") for s in (name, password, encoded))).digest()
        right = self._verified.get(key) == encoded or await asyncio.to_thread(verify_password, password, encoded)
        if user is None or not right:
            self.limiter.failed(address)
            self._count("wrong")
            log.info("login failed from %s", address)  # never the name: people type passwords there
            return None
        if len(self._verified) >= VERIFIED_CACHE:
            self._verified.clear()
        self._verified[key] = encoded
        self.limiter.succeeded(address)
        return user

    def _count(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.login_failures.labels(reason).inc()

    async def login(self, name: str, password: str, scope: Scope) -> tuple[str, UserConfig]:
        """A new session's id for a right name and password (401 otherwise, 429 when limited)."""
        user = await self.verify(name, password, scope)
        if user is None:
            raise _refusal(status.HTTP_401_UNAUTHORIZED, "wrong name or password")
        log.info("login: %s (%s) from %s", user.name, user.role, client_address(scope, self.credentials.proxies))
        return self.sessions.open(user, self.credentials.session_ttl_s), user

    def logout(self, scope: Scope) -> None:
        cookie = _cookie(scope, SESSION_COOKIE)
        if cookie:
            self.sessions.close(cookie)

    def secure_cookie(self, scope: Scope) -> bool:
        return over_tls(scope, self.credentials.proxies)


def _cookie(scope: Scope, name: str) -> str | None:
    for header in _headers(scope, b"cookie"):
        for part in header.split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key == name:
                return value
    return None
