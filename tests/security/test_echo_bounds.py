"""Issue 11, row 12: every value echoed back in an error is bounded (and redacted).

The issue's example: a 10 MB ``url`` came back whole in the 403 detail.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml
from fastapi import HTTPException
from sightline.model.echo import ELLIPSIS, bounded
from sightline.model.errors import ConfigError
from sightline.stream.config import RunConfig, load_run_config
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.service.app import create_app

from tests.support.api_client import AUTH, BASE_URL, api_client
from tests.support.models import tiny_classifier

SMALL = 2_000  # bytes: any error response or config message stays well under this


def test_bounded_cuts_with_an_ellipsis() -> None:
    assert bounded("abc") == "abc"
    assert bounded("x" * 200) == "x" * 200
    cut = bounded("x" * 10_000)
    assert len(cut) == 200 and cut.endswith(ELLIPSIS)
    assert bounded(12345, limit=3) == "12" + ELLIPSIS


@pytest.mark.timeout(60)
async def test_api_never_echoes_a_long_value_whole(tmp_path: Path) -> None:
    huge = "/" + "a" * 100_000  # past the URL limit, under the body cap (a 10 MB body is a 413, tests/security)
    long_path = str(tmp_path.parent / ("b" * 200) / ("c" * 200) / ("d" * 200) / "clip.mp4")  # outside media_root
    async with api_client(tmp_path / "media", tmp_path / "out") as (client, pipeline):
        r = await client.post("/api/streams", json={"name": "x", "url": huge}, headers=AUTH)
        assert r.status_code == 422 and len(r.content) < SMALL
        assert "at most 4096" in r.json()["detail"]

        r = await client.post("/api/streams", json={"name": "x", "url": long_path}, headers=AUTH)
        assert r.status_code == 403 and len(r.content) < SMALL, r.status_code
        assert "outside the media root" in r.json()["detail"] and ELLIPSIS in r.json()["detail"]

        r = await client.post("/api/streams", json={"name": "x", "url": "webrtc://x", "k" * 100_000: 1}, headers=AUTH)
        assert r.status_code == 422 and len(r.content) < SMALL
        assert "unknown key" in r.json()["detail"]

        r = await client.post("/api/streams", json={"name": "x", "url": "webrtc://x", "loop": "y" * 100_000},
                              headers=AUTH)
        assert r.status_code == 422 and len(r.content) < SMALL

        for method in ("GET", "DELETE"):
            r = await client.request(method, "/api/streams/" + "n" * 50_000, headers=AUTH)
            assert r.status_code == 404 and len(r.content) < SMALL, method
        assert pipeline.names() == []


@pytest.mark.timeout(60)
async def test_every_error_detail_is_bounded_and_redacted_whoever_raises_it(tmp_path: Path) -> None:
    """A handler (or a library error it passes on, e.g. an SDP parser's) that quotes a long input."""
    config = RunConfig(media_root=tmp_path, output_dir=tmp_path / "out")
    app = create_app(Pipeline(tiny_classifier(), config), config, None)

    @app.get("/echo")
    async def echo_back() -> None:
        raise HTTPException(400, "bad offer: rtsp://u:SECRETKEY@cam/x " + "v=0 " * 50_000,
                            headers={"X-Reason": "test"})

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as client:
        r = await client.get("/echo")
        assert r.status_code == 400 and r.headers["x-reason"] == "test"
        detail = r.json()["detail"]
        assert detail.startswith("bad offer: rtsp://***@cam/x v=0") and detail.endswith(ELLIPSIS)
        assert len(detail) <= 1000 and "SECRETKEY" not in r.text
        assert (await client.get("/no/such/route")).status_code == 404


def test_config_errors_never_echo_a_long_key_or_value_whole(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"k" * 100_000: 1, "streams": [{"name": "x", "url": "/" + "u" * 1_000_000}]},
                                   width=10**7))
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    message = str(err.value)
    assert len(message) < SMALL and "unknown key" in message and "at most 4096" in message

    path.write_text(f"? {'d' * 100_000}\n: 1\n? {'d' * 100_000}\n: 2\n")  # explicit keys: any length
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    assert len(str(err.value)) < SMALL and "duplicate key" in str(err.value)
