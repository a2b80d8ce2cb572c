"""Issue #26: who may watch. Every video, event and page path against every kind of credential, through the real
app on a real socket; HTTP Basic for players; the login session; rate limiting; nothing secret in a log."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from sightline.stream.config import ServerConfig
from sightline.stream.passwords import hash_password, hash_problem, verify_password
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.service.auth import LoginLimiter, Sessions
from sightline.stream.service.server import HttpServer

from tests.support.service import make_service

pytestmark = pytest.mark.timeout(60)
ON_THE_MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")  # the async tests share the module's server

ADMIN = "admin-token-0123456789"
VIEWER = "viewer-token-0123456789"
PASSWORD = "correct horse battery"
USERS = [{"name": "ann", "password_hash": hash_password(PASSWORD, iterations=1000)},
         {"name": "root", "password_hash": hash_password(PASSWORD, iterations=1000), "role": "admin"}]
CREDENTIALS = {"none": {}, "wrong": {"Authorization": "Bearer wrong-token-0123456789"},
               "viewer": {"Authorization": f"Bearer {VIEWER}"}, "admin": {"Authorization": f"Bearer {ADMIN}"}}

# (method, path, what an allowed request gets): every read of video, events, statuses and pages
READS = [
    ("GET", "/api/streams", {200}), ("GET", "/api/streams/cam", {200}), ("GET", "/api/streams/cam/video", {200}),
    ("GET", "/api/streams/cam/snapshot.jpg", {503}),  # no frame yet (a webrtc:// stream nobody publishes)
    ("GET", "/api/streams/cam/mjpeg", {200}), ("GET", "/api/model", {200}),
    ("GET", "/api/events", {404}), ("GET", "/api/events/rules", {404}),  # the event engine is off: past auth, 404
    ("GET", "/api/events/0123456789abcdef/snapshot.jpg", {404}),
    ("GET", "/api/events/0123456789abcdef/clip.mp4", {404}),
    ("GET", "/api/streams/cam/recordings", {200}),  # none yet: an empty list
    ("GET", "/api/streams/cam/recordings/cam.20261207T124501Z.mp4", {404}),
    ("POST", "/api/streams/cam/watch", {422}),  # past auth, the offer itself is judged
    ("GET", "/", {200}), ("GET", "/watch?stream=cam", {200}), ("GET", "/publish?stream=cam", {200}),
]
CHANGES = [("POST", "/api/streams", {422}), ("DELETE", "/api/streams/nope", {404}), ("PUT", "/api/model", {422}),
           ("POST", "/api/streams/cam/webrtc", {422}), ("POST", "/api/events/rules", {404, 422})]
PAGES = {"/", "/watch?stream=cam", "/publish?stream=cam"}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pipeline, object]]:
    pipeline, app = make_service(tmp_path_factory.mktemp("auth"), ("cam",), token=ADMIN, viewer_tokens=[VIEWER],
                                 users=USERS, login_max_failures=3, trusted_proxies=["127.0.0.1/32"])
    yield pipeline, app
    pipeline.shutdown()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def base(service: tuple[Pipeline, object]) -> AsyncIterator[str]:
    server = HttpServer("127.0.0.1", 0)
    await server.start(service[1])  # type: ignore[arg-type]
    yield server.url
    await server.stop()


async def status_of(base: str, method: str, path: str, headers: dict[str, str]) -> tuple[int, httpx.Headers]:
    """The status and headers only: an MJPEG answer is never read past its head."""
    body = {"json": {}} if method in ("POST", "PUT") else {}
    async with httpx.AsyncClient(base_url=base, timeout=10) as client, \
            client.stream(method, path, headers=headers, **body) as response:
        return response.status_code, response.headers


@ON_THE_MODULE_LOOP
@pytest.mark.parametrize("credential", sorted(CREDENTIALS))
@pytest.mark.parametrize(("method", "path", "allowed"), READS + CHANGES)
async def test_each_path_and_credential(base: str, method: str, path: str, allowed: set[int], credential: str
                                        ) -> None:
    code, headers = await status_of(base, method, path, CREDENTIALS[credential])
    may = credential == "admin" or credential == "viewer" and (method, path, allowed) in READS
    if may:
        assert code in allowed, (code, headers)
    elif credential == "viewer":
        assert code == 403
    elif path in PAGES:
        assert code == 303 and headers["location"] == "/login"  # a browser is sent to log in
    else:
        assert code == 401 and headers["www-authenticate"].split()[0] in ("Bearer", "Basic")


@ON_THE_MODULE_LOOP
async def test_health_stays_open_and_metrics_too_without_a_scrape_token(base: str) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/login", "/api/session"):
        assert (await status_of(base, "GET", path, {}))[0] == 200, path


@ON_THE_MODULE_LOOP
async def test_a_player_gets_a_basic_challenge_and_plays_mjpeg_with_basic(base: str) -> None:
    code, headers = await status_of(base, "GET", "/api/streams/cam/mjpeg", {})
    assert code == 401 and headers["www-authenticate"].startswith("Basic realm=")
    code, _ = await status_of(base, "GET", "/api/streams/cam/mjpeg", {"Sec-Fetch-Mode": "no-cors"})
    assert code == 401 and _["www-authenticate"].startswith("Bearer")  # a browser: no password dialog
    for user, password in (("ann", PASSWORD), ("root", PASSWORD), ("anyone", VIEWER)):
        basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        code, headers = await status_of(base, "GET", "/api/streams/cam/mjpeg", {"Authorization": basic})
        assert code == 200 and headers["content-type"].startswith("multipart/x-mixed-replace"), user
    admin_by_basic = "Basic " + base64.b64encode(f"root:{PASSWORD}".encode()).decode()
    assert (await status_of(base, "DELETE", "/api/streams/cam", {"Authorization": admin_by_basic}))[0] == 401
    assert (await status_of(base, "GET", "/api/streams", {"Authorization": admin_by_basic}))[0] == 401


@ON_THE_MODULE_LOOP
async def test_login_sets_a_strict_http_only_session_that_logout_ends_on_the_server(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        r = await client.post("/login", json={"name": "ann", "password": PASSWORD})
        assert r.status_code == 200 and r.json() == {"user": "ann", "role": "viewer", "may_change": False,
                                                      "can_login": True}
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=" in cookie
        assert "Secure" not in cookie  # plain HTTP from a client that is no proxy of ours
        session = client.cookies["sightline_session"]
        assert (await client.get("/api/streams")).status_code == 200
        assert (await client.get("/")).status_code == 200
        assert (await client.delete("/api/streams/cam")).status_code == 403  # a viewer changes nothing
        assert (await client.post("/logout")).status_code == 204
        assert (await client.get("/api/streams")).status_code == 401
    replay = await status_of(base, "GET", "/api/streams", {"Cookie": f"sightline_session={session}"})
    assert replay[0] == 401  # the session ended on the server, not only in that browser
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        r = await client.post("/login", json={"name": "root", "password": PASSWORD},
                              headers={"X-Forwarded-Proto": "https"})  # from 127.0.0.1: a trusted proxy here
        assert "Secure" in r.headers["set-cookie"] and r.json()["may_change"] is True
        cookie = {"Cookie": f"sightline_session={r.cookies['sightline_session']}"}  # httpx keeps Secure for https
        assert (await client.get("/api/session", headers=cookie)).json()["role"] == "admin"
        assert (await client.post("/logout", headers=cookie)).status_code == 204


@ON_THE_MODULE_LOOP
async def test_a_cross_origin_login_or_change_is_refused_whatever_it_carries(base: str) -> None:
    evil = {"Origin": "http://evil.example"}
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        login = {"name": "ann", "password": PASSWORD}
        assert (await client.post("/login", json=login, headers=evil)).status_code == 403
        assert (await client.delete("/api/streams/cam", headers={**evil, **CREDENTIALS["admin"]})).status_code == 403


@ON_THE_MODULE_LOOP
async def test_failed_logins_are_limited_per_client_and_counted(base: str, service: tuple[Pipeline, object]) -> None:
    metrics = service[0].metrics
    before = {r: metrics.login_failures.labels(r)._value.get() for r in ("wrong", "limited")}
    client_a = {"X-Forwarded-For": "203.0.113.7"}  # believed: the peer 127.0.0.1 is a trusted proxy here
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        for _ in range(3):
            r = await client.post("/login", json={"name": "ann", "password": "wrong"}, headers=client_a)
            assert r.status_code == 401
        r = await client.post("/login", json={"name": "ann", "password": PASSWORD}, headers=client_a)
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0  # even the right password, for now
        basic = "Basic " + base64.b64encode(f"ann:{PASSWORD}".encode()).decode()
        r = await client.get("/api/streams/cam/snapshot.jpg", headers={**client_a, "Authorization": basic})
        assert r.status_code == 429  # Basic is a login too
        r = await client.post("/login", json={"name": "ann", "password": PASSWORD},
                              headers={"X-Forwarded-For": "203.0.113.8"})
        assert r.status_code == 200  # another client is not held back
    after = {r: metrics.login_failures.labels(r)._value.get() for r in ("wrong", "limited")}
    assert after["wrong"] - before["wrong"] == 3 and after["limited"] - before["limited"] == 2
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        text = (await client.get("/metrics")).text
    assert 'sightline_login_failures_total{reason="limited"}' in text


def test_forwarded_for_is_believed_only_from_a_trusted_proxy() -> None:
    from sightline.stream.service.auth import client_address

    scope = {"client": ("10.0.0.5", 1), "headers": [(b"x-forwarded-for", b"198.51.100.1, 10.0.0.9")]}
    nets = (__import__("ipaddress").ip_network("10.0.0.0/24"),)
    assert client_address(scope, ()) == "10.0.0.5"  # no trusted proxies: the peer
    assert client_address(scope, nets) == "198.51.100.1"  # the last hop the proxies did not add
    spoofed = {"client": ("198.51.100.2", 1), "headers": [(b"x-forwarded-for", b"203.0.113.1")]}
    assert client_address(spoofed, nets) == "198.51.100.2"


def test_limiter_window_and_sessions_expire_on_a_fake_clock() -> None:
    now = [0.0]
    limiter = LoginLimiter(2, 60, clock=lambda: now[0])
    limiter.failed("2001:db8::1")
    limiter.failed("2001:db8::2")  # the same /64
    assert limiter.retry_after("2001:db8::3") == pytest.approx(60)
    now[0] = 61
    assert limiter.retry_after("2001:db8::3") == 0
    sessions = Sessions(clock=lambda: now[0])
    user = ServerConfig(users=USERS).users[0]
    sid = sessions.open(user, 100)
    assert sessions.principal(sid, {"ann": user}) is not None
    changed = user.model_copy(update={"password_hash": hash_password("new password", iterations=1000)})
    assert sessions.principal(sid, {"ann": changed}) is None  # a new password ends the old sessions
    sid = sessions.open(user, 100)
    now[0] += 101
    assert sessions.principal(sid, {"ann": user}) is None


def test_password_hashes_carry_their_parameters() -> None:
    encoded = hash_password("pw", iterations=1000)
    assert encoded.startswith("pbkdf2_sha256$1000$") and hash_problem(encoded) is None
    assert verify_password("pw", encoded) and not verify_password("pw ", encoded)
    assert hash_problem("pw") is not None and hash_problem(encoded.replace("$1000$", "$999$")) is not None
    with pytest.raises(ValueError, match="password_hash"):
        ServerConfig(users=[{"name": "ann", "password_hash": "plain-text"}])


@ON_THE_MODULE_LOOP
async def test_no_credential_reaches_a_log_line(base: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="sightline")
    caplog.set_level(logging.DEBUG, logger="uvicorn")
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        await client.post("/login", json={"name": "root", "password": PASSWORD}, headers={"X-Forwarded-For": "1.2.3.4"})
        await client.post("/login", json={"name": "secret-typed-here", "password": "wrong-pw-xyz"},
                          headers={"X-Forwarded-For": "1.2.3.5"})
        await client.get("/api/streams", headers=CREDENTIALS["wrong"])
        await client.get("/api/streams/cam/snapshot.jpg", auth=("ann", "basic-wrong-pw"),
                         headers={"X-Forwarded-For": "1.2.3.6"})
        await client.get("/api/streams", headers=CREDENTIALS["viewer"])
        session = client.cookies.get("sightline_session")
    await asyncio.sleep(0.1)
    service_log = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(("sightline", "uvicorn")))
    assert "login: root (admin)" in service_log and "login failed from 1.2.3.5" in service_log
    for secret in (PASSWORD, "wrong-pw-xyz", "secret-typed-here", "basic-wrong-pw", VIEWER, ADMIN,
                   "wrong-token-0123456789", session):
        assert secret and secret not in service_log, secret


@ON_THE_MODULE_LOOP
async def test_the_openapi_document_declares_who_may(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        doc = (await client.get("/openapi.json")).json()
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "cookie", "basic", "metrics"}
    paths = doc["paths"]
    assert {"basic": []} in paths["/api/streams/{name}/mjpeg"]["get"]["security"]
    assert {"basic": []} not in paths["/api/streams"]["post"]["security"]
    assert paths["/metrics"]["get"]["security"] == [{"metrics": []}]
    assert "security" not in paths["/healthz"]["get"] and "security" not in paths["/login"]["post"]


def test_a_cluster_worker_metrics_endpoint_takes_the_scrape_token() -> None:
    from prometheus_client import CollectorRegistry, Gauge
    from sightline.stream.cluster.worker import serve_scrape

    registry = CollectorRegistry()
    Gauge("probe", "a probe", registry=registry).set(1)
    server = serve_scrape(registry, "127.0.0.1", 0, "scrape-token-0123456789")
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        assert httpx.get(url, timeout=5).status_code == 401
        assert httpx.get(url, headers={"Authorization": "Bearer nope"}, timeout=5).status_code == 401
        ok = httpx.get(url, headers={"Authorization": "Bearer scrape-token-0123456789"}, timeout=5)
        assert ok.status_code == 200 and "probe 1.0" in ok.text
    finally:
        server.shutdown()
        server.server_close()


def test_hash_password_reads_stdin_never_argv(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "sightline", "hash-password"], input="s3cret pass\n",
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    encoded = proc.stdout.strip()
    assert hash_problem(encoded) is None and verify_password("s3cret pass", encoded)
    ServerConfig(users=[{"name": "ann", "password_hash": encoded}])  # pastes into the config as printed


def test_a_reload_the_service_would_not_start_with_keeps_the_credentials_in_force() -> None:
    from sightline.model.errors import ConfigError
    from sightline.stream.service.auth import Auth

    auth = Auth(ServerConfig(host="0.0.0.0", token=ADMIN, viewer_tokens=[VIEWER]), None)
    with pytest.raises(ConfigError, match="server.public_read"):
        auth.update(ServerConfig(host="127.0.0.1", token=ADMIN))  # judged on the bound address, not the file's
    assert auth.credentials.viewer_tokens == (VIEWER.encode(),)


OPEN_ROUTES = {"/healthz", "/readyz", "/login", "/logout", "/api/session", "/openapi.json", "/docs",
               "/docs/oauth2-redirect", "/redoc", "/favicon.ico"}


def test_every_route_says_who_may_use_it(service: tuple[Pipeline, object]) -> None:
    """A route added later without a Requirement would be open to anyone who reaches the port: only the listed
    ones are open on purpose (health for probes, the login itself, the API description)."""
    from fastapi.routing import APIRoute, iter_route_contexts
    from sightline.stream.service.auth import requirement_of

    app = service[1]
    contexts = iter_route_contexts(app.router.routes)  # type: ignore[attr-defined]  (as the guard finds them)
    routes = [c.original_route for c in contexts if isinstance(c.original_route, APIRoute)]
    unguarded = sorted({r.path for r in routes if requirement_of(r) is None} - OPEN_ROUTES)
    assert not unguarded, f"routes without a Requirement: {unguarded}"
    assert any(r.path == "/api/streams/{name}/recordings/{file}" for r in routes)
