"""Soak test: does the service hold steady for many minutes of live streams, restarts and API churn?

Everything runs on 127.0.0.1: a real RTSP server (Debian's rtsp-server-perl, through the tests'
harness in tests/support/rtsp.py) fed by one looping ffmpeg publisher per stream, and the service
itself (``python -m sightline run``) as a separate process whose resources are read from /proc:

- ``--streams N`` realtime RTSP streams (UDP, the server's only transport), classified at ``--infer-fps``;
- every ``--restart-every`` seconds the RTSP server is stopped and started again on the same ports
  (the streams must notice, reconnect with backoff and go live again);
- every ``--churn-every`` seconds a looping file stream with ``record: true`` is added through the
  HTTP API and the previous one deleted (so recorder, output and decode threads come and go).

Every ``--sample-every`` seconds: the service's RSS, thread count, open fds, and the worst p99
capture->result latency of the RTSP streams (each stream's own p99 over its last 30 s, from
``GET /api/streams``). One line per minute is printed. After ``--warmup-minutes`` a baseline is
taken at a quiet moment (no churn stream, every RTSP stream live); the same is done at the end.

Exit status 1 when the RSS of the last minute (median) exceeds the last warm-up minute's (median) by
more than ``--rss-growth`` (5%), or when threads or fds at the end exceed the baseline by more than
``--thread-slack`` / ``--fd-slack``. The model is a random-init ResNet18 at a small input size (no
weights are downloaded); the soak is about leaks and recovery, not speed.

    flock /tmp/sightline-bench.lock python benchmarks/soak.py --minutes 20 --streams 4 \
        --out benchmarks/results/soak-cpu.txt
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from common import cpu_name, open_local  # benchmarks/ is on sys.path when this script runs

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "soak-token"  # loopback only, one run: not a secret worth hiding


# -- measurements and the verdict (pure: tested in tests/benchmarks/test_soak_logic.py) -------------


@dataclass(frozen=True)
class Sample:
    t_s: float  # seconds since the service answered
    rss_bytes: int
    threads: int
    fds: int
    p99_ms: float | None  # worst of the RTSP streams' 30-s p99, None when none had a result
    api_ms: float | None = None  # the slowest API request since the previous sample


@dataclass(frozen=True)
class Quiet:
    """Threads and fds at a quiet moment: no churn stream, every RTSP stream live."""

    threads: int
    fds: int
    rss_bytes: int


def process_usage(pid: int, proc: Path = Path("/proc")) -> tuple[int, int, int]:
    """(RSS bytes, threads, open fds) of ``pid``, from procfs."""
    rss = threads = 0
    for line in (proc / str(pid) / "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    fds = len(os.listdir(proc / str(pid) / "fd"))
    return rss, threads, fds


def median_rss(samples: Sequence[Sample], start_s: float, end_s: float) -> float | None:
    values = [s.rss_bytes for s in samples if start_s <= s.t_s <= end_s]
    return statistics.median(values) if values else None


def minute_rows(samples: Sequence[Sample]) -> list[dict[str, float | int | None]]:
    """One row per started minute: median RSS, max threads/fds, worst p99 and slowest API call."""
    rows = []
    last = max((s.t_s for s in samples), default=0.0)
    for minute in range(int(last // 60) + 1):
        chunk = [s for s in samples if minute * 60 <= s.t_s < (minute + 1) * 60]
        if not chunk:
            continue
        p99 = [s.p99_ms for s in chunk if s.p99_ms is not None]
        api = [s.api_ms for s in chunk if s.api_ms is not None]
        rows.append({"minute": minute + 1, "rss_mb": round(statistics.median(s.rss_bytes for s in chunk) / 2**20, 1),
                     "threads": max(s.threads for s in chunk), "fds": max(s.fds for s in chunk),
                     "p99_ms": round(max(p99), 1) if p99 else None, "api_ms": round(max(api), 1) if api else None})
    return rows


def judge(samples: Sequence[Sample], warmup_s: float, baseline: Quiet, final: Quiet, rss_growth: float = 0.05,
          thread_slack: int = 2, fd_slack: int = 8) -> list[str]:
    """Why the soak failed (empty: it passed).

    RSS: the median of the last minute against the median of the last warm-up minute. Threads and fds:
    the quiet moment at the end against the quiet moment after warm-up, each with a small slack for
    FFmpeg's own helper threads and sockets that come and go.
    """
    problems = []
    end = max((s.t_s for s in samples), default=0.0)
    before = median_rss(samples, warmup_s - 60, warmup_s)
    after = median_rss(samples, end - 60, end)
    if before is None or after is None or end - 60 < warmup_s:
        problems.append(f"too short to judge RSS: need a minute of samples after {warmup_s / 60:g} min of warm-up")
    elif after > before * (1 + rss_growth):
        problems.append(f"RSS grew {100 * (after / before - 1):.1f}% after warm-up "
                        f"({before / 2**20:.1f} -> {after / 2**20:.1f} MiB; limit {100 * rss_growth:g}%)")
    if final.threads > baseline.threads + thread_slack:
        problems.append(f"threads did not return to baseline: {baseline.threads} -> {final.threads} "
                        f"(slack {thread_slack})")
    if final.fds > baseline.fds + fd_slack:
        problems.append(f"open fds did not return to baseline: {baseline.fds} -> {final.fds} (slack {fd_slack})")
    return problems


# -- the run ------------------------------------------------------------------------------------


class Api:
    """Plain HTTP to the service on 127.0.0.1 (no proxy: the environment's proxy settings are ignored)."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self._open = open_local
        self.slowest_ms: float | None = None

    def call(self, method: str, path: str, body: dict | None = None, timeout: float = 30.0) -> tuple[int, object]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Authorization": f"Bearer {TOKEN}",
                                                  "Content-Type": "application/json"})
        started = time.perf_counter()
        try:
            with self._open(request, timeout=timeout) as reply:
                status, payload = reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
        ms = (time.perf_counter() - started) * 1000
        self.slowest_ms = ms if self.slowest_ms is None else max(self.slowest_ms, ms)
        try:
            return status, json.loads(payload) if payload else None
        except json.JSONDecodeError:
            return status, payload.decode("utf-8", "replace")

    def take_slowest(self) -> float | None:
        slowest, self.slowest_ms = self.slowest_ms, None
        return slowest


def wait_until(check: Callable[[], bool], timeout: float, what: str, step: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:.0f}s")
        time.sleep(step)


class RtspSide:
    """The RTSP server and its publishers, restartable on the same ports."""

    def __init__(self, clip: Path, names: list[str]) -> None:
        from tests.support.rtsp import RtspServer

        self._server_type = RtspServer
        self.clip = clip
        self.names = names
        self.server = RtspServer().start()
        self.ports = (self.server.client_port, self.server.source_port)
        self.publishers = self._publish()
        self.restarts = 0

    def _publish(self) -> list:
        from tests.support.rtsp import RtspPublisher

        return [RtspPublisher(self.server, name, self.clip).start() for name in self.names]

    def url(self, name: str) -> str:
        return self.server.url(name)

    def restart(self, down_s: float = 2.0) -> None:
        self.stop()
        time.sleep(down_s)  # readers see the server gone for a moment, as with a real camera reboot
        self.server = self._server_type().start(client_port=self.ports[0], source_port=self.ports[1])
        self.publishers = self._publish()
        self.restarts += 1

    def stop(self) -> None:
        for publisher in self.publishers:
            publisher.close()
        self.server.stop()


def streams_state(api: Api) -> dict[str, dict]:
    status, body = api.call("GET", "/api/streams")
    if status != 200 or not isinstance(body, dict):
        raise RuntimeError(f"GET /api/streams answered {status}: {str(body)[:200]}")
    return {s["name"]: s for s in body["streams"]}


def quiet_point(api: Api, pid: int, cams: list[str], churn: str | None, timeout: float = 120.0) -> Quiet:
    """Remove the churn stream, wait until every RTSP stream is live, then read threads and fds."""
    if churn is not None:
        api.call("DELETE", f"/api/streams/{churn}")

    def settled() -> bool:
        states = streams_state(api)
        return set(states) == set(cams) and all(states[c]["state"] == "live" for c in cams)

    wait_until(settled, timeout, "the RTSP streams did not all go live again")
    time.sleep(3.0)  # let decoders that were just reopened start their threads
    readings = []
    for _ in range(5):
        readings.append(process_usage(pid))
        time.sleep(1.0)
    return Quiet(threads=min(r[1] for r in readings), fds=min(r[2] for r in readings),
                 rss_bytes=int(statistics.median(r[0] for r in readings)))


def build_inputs(tmp: Path, streams: int, infer_fps: float, rtsp: RtspSide) -> tuple[Path, Path]:
    """The service's config (and the churn clip's folder)."""
    import yaml
    from sightline.model.bundle import PreprocessSpec

    from tests.support.models import tiny_bundle

    model = tiny_bundle(num_classes=10, spec=PreprocessSpec(resize=64, crop=56)).save(tmp / "model.pt")
    config = {
        "model": {"source": str(model), "device": "cpu"},
        "batching": {"max_batch": 8, "max_wait_ms": 10},
        "output_dir": str(tmp / "out"),
        "media_root": str(tmp / "media"),
        "server": {"host": "127.0.0.1", "port": 0},
        "streams": [{"name": f"cam-{i}", "url": rtsp.url(f"cam-{i}"), "transport": "udp", "infer_fps": infer_fps,
                     "open_timeout_s": 5, "stall_timeout_s": 3, "reconnect": {"initial_s": 0.5, "max_s": 4}}
                    for i in range(streams)],
    }
    path = tmp / "soak.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, tmp / "media"


def start_service(config: Path, port: int, log: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**os.environ, **(extra_env or {}), "SIGHTLINE_TOKEN": TOKEN}
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "sightline", "run", str(config), "--port", str(port)],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def free_port() -> int:
    from tests.support.rtsp import free_tcp_port

    return free_tcp_port()


def soak(args: argparse.Namespace) -> tuple[list[Sample], Quiet, Quiet, dict[str, int]]:
    from sightline import synthetic_media as media

    with tempfile.TemporaryDirectory(prefix="sightline-soak-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "media").mkdir()
        clip = media.make_test_clip(tmp / "media" / "loop.mp4", frames=150, fps=15, size=(320, 180), counter=False)
        cams = [f"cam-{i}" for i in range(args.streams)]
        rtsp = RtspSide(clip, cams)
        service = None
        counts = {"restarts": 0, "added": 0, "removed": 0, "api_errors": 0}
        try:
            config, _ = build_inputs(tmp, args.streams, args.infer_fps, rtsp)
            port = free_port()
            log = tmp / "service.log"
            service = start_service(config, port, log, dict(args.service_env))
            api = Api(port)

            def ready() -> bool:
                if service.poll() is not None:
                    raise RuntimeError(f"the service exited with {service.returncode}:\n{log.read_text()[-2000:]}")
                try:
                    return api.call("GET", "/readyz", timeout=2)[0] == 200
                except OSError:
                    return False

            wait_until(ready, 180, "the service did not answer /readyz")
            t0 = time.monotonic()
            warmup_s, total_s = args.warmup_minutes * 60, args.minutes * 60
            samples: list[Sample] = []
            churn: str | None = None
            next_sample = next_churn = 0.0
            next_restart = args.restart_every
            baseline: Quiet | None = None
            printed = 0
            print(f"{'minute':>6} {'rss_mb':>8} {'threads':>8} {'fds':>6} {'p99_ms':>8} {'api_ms':>8}", flush=True)
            while (now := time.monotonic() - t0) < total_s:
                if service.poll() is not None:
                    raise RuntimeError(f"the service exited with {service.returncode}:\n{log.read_text()[-2000:]}")
                if baseline is None and now >= warmup_s:
                    baseline = quiet_point(api, service.pid, cams, churn)
                    churn = None
                    print(f"baseline after warm-up: {baseline}", flush=True)
                    continue
                if now >= next_restart:
                    rtsp.restart()
                    counts["restarts"] += 1
                    next_restart = now + args.restart_every
                if now >= next_churn:
                    name = f"churn-{counts['added']}"
                    status, _ = api.call("POST", "/api/streams", {"name": name, "url": str(clip), "loop": True,
                                                                  "record": True, "infer_fps": 2})
                    if status == 201:
                        counts["added"] += 1
                    else:
                        counts["api_errors"] += 1
                    if churn is not None:
                        if api.call("DELETE", f"/api/streams/{churn}")[0] == 200:
                            counts["removed"] += 1
                        else:
                            counts["api_errors"] += 1
                    churn = name if status == 201 else None
                    next_churn = now + args.churn_every
                if now >= next_sample:
                    rss, threads, fds = process_usage(service.pid)
                    states = streams_state(api)
                    p99s = [states[c]["p99_ms"] for c in cams if c in states and states[c]["p99_ms"] is not None]
                    samples.append(Sample(now, rss, threads, fds, max(p99s) if p99s else None, api.take_slowest()))
                    next_sample = now + args.sample_every
                    rows = minute_rows(samples)
                    for row in rows[printed:-1]:
                        print(format_row(row), flush=True)
                    printed = max(printed, len(rows) - 1)
                time.sleep(0.2)
            for row in minute_rows(samples)[printed:]:
                print(format_row(row), flush=True)
            if baseline is None:
                raise RuntimeError("the run ended before the warm-up did: use more --minutes")
            final = quiet_point(api, service.pid, cams, churn)
            print(f"at the end:             {final}", flush=True)
            counts["restarts"] = rtsp.restarts
            states = streams_state(api)
            counts["reconnects"] = sum(int(states[c]["reconnects"]) for c in cams)
            return samples, baseline, final, counts
        finally:
            if service is not None and service.poll() is None:
                service.send_signal(signal.SIGINT)
                try:
                    service.wait(60)
                except subprocess.TimeoutExpired:
                    service.kill()
                    service.wait(10)
            rtsp.stop()


def format_row(row: dict) -> str:
    def show(v: object) -> str:
        return "-" if v is None else str(v)

    return (f"{row['minute']:>6} {row['rss_mb']:>8} {row['threads']:>8} {row['fds']:>6} {show(row['p99_ms']):>8} "
            f"{show(row['api_ms']):>8}")


def env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--streams", type=int, default=4)
    p.add_argument("--warmup-minutes", type=float, default=None, help="default: 3, or a quarter of a shorter run")
    p.add_argument("--restart-every", type=float, default=120.0, metavar="S", help="RTSP server restart period")
    p.add_argument("--churn-every", type=float, default=10.0, metavar="S", help="API add/remove period")
    p.add_argument("--sample-every", type=float, default=5.0, metavar="S")
    p.add_argument("--infer-fps", type=float, default=5.0, help="classification rate per RTSP stream")
    p.add_argument("--rss-growth", type=float, default=0.05)
    p.add_argument("--thread-slack", type=int, default=2)
    p.add_argument("--fd-slack", type=int, default=8)
    p.add_argument("--service-env", type=env_pair, action="append", default=[], metavar="KEY=VALUE",
                   help="set in the service's environment (e.g. MALLOC_ARENA_MAX=2); repeatable")
    p.add_argument("--out", type=Path, default=None, help="also write the report here")
    args = p.parse_args(argv)
    if args.warmup_minutes is None:
        args.warmup_minutes = min(3.0, args.minutes / 4)
    if args.minutes - args.warmup_minutes < 1:
        p.error("the run needs at least a minute after the warm-up to judge RSS")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))  # tests.support: the RTSP harness and the tiny model
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    samples, baseline, final, counts = soak(args)
    problems = judge(samples, args.warmup_minutes * 60, baseline, final, args.rss_growth, args.thread_slack,
                     args.fd_slack)
    verdict = "PASS" if not problems else "FAIL: " + "; ".join(problems)
    print(f"{counts}\n{verdict}", flush=True)
    if args.out is not None:
        lines = [f"# benchmarks/soak.py, started {started}",
                 f"# command: python {' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}",
                 f"# CPU: {cpu_name()} ({os.cpu_count()} logical cores); other work shared the machine",
                 f"# {args.streams} RTSP streams (320x180, 15 fps, UDP, rtsp-server-perl on 127.0.0.1) classified at "
                 f"{args.infer_fps:g} fps each by a random-init ResNet18 (56 px input) on the CPU; RTSP server "
                 f"restarted every {args.restart_every:g} s; a looping recorded file stream added/removed through "
                 f"the API every {args.churn_every:g} s",
                 f"# service environment: {' '.join(f'{k}={v}' for k, v in args.service_env) or 'as inherited'}",
                 "# p99_ms: worst of the RTSP streams' own p99 over their last 30 s; api_ms: slowest API call",
                 f"{'minute':>6} {'rss_mb':>8} {'threads':>8} {'fds':>6} {'p99_ms':>8} {'api_ms':>8}",
                 *[format_row(row) for row in minute_rows(samples)],
                 f"baseline after {args.warmup_minutes:g} min warm-up: threads {baseline.threads}, fds {baseline.fds}, "
                 f"rss {baseline.rss_bytes / 2**20:.1f} MiB",
                 f"at the end: threads {final.threads}, fds {final.fds}, rss {final.rss_bytes / 2**20:.1f} MiB",
                 f"counts: {counts}", verdict]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
