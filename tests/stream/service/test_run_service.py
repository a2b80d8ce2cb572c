"""`run_service`: the HTTP server shares the pipeline's event loop, starts after the model and
stops after the pipeline (SIGTERM), and a busy port is reported before the model loads."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest
from sightline import synthetic_media as media
from sightline.stream.config import RunConfig
from sightline.stream.service.serve import run_service
from sightline.stream.service.server import ServerBindError

from tests.support.models import tiny_bundle
from tests.support.predictions import prediction_lines
from tests.support.service import spawn_service

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
    """A real `sightline run` process: the API answers once the configured stream exists, a stream can be added,
    and SIGTERM drains the pipeline before the server stops (exit 0, the log written, the port closed).

    The service runs in a child process, not in the test process: signalling the test process itself, after
    hundreds of tests had loaded their libraries into it, crashed it with SIGSEGV inside kill() (seen under gdb)
    while the same SIGTERM to a fresh service process, as users send it, is handled."""
    port = free_port()
    config = config_for(tmp_path, port, str(tiny_bundle().save(tmp_path / "model.pt")))
    proc, log = spawn_service(tmp_path, config.model_dump(mode="json", exclude_defaults=True))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, log.read_text()[-3000:]
                try:
                    r = await client.get("/api/streams/cam")
                    assert r.status_code == 200, "a configured stream must exist once the server answers"
                    if r.json()["frames_inferred"] > 0:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the service did not classify within 60 s"
                await asyncio.sleep(0.1)
            body = {"name": "extra", "url": str(tmp_path / "clip.mp4")}
            r = await client.post("/api/streams", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 201
            assert (await client.get("/readyz")).status_code == 200

        proc.send_signal(signal.SIGTERM)  # run_service's handler: stop the pipeline, then the server
        await asyncio.to_thread(proc.wait, timeout=30)
        out = log.read_text()
        assert proc.returncode == 0, out[-3000:]
        assert "summary after" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert prediction_lines(tmp_path / "out", "cam")
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


async def test_every_state_change_is_refused_from_the_stop_signal_on(tmp_path: Path) -> None:
    """SIGTERM, then while the service drains (held open here by a webhook that never answers): adding a stream,
    swapping the model and adding a rule are 503, not accepted and then abandoned with empty outputs."""
    port = free_port()
    bundle = tiny_bundle().save(tmp_path / "model.pt")
    stall = socket.create_server(("127.0.0.1", 0))  # accepts (the kernel's backlog), never answers
    config = config_for(tmp_path, port, str(bundle)).model_dump(mode="json", exclude_defaults=True)
    config["events"] = {"rules": [{"name": "any", "labels": ["*"], "min_prob": 0.0, "min_duration_s": 0.0}],
                        "outputs": {"webhooks": [{"name": "stalled", "timeout_s": 30, "retries": 0,
                                                  "url": f"http://127.0.0.1:{stall.getsockname()[1]}/hook"}]}}
    auth = {"Authorization": f"Bearer {TOKEN}"}
    proc, log = spawn_service(tmp_path, config)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, log.read_text()[-3000:]
                try:
                    if (await client.get("/api/events")).json()["total"] > 0:
                        break  # an event started: its webhook delivery is now stalled
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "no event within 60 s"
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            assert proc.poll() is None, "the stalled webhook holds the drain open for the test's requests"
            answers = [
                await client.post("/api/streams", json={"name": "late", "url": str(tmp_path / "clip.mp4")},
                                  headers=auth),
                await client.put("/api/model", json={"source": str(bundle)}, headers=auth),
                await client.post("/api/events/rules", json={"name": "late", "labels": ["*"]}, headers=auth),
                await client.delete("/api/events/rules/any", headers=auth),
                await client.delete("/api/streams/cam", headers=auth),
            ]
            assert [r.status_code for r in answers] == [503] * 5, [r.text for r in answers]
            assert (await client.get("/readyz")).status_code == 503
        await asyncio.to_thread(proc.wait, timeout=45)
    finally:
        stall.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (tmp_path / "out" / "late.jsonl").exists()


async def test_once_the_api_changed_a_stream_the_service_runs_until_it_is_told_to_stop(tmp_path: Path) -> None:
    """A replay and a camera: the replay finishes, the operator removes the camera to replace it. Before, the
    run then ended (every remaining stream had finished); now it serves until stopped. A plain replay still ends."""
    from sightline.stream.metrics import Metrics
    from sightline.stream.pipeline.pipeline import Pipeline
    from sightline.stream.service.app import create_app

    from tests.support.models import tiny_classifier

    clip = media.make_test_clip(tmp_path / "clip.mp4", frames=10, fps=10, size=(96, 72))
    replay_only = RunConfig(output_dir=tmp_path / "plain", media_root=tmp_path,
                            streams=[{"name": "replay", "url": str(clip), "mode": "fast"}])
    code = await asyncio.wait_for(Pipeline(tiny_classifier(), replay_only, Metrics()).run(), 30)
    assert code == 0  # the documented replay behaviour: done when its streams are

    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path, server={"token": TOKEN},
                       streams=[{"name": "replay", "url": str(clip), "mode": "fast"},
                                {"name": "cam", "url": str(clip), "loop": True}])
    pipeline = Pipeline(tiny_classifier(), config, Metrics())
    stop = asyncio.Event()
    run = asyncio.create_task(pipeline.run(stop=stop))
    app = create_app(pipeline, config, pipeline.metrics)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        deadline = time.monotonic() + 30
        while (await client.get("/api/streams/replay")).json().get("state") != "ended":  # 404 until started
            assert time.monotonic() < deadline and not run.done()
            await asyncio.sleep(0.1)
        r = await client.delete("/api/streams/cam", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200, r.text
        await asyncio.sleep(1.0)
        assert not run.done(), "removing the camera ended the service"
    stop.set()
    assert await asyncio.wait_for(run, 30) == 0


async def test_keep_alive_requests_are_not_held_back_by_nagle(tmp_path: Path) -> None:
    """uvicorn writes a response's head and body separately; without TCP_NODELAY the body waited for the
    client's delayed ACK: 40 ms on every keep-alive request after the first. The median of nine is far below."""
    import statistics

    from fastapi import FastAPI
    from sightline.stream.config import ServerConfig
    from sightline.stream.service.auth import Auth
    from sightline.stream.service.server import HttpServer

    app = FastAPI()
    app.state.auth, app.state.closing = Auth(ServerConfig(), None), asyncio.Event()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    server = HttpServer("127.0.0.1", 0)
    await server.start(app)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    took = []
    try:
        for _ in range(10):
            started = time.perf_counter()
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0]))
            took.append(time.perf_counter() - started)
    finally:
        writer.close()
        await server.stop()
    assert statistics.median(took[1:]) < 0.02, [round(t * 1000, 1) for t in took]
