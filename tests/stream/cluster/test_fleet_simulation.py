"""The fleet simulation (issue #27) kept honest, and the controller driven through it without Ray: the simulated
worker has the real worker's methods and a real stream's status; the controller's per-worker bookkeeping stays
true through adds, removes, a killed worker, a drain and a restart; adding a stream never scans every stream;
``GET /api/streams`` pages and filters."""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sightline.stream.cluster.answers import raise_for
from sightline.stream.cluster.controller import PLACED, ClusterPipeline
from sightline.stream.cluster.inprocess_ray import InProcessRay
from sightline.stream.cluster.launch import cluster_app
from sightline.stream.cluster.simulated_worker import SimulatedWorker
from sightline.stream.cluster.worker import PipelineWorker
from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.errors import TooManyStreamsError, UnknownStreamError
from sightline.stream.service.models import StreamList, StreamStatus
from sightline.stream.service.server import HttpServer

from tests.support import browsers
from tests.support.processes import stop_process

TOKEN = "fleet-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def public_methods(cls: type) -> dict[str, inspect.Signature]:
    """Plain methods (the simulation's own knob, the classmethod ``with_load_time``, is not a worker call)."""
    return {name: inspect.signature(member) for name, member in vars(cls).items()
            if inspect.isfunction(member) and not name.startswith("_")}


def test_the_simulated_worker_has_the_real_workers_methods_and_signatures() -> None:
    real, simulated = public_methods(PipelineWorker), public_methods(SimulatedWorker)
    assert set(simulated) == set(real)
    for name, signature in real.items():
        assert simulated[name] == signature, name
    assert inspect.signature(SimulatedWorker.__init__) == inspect.signature(PipelineWorker.__init__)


def test_the_simulated_worker_refuses_by_the_registrys_rules(tmp_path: Path) -> None:
    """A duplicate name, a full worker and an unknown removal: the kinds a real worker answers (answers.py), the
    registry's messages, and the controller raises the pipeline's errors again from them."""
    worker = SimulatedWorker(config(tmp_path, max_streams=1).model_dump(mode="json"), "w1")
    assert "status" in worker.add_stream(camera(1).model_dump(mode="json"))
    duplicate = worker.add_stream(camera(1).model_dump(mode="json"))
    assert duplicate == {"error": "duplicate", "detail": "a stream named 'cam-001' already exists"}
    full = worker.add_stream(camera(2).model_dump(mode="json"))
    assert full["error"] == "too_many" and "server.max_streams" in full["detail"]
    with pytest.raises(TooManyStreamsError):
        raise_for(full)
    assert worker.remove_stream("cam-001")["status"]["state"] == "stopped"
    unknown = worker.remove_stream("cam-001")
    assert unknown == {"error": "unknown", "detail": "no stream named 'cam-001'"}
    with pytest.raises(UnknownStreamError):
        raise_for(unknown)
    assert worker.statuses() == [] and "status" in worker.add_stream(camera(2).model_dump(mode="json"))


def config(tmp_path: Path, workers: int = 4, heartbeat_s: float = 0.2, **server: Any) -> RunConfig:
    (tmp_path / "model-a.pt").write_bytes(b"simulated")
    return RunConfig.model_validate({
        "model": {"source": str(tmp_path / "model-a.pt"), "device": "cpu"}, "output_dir": str(tmp_path / "out"),
        "server": {"token": TOKEN, "port": 0, "max_streams": 500, **server},
        "cluster": {"workers": workers, "cpus_per_worker": 1, "worker_fps": 100, "heartbeat_s": heartbeat_s,
                    "worker_timeout_s": 2, "ray": {"namespace": "fleet-test"}}})


def camera(i: int, infer_fps: float = 2.0) -> StreamConfig:
    return StreamConfig(name=f"cam-{i:03d}", url=f"rtsp://user:secret@127.0.{i // 256}.{i % 256}:554/main",
                        infer_fps=infer_fps)


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[ClusterPipeline, InProcessRay, Any]]:
    ray = InProcessRay()
    cfg = config(tmp_path, **getattr(request, "param", {}))
    controller = ClusterPipeline(cfg, ray, worker_class=SimulatedWorker)
    controller.start()
    yield controller, ray, cfg
    controller.shutdown()
    ray.shutdown()


def test_a_simulated_status_is_a_real_streams_status(cluster) -> None:
    controller, _, _ = cluster
    controller.add_stream(camera(1))
    status = controller.statuses()[0]
    assert set(StreamStatus.model_fields) <= set(status)
    parsed = StreamStatus.model_validate(status)
    assert parsed.state == "running" and "secret" not in json.dumps(status) and parsed.inputs[0].name == "main"
    assert status["worker"] and status["model"] and len(parsed.prediction or []) == 5


def recount(controller: ClusterPipeline) -> dict[str, tuple[list[str], float]]:
    """Each worker's streams and asked frames/s, counted from the placements (what ``_assign`` must keep)."""
    out: dict[str, tuple[list[str], float]] = {h.worker_id: ([], 0.0) for h in controller.worker_handles()}
    for p in controller.placements():
        if p.worker is not None:
            names, asked = out[p.worker]
            out[p.worker] = ([*names, p.config.name], asked + p.asked_fps)
    return {w: (sorted(names), round(asked, 6)) for w, (names, asked) in out.items()}


def kept(controller: ClusterPipeline) -> dict[str, tuple[list[str], float]]:
    return {h.worker_id: (sorted(h.streams), round(h.asked_fps, 6)) for h in controller.worker_handles()}


def test_each_workers_streams_and_load_stay_true_through_every_move(cluster, tmp_path: Path) -> None:
    controller, ray, cfg = cluster
    for i in range(40):
        controller.add_stream(camera(i, infer_fps=1.0 + i % 3))
    assert kept(controller) == recount(controller)
    assert sorted(len(h.streams) for h in controller.worker_handles()) == [10, 10, 10, 10]
    for i in range(0, 40, 4):
        controller.remove_stream(f"cam-{i:03d}")
    assert kept(controller) == recount(controller) and len(controller.names()) == 30

    victim = max(controller.worker_handles(), key=lambda h: len(h.streams))
    moving = set(victim.streams)
    ray.kill(victim.actor)
    controller.refresh()  # the heartbeat sees it gone and places its streams on the others
    assert victim.worker_id not in controller.worker_ids()
    assert {p.config.name for p in controller.placements() if p.state == PLACED} >= moving
    assert kept(controller) == recount(controller)

    drained = next(h for h in controller.worker_handles() if h.streams)
    moved = controller.drain(drained.worker_id)
    assert moved and not drained.streams and kept(controller) == recount(controller)
    assert all(controller.get(n).placement.worker != drained.worker_id for n in moved)

    controller.detach()  # a new controller adopts the workers and the table: the same bookkeeping
    again = ClusterPipeline(cfg, ray, worker_class=SimulatedWorker)
    again.start()
    try:
        busy = {w: v for w, v in kept(again).items() if v[0]}  # a restarted controller may add an empty worker
        assert kept(again) == recount(again) and busy == {w: v for w, v in kept(controller).items() if v[0]}
        assert all(p.state == PLACED for p in again.placements()) and len(again.names()) == 30
    finally:
        again.detach()


class CountingDict(dict):
    """The controller's stream dict, counting the times something walks all of it."""

    walks = 0

    def values(self):  # noqa: ANN201
        CountingDict.walks += 1
        return super().values()

    def items(self):  # noqa: ANN201
        CountingDict.walks += 1
        return super().items()

    def __iter__(self):  # noqa: ANN204
        CountingDict.walks += 1
        return super().__iter__()


def test_adding_a_stream_never_walks_every_stream(cluster) -> None:
    """Placement reads each worker's kept load: adding S streams is O(S x workers), not O(S^2)."""
    controller, _, _ = cluster
    controller._streams = CountingDict(controller._streams)
    CountingDict.walks = 0
    for i in range(30):
        controller.add_stream(camera(i))
    assert CountingDict.walks == 0
    assert len(controller.names()) == 30


@pytest.fixture
async def api(cluster) -> Any:
    controller, _, cfg = cluster
    for i in range(7):
        controller.add_stream(camera(i))
    app = cluster_app(controller, cfg)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1",
                                 headers=AUTH) as client:
        yield controller, client


async def test_the_stream_list_pages_and_filters(api) -> None:
    controller, client = api
    whole = (await client.get("/api/streams")).json()
    StreamList.model_validate(whole)
    names = [s["name"] for s in whole["streams"]]
    assert names == [f"cam-{i:03d}" for i in range(7)] and whole["total"] == 7
    page = (await client.get("/api/streams", params={"offset": 2, "limit": 3})).json()
    assert [s["name"] for s in page["streams"]] == names[2:5] and page["total"] == 7
    assert (await client.get("/api/streams", params={"offset": 10})).json() == {**whole, "streams": []}
    assert (await client.get("/api/streams", params={"state": "running"})).json()["total"] == 7
    controller.get("cam-003").placement.status["state"] = "failed"  # as a worker would report it
    failed = (await client.get("/api/streams", params=[("state", "failed"), ("state", "reconnecting")])).json()
    assert [s["name"] for s in failed["streams"]] == ["cam-003"] and failed["total"] == 1
    for bad in ({"limit": 0}, {"offset": -1}, {"limit": 10_001}):
        assert (await client.get("/api/streams", params=bad)).status_code == 422


PAGE = """return {cards: [...document.querySelectorAll('#streams .stream')].map(li => li.dataset.name),
  status: document.getElementById('status').textContent, pager: !document.getElementById('pager').hidden};"""


@pytest.mark.slow
@pytest.mark.parametrize("cluster", [{"public_read": True}], indirect=True)  # the page reads without a login
async def test_the_page_shows_a_fleet_a_page_at_a_time(cluster, tmp_path: Path) -> None:
    """60 cameras: the page asks for 48 at a time, pages forward and back, and "problems only" shows the one down."""
    if browsers.chromium() is None or browsers.chromedriver() is None:
        pytest.fail("chromium and chromium-driver (Debian packages) are needed")  # CI installs them
    controller, _, cfg = cluster
    for i in range(60):
        controller.add_stream(camera(i))
    server = HttpServer("127.0.0.1", 0)
    await server.start(cluster_app(controller, cfg))
    driver, url = await asyncio.to_thread(browsers.start_chromedriver)
    web = None
    try:
        web = await asyncio.to_thread(browsers.WebDriver, url, tmp_path / "profile")
        await asyncio.to_thread(web.open, f"{server.url}/")

        async def shown(status: str) -> dict[str, Any]:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                page = await asyncio.to_thread(web.run, PAGE)
                if page["status"] == status:
                    return page
                await asyncio.sleep(0.1)
            raise AssertionError(f"the page never said {status!r} (last: {page})")

        first = await shown("1\u201348 of 60 stream(s)")
        assert first["cards"] == [f"cam-{i:03d}" for i in range(48)] and first["pager"]
        await asyncio.to_thread(web.run, "document.getElementById('next').click();")
        second = await shown("49\u201360 of 60 stream(s)")
        assert second["cards"] == [f"cam-{i:03d}" for i in range(48, 60)]
        controller.get("cam-007").placement.status["state"] = "failed"  # as its worker would report it
        await asyncio.to_thread(web.run, "document.getElementById('problems').click();")
        down = await shown("1 stream(s) with a problem")
        assert down["cards"] == ["cam-007"] and not down["pager"]
    finally:
        if web is not None:
            await asyncio.to_thread(web.close)
        await asyncio.to_thread(stop_process, driver)
        await server.stop()


class StuckWorker(SimulatedWorker):
    """w1 never answers a heartbeat (until released); the others do. In one process, so the counts are shared."""

    asked = 0
    release = threading.Event()

    def statuses(self) -> list[dict[str, Any]]:
        if self.worker_id == "w1":
            StuckWorker.asked += 1
            StuckWorker.release.wait(30)
        return super().statuses()


def test_a_silent_worker_is_asked_once_then_replaced_and_its_streams_move(tmp_path: Path) -> None:
    ray = InProcessRay()
    controller = ClusterPipeline(config(tmp_path, workers=2), ray, worker_class=StuckWorker)
    try:
        controller.start()
        for i in range(6):
            controller.add_stream(camera(i))
        stuck = set(controller._workers["w1"].streams)
        assert stuck
        deadline = time.monotonic() + 20
        while "w1" in controller.worker_ids() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "w1" not in controller.worker_ids()  # worker_timeout_s (2 s) of silence
        assert StuckWorker.asked == 1  # ten heartbeats, one question: no pile-up on a slow worker
        while not all(controller.get(n).placement.state == PLACED for n in stuck) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(controller.get(n).placement.worker not in (None, "w1") for n in stuck)
    finally:
        StuckWorker.release.set()
        controller.shutdown()
        ray.shutdown()
