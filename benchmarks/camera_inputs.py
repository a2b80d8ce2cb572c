"""One camera, several inputs (issue 29): classify the substream and record the main stream, against classifying
and recording the main stream alone.

Everything runs on 127.0.0.1. Two clips are made offline with ffmpeg (testsrc2, libx264 veryfast, no B-frames,
no scene-cut keyframes, a 1 s GOP): the main stream, 1280x720 at 30 fps, and the substream, 640x360 at 10 fps.
Debian's GStreamer RTSP server (tests/support/gst_rtsp_server.py ``--mounts N --sub-file``, run by
/usr/bin/python3) serves each camera as two shared mounts, /cam-i (main) and /cam-i-sub (sub), repacketing the
clips over RTSP/TCP in real time (its CPU is measured and reported beside the service's). For each config and
each N of the ladder, the real service (``python -m sightline run CONFIG --port P``, a separate process) takes N
cameras, added through the API spread over ``--stagger-s`` (one GOP) as in benchmarks/density.py:

- ``inputs``: ``inputs: [{name: main, url: /cam-i, roles: [record, view]}, {name: sub, url: /cam-i-sub,
  roles: [classify]}]``: the sub decoded and classified, the main's packets recorded (passthrough);
- ``main-only``: ``url: /cam-i, record: true``: the main decoded and classified, its packets recorded.

Both at ``--infer-fps`` (2), ``decode`` left out (the service's default). After every stream is live and
``--warmup`` s more, a ``--seconds`` window measures: per-camera classified rate (``frames_inferred`` deltas),
p99 capture->result (the ``sightline_end_to_end_latency_seconds`` histogram deltas, all cameras), the service's
CPU (its process tree, in cores) and the RTSP server's, RSS, threads, and the bytes each camera's recording
folder grew by (MB per camera-minute). A step fails when a camera is not live, classifies below 0.9 x
infer_fps, the p99 is above 1 s (benchmarks/density.py's rules), or the recording does not keep up: the
record input read less than 0.9 of the camera's bytes (what the service does not read, a real camera drops), or
the recording grew by less than that, one GOP allowed (the file grows a GOP-long fragment at a time); each
config's ladder stops at its first failing N.

    flock /tmp/sightline-bench.lock .venv/bin/python benchmarks/camera_inputs.py --ladder 5,10,20,30 \\
        --out benchmarks/results/camera-inputs-cpu.md
    .venv/bin/python benchmarks/camera_inputs.py --quick          # ladder 2, short windows: a smoke run

Writes ``--out`` (markdown) and the same name with ``.json``. Name the CPU with any figure quoted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common import cpu_name  # benchmarks/ is on sys.path when this script runs
from density import (
    BATCH_METRIC,
    LATENCY_METRIC,
    RATE_SHARE,
    SERVER_SCRIPT,
    SYSTEM_PYTHON,
    Poller,
    bucket_delta,
    die_with_parent,
    free_port,
    git_commit,
    judge,
    ladder_outcome,
    loop_clip,
    machine_busy_s,
    make_clip,
    merge_buckets,
    missing_rtsp,
    parse_histograms,
    parse_sum_count,
    quantile,
    random_bundle,
    rss_threads,
    served_by,
    start_service,
    stop,
    trained_bundle,
    tree_cpu_s,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("inputs", "main-only")
MAIN = {"size": "1280x720", "fps": 30}
SUB = {"size": "640x360", "fps": 10}
BUNDLE_VERSION = 1  # density.py's trained bundle (the same cache file)


# -- pure parts (tested in tests/benchmarks/test_camera_inputs.py) ----------------------------------------


def camera_stream(config: str, i: int, main_url: str, sub_url: str, infer_fps: float) -> dict:
    """The API body (and config entry) of camera ``i`` in ``config``."""
    common: dict[str, object] = {"name": f"cam-{i}", "infer_fps": infer_fps, "transport": "tcp",
                                 "open_timeout_s": 20, "stall_timeout_s": 10}
    if config == "inputs":
        return {**common, "inputs": [{"name": "main", "url": main_url, "roles": ["record", "view"]},
                                     {"name": "sub", "url": sub_url, "roles": ["classify"]}]}
    if config == "main-only":
        return {**common, "url": main_url, "record": True}
    raise ValueError(f"unknown config {config!r} (one of {', '.join(CONFIGS)})")


def recorded_per_minute(before: dict[str, int], after: dict[str, int], names: Sequence[str],
                        window_s: float) -> list[float]:
    """MB each camera's recording grew by, per minute of the window (0 for a camera with no folder)."""
    return [(after.get(n, 0) - before.get(n, 0)) / 1e6 * 60.0 / window_s for n in names]


def record_input_bytes(snapshot: dict) -> int | None:
    """Bytes the stream's record input has read (its ``inputs`` entry with the record role), None without one."""
    for entry in snapshot.get("inputs") or []:
        if "record" in entry.get("roles", []):
            return int(entry.get("bytes") or 0)
    return None


def recording_problems(read: Sequence[float | None], recorded: Sequence[float], camera: float, window_s: float,
                       gop_s: float = 1.0, share: float = RATE_SHARE) -> list[str]:
    """Why the cameras' recordings fail the step: a camera's record input read less than ``share`` of the
    camera's MB/min (the service fell behind the camera: a real camera drops what is not read), or its
    recording grew by less than that share less one GOP of the window (the file grows a fragment, one GOP,
    at a time), or by nothing."""
    problems = []
    behind = [v for v in read if v is not None and v < share * camera]
    if behind:
        problems.append(f"{len(behind)} camera(s) read behind the camera: slowest {min(behind):.1f} MB/min < "
                        f"{share:g} x {camera:.1f}")
    silent = sum(v <= 0 for v in recorded)
    if silent:
        problems.append(f"{silent} camera(s) recorded nothing")
    floor = share * camera * max(0.0, 1 - gop_s / window_s)
    short = [v for v in recorded if 0 < v < floor]
    if short:
        problems.append(f"{len(short)} recording(s) behind: slowest {min(short):.1f} MB/min < {floor:.1f}")
    return problems


def fmt(v: float | None, spec: str = ".0f", none: str = "-") -> str:
    return none if v is None else format(v, spec)


@dataclass
class Step:
    """One config at one N, measured."""

    config: str
    cameras: int
    window_s: float
    rates: list[float]  # classified/s per camera over the window
    p99_s: float | None  # capture->result, all cameras together
    worst_camera_p99_s: float | None
    cpu_cores: float  # the service's process tree
    server_cpu_cores: float  # the RTSP server's (both mounts of every camera)
    rss_mb: float
    threads: int
    recorded_mb_per_min: list[float]  # per camera: its recordings folder's growth
    read_mb_per_min: list[float | None]  # per camera: what its record input read (None: no such figure)
    start_s: float
    not_live: int = 0
    inputs_down: int = 0  # cameras reporting an input down at the window's end
    other_cores: float | None = None  # the rest of the machine (a shared box), this script and both processes left out
    load_avg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    mean_batch: float | None = None
    decode: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def rate_min(self) -> float:
        return min(self.rates) if self.rates else 0.0

    @property
    def rate_median(self) -> float:
        return statistics.median(self.rates) if self.rates else 0.0

    @property
    def recorded_median(self) -> float:
        return statistics.median(self.recorded_mb_per_min) if self.recorded_mb_per_min else 0.0


def step_row(s: Step) -> str:
    worst = s.worst_camera_p99_s
    verdict = "pass" if not s.problems else "**fail**: " + "; ".join(s.problems)
    rec = s.recorded_mb_per_min
    read = [v for v in s.read_mb_per_min if v is not None]
    return (f"| {s.config} | {s.cameras} | {s.rate_min:.2f} / {s.rate_median:.2f} | "
            f"{fmt(s.p99_s and 1000 * s.p99_s)} ms (worst cam {fmt(worst and 1000 * worst)}) | "
            f"{s.cpu_cores:.2f} | {s.cpu_cores / s.cameras:.3f} | {s.server_cpu_cores:.2f} | {s.rss_mb:.0f} MB | "
            f"{s.threads} | {fmt(min(read, default=None), '.1f')} / {min(rec, default=0):.1f} / "
            f"{s.recorded_median:.1f} | "
            f"{fmt(s.mean_batch, '.1f')} | "
            f"{s.start_s:.0f} s | {fmt(s.other_cores, '.2f')} | {'/'.join(f'{x:.2f}' for x in s.load_avg)} | "
            f"{verdict} |")


TABLE_HEAD = ("| config | cameras | classified/s per camera (min / median) | p99 capture→result | service CPU (cores) "
              "| per camera | RTSP server CPU | RSS | threads | MB per camera-minute: read (min) / recorded (min / "
              "median) | "
              "mean batch | start→all live | other work (cores) | load avg (1/5/15) | verdict |\n"
              "|---|---:|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|---|")


def summary(ladders: dict[str, dict]) -> list[str]:
    """One line per config: how many cameras held, and its CPU per camera at the largest N both passed."""
    lines = []
    passed = {c: lad["passed"] for c, lad in ladders.items()}
    for config, ladder in ladders.items():
        failed = ladder["failed"]
        lines.append(f"- {config}: last passing N **{fmt(passed[config], 'd')}**, first failing N "
                     f"{fmt(failed, 'd', 'none (the ladder ended first: a lower bound)')}")
    held = [{s["cameras"] for s in lad["steps"] if not s["problems"]} for lad in ladders.values()]
    common = set.intersection(*held) if held else set()
    if len(ladders) == 2 and common:
        n = max(common)
        per = {c: next(s for s in lad["steps"] if s["cameras"] == n) for c, lad in ladders.items()}
        a, b = (per[c]["cpu_cores"] for c in per)
        lines.append(f"- at N={n} (both passed): service CPU " + " vs ".join(
            f"{c} {per[c]['cpu_cores']:.2f} cores ({per[c]['cpu_cores'] / n:.3f} per camera)" for c in per)
            + (f"; {list(per)[0]} uses {a / b:.2f}x the CPU of {list(per)[1]}" if b > 0 else ""))
    return lines


def markdown(report: dict) -> str:
    m = report["meta"]
    lines = [f"# Camera inputs: classify the substream, record the main (benchmarks/camera_inputs.py), {m['started']}",
             "",
             f"- command: `{m['command']}`",
             f"- CPU: {m['cpu']} ({m['cores']} logical cores), shared with other work; load average at the start "
             f"{'/'.join(f'{x:.2f}' for x in m['load_avg_start'])}, at the end "
             f"{'/'.join(f'{x:.2f}' for x in m['load_avg_end'])}",
             f"- commit {m['commit']}; backend `{m['backend']}` -> {m['served_by'] or '?'}",
             f"- main: {m['main']}; sub: {m['sub']}; both served by the GStreamer RTSP server over TCP "
             f"(two shared mounts per camera, repacketed, no transcoding)",
             f"- bundle: {m['bundle']}",
             f"- infer_fps {m['infer_fps']:g}; decode: key left out (the service default); window {m['seconds']:g} s "
             f"after all live + {m['warmup']:g} s warm-up; cameras added over {m['stagger_s']:g} s",
             "- configs: `inputs` = main roles [record, view] + sub roles [classify]; `main-only` = url main, "
             "record: true", ""]
    for config, ladder in report["ladders"].items():
        lines += [f"## {config}", "", TABLE_HEAD, *ladder["rows_md"], ""]
        for s in ladder["steps"]:
            if s["decode"]:
                lines.append(f"- decode at N={s['cameras']}: " + "; ".join(f"{k} x{v}" for k, v in s["decode"].items()))
        lines.append("")
    lines += ["## Summary", "", *summary(report["ladders"]), "",
              "Verdict per step: a camera not live, below 0.9 x infer_fps, with a record input that read less than "
              "0.9 x the camera's MB/min, a recording that grew by less than that (one GOP of the window allowed) "
              "or by nothing, or p99 (all cameras' results in the window, from the histogram deltas) above 1 s fails "
              "it. Service CPU: its process tree (utime+stime deltas over the window); the RTSP server's own CPU is "
              "beside it. Read: the record input's bytes (GET /api/streams, inputs[].bytes) over the window; "
              "recorded: the growth of each camera's recordings folder. Other work: the whole machine's busy "
              "CPU (/proc/stat) less the service's, the server's and this script's, i.e. the rest of a shared "
              "machine."]
    return "\n".join(lines) + "\n"


# -- the RTSP server and the service ----------------------------------------------------------------------


class PairServer:
    """tests/support/gst_rtsp_server.py --mounts N --file main --sub-file sub: /cam-i and /cam-i-sub."""

    def __init__(self, main: Path, sub: Path, mounts: int, log: Path) -> None:
        self.port = free_port()
        self.log = log
        self.proc = subprocess.Popen([SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(self.port), "--mounts",
                                      str(mounts), "--file", str(main), "--sub-file", str(sub)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("ready "):
            rest = "" if self.proc.poll() is None else self.proc.stdout.read()
            self.close()
            raise RuntimeError(f"the GStreamer RTSP server did not start: {line}{rest}".strip())
        threading.Thread(target=self._copy, daemon=True).start()  # a pipe nobody reads would block it once full

    def _copy(self) -> None:
        assert self.proc.stdout is not None
        with self.log.open("a") as out:
            for line in self.proc.stdout:
                out.write(line)

    def main_url(self, i: int) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam-{i}"

    def sub_url(self, i: int) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam-{i}-sub"

    def close(self) -> None:
        stop(self.proc, signal.SIGTERM, 10)


def folder_bytes(root: Path) -> dict[str, int]:
    """Bytes under each ``root/<camera>/`` (the recordings: output_dir/recordings/<name>/<day>/*.mp4)."""
    out: dict[str, int] = {}
    if not root.is_dir():
        return out
    for camera in root.iterdir():
        total = 0
        for dirpath, _, files in os.walk(camera):
            for f in files:
                try:
                    total += os.stat(os.path.join(dirpath, f)).st_size
                except OSError:
                    continue
        out[camera.name] = total
    return out


def write_config(path: Path, *, bundle: Path, backend: str, out_dir: Path, media_root: Path, port: int,
                 cameras: int) -> Path:
    import yaml

    config = {"model": {"source": str(bundle), "device": "cpu", "backend": backend},
              "output_dir": str(out_dir), "media_root": str(media_root),
              "server": {"host": "127.0.0.1", "port": port, "max_streams": max(64, cameras)}, "streams": []}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_step(config: str, n: int, args: argparse.Namespace, work: Path, bundle: Path, main_clip: Path,
             sub_clip: Path, camera_mb_min: float) -> tuple[Step, dict]:
    """Start the server and the service with N cameras of ``config``; measure one window; stop both.
    ``camera_mb_min``: the main stream's MB per minute (what a recording that keeps up grows by)."""
    step_dir = work / f"{config}-{n}"
    if step_dir.exists():
        shutil.rmtree(step_dir)
    step_dir.mkdir(parents=True)
    server = service = None
    log = step_dir / "service.log"
    try:
        server = PairServer(main_clip, sub_clip, n, step_dir / "rtsp-server.log")
        cameras = [camera_stream(config, i, server.main_url(i), server.sub_url(i), args.infer_fps) for i in range(n)]
        port = free_port()
        out_dir = step_dir / "out"
        cfg = write_config(step_dir / "config.yaml", bundle=bundle, backend=args.backend, out_dir=out_dir,
                           media_root=main_clip.parent, port=port, cameras=n)
        started = time.monotonic()
        service, api, alive = start_service(cfg, port, log, args.start_timeout)
        adding = time.monotonic()
        for i, camera in enumerate(cameras):
            status, body, _ = api.post("/api/streams", camera)
            if status != 201:
                raise RuntimeError(f"POST /api/streams answered {status}: {body[:300]!r}")
            time.sleep(max(0.0, adding + (i + 1) * args.stagger_s / n - time.monotonic()))

        def all_live() -> bool:
            alive()
            states = api.streams()
            return len(states) == n and all(s["state"] == "live" for s in states.values())

        try:
            wait_until(all_live, args.start_timeout + 0.5 * n, f"not every one of {n} cameras went live")
        except TimeoutError as exc:
            print(f"  {exc}; measuring anyway", flush=True)
        start_s = time.monotonic() - started
        time.sleep(args.warmup)
        alive()
        recordings = out_dir / "recordings"
        poller = Poller(api, service.pid, args.poll_per_s)
        s0, m0, r0 = api.streams(), api.metrics(), folder_bytes(recordings)
        t0, c0, sc0 = time.monotonic(), tree_cpu_s(service.pid), tree_cpu_s(server.proc.pid)
        busy0, own0 = machine_busy_s(), time.process_time()
        poller.start()
        time.sleep(args.seconds)
        s1, m1, r1 = api.streams(), api.metrics(), folder_bytes(recordings)
        t1, c1, sc1 = time.monotonic(), tree_cpu_s(service.pid), tree_cpu_s(server.proc.pid)
        busy1, own1 = machine_busy_s(), time.process_time()
        poller.halt.set()
        poller.join(15)
        alive()
        window = t1 - t0
        names = [c["name"] for c in cameras]
        rates = [(s1.get(nm, {}).get("frames_inferred", 0) - s0.get(nm, {}).get("frames_inferred", 0)) / window
                 for nm in names]
        h0, h1 = parse_histograms(m0, LATENCY_METRIC), parse_histograms(m1, LATENCY_METRIC)
        deltas = {nm: bucket_delta(h0.get(nm, {}), h) for nm, h in h1.items()}
        camera_p99 = [q for q in (quantile(d, 0.99) for d in deltas.values()) if q is not None]
        b0, b1 = parse_sum_count(m0, BATCH_METRIC), parse_sum_count(m1, BATCH_METRIC)
        decode: Counter[str] = Counter()
        for s in s1.values():
            d = s.get("decode")
            if isinstance(d, dict):
                decode[f"{d.get('setting')}->{d.get('mode')}: {d.get('reason')}"] += 1
        rss, threads = rss_threads(service.pid)
        recorded = recorded_per_minute(r0, r1, names, window)
        read = []
        for nm in names:
            a, b = record_input_bytes(s0.get(nm, {})), record_input_bytes(s1.get(nm, {}))
            read.append(None if a is None or b is None else round((b - a) / 1e6 * 60 / window, 3))
        step = Step(config=config, cameras=n, window_s=round(window, 2), rates=[round(r, 3) for r in rates],
                    p99_s=quantile(merge_buckets(deltas.values()), 0.99),
                    worst_camera_p99_s=max(camera_p99, default=None), cpu_cores=(c1 - c0) / window,
                    server_cpu_cores=(sc1 - sc0) / window, rss_mb=max(poller.rss + [rss]),
                    threads=max(poller.threads + [threads]), recorded_mb_per_min=[round(v, 3) for v in recorded],
                    read_mb_per_min=read,
                    start_s=round(start_s, 1),
                    not_live=sum(s1.get(nm, {}).get("state") != "live" for nm in names),
                    inputs_down=sum(bool(s1.get(nm, {}).get("inputs_down")) for nm in names),
                    other_cores=((busy1 - busy0) - (c1 - c0) - (sc1 - sc0) - (own1 - own0)) / window,
                    load_avg=os.getloadavg(),
                    mean_batch=(b1[0] - b0[0]) / (b1[1] - b0[1]) if b1[1] > b0[1] else None, decode=dict(decode))
        step.problems = judge(step, args.infer_fps) + recording_problems(read, recorded, camera_mb_min, window)
        if step.inputs_down:
            step.problems.append(f"{step.inputs_down} camera(s) with an input down")
        return step, {"served_by": served_by(log), "api_errors": poller.errors,
                      "inputs": {nm: s1.get(nm, {}).get("inputs") for nm in names[:2]}}
    finally:
        stop(service)
        if server is not None:
            server.close()


# -- main --------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="see the module docstring for what is measured and how")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"which to run, in order (default {','.join(CONFIGS)})")
    p.add_argument("--ladder", default=None, help="camera counts (default 5,10,20,30,40; --quick: 2)")
    p.add_argument("--infer-fps", type=float, default=2.0)
    p.add_argument("--seconds", type=float, default=None, help="measurement window per step (default 20; quick 6)")
    p.add_argument("--warmup", type=float, default=None, help="seconds after all live (default 6; quick 2)")
    p.add_argument("--backend", default="auto", help="model.backend (default auto: the fastest installed for the CPU)")
    p.add_argument("--model", choices=["trained", "random"], default="trained",
                   help="trained: density.py's 3-class bundle (cached); random: the tests' tiny random-init one")
    p.add_argument("--poll-per-s", type=float, default=0.5, help="GET /api/streams and /metrics this often a second")
    p.add_argument("--start-timeout", type=float, default=90.0, help="seconds for the service to answer")
    p.add_argument("--stagger-s", type=float, default=1.0, help="add the cameras through the API over this many s")
    p.add_argument("--keep-going", action="store_true", help="measure every N even after one fails")
    p.add_argument("--quick", action="store_true", help="ladder 2, short windows, the random model: a smoke run")
    p.add_argument("--work", type=Path, default=None, help="folder for clips, configs and logs (default: temporary)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "camera-inputs-cpu.md",
                   help="the markdown report (the JSON beside it)")
    args = p.parse_args(argv)
    q = args.quick
    args.configs = [c for c in args.configs.split(",") if c]
    if not args.configs or any(c not in CONFIGS for c in args.configs):
        p.error(f"--configs takes {', '.join(CONFIGS)}")
    args.ladder = [int(v) for v in (args.ladder or ("2" if q else "5,10,20,30,40")).split(",") if v]
    if not args.ladder or min(args.ladder) < 1:
        p.error("--ladder needs positive camera counts")
    args.seconds = args.seconds if args.seconds is not None else (6.0 if q else 20.0)
    args.warmup = args.warmup if args.warmup is not None else (2.0 if q else 6.0)
    if q and args.model == "trained" and "--model" not in (argv if argv is not None else sys.argv):
        args.model = "random"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if (why := missing_rtsp()) is not None:
        print(f"the RTSP server is unavailable: {why}", file=sys.stderr)
        return 2
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    load_start = os.getloadavg()
    commit = git_commit()
    cleanup = None
    if args.work is None:
        cleanup = tempfile.TemporaryDirectory(prefix="sightline-inputs-")
        work = Path(cleanup.name)
    else:
        work = args.work
        work.mkdir(parents=True, exist_ok=True)
    try:
        media = work / "media"
        media.mkdir(exist_ok=True)
        step_s = args.start_timeout + 0.5 * max(args.ladder) + args.stagger_s + args.warmup + args.seconds + 30
        clips, described, rates = {}, {}, {}
        for role, spec in (("main", MAIN), ("sub", SUB)):
            short = make_clip(media / f"{role}-{spec['size']}-{spec['fps']}.mp4", 20, spec["size"], fps=spec["fps"])
            clips[role] = loop_clip(short, media / f"{role}-long-{step_s:.0f}s.mp4", step_s, 20)
            rates[role] = short.stat().st_size / 20 * 60 / 1e6  # MB per minute
            described[role] = (f"{spec['size']} {spec['fps']} fps H.264 (testsrc2, libx264 veryfast, 1 s GOP, "
                               f"no B-frames), {rates[role] * 8 / 60:.2f} Mbit/s ({rates[role]:.1f} MB/min)")
        camera_mb_min = rates["main"]
        if args.model == "random":
            bundle = random_bundle(work / "random-3class.pt")
        else:
            from sightline.demo import cache_dir

            bundle = trained_bundle(cache_dir() / f"density-3class-v{BUNDLE_VERSION}.pt")
        served = work / "model" / bundle.name  # a compiled backend's artefact is cached beside it
        served.parent.mkdir(exist_ok=True)
        if not served.exists():
            shutil.copy2(bundle, served)
        print(f"CPU: {cpu_name()} ({os.cpu_count()} logical cores); load average "
              f"{'/'.join(f'{x:.2f}' for x in load_start)}", flush=True)
        print(TABLE_HEAD.splitlines()[0], flush=True)
        ladders = {}
        for config in args.configs:
            steps, extras = [], []
            for n in args.ladder:
                step, extra = run_step(config, n, args, work, served, clips["main"], clips["sub"], camera_mb_min)
                steps.append(step)
                extras.append(extra)
                print(step_row(step), flush=True)
                if step.problems and not args.keep_going:
                    break
            passed, failed = ladder_outcome(steps)
            ladders[config] = {"steps": [{**asdict(s), "rate_min": s.rate_min, "rate_median": s.rate_median}
                                         for s in steps],
                               "extra": extras, "rows_md": [step_row(s) for s in steps], "passed": passed,
                               "failed": failed}
        served_line = next((e["served_by"] for lad in ladders.values() for e in lad["extra"] if e["served_by"]), None)

        report = {
            "meta": {"started": started,
                     "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
                     "cpu": cpu_name(), "cores": os.cpu_count(), "load_avg_start": load_start,
                     "load_avg_end": os.getloadavg(), "commit": commit, "backend": args.backend,
                     "served_by": served_line, "infer_fps": args.infer_fps, "seconds": args.seconds,
                     "warmup": args.warmup, "stagger_s": args.stagger_s, "ladder": args.ladder,
                     "main": described["main"], "sub": described["sub"],
                     "bundle": ("random-init ResNet18, 3 classes, 64/56 px (tests' tiny bundle)"
                                if args.model == "random" else
                                "ResNet18 trained on 3 scikit-image photos (density.py's, cached)")},
            "ladders": ladders,
        }
        for line in summary(ladders):
            print(line, flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(markdown(report))
        args.out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"wrote {args.out} and {args.out.with_suffix('.json')}", flush=True)
        return 0
    finally:
        if cleanup is not None:
            cleanup.cleanup()


if __name__ == "__main__":
    sys.exit(main())
