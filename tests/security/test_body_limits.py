"""Issue #11 row 4: the request body is capped (413) and the token is checked before any of it is read."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import Depends, FastAPI
from sightline.stream.config import ServerConfig
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.service.auth import ADMIN, Auth
from sightline.stream.service.guard import HostPolicy, ServiceGuard
from sightline.stream.service.server import HttpServer

from tests.support.service import make_service

pytestmark = pytest.mark.timeout(60)

TOKEN = "body-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CAP = 4096


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pipeline, object]]:
    tmp_path = tmp_path_factory.mktemp("service")
    pipeline, app = make_service(tmp_path, token=TOKEN, max_body_bytes=CAP)
    yield pipeline, app
    pipeline.shutdown()


@pytest.fixture
async def client(service) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=service[1])
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        yield c


async def test_malformed_json_without_a_token_is_401_not_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/streams", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = await client.post("/api/streams", content=b"{not json", headers={"Content-Type": "application/json", **AUTH})
    assert r.status_code == 422  # with the token the body is read and judged


async def test_a_body_over_the_cap_is_413_declared_or_chunked(client: httpx.AsyncClient,
                                                               service: tuple[Pipeline, object]) -> None:
    big = json.dumps({"name": "x", "url": "webrtc://x", "pad": "a" * CAP}).encode()
    r = await client.post("/api/streams", content=big, headers={"Content-Type": "application/json", **AUTH})
    assert r.status_code == 413 and "server.max_body_bytes" in r.json()["detail"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: transfer-encoding chunked
        for _ in range(8):
            yield b" " * 1024

    r = await client.post("/api/streams", content=chunks(), headers={"Content-Type": "application/json", **AUTH})
    assert r.status_code == 413
    assert "x" not in service[0].names()
    small = {"name": "cam", "url": "webrtc://cam"}
    assert (await client.post("/api/streams", json=small, headers=AUTH)).status_code == 201  # under the cap: fine
    assert (await client.delete("/api/streams/cam", headers=AUTH)).status_code == 200


class CountingReceive:
    """An endless body in 1 KiB chunks; counts what the app pulled."""

    def __init__(self) -> None:
        self.pulled = 0

    async def __call__(self) -> dict[str, object]:
        self.pulled += 1
        return {"type": "http.request", "body": b"x" * 1024, "more_body": True}


async def run_guard(headers: list[tuple[bytes, bytes]]) -> tuple[int, CountingReceive, bool]:
    reached = False
    routes = FastAPI()  # what the guard asks which requirement a route has (auth.py)

    @routes.post("/api/streams", dependencies=[Depends(ADMIN)])
    async def add() -> None: ...

    async def app(scope, receive, send) -> None:
        nonlocal reached
        reached = True

    sent: list[dict[str, object]] = []

    async def send(message) -> None:
        sent.append(message)

    receive = CountingReceive()
    guard = ServiceGuard(app, HostPolicy("127.0.0.1"), Auth(ServerConfig(token=TOKEN), None), CAP)
    scope = {"type": "http", "method": "POST", "path": "/api/streams", "app": routes,
             "headers": [(b"host", b"127.0.0.1:8080"), *headers]}
    await asyncio.wait_for(guard(scope, receive, send), 5)
    return int(sent[0]["status"]), receive, reached


async def test_no_byte_of_the_body_is_read_before_the_token_check() -> None:
    status, receive, reached = await run_guard([(b"transfer-encoding", b"chunked")])
    assert (status, receive.pulled, reached) == (401, 0, False)


async def test_a_declared_length_over_the_cap_is_refused_unread() -> None:
    status, receive, reached = await run_guard([(b"content-length", b"100000000"), (b"authorization",
                                                                                    f"Bearer {TOKEN}".encode())])
    assert (status, receive.pulled, reached) == (413, 0, False)


async def test_an_endless_chunked_body_is_cut_at_the_cap() -> None:
    status, receive, reached = await run_guard([(b"transfer-encoding", b"chunked"), (b"authorization",
                                                                                     f"Bearer {TOKEN}".encode())])
    assert status == 413 and not reached
    assert receive.pulled == CAP // 1024 + 1  # read up to the chunk that passed the cap, not one more


async def test_over_a_real_socket_a_huge_upload_gets_413_before_it_is_sent(service) -> None:
    pipeline, app = service
    server = HttpServer("127.0.0.1", 0)
    await server.start(app)
    try:
        def post_headers_only() -> bytes:
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                sock.sendall(b"POST /api/streams HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                             b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: 100000000\r\n\r\n")
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                return data

        reply = await asyncio.to_thread(post_headers_only)  # the 100 MB body is never sent
        assert reply.startswith(b"HTTP/1.1 413"), reply[:80]
    finally:
        await server.stop()
