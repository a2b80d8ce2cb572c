"""Issue #11 row 5: server.max_streams caps the registry (429 over the API, an error in the config file)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sightline.model.errors import ConfigError
from sightline.stream.config import ServerConfig, load_run_config

from tests.support.service import make_service

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[object, httpx.AsyncClient]]:
    pipeline, app = make_service(tmp_path, ("a", "b"), max_streams=3)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
            yield pipeline, client
    finally:
        await asyncio.to_thread(pipeline.shutdown)


async def test_streams_beyond_max_streams_are_429_with_a_clear_message(service) -> None:
    pipeline, client = service
    assert (await client.post("/api/streams", json={"name": "c", "url": "webrtc://c"})).status_code == 201
    r = await client.post("/api/streams", json={"name": "d", "url": "webrtc://d"})
    assert r.status_code == 429
    assert "3 streams" in r.json()["detail"] and "server.max_streams" in r.json()["detail"]
    assert r.headers["retry-after"]
    assert sorted(pipeline.names()) == ["a", "b", "c"]
    assert (await client.delete("/api/streams/a")).status_code == 200
    assert (await client.post("/api/streams", json={"name": "d", "url": "webrtc://d"})).status_code == 201


async def test_parallel_posts_never_exceed_the_cap(service) -> None:
    pipeline, client = service
    codes = await asyncio.gather(*(client.post("/api/streams", json={"name": f"p{i}", "url": f"webrtc://p{i}"})
                                   for i in range(12)))
    assert sorted(r.status_code for r in codes) == [201] + [429] * 11
    assert len(pipeline.names()) == 3


def test_a_config_file_over_the_cap_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "many.yaml"
    streams = "".join(f"  - {{name: s{i}, url: 'webrtc://s{i}'}}\n" for i in range(3))
    path.write_text(f"server:\n  max_streams: 2\nstreams:\n{streams}")
    with pytest.raises(ConfigError, match=r"streams: 3 streams configured, more than server.max_streams \(2\)"):
        load_run_config(path)


def test_max_streams_has_a_sane_default() -> None:
    assert 1 <= ServerConfig().max_streams <= 256
