"""Fleet scale by simulation: the real controller and HTTP API with N simulated workers and S cameras (docs/fleet.md).

Each point (N workers, S streams) runs, in order: start the controller (N workers), add S streams through
``POST /api/streams`` (a few at once, from a child process), steady state (the controller's CPU and RSS over
``--steady-s`` of heartbeats), ``GET /api/streams`` (whole and one page), ``/metrics``, ``/api/cluster/targets``,
``/api/workers`` (time, bytes), the stream table's size, a controller restart back to serving the full table,
failover of one worker (killed: until all its streams run elsewhere), drain of one worker, and a model swap on
every worker.

Two kinds of workers (stream/cluster/simulated_worker.py, the real worker's methods with synthetic streams):

- ``--workers-in inprocess`` (default): ``InProcessRay`` (stream/cluster/inprocess_ray.py), every worker a
  thread pool in this process, so N worker processes do not share the controller's cores. The controller's
  CPU is this process's minus what the workers' methods used (counted per call). Ray's RPC and object store
  are not in it.
- ``--workers-in ray``: a real one-machine Ray cluster started here, each worker its own actor process; the
  controller's CPU is this process's (the Ray driver included). Run it only in a loopback-only namespace:
  ``../shared/tools/loopback-only .venv/bin/python benchmarks/fleet.py --workers-in ray ...``.

Writes ``--out``.json and .md. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
from common import cpu_name  # benchmarks/ is on sys.path when this script runs
from density import git_commit, wait_until

TOKEN = "fleet-benchmark-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NAMESPACE = "sightline-fleet"
LOAD_S = 2.0  # one simulated model load (worker start, swap)
INFER_FPS = 2.0  # what each camera asks for: "classified a few times a second"
WORKER_FPS = 2000.0  # placement capacity of a simulated worker (room for failover and drain at every point)
POLL_S = 0.02


def only_loopback() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def stream_body(i: int) -> dict[str, Any]:
    """A camera as a user adds it: an RTSP URL with credentials (redacted in every status), 2 classifications/s.
    Its address is a loopback one: a simulated worker never connects, and nothing here names another host."""
    return {"name": f"cam-{i:05d}", "url": f"rtsp://viewer:s3cret@127.{i // 65536 % 256}.{i // 256 % 256}."
                                            f"{i % 256}:554/Streaming/Channels/101", "infer_fps": INFER_FPS}


def run_config(workers: int, models: Path, out: Path, heartbeat_s: float) -> Any:
    from sightline.stream.config import RunConfig

    return RunConfig.model_validate({
        "model": {"source": str(models / "model-a.pt"), "device": "cpu", "swap_dir": str(models)},
        "output_dir": str(out), "server": {"token": TOKEN, "port": 0, "max_streams": 10_000},
        "cluster": {"workers": workers, "cpus_per_worker": 0.01, "worker_fps": WORKER_FPS, "heartbeat_s": heartbeat_s,
                    "metrics_host": "127.0.0.1", "ray": {"namespace": NAMESPACE}}})


class Served:
    """The cluster's app (as ``sightline run --ray`` makes it) on the service's own HTTP server, on 127.0.0.1,
    with its event loop on a thread."""

    def __init__(self, controller: Any, config: Any) -> None:
        from sightline.stream.cluster.launch import cluster_app
        from sightline.stream.service.server import HttpServer

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fleet-http", daemon=True)
        self.thread.start()
        self.server = HttpServer("127.0.0.1", 0)
        asyncio.run_coroutine_threadsafe(self.server.start(cluster_app(controller, config)), self.loop).result(30)
        self.client = httpx.Client(base_url=self.server.url, headers=AUTH, timeout=120, trust_env=False,
                                   limits=httpx.Limits(max_connections=32))

    def timed(self, method: str, path: str, **kw: Any) -> tuple[float, httpx.Response]:
        started = time.perf_counter()
        reply = self.client.request(method, path, **kw)
        return time.perf_counter() - started, reply

    def close(self) -> None:
        self.client.close()
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


class Cpu:
    """The controller's CPU seconds: this process's, less what in-process workers used."""

    def __init__(self, ray: Any) -> None:
        self.ray = ray
        self.proc = psutil.Process()

    def seconds(self) -> float:
        """Nanosecond clocks on both sides (psutil's cpu_times count 10 ms ticks: too coarse to subtract from)."""
        return time.process_time() - self.workers_seconds()

    def workers_seconds(self) -> float:
        """What in-process workers used (their methods, their pickling); 0 with Ray actors (other processes)."""
        return float(getattr(self.ray, "actor_cpu_s", 0.0))

    def rss_mb(self) -> float:
        return self.proc.memory_info().rss / 2**20


def wait_for(check: Any, timeout: float, what: str) -> float:
    """Seconds until ``check()`` holds (density.wait_until raises with ``what`` after ``timeout``)."""
    started = time.monotonic()
    wait_until(check, timeout, what, step=POLL_S)
    return time.monotonic() - started


def all_running(controller: Any, names: set[str] | None = None, not_on: str | None = None) -> bool:
    from sightline.stream.cluster.controller import PLACED

    for p in controller.placements():
        if names is not None and p.config.name not in names:
            continue
        if p.state != PLACED or p.worker == not_on or p.status.get("state") != "running":
            return False
    return True


def timed_get(served: Served, path: str, repeat: int = 5) -> dict[str, Any]:
    times, size, status = [], 0, 0
    for _ in range(repeat):
        took, reply = served.timed("GET", path)
        times.append(took)
        size, status = len(reply.content), reply.status_code
    return {"status": status, "median_ms": round(statistics.median(times) * 1000, 1),
            "max_ms": round(max(times) * 1000, 1), "bytes": size}


def add_streams(served: Served, first: int, count: int, parallel: int) -> list[float]:
    """POST the cameras from a child process (``--post``), so the client's own work does not count as the
    controller's; returns each POST's seconds."""
    argv = [sys.executable, __file__, "--post", served.server.url, str(first), str(count), str(parallel)]
    done = subprocess.run(argv, stdout=subprocess.PIPE, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"adding streams failed: {done.stdout[-2000:]}")
    return json.loads(done.stdout)


def post_streams(url: str, first: int, count: int, parallel: int) -> list[float]:
    """The ``--post`` child: ``count`` cameras from number ``first``, ``parallel`` POSTs in flight."""
    client = httpx.Client(base_url=url, headers=AUTH, timeout=120, trust_env=False,
                          limits=httpx.Limits(max_connections=parallel))

    def add(i: int) -> float:
        started = time.perf_counter()
        reply = client.post("/api/streams", json=stream_body(i))
        if reply.status_code != 201:
            raise RuntimeError(f"POST /api/streams answered {reply.status_code}: {reply.text[:300]}")
        return time.perf_counter() - started

    with client, ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(add, range(first, first + count)))


def make_ray(kind: str, workers: int) -> Any:
    if kind == "inprocess":
        from sightline.stream.cluster.inprocess_ray import InProcessRay

        return InProcessRay()
    if not only_loopback():
        raise SystemExit("--workers-in ray starts a Ray cluster: run it inside ../shared/tools/loopback-only")
    from sightline.stream.cluster.rayenv import require_ray

    ray = require_ray()
    ray.init(num_cpus=max(2.0, workers * 0.01 + 1), include_dashboard=False, namespace=NAMESPACE,
             log_to_driver=False, _node_ip_address="127.0.0.1")
    return ray


def run_point(workers: int, streams: int, args: argparse.Namespace) -> dict[str, Any]:
    from sightline.stream.cluster.controller import ClusterPipeline
    from sightline.stream.cluster.simulated_worker import SimulatedWorker

    work = Path(tempfile.mkdtemp(prefix="fleet-"))
    models = work / "models"
    models.mkdir()
    for name in ("model-a.pt", "model-b.pt"):
        (models / name).write_bytes(b"simulated: never loaded")
    config = run_config(workers, models, work / "out", args.heartbeat_s)
    ray = make_ray(args.workers_in, workers)
    worker_class = SimulatedWorker.with_load_time(LOAD_S)
    cpu = Cpu(ray)
    point: dict[str, Any] = {"workers": workers, "streams": streams, "workers_in": args.workers_in}
    controller = ClusterPipeline(config, ray, worker_class=worker_class)
    started = time.monotonic()
    controller.start()
    point["start_s"] = round(time.monotonic() - started, 2)
    point["rss_mb_before_streams"] = round(cpu.rss_mb(), 1)
    served = Served(controller, config)
    try:
        # -- add every camera through the API
        started = time.monotonic()
        post_s = add_streams(served, 0, streams, args.parallel)
        point["add_all_s"] = round(time.monotonic() - started, 2)
        point["post_ms"] = {"median": round(statistics.median(post_s) * 1000, 2),
                            "p99": round(sorted(post_s)[int(len(post_s) * 0.99) - 1] * 1000, 2)}
        point["placed_all_s"] = round(point["add_all_s"] + wait_for(lambda: all_running(controller), 60,
                                                                   "every stream running"), 2)
        # -- steady state
        time.sleep(2 * args.heartbeat_s)
        cpu0, workers0, t0 = cpu.seconds(), cpu.workers_seconds(), time.monotonic()
        time.sleep(args.steady_s)
        used, elapsed = cpu.seconds() - cpu0, time.monotonic() - t0
        point["steady"] = {"cores": round(used / elapsed, 4),
                           "ms_per_heartbeat": round(used / (elapsed / args.heartbeat_s) * 1000, 1),
                           "rss_mb": round(cpu.rss_mb(), 1),
                           "workers_cores": round((cpu.workers_seconds() - workers0) / elapsed, 4)}
        # -- reads
        point["api_streams"] = timed_get(served, "/api/streams")
        point["api_streams_page"] = timed_get(served, "/api/streams?limit=100")
        point["api_stream_one"] = timed_get(served, "/api/streams/cam-00000")
        point["metrics"] = timed_get(served, "/metrics")
        point["targets"] = timed_get(served, "/api/cluster/targets")
        point["api_workers"] = timed_get(served, "/api/workers")
        started = time.monotonic()
        table = ray.get(controller._table.snapshot.remote(), timeout=60)  # what a restarted controller reads first
        point["table"] = {"bytes": len(json.dumps(table)), "read_s": round(time.monotonic() - started, 3)}
        # -- controller restart: a new controller finds the workers and the table, serves the whole table again
        served.close()
        controller.detach()
        started = time.monotonic()
        controller = ClusterPipeline(config, ray, worker_class=worker_class)
        controller.start()
        served = Served(controller, config)

        def full_table() -> bool:
            reply = served.client.get("/api/streams")
            body = reply.json()["streams"] if reply.status_code == 200 else []
            return len(body) == streams and all(s["state"] == "running" for s in body)

        wait_for(full_table, 60, "the restarted controller serving every stream")
        point["restart_s"] = round(time.monotonic() - started, 2)
        # -- failover: one worker killed; its streams run elsewhere
        victim = max(controller.workers(), key=lambda w: len(w["streams"]))
        moved = set(victim["streams"])
        started = time.monotonic()
        ray.kill(controller._workers[victim["id"]].actor, no_restart=True)
        wait_for(lambda: all_running(controller, moved, not_on=victim["id"]), 120, "failover")
        point["failover"] = {"streams": len(moved), "s": round(time.monotonic() - started, 2)}
        wait_for(lambda: len([h for h in controller.worker_handles() if h.ready]) == workers, 120, "replacement")
        # -- drain one worker
        busiest = max(controller.workers(), key=lambda w: len(w["streams"]))
        started = time.monotonic()
        took, reply = served.timed("POST", f"/api/workers/{busiest['id']}/drain")
        if reply.status_code != 200:
            raise RuntimeError(f"drain answered {reply.status_code}: {reply.text[:300]}")
        moved = set(reply.json()["moved"])
        wait_for(lambda: all_running(controller, moved, not_on=busiest["id"]), 60, "drain")
        point["drain"] = {"streams": len(moved), "answer_s": round(took, 2),
                          "s": round(time.monotonic() - started, 2)}
        # -- a model swap on every worker
        took, reply = served.timed("PUT", "/api/model", json={"source": str(models / "model-b.pt")})
        if reply.status_code != 200:
            raise RuntimeError(f"PUT /api/model answered {reply.status_code}: {reply.text[:300]}")
        point["swap"] = {"workers": len(reply.json()["workers"]), "s": round(took, 2), "load_s": LOAD_S,
                         "beyond_load_s": round(took - LOAD_S, 2)}
    finally:
        served.close()
        controller.shutdown()
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    return point


COLUMNS: list[tuple[str, Any]] = [
    ("workers", lambda p: p["workers"]),
    ("streams", lambda p: p["streams"]),
    ("placed all (s)", lambda p: p["placed_all_s"]),
    ("POST p50 (ms)", lambda p: p["post_ms"]["median"]),
    ("controller cores", lambda p: p["steady"]["cores"]),
    ("ms / heartbeat", lambda p: p["steady"]["ms_per_heartbeat"]),
    ("RSS MB (before streams)", lambda p: f"{p['steady']['rss_mb']:.0f} ({p['rss_mb_before_streams']:.0f})"),
    ("/api/streams ms, KB", lambda p: f"{p['api_streams']['median_ms']}, {p['api_streams']['bytes'] / 1024:.0f}"),
    ("?limit=100 ms", lambda p: p["api_streams_page"]["median_ms"]),
    ("/metrics ms", lambda p: p["metrics"]["median_ms"]),
    ("targets ms", lambda p: p["targets"]["median_ms"]),
    ("table KB, read ms", lambda p: f"{p['table']['bytes'] / 1024:.0f}, {p['table']['read_s'] * 1000:.0f}"),
    ("restart s", lambda p: p["restart_s"]),
    ("failover (streams, s)", lambda p: f"{p['failover']['streams']}, {p['failover']['s']}"),
    ("drain (streams, s)", lambda p: f"{p['drain']['streams']}, {p['drain']['s']}"),
    ("swap beyond load s", lambda p: p["swap"]["beyond_load_s"]),
]


# Each cost divided by the cameras: flat down a column as S grows means linear, growing means worse than linear.
PER_CAMERA: list[tuple[str, Any]] = [
    ("workers", lambda p: p["workers"]),
    ("streams", lambda p: p["streams"]),
    ("placing, ms per camera", lambda p: f"{p['placed_all_s'] * 1000 / p['streams']:.2f}"),
    ("heartbeat, us per camera", lambda p: f"{p['steady']['ms_per_heartbeat'] * 1000 / p['streams']:.1f}"),
    ("/api/streams, us per camera", lambda p: f"{p['api_streams']['median_ms'] * 1000 / p['streams']:.1f}"),
    ("restart, ms per camera", lambda p: f"{p['restart_s'] * 1000 / p['streams']:.2f}"),
    ("RSS growth, KB per camera",
     lambda p: f"{(p['steady']['rss_mb'] - p['rss_mb_before_streams']) * 1024 / p['streams']:.0f}"),
    ("in-process workers' cores", lambda p: p["steady"].get("workers_cores", "-")),
]


def table(columns: list[tuple[str, Any]], points: list[dict[str, Any]]) -> list[str]:
    rows = ["| " + " | ".join(name for name, _ in columns) + " |", "|" + "---|" * len(columns)]
    return rows + ["| " + " | ".join(str(cell(p)) for _, cell in columns) + " |" for p in points]


def markdown(report: dict[str, Any]) -> str:
    rows = table(COLUMNS, report["points"]) + ["", "Per camera:", ""] + table(PER_CAMERA, report["points"])
    head = (f"# Fleet by simulation ({report['workers_in']} workers)\n\n"
            f"Machine: {report['cpu']} ({report['cores']} cores). Commit {report['commit']}. "
            f"`{report['command']}`\n\nheartbeat_s {report['heartbeat_s']}, each camera infer_fps {INFER_FPS}, "
            f"a model load {LOAD_S} s, {report['parallel']} POSTs at once, steady state over "
            f"{report['steady_s']} s.\n\n")
    return head + "\n".join(rows) + "\n"


def point_in_child(spec: str, args: argparse.Namespace) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--this-process", "--points", spec, "--workers-in", args.workers_in,
            "--heartbeat-s", str(args.heartbeat_s), "--steady-s", str(args.steady_s), "--parallel", str(args.parallel)]
    done = subprocess.run(argv, stdout=subprocess.PIPE, text=True, timeout=1800)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"point {spec} failed ({done.returncode}): {done.stdout[-2000:]}")
    return json.loads(lines[0])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--points", default="10x200,50x1000,100x2000",
                   help="WORKERSxSTREAMS, comma-separated (default: %(default)s)")
    p.add_argument("--workers-in", choices=("inprocess", "ray"), default="inprocess")
    p.add_argument("--heartbeat-s", type=float, default=1.0)
    p.add_argument("--steady-s", type=float, default=10.0)
    p.add_argument("--parallel", type=int, default=8, help="POSTs in flight while adding (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="writes OUT.json and OUT.md")
    p.add_argument("--this-process", action="store_true", help="run the points here, not each in a child")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--post"]:  # the client child of add_streams
        url, first, count, parallel = argv[1], *(int(x) for x in argv[2:5])
        print(json.dumps(post_streams(url, first, count, parallel)))
        return 0
    args = parse_args(argv)
    report: dict[str, Any] = {"cpu": cpu_name(), "cores": os.cpu_count(), "commit": git_commit(),
                              "command": "benchmarks/fleet.py " + " ".join(argv),
                              "workers_in": args.workers_in, "heartbeat_s": args.heartbeat_s,
                              "steady_s": args.steady_s, "parallel": args.parallel, "points": []}
    for spec in args.points.split(","):
        workers, streams = (int(x) for x in spec.lower().split("x"))
        # each point in a fresh process (unless --this-process): its RSS and CPU are that point's alone
        point = run_point(workers, streams, args) if args.this_process else point_in_child(spec, args)
        print(json.dumps(point), flush=True)
        report["points"].append(point)
    text = markdown(report)
    print(text)
    if args.out:
        args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
