"""`run_service`: the HTTP server shares the pipeline's event loop, starts after the model and
stops after the pipeline (SIGTERM), and a busy port is reported before the model loads."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest
from sightline.stream import media
from sightline.stream.config import RunConfig
from sightline.stream.http_server import ServerBindError
from sightline.stream.run_cli import run_service

from tests.support.models import tiny_bundle

pytestmark = pytest.mark.timeout(60)

TOKEN = "run-service-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config_for(tmp_path: Path, port: int, model: str) -> RunConfig:
    clip = media.make_test_clip(tmp_path / "clip.mp4", frames=20, fps=10, size=(160, 120))
    return RunConfig(model={"source": model, "device": "cpu"}, output_dir=tmp_path / "out", media_root=tmp_path,
                     server={"port": port, "token": TOKEN},
                     streams=[{"name": "cam", "url": str(clip), "loop": True}])


async def test_serves_the_api_until_sigterm_then_drains(tmp_path: Path) -> None:
    port = free_port()
    config = config_for(tmp_path, port, str(tiny_bundle().save(tmp_path / "model.pt")))
    service = asyncio.create_task(run_service(config))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            deadline = time.monotonic() + 30
            while True:
                assert not service.done(), service.result()
                try:
                    r = await client.get("/api/streams/cam")
                    assert r.status_code == 200, "a configured stream must exist once the server answers"
                    if r.json()["frames_inferred"] > 0:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the service did not classify within 30 s"
                await asyncio.sleep(0.1)
            body = {"name": "extra", "url": str(tmp_path / "clip.mp4")}
            r = await client.post("/api/streams", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 201
            assert (await client.get("/readyz")).status_code == 200

        os.kill(os.getpid(), signal.SIGTERM)  # run_service's handler: stop the pipeline, then the server
        assert await asyncio.wait_for(asyncio.shield(service), 20) == 0
    finally:
        if not service.done():
            service.cancel()  # run_service still shuts the pipeline down on the way out
            await asyncio.gather(service, return_exceptions=True)
    assert (tmp_path / "out" / "cam.jsonl").stat().st_size > 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


async def test_a_busy_port_is_an_error_before_the_model_loads(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = config_for(tmp_path, port, str(tmp_path / "no-such-model.pt"))  # loading it would fail differently
        with pytest.raises(ServerBindError, match=f"cannot listen on 127.0.0.1:{port}"):
            await asyncio.wait_for(run_service(config), 10)
