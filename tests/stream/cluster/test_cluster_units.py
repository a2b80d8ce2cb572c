"""The cluster's parts that need no Ray: placement, the worker class on its own, the router without a cluster,
Ray staying an optional import, and the Prometheus service-discovery job."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from sightline.stream.cluster.placement import WorkerLoad, asked_fps, choose_worker
from sightline.stream.config import RAY_INSTALL_HINT as INSTALL_HINT
from sightline.stream.config import RunConfig, StreamConfig

from tests.support.service import make_service

ROOT = Path(__file__).resolve().parents[3]


def load(worker: str, capacity: float, asked: float, streams: int = 0, accepting: bool = True) -> WorkerLoad:
    return WorkerLoad(worker, capacity, asked, streams, 64, accepting)


def test_a_stream_goes_to_the_worker_with_the_most_spare_capacity() -> None:
    loads = [load("w1", 100, 80, 4), load("w2", 60, 10, 1), load("w3", 200, 170, 6)]
    assert choose_worker(loads, 10) == "w2"  # 50 spare, against 20 and 30
    assert choose_worker(loads, 45) == "w2"
    assert choose_worker(loads, 51) is None  # no worker has room: the stream is reported unplaced


def test_draining_and_full_workers_take_no_stream_and_ties_go_to_the_emptier() -> None:
    assert choose_worker([load("w1", 100, 0, accepting=False), load("w2", 50, 40)], 5) == "w2"
    assert choose_worker([WorkerLoad("w1", 100, 0, 64, 64), load("w2", 50, 40)], 5) == "w2"
    assert choose_worker([load("w2", 100, 50, 3), load("w1", 100, 50, 2)], 5) == "w1"


def test_what_a_stream_asks_for() -> None:
    clip = StreamConfig(name="a", url="/media/a.mp4")
    assert asked_fps(clip, 25, file_fps=10) == 10
    assert asked_fps(clip.model_copy(update={"infer_fps": 4}), 25, file_fps=10) == 4
    assert asked_fps(StreamConfig(name="b", url="rtsp://127.0.0.1:8554/x"), 25) == 25
    assert asked_fps(StreamConfig(name="b", url="rtsp://127.0.0.1:8554/x", infer_fps=30), 12) == 12


def test_cluster_config_keys_and_defaults() -> None:
    c = RunConfig().cluster
    assert c.ray.address is None and c.ray.namespace == "sightline" and c.ray.dashboard_host is None
    assert (c.workers, c.cpus_per_worker, c.gpus_per_worker, c.worker_fps) == ("auto", 1.0, 1.0, None)
    assert (c.heartbeat_s, c.worker_timeout_s, c.metrics_host, c.metrics_port) == (1.0, 5.0, None, 0)
    with pytest.raises(ValueError, match="extra"):
        RunConfig.model_validate({"cluster": {"ray": {"adress": "auto"}}})


def test_without_ray_nothing_changes_and_a_cluster_is_a_clear_error() -> None:
    """Ray blocked from importing: the commands, their help and the API load; only asking for a cluster fails,
    saying how to install it. The same run checks that nothing imported Ray on the way."""
    code = ("import sys, contextlib, io\n"
            "sys.modules['ray'] = None\n"
            "from sightline.cli import main\n"
            "import sightline.stream.service.app, sightline.stream.cluster.controller\n"
            "import sightline.stream.eval.ray_replay\n"
            "for argv in (['--help'], ['run', '--help'], ['eval', '--help']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
            "        main(argv)\n"
            "    assert '--ray' in out.getvalue() or argv == ['--help'], argv\n"
            "from sightline.stream.cluster.rayenv import require_ray\n"
            "from sightline.model.errors import ConfigError\n"
            "try:\n    require_ray()\nexcept ConfigError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == INSTALL_HINT and 'pip install "sightline[cluster]"' in INSTALL_HINT


def test_usage_statistics_are_turned_off_before_ray_is_imported() -> None:
    from sightline.stream.cluster.rayenv import quiet_ray_environment

    env = {"RAY_USAGE_STATS_ENABLED": "1"}
    quiet_ray_environment(env)
    assert env == {"RAY_USAGE_STATS_ENABLED": "0"}


async def test_a_one_process_service_has_no_workers_and_an_empty_target_list(tmp_path: Path) -> None:
    pipeline, app = make_service(tmp_path, token="t0k3n-abcdef")
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
            assert (await c.get("/api/cluster/targets")).json() == []
            assert (await c.get("/api/workers")).status_code == 404
            assert (await c.post("/api/workers/w1/drain")).status_code == 401
            r = await c.post("/api/workers/w1/drain", headers={"Authorization": "Bearer t0k3n-abcdef"})
            assert r.status_code == 404 and "--ray" in r.json()["detail"]
    finally:
        pipeline.shutdown()


def test_prometheus_discovers_the_workers_through_the_controller() -> None:
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in scrape["scrape_configs"]}
    service = jobs["sightline"]["static_configs"][0]["targets"][0]
    scrape_token = {"type": "Bearer", "credentials_file": "sightline-metrics-token"}  # server.metrics_token
    assert jobs["sightline-workers"]["http_sd_configs"] == [
        {"url": f"http://{service}/api/cluster/targets", "refresh_interval": "15s", "authorization": scrape_token}]
    assert jobs["sightline-workers"]["authorization"] == jobs["sightline"]["authorization"] == scrape_token


def test_the_worker_load_gauges_are_the_ones_the_dashboard_knows() -> None:
    from types import SimpleNamespace

    from sightline.stream.cluster.worker import WorkerLoadCollector

    from tests.stream.test_deploy import WORKER_GAUGES

    worker = SimpleNamespace(worker_id="w1", capacity_fps=80.0, asked_fps=lambda: 20.0, measured_fps=lambda: 19.5,
                             pipeline=SimpleNamespace(names=lambda: ["a", "b"]))
    families = {f.name: f.samples[0] for f in WorkerLoadCollector(worker).collect()}
    assert set(families) == WORKER_GAUGES
    assert families["sightline_worker_streams"].value == 2 and families["sightline_worker_streams"].labels == {
        "worker": "w1"}
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/sightline.json").read_text())
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"node", "worker"} <= variables
    used = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    assert all(name in used for name in WORKER_GAUGES - {"sightline_worker_measured_fps"})


def swap_answer(previous: str, model: str, swapped: bool = True) -> dict:
    return {"outcome": {"swapped": swapped, "classes_changed": False, "previous": {"id": previous},
                        "model": {"id": model}, "load_s": 0.5, "warm_s": 0.25}, "served": {"id": model}}


def swap_error(serving: str, status: int, detail: str) -> dict:
    return {"error": "failed", "status": status, "detail": detail, "served": {"id": serving}}


def test_a_cluster_swap_answers_200_only_when_every_worker_swapped_and_says_a_partial_one_plainly() -> None:
    from sightline.stream.cluster.model_control import ClusterSwap
    from sightline.stream.inference.model_holder import ModelSpec

    spec = ModelSpec("/models/b.pt")
    done = ClusterSwap(spec, {"w1": swap_answer("aaa", "bbb"), "w2": swap_answer("aaa", "bbb")})
    assert done.status_code() == 200 and not done.partial
    body = done.body()
    assert body["swapped"] and body["model"] == {"id": "bbb"} and body["load_s"] == 0.5
    assert body["workers"]["w2"] == {"swapped": True, "previous": "aaa", "model": "bbb"}

    none = ClusterSwap(spec, {"w1": swap_error("aaa", 422, "cannot load"), "w2": swap_error("aaa", 500, "warm-up")})
    assert none.status_code() == 422 and not none.partial  # the first failure's status, by worker
    assert "old one keeps serving everywhere" in none.body()["detail"]

    partial = ClusterSwap(spec, {"w1": swap_answer("aaa", "bbb"), "w2": swap_error("aaa", 409, "busy"),
                                 "w3": swap_error("aaa", 422, "no such model file")})
    assert partial.status_code() == 409 and partial.partial
    body = partial.body()
    assert body["partial"] is True and "NOT on w2, w3" in body["detail"] and "w1: bbb, w2: aaa" in body["detail"]
    assert body["workers"]["w3"] == {"swapped": False, "model": "aaa", "status": 422, "error": "no such model file"}


def test_a_worker_serves_the_spec_it_was_asked_for() -> None:
    from sightline.stream.cluster.model_control import serves
    from sightline.stream.inference.model_holder import ModelSpec

    served = {"id": "bbb", "source": "/m/b.pt", "requested_backend": "auto", "backend": "torch", "precision": "fp32"}
    assert serves(served, ModelSpec("/m/b.pt", "auto", "auto"))
    assert serves(served, ModelSpec("/m/b.pt", "auto", "fp32"))
    assert not serves(served, ModelSpec("/m/b.pt", "auto", "fp16"))
    assert not serves(served, ModelSpec("/m/a.pt", "auto", "auto")) and not serves(None, ModelSpec("/m/b.pt"))


def test_a_worker_swaps_its_model_answers_failures_as_data_and_is_brought_to_the_current_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker class on its own (Ray blocked: it is plain Python, and no Ray may start outside a namespace)."""
    from sightline.stream.cluster.worker import PipelineWorker
    from sightline.stream.inference.model_holder import MODEL_ID_LENGTH

    from tests.support.models import tiny_bundle

    monkeypatch.setitem(sys.modules, "ray", None)
    a, b = tiny_bundle(seed=0), tiny_bundle(seed=1)
    a.save(tmp_path / "a.pt")
    b.save(tmp_path / "b.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    config = RunConfig.model_validate({"model": {"source": str(tmp_path / "a.pt"), "device": "cpu"},
                                       "output_dir": str(tmp_path / "out"), "media_root": str(tmp_path),
                                       "cluster": {"worker_fps": 50, "metrics_host": "127.0.0.1"}})
    worker = PipelineWorker(config.model_dump(mode="json"), "w9")
    try:
        served = worker.info()["served"]
        assert served["id"] == a.content_hash()[:MODEL_ID_LENGTH] and served["source"] == str(tmp_path / "a.pt")
        spec = {"backend": served["requested_backend"], "precision": "auto"}
        bad = worker.swap_model({**spec, "source": str(tmp_path / "garbage.pt")})
        assert bad["error"] == "failed" and bad["status"] == 422 and "not a readable" in bad["detail"]
        assert bad["served"] == served  # the old model keeps serving
        with pytest.raises(RuntimeError, match="cannot serve"):  # the controller then replaces the worker
            worker.start_serving({**spec, "source": str(tmp_path / "garbage.pt")})
        info = worker.start_serving({**spec, "source": str(tmp_path / "b.pt")})
        assert info["served"]["id"] == b.content_hash()[:MODEL_ID_LENGTH] and info["worker"] == "w9"
        assert worker.watch_offer("nope", "v=0")["status"] == 404 and worker.video_status("nope")["status"] == 404
    finally:
        worker.shutdown()
