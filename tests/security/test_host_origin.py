"""Issue #11 row 6: Host names the service (DNS rebinding), state changes from a foreign Origin are refused."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.service.guard import HostPolicy, host_name

from tests.support.service import make_service

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pipeline, object]]:
    tmp_path = tmp_path_factory.mktemp("service")
    # no token: the Host and Origin checks must hold on their own
    pipeline, app = make_service(tmp_path, ("cam",), allowed_hosts=["cams.example.com", ".lan.example"],
                                 allowed_origins=["https://console.example.com"])
    yield pipeline, app
    pipeline.shutdown()


@pytest.fixture
async def client(service) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=service[1]), base_url="http://127.0.0.1:8080") as c:
        yield c


@pytest.mark.parametrize("host", ["127.0.0.1:8080", "localhost:8080", "[::1]:8080", "10.1.2.3", "cams.example.com",
                                  "CAMS.example.com.:443", "a.lan.example", "lan.example"])
async def test_own_names_and_ip_literals_are_served(client: httpx.AsyncClient, host: str) -> None:
    assert (await client.get("/api/streams", headers={"Host": host})).status_code == 200


@pytest.mark.parametrize("host", ["attacker.example:8080", "localhost.attacker.example", "example.com", "",
                                  "cams.example.com.evil.net"])
async def test_a_rebinding_host_name_gets_nothing(client: httpx.AsyncClient, host: str) -> None:
    for method, path in (("GET", "/api/streams"), ("GET", "/metrics"), ("DELETE", "/api/streams/cam")):
        r = await client.request(method, path, headers={"Host": host})
        assert r.status_code == 403, (method, path, r.status_code)
        assert "allowed_hosts" in r.json()["detail"]


async def test_a_foreign_origin_cannot_change_state_even_without_a_token(client: httpx.AsyncClient,
                                                                          service) -> None:
    for origin in ("http://attacker.example", "null", "http://127.0.0.1:3000", "file://"):
        r = await client.delete("/api/streams/cam", headers={"Origin": origin})
        assert r.status_code == 403, origin
        r = await client.post("/api/streams", json={"name": "x", "url": "webrtc://x"}, headers={"Origin": origin})
        assert r.status_code == 403, origin
    assert service[0].names() == ["cam"]
    # reading is not state-changing: a foreign page can't read the answer anyway (no CORS headers)
    assert (await client.get("/api/streams", headers={"Origin": "http://attacker.example"})).status_code == 200


async def test_the_own_origin_and_listed_origins_may_change_state(client: httpx.AsyncClient, service) -> None:
    r = await client.post("/api/streams", json={"name": "x", "url": "webrtc://x"},
                          headers={"Origin": "http://127.0.0.1:8080"})
    assert r.status_code == 201
    r = await client.delete("/api/streams/x", headers={"Origin": "https://console.example.com"})
    assert r.status_code == 200
    r = await client.delete("/api/streams/x")  # no Origin (curl, scripts): the token rule alone applies
    assert r.status_code == 404
    assert service[0].names() == ["cam"]


def test_host_names_are_parsed_without_their_port() -> None:
    assert host_name("Example.COM:8080") == "example.com"
    assert host_name("[::1]:80") == "::1"
    assert host_name("::1") == "::1"
    assert host_name("name.") == "name"


def test_the_bind_address_is_a_served_name_unless_it_is_a_wildcard() -> None:
    assert HostPolicy("cams.internal").host_allowed("cams.internal:8080")
    assert not HostPolicy("0.0.0.0").host_allowed("cams.internal")
    assert HostPolicy("0.0.0.0", ["*"]).host_allowed("anything.example")
    assert HostPolicy("127.0.0.1").host_allowed(None)  # HTTP/1.0 without Host: not a browser
