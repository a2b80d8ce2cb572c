"""Issue #11 row 8: a stream's lifecycle is atomic; racing POST/DELETE of one name: 2xx/404/409, never 500."""

from __future__ import annotations

import asyncio
import random
import threading
from pathlib import Path

import httpx
import pytest
from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.errors import DuplicateStreamError, StreamBusyError
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.service.app import create_app

from tests.support.models import tiny_classifier
from tests.support.service import make_service

pytestmark = pytest.mark.timeout(180)

TOKEN = "race-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NAMES = [f"race-{i}" for i in range(5)]


def stream_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith(("source-race-", "output-race-"))}


async def test_200_parallel_mixed_posts_and_deletes_of_the_same_names(tmp_path: Path) -> None:
    pipeline, app = make_service(tmp_path, token=TOKEN)
    rng = random.Random(11)
    requests = [(rng.choice(("POST", "DELETE")), rng.choice(NAMES)) for _ in range(200)]
    try:
        transport = httpx.ASGITransport(app=app)  # app exceptions are raised here, not turned into a quiet 500
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", timeout=60) as client:

            async def one(method: str, name: str) -> int:
                if method == "POST":
                    r = await client.post("/api/streams", json={"name": name, "url": f"webrtc://{name}"}, headers=AUTH)
                else:
                    r = await client.delete(f"/api/streams/{name}", headers=AUTH)
                return r.status_code

            codes = await asyncio.wait_for(asyncio.gather(*(one(m, n) for m, n in requests)), 120)
            by_method: dict[str, set[int]] = {"POST": set(), "DELETE": set()}
            for (method, _), code in zip(requests, codes, strict=True):
                by_method[method].add(code)
            assert by_method["POST"] <= {201, 409}, by_method
            assert by_method["DELETE"] <= {200, 404, 409}, by_method
            assert 201 in by_method["POST"] and 200 in by_method["DELETE"]  # the race really added and removed

            # whatever is left is consistent: listed, fetchable, and removable once
            listed = (await client.get("/api/streams")).json()["streams"]
            assert sorted(s["name"] for s in listed) == sorted(pipeline.names())
            for name in NAMES:
                present = name in pipeline.names()
                assert (await client.get(f"/api/streams/{name}")).status_code == (200 if present else 404)
                if present:
                    assert (await client.delete(f"/api/streams/{name}", headers=AUTH)).status_code == 200
                assert (await client.delete(f"/api/streams/{name}", headers=AUTH)).status_code == 404
            assert (await client.get("/readyz")).status_code == 200
            assert (await client.get("/metrics")).status_code == 200
        assert pipeline.names() == []
        assert stream_threads() == set()  # every started stream was stopped and joined
    finally:
        await asyncio.to_thread(pipeline.shutdown)


async def test_a_second_delete_while_the_first_runs_is_409_and_the_name_stays_reserved(tmp_path: Path) -> None:
    pipeline, _ = make_service(tmp_path, ("cam",))
    try:
        runtime = pipeline.get("cam")
        runtime.removing = True  # as the first remove_stream marks it before it stops the stream
        with pytest.raises(StreamBusyError):
            pipeline.remove_stream("cam")
        with pytest.raises(DuplicateStreamError, match="being removed"):
            pipeline.add_stream(StreamConfig(name="cam", url="webrtc://cam"))
        runtime.removing = False
        assert pipeline.remove_stream("cam") is runtime
        assert pipeline.names() == []
    finally:
        await asyncio.to_thread(pipeline.shutdown)


async def test_a_stream_whose_outputs_cannot_open_is_refused_and_leaves_nothing_behind(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the output directory should be")
    config = RunConfig(output_dir=blocker / "out", media_root=tmp_path, server={"token": TOKEN})
    pipeline = Pipeline(tiny_classifier(), config, Metrics())
    pipeline.start()
    try:
        app = create_app(pipeline, config, pipeline.metrics)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
            body = {"name": "cam", "url": "webrtc://cam"}
            r = await client.post("/api/streams", json=body, headers=AUTH)
            assert r.status_code == 503 and "cannot open its outputs" in r.json()["detail"]
            assert pipeline.names() == [] and stream_threads() == set()
            # the name is free again once the batcher let go of it: 503 again, not a stuck 409
            deadline = asyncio.get_running_loop().time() + 10
            while (r := await client.post("/api/streams", json=body, headers=AUTH)).status_code == 409:
                assert asyncio.get_running_loop().time() < deadline, r.text
                await asyncio.sleep(0.05)
            assert r.status_code == 503
    finally:
        await asyncio.to_thread(pipeline.shutdown)
