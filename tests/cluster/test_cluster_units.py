"""The cluster's parts that need no Ray: placement, the worker class on its own, the router without a cluster,
Ray staying an optional import, and the Prometheus service-discovery job."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from sightline.model.errors import ConfigError
from sightline.stream import media
from sightline.stream.cluster.placement import WorkerLoad, asked_fps, choose_worker
from sightline.stream.config import RunConfig, StreamConfig

from tests.support.models import tiny_bundle
from tests.support.service import make_service

ROOT = Path(__file__).resolve().parents[2]


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


def test_help_and_the_api_do_not_import_ray() -> None:
    code = ("import sys, contextlib, io\n"
            "from sightline.cli import main\n"
            "import sightline.stream.api, sightline.stream.cluster.controller, sightline.stream.cluster.eval\n"
            "for argv in (['--help'], ['run', '--help'], ['eval', '--help']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
            "        main(argv)\n"
            "    assert '--ray' in out.getvalue() or argv == ['--help'], argv\n"
            "print('ray' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_without_ray_a_cluster_is_a_clear_error() -> None:
    code = ("import sys; sys.modules['ray'] = None\n"
            "from sightline.stream.cluster.rayenv import require_ray\n"
            "from sightline.model.errors import ConfigError\n"
            "try:\n    require_ray()\nexcept ConfigError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert 'pip install "sightline[cluster]"' in out.stdout, out.stderr
    assert issubclass(ConfigError, Exception)


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
    assert jobs["sightline-workers"]["http_sd_configs"] == [
        {"url": f"http://{service}/api/cluster/targets", "refresh_interval": "15s"}]


@pytest.mark.timeout(60)
def test_the_worker_class_runs_a_pipeline_and_serves_its_metrics(tmp_path: Path) -> None:
    """PipelineWorker without Ray (what each Ray actor runs): streams in and out, errors as data, previews moved
    once per new frame, its own Prometheus endpoint with its load."""
    from sightline.stream.cluster.worker import PipelineWorker

    media.make_test_clip(tmp_path / "clip.mp4", frames=20, fps=10, size=(96, 72))
    tiny_bundle().save(tmp_path / "tiny.pt")
    config = RunConfig.model_validate({
        "model": {"source": str(tmp_path / "tiny.pt"), "device": "cpu"}, "output_dir": str(tmp_path / "out"),
        "media_root": str(tmp_path), "cluster": {"metrics_host": "127.0.0.1", "worker_fps": 50}})
    worker = PipelineWorker(config.model_dump(mode="json"), "w7")
    try:
        stream = {"name": "cam", "url": str(tmp_path / "clip.mp4"), "loop": True}
        assert worker.add_stream(stream)["status"]["name"] == "cam"
        assert worker.add_stream(stream)["error"] == "duplicate"
        info = worker.info()
        assert info["streams"] == ["cam"] and info["capacity_fps"] == 50 and info["asked_fps"] == 10
        deadline = time.monotonic() + 20
        while not any(s["frames_inferred"] for s in worker.statuses()):
            assert time.monotonic() < deadline, "no frame classified"
            time.sleep(0.1)
        token, item = worker.latest("cam", None)
        assert item.result.frame.seq == token[1]
        assert worker.latest("cam", token) is None or worker.latest("cam", token)[0] != token
        body = httpx.get(f"http://{info['metrics']}/metrics", timeout=5).text
        assert 'sightline_worker_capacity_fps{worker="w7"} 50.0' in body
        assert 'sightline_worker_asked_fps{worker="w7"} 10.0' in body
        assert 'sightline_frames_inferred_total{stream="cam"}' in body
        assert worker.remove_stream("cam")["status"]["state"] == "stopped"
        assert worker.remove_stream("cam")["error"] == "unknown"
        assert worker.info()["asked_fps"] == 0
    finally:
        worker.shutdown()
