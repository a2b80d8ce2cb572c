"""The service on a real multi-node Ray cluster (``ray.cluster_utils.Cluster``: a head and two worker nodes,
every one bound to 127.0.0.1), driven through its HTTP API. Run by test_cluster.py inside a network namespace
that has only loopback (Ray picks "the machine's address" whatever it is told); never run it outside one.

The tests share one cluster and one service and run in file order, each leaving the state the next one
starts from: 4 looping file streams spread over 2 workers -> targets -> add/remove -> a node removed (failover)
-> targets follow -> drain/resume -> a restarted controller adopts it all -> distributed eval == local eval.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sightline import synthetic_media as media
from sightline.model.bundle import ModelBundle
from sightline.stream.cluster.launch import cluster_app
from sightline.stream.config import RunConfig

from tests.support.models import tiny_bundle
from tests.support.predictions import prediction_lines

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(240)]

TOKEN = "cluster-token-1234"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NAMES = ("cam-1", "cam-2", "cam-3", "cam-4")
FAILOVER_BOUND_S = 15.0
EXACT = ("exact-1", "exact-2")  # realtime file streams with room for 10 s of frames: none dropped, every seq logged
MODEL_KEYS = {"id", "source", "backend", "requested_backend", "precision", "arch", "classes", "device"}


def only_loopback() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def add_node(cluster: Any) -> Any:
    """A worker node with 2 CPUs; once more if its raylet did not register in Ray's 30 s (a loaded machine)."""
    try:
        return cluster.add_node(num_cpus=2)
    except Exception as exc:
        if "timed out during startup" not in str(exc):
            raise
        return cluster.add_node(num_cpus=2)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    if not only_loopback():  # not a skip: running Ray here would bind the machine's interface
        pytest.fail("cluster_cases.py runs only inside a loopback-only network namespace (see test_cluster.py)")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray
    from ray.cluster_utils import Cluster

    # A shared, loaded CI machine can starve a raylet for seconds: Ray must not declare nodes dead for that
    # (the controller's own worker_timeout_s is what moves streams; Ray's node-death notice only speeds it up).
    patient = {"health_check_failure_threshold": 8, "health_check_timeout_ms": 10000}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False,
                                                            "_system_config": patient})
    for _ in range(2):
        add_node(cluster)
    ray.init(address=cluster.address, namespace="sightline-test", include_dashboard=False, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="module")
def media_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media")
    media.make_test_clip(root / "clip.mp4", frames=40, fps=10, size=(96, 72))
    tiny_bundle().save(root / "tiny.pt")
    tiny_bundle(seed=1).save(root / "tiny-b.pt")  # what PUT /api/model swaps to
    (root / "garbage.pt").write_bytes(b"not a checkpoint at all")
    return root


def model_id(path: Path) -> str:
    from sightline.stream.inference.model_holder import MODEL_ID_LENGTH

    return ModelBundle.load(path).content_hash()[:MODEL_ID_LENGTH]


@pytest.fixture(scope="module")
def config(media_root: Path) -> RunConfig:
    clip = str(media_root / "clip.mp4")
    return RunConfig.model_validate({
        "model": {"source": str(media_root / "tiny.pt"), "device": "cpu"},
        "output_dir": str(media_root.parent / "out"), "media_root": str(media_root),
        "server": {"token": TOKEN, "port": 0},
        "cluster": {"workers": 2, "cpus_per_worker": 1, "worker_fps": 100, "heartbeat_s": 0.5, "worker_timeout_s": 6,
                    "default_stream_fps": 90,
                    "metrics_host": "127.0.0.1", "ray": {"namespace": "sightline-test"}},
        "streams": [{"name": n, "url": clip, "loop": True} for n in NAMES]})


class Service:
    """The current controller and an HTTP client on its app (replaced when the controller restarts)."""

    controller: Any
    client: httpx.AsyncClient

    async def use(self, controller: Any, config: RunConfig) -> None:
        app = cluster_app(controller, config)  # as `sightline run --ray` makes it
        if getattr(self, "client", None) is not None:
            await self.client.aclose()
        self.controller = controller
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def service(ray_cluster: Any, config: RunConfig) -> AsyncIterator[Service]:
    import ray
    from sightline.stream.cluster.controller import ClusterPipeline

    controller = ClusterPipeline(config, ray)
    await asyncio.to_thread(controller.start)
    svc = Service()
    await svc.use(controller, config)
    yield svc
    await svc.client.aclose()
    await asyncio.to_thread(svc.controller.shutdown)


async def streams(svc: Service) -> dict[str, dict[str, Any]]:
    r = await svc.client.get("/api/streams")
    assert r.status_code == 200
    return {s["name"]: s for s in r.json()["streams"]}


async def wait_for(predicate, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not await predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.2)
    return time.monotonic() - started


def all_live(svc: Service, names: tuple[str, ...] = NAMES, min_frames: int = 1, not_on: str | None = None):
    async def check() -> bool:
        s = await streams(svc)
        return all(n in s and s[n]["state"] == "live" and s[n]["frames_inferred"] >= min_frames
                   and s[n]["worker"] is not None and s[n]["worker"] != not_on for n in names)
    return check


async def test_streams_spread_over_workers(service: Service) -> None:
    await wait_for(all_live(service), 60, "4 streams classified")
    s = await streams(service)
    by_worker: dict[str, list[str]] = {}
    for name in NAMES:
        assert s[name]["node"] == "127.0.0.1" and s[name]["node_id"]
        by_worker.setdefault(s[name]["worker"], []).append(name)
    assert sorted(len(v) for v in by_worker.values()) == [2, 2], by_worker
    workers = (await service.client.get("/api/workers")).json()["workers"]
    assert {w["id"] for w in workers} == set(by_worker)
    assert len({w["node_id"] for w in workers}) == 2  # one per node: Ray spread them by CPUs
    assert all(w["asked_fps"] == 20.0 and w["capacity_fps"] == 100 for w in workers)


async def test_targets_list_each_workers_metrics_endpoint(service: Service) -> None:
    targets = (await service.client.get("/api/cluster/targets")).json()
    workers = {w["id"]: w for w in (await service.client.get("/api/workers")).json()["workers"]}
    assert {t["labels"]["worker"] for t in targets} == set(workers)
    async with httpx.AsyncClient() as plain:
        for t in targets:
            assert len(t["targets"]) == 1 and t["targets"][0].startswith("127.0.0.1:")
            assert t["labels"]["node_id"] == workers[t["labels"]["worker"]]["node_id"]
            body = (await plain.get(f"http://{t['targets'][0]}/metrics")).text
            assert f'sightline_worker_capacity_fps{{worker="{t["labels"]["worker"]}"}} 100.0' in body
            for name in workers[t["labels"]["worker"]]["streams"]:
                assert f'sightline_frames_inferred_total{{stream="{name}"}}' in body


async def test_add_and_remove_through_the_api(service: Service, media_root: Path) -> None:
    body = {"name": "extra", "url": str(media_root / "clip.mp4"), "loop": True}
    assert (await service.client.post("/api/streams", json=body)).status_code == 401
    r = await service.client.post("/api/streams", json=body, headers=AUTH)
    assert r.status_code == 201, r.text
    worker = r.json()["worker"]
    assert worker is not None
    assert (await service.client.post("/api/streams", json=body, headers=AUTH)).status_code == 409
    workers = {w["id"]: w for w in (await service.client.get("/api/workers")).json()["workers"]}
    assert "extra" in workers[worker]["streams"] and workers[worker]["asked_fps"] == 30.0
    await wait_for(all_live(service, ("extra",)), 30, "the added stream classified")
    snap = await service.client.get("/api/streams/extra/snapshot.jpg")  # through the controller, from its worker
    assert snap.status_code == 200 and snap.content[:2] == b"\xff\xd8"
    r = await service.client.delete("/api/streams/extra", headers=AUTH)
    assert r.status_code == 200 and r.json()["state"] == "stopped"
    assert "extra" not in await streams(service)
    workers = {w["id"]: w for w in (await service.client.get("/api/workers")).json()["workers"]}
    assert "extra" not in workers[worker]["streams"] and workers[worker]["asked_fps"] == 20.0
    assert (await service.client.get("/api/streams/extra")).status_code == 404


async def test_a_stream_no_worker_has_room_for_is_reported_unplaced(service: Service) -> None:
    """A WebRTC stream asks cluster.default_stream_fps (90 here); each worker has 100 - 20 spare."""
    r = await service.client.post("/api/streams", json={"name": "big", "url": "webrtc://big"}, headers=AUTH)
    assert r.status_code == 201, r.text
    assert r.json()["state"] == "unplaced" and r.json()["worker"] is None
    assert (await streams(service))["big"]["state"] == "unplaced"
    assert 'sightline_cluster_streams{placement="unplaced"} 1.0' in (await service.client.get("/metrics")).text
    await asyncio.sleep(1.5)  # retried on every heartbeat: still no room, still listed
    assert (await streams(service))["big"]["state"] == "unplaced"
    r = await service.client.delete("/api/streams/big", headers=AUTH)
    assert r.status_code == 200 and "big" not in await streams(service)


async def test_put_model_swaps_every_worker_at_one_seq_boundary_and_a_bad_model_changes_nothing(
        service: Service, media_root: Path, config: RunConfig) -> None:
    old, new = model_id(media_root / "tiny.pt"), model_id(media_root / "tiny-b.pt")
    r = await service.client.get("/api/model")
    assert r.status_code == 200, r.text
    before = r.json()
    assert set(before) >= MODEL_KEYS and before["id"] == old and before["source"] == str(media_root / "tiny.pt")
    workers = {w["id"] for w in (await service.client.get("/api/workers")).json()["workers"]}
    assert before["workers"] == {w: old for w in workers} and before["mixed"] is False and len(workers) == 2
    clip = str(media_root / "clip.mp4")
    for name in EXACT:
        r = await service.client.post("/api/streams", json={"name": name, "url": clip, "loop": True, "buffer": 100},
                                      headers=AUTH)
        assert r.status_code == 201, r.text
    s = await streams(service)
    assert {s[n]["worker"] for n in EXACT} == workers  # one on each worker
    await wait_for(all_live(service, EXACT, min_frames=5), 30, "the lossless streams classified")

    good = {"source": str(media_root / "tiny-b.pt")}
    assert (await service.client.put("/api/model", json=good)).status_code == 401
    r = await service.client.put("/api/model", json={"source": "/etc/passwd"}, headers=AUTH)
    assert r.status_code == 403 and "model.swap_dir" in r.json()["detail"]
    r = await service.client.put("/api/model", json={"source": str(media_root / "garbage.pt")}, headers=AUTH)
    assert r.status_code == 422, r.text
    bad = r.json()
    assert bad["partial"] is False and "old one keeps serving everywhere" in bad["detail"]
    assert "not a readable PyTorch checkpoint" in bad["detail"]
    assert set(bad["workers"]) == workers
    assert all(not w["swapped"] and w["model"] == old and w["status"] == 422 for w in bad["workers"].values())
    assert (await service.client.get("/api/model")).json() == before  # the old model serves everywhere

    r = await service.client.put("/api/model", json=good, headers=AUTH)
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["swapped"] is True and done["model"]["id"] == new and done["previous"]["id"] == old
    assert done["workers"] == {w: {"swapped": True, "previous": old, "model": new} for w in workers}
    now = (await service.client.get("/api/model")).json()
    assert now["id"] == new and now["mixed"] is False and now["workers"] == {w: new for w in workers}
    assert {w["model"] for w in (await service.client.get("/api/workers")).json()["workers"]} == {new}
    at = {n: s[n]["frames_inferred"] for n in EXACT}

    async def new_model_serving() -> bool:
        now = await streams(service)
        return all(now[n]["model"] == new and now[n]["frames_inferred"] >= at[n] + 5 for n in EXACT)

    await wait_for(new_model_serving, 30, "both lossless streams classified by the new model")
    again = await service.client.put("/api/model", json=good, headers=AUTH)  # already serving: nothing to do
    assert again.status_code == 200 and again.json()["swapped"] is False
    # SIGHUP with --ray: the config file's model, swapped on every worker the same way (already serving here)
    from sightline.stream.cluster.model_control import ClusterSighupReloader

    changed = config.model_copy(update={"model": config.model.model_copy(update={"source": good["source"]})})
    reloader = ClusterSighupReloader(asyncio.get_running_loop(), lambda: changed, config.model)
    hup = await asyncio.to_thread(reloader.reload, service.controller)
    assert hup is not None and not hup.failed and set(hup.answers) == workers and hup.swapped == []
    for name in EXACT:
        r = await service.client.delete(f"/api/streams/{name}", headers=AUTH)
        assert r.status_code == 200 and not r.json()["dropped"], r.json()
        lines = [json.loads(line) for line in prediction_lines(config.output_dir, name)]
        assert [r["seq"] for r in lines] == list(range(len(lines)))  # every frame classified once, in order
        ids = [r["model"] for r in lines]
        assert [m for i, m in enumerate(ids) if i == 0 or ids[i - 1] != m] == [old, new]  # one seq boundary


async def test_watch_gets_the_annotated_video_from_the_owning_worker(service: Service) -> None:
    from aiortc import RTCSessionDescription

    from tests.support.webrtc import loopback_peer, make_offer

    owner = (await streams(service))["cam-2"]["worker"]
    page = await service.client.get("/watch?stream=cam-2")
    assert page.status_code == 200 and "<video" in page.text
    peer = loopback_peer()
    peer.addTransceiver("video", direction="recvonly")
    frames: list[Any] = []

    @peer.on("track")
    def on_track(track: Any) -> None:
        async def read() -> None:
            while True:
                try:
                    frames.append((await track.recv()).to_ndarray(format="rgb24"))
                except Exception:  # noqa: BLE001 -- the track ended
                    return
        asyncio.ensure_future(read())

    try:
        await make_offer(peer)
        offer = {"sdp": peer.localDescription.sdp, "type": "offer"}
        # watching is a read (open on this loopback bind without viewer credentials: tests/security/test_auth.py)
        assert (await service.client.post("/api/streams/nope/watch", json=offer, headers=AUTH)).status_code == 404
        r = await service.client.post("/api/streams/cam-2/watch", json=offer, headers=AUTH)
        assert r.status_code == 200, r.text
        await peer.setRemoteDescription(RTCSessionDescription(**r.json()))

        async def decoded() -> bool:
            return len(frames) >= 3

        await wait_for(decoded, 30, "3 frames of the annotated video decoded")
        assert frames[-1].ndim == 3 and frames[-1].std() > 0  # a picture, not a blank
        video = (await service.client.get("/api/streams/cam-2/video")).json()
        assert video["worker"] == owner and video["viewers"] == 1 and video["frames_encoded"] > 0
    finally:
        await peer.close()


async def test_a_removed_node_moves_its_streams_and_loses_no_written_line(service: Service, ray_cluster: Any,
                                                                          config: RunConfig) -> None:
    s = await streams(service)
    victim = s["cam-1"]["worker"]
    node_id = s["cam-1"]["node_id"]
    moved = tuple(n for n in NAMES if s[n]["worker"] == victim)
    stayed = tuple(n for n in NAMES if n not in moved)
    await asyncio.sleep(1.5)  # the JSONL sinks flush once a second
    written = {n: prediction_lines(config.output_dir, n) for n in moved}
    assert all(len(v) > 0 for v in written.values())
    node = next(n for n in ray_cluster.list_all_nodes() if n.node_id == node_id)
    before = {n: s[n]["frames_decoded"] for n in stayed}
    ray_cluster.remove_node(node, allow_graceful=False)
    removed_at = time.monotonic()
    seen_moving: set[str] = set()
    samples: list[dict[str, dict[str, Any]]] = []

    async def resumed() -> bool:
        now = await streams(service)
        samples.append(now)
        seen_moving.update(n for n in moved if now[n]["state"] in ("moving", "unplaced") or now[n]["moves"])
        return all(now[n]["state"] == "live" and now[n]["worker"] not in (None, victim) for n in NAMES)

    await wait_for(resumed, FAILOVER_BOUND_S, "the moved streams to run on the surviving worker")
    took = time.monotonic() - removed_at
    assert took < FAILOVER_BOUND_S
    assert seen_moving == set(moved)
    # the streams elsewhere never paused: live in every sample, still on their worker, counting up
    for sample in samples:
        for n in stayed:
            assert sample[n]["state"] == "live" and sample[n]["worker"] != victim
    await wait_for(all_live(service, moved, not_on=victim), 15, "moved streams classifying again")
    after = await streams(service)
    assert all(after[n]["frames_decoded"] > before[n] for n in stayed)
    assert all(after[n]["moves"] == 1 for n in moved) and all(after[n]["moves"] == 0 for n in stayed)
    await asyncio.sleep(1.5)
    for n in moved:  # every line on disk before the node went is still there (a new file beside the old ones)
        now = prediction_lines(config.output_dir, n)
        missing = set(written[n]) - set(now)
        assert not missing, f"{n}: {len(missing)} written lines lost"
        assert len(now) > len(written[n])
        for line in now:
            json.loads(line)  # whole lines only
    print(f"failover: {len(moved)} streams resumed {took:.1f} s after their node was removed")


async def test_targets_follow_the_workers(service: Service) -> None:
    async def replaced() -> bool:  # cluster.workers: 2, and the surviving node has a free CPU
        targets = (await service.client.get("/api/cluster/targets")).json()
        workers = (await service.client.get("/api/workers")).json()["workers"]
        return len(targets) == 2 and all(w["ready"] for w in workers) and len(workers) == 2

    await wait_for(replaced, 60, "a replacement worker")
    targets = (await service.client.get("/api/cluster/targets")).json()
    workers = {w["id"] for w in (await service.client.get("/api/workers")).json()["workers"]}
    model = (await service.client.get("/api/model")).json()  # the replacement loaded the swapped-in model
    assert set(model["workers"]) == workers and model["mixed"] is False
    assert model["source"].endswith("tiny-b.pt") and model["id"] != model_id(Path(model["source"]).with_name("tiny.pt"))
    assert {t["labels"]["worker"] for t in targets} == workers
    assert "w1" not in workers or "w2" not in workers  # the dead one is gone
    async with httpx.AsyncClient() as plain:
        for t in targets:
            assert (await plain.get(f"http://{t['targets'][0]}/metrics")).status_code == 200


async def test_drain_moves_every_stream_off_a_worker(service: Service) -> None:
    workers = (await service.client.get("/api/workers")).json()["workers"]
    busy = max(workers, key=lambda w: len(w["streams"]))
    other = next(w for w in workers if w["id"] != busy["id"])
    assert (await service.client.post(f"/api/workers/{busy['id']}/drain")).status_code == 401
    assert (await service.client.post("/api/workers/nope/drain", headers=AUTH)).status_code == 404
    r = await service.client.post(f"/api/workers/{busy['id']}/drain", headers=AUTH)
    assert r.status_code == 200, r.text
    assert sorted(r.json()["moved"]) == sorted(busy["streams"]) and r.json()["worker"]["draining"] is True
    assert r.json()["worker"]["streams"] == []
    await wait_for(all_live(service, not_on=busy["id"], min_frames=1), 20, "streams live off the drained worker")
    s = await streams(service)
    assert {s[n]["worker"] for n in NAMES} == {other["id"]}
    r = await service.client.post(f"/api/workers/{busy['id']}/resume", headers=AUTH)
    assert r.status_code == 200 and r.json()["worker"]["draining"] is False


async def test_a_restarted_controller_finds_the_streams(service: Service, config: RunConfig) -> None:
    import ray
    from sightline.stream.cluster.controller import ClusterPipeline

    before = await streams(service)
    await asyncio.to_thread(service.controller.detach)  # as if its process had died
    fresh = ClusterPipeline(config, ray)
    await asyncio.to_thread(fresh.start)
    await service.use(fresh, config)
    await wait_for(all_live(service), 10, "the adopted streams reported")
    after = await streams(service)
    for n in NAMES:  # same workers, and still running: not restarted (counters went on)
        assert after[n]["worker"] == before[n]["worker"]
        assert after[n]["frames_decoded"] >= before[n]["frames_decoded"]
    assert fresh.model_service.spec.source.endswith("tiny-b.pt")  # new workers would load the swapped-in model


def comparable(report: dict) -> dict:
    """A report without what depends on the clock (wall time, throughput, latency)."""
    return {k: v for k, v in report.items() if k not in ("throughput_fps", "wall_s", "latency_ms")}


async def test_distributed_eval_equals_local_eval(ray_cluster: Any, tmp_path: Path) -> None:
    from sightline.cli import main

    from tests.stream.eval.test_eval_cli import LABELS, colour_bundle, write_colour_clip

    add_node(ray_cluster)  # room for the eval's workers next to the service's
    write_colour_clip(tmp_path / "clip.mp4", ["red", "green", "blue"])
    write_colour_clip(tmp_path / "clip2.mp4", ["blue", "red", "green"])
    colour_bundle(tmp_path / "colours.pt")
    (tmp_path / "labels.csv").write_text(LABELS + "clip2.mp4,0,1,blue\nclip2.mp4,1,3,red\n", encoding="utf-8")
    common = ["eval", "--model", str(tmp_path / "colours.pt"), "--labels", str(tmp_path / "labels.csv"),
              "--device", "cpu"]
    assert await asyncio.to_thread(main, [*common, "--out", str(tmp_path / "local")]) == 0
    assert await asyncio.to_thread(main, [*common, "--out", str(tmp_path / "ray"), "--ray",
                                          ray_cluster.address]) == 0
    local = json.loads((tmp_path / "local" / "report.json").read_text())
    spread = json.loads((tmp_path / "ray" / "report.json").read_text())
    assert local["frames"]["classified"] == 60 and local["accuracy"]["raw"] not in (None, 1.0)
    assert comparable(spread) == comparable(local)
    predictions = [[{k: v for k, v in json.loads(line).items() if k != "latency_ms"}
                    for line in (tmp_path / d / "predictions.jsonl").read_text().splitlines()]
                   for d in ("local", "ray")]
    assert len(predictions[0]) == 60 and predictions[0] == predictions[1]  # every frame's labels, in order
