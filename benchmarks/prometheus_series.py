"""Prometheus at fleet size (issue #27): the series and scrape bytes one stream and one pipeline worker add, measured on
the real code, and what they come to for a fleet of 2,000 and 10,000 cameras (10 and 50 workers x 200 cameras).

**Series** (always, about 20 s): with Ray blocked (``sys.modules["ray"] = None``), the class a cluster runs as each
pipeline worker (``PipelineWorker``, stream/cluster/worker.py: today's ``Pipeline`` plus the ``sightline_worker_*``
gauges on its own /metrics endpoint, bound to 127.0.0.1) runs in this process with a tiny random ResNet18 on the CPU.
Worker ``plain`` gets file streams of a small synthetic clip (looping, ``infer_fps`` 5): ``cam-1``, then ``cam-2`` and
``cam-3`` (1 against 3 streams), then one stream of each kind that adds series: ``rec`` (``record: true``), ``door``
(one RTSP url) and ``gate`` (two RTSP ``inputs``); the RTSP urls point at 127.0.0.1:9, where nothing listens (their
series exist while they reconnect). Worker ``events`` has one event rule (one label, every stream) and one webhook
output (127.0.0.1:9 as well; nothing is sent unless an event starts) and the stream ``ev-1``. Once every file stream
has classified frames and two scrapes a second apart list the same series, each worker's exposition is read: the
text format (``prometheus_client.generate_latest`` of the worker's registry, byte for byte what the service's
/metrics writes) counted by the ``stream`` label (a stream's series) and without it (the worker's fixed part), by
metric family; and the worker's own endpoint fetched over HTTP as Prometheus asks for it (OpenMetrics, gzip).

**Projection** (pure arithmetic on those counts): a worker with S plain streams exposes ``fixed + S x per_stream``
series; Prometheus keeps them less the ``_created`` ones the shipped scrape jobs drop, plus 5 of its own per target
(``up``, ``scrape_*``); a fleet of W such workers at the shipped ``scrape_interval`` (5 s,
deploy/prometheus/prometheus.yml) ingests ``series / 5`` samples per second. The memory figure is an estimate from
a rule of thumb (bytes per active head series), not a measurement; with ``--fleet``, a column uses its measured heap
per head series.

**Fleet** (``--fleet WxS``, optional, minutes; 50x200 takes about 5 GB of memory and more than a core): a real
Prometheus (the ``prometheus`` binary, 127.0.0.1 only, a temporary folder) runs deploy/prometheus/prometheus.yml's
``sightline-workers`` job and rule files as shipped, its targets read from a file instead of the controller and no
scrape token: W stand-in workers and the real ``plain`` worker. Each stand-in serves, on its own 127.0.0.1 port, the
real worker's exposition with its fixed part once and ``cam-1``'s lines S times under other stream names, the
counter-like samples growing every scrape. Throughout ``--minutes`` it reads Prometheus' own /metrics (head series,
heap, RSS, samples appended, CPU, each rule group's evaluation time and missed iterations) and /api/v1/rules (each
recording rule's evaluation time), and the machine's load average; at the end it asks Prometheus what it stored
(series per target and per stream, ``_created`` series, scrape durations), and times the dashboard's queries (15 s
step over the minutes scraped, minus the first) raw against the recorded series.

    .venv/bin/python benchmarks/prometheus_series.py                  # series and bytes, the projection
    .venv/bin/python benchmarks/prometheus_series.py --fleet 50x200 --minutes 12

Writes ``--out`` (markdown; default benchmarks/results/prometheus-fleet-cpu.md) and the same name with ``.json``
(``--report JSON`` writes the markdown again from a run's JSON). Name the CPU with any figure quoted.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from common import cpu_name, open_local, tiny_classifier  # benchmarks/ is on sys.path when this script runs
from density import free_port, stop, wait_until

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
SCRAPE_INTERVAL_S = 5.0  # deploy/prometheus/prometheus.yml, both jobs
PER_TARGET = ("up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling",
              "scrape_series_added")  # what Prometheus writes per target itself
RULE_OF_THUMB_KIB = (3.0, 4.0)  # commonly quoted memory per active series in a Prometheus 2.x head block
FLEETS = ((10, 200), (50, 200))  # (workers, cameras per worker): 2,000 and 10,000 cameras
# The Accept header Prometheus 2.42 (Debian 12's) sends: OpenMetrics first, the text format as a fallback.
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
TEXT_ACCEPT = "text/plain;version=0.0.4"
DEAD_RTSP = "rtsp://127.0.0.1:9"  # loopback, nothing listens: the stream reconnects, its series exist at 0
SAMPLE = re.compile(r'^([A-Za-z_:][A-Za-z0-9_:]*)(\{.*\})? (\S+)$')
STREAM_LABEL = re.compile(r'[{,]stream="((?:[^"\\]|\\.)*)"')
GROWS = ("_total", "_bucket", "_count", "_sum")  # counter-like samples: the stand-ins make them grow


# -- reading an exposition (pure; tested in tests/deploy/test_prometheus_fleet.py) -------------------------------------


@dataclass
class Part:
    """Series (sample lines) and their bytes (each line and its newline), by metric family."""

    series: Counter = field(default_factory=Counter)
    bytes: Counter = field(default_factory=Counter)

    @property
    def total_series(self) -> int:
        return sum(self.series.values())

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())


@dataclass
class Exposition:
    """One text exposition split by the ``stream`` label: each stream's part, the rest (``fixed``, with the HELP and
    TYPE lines, which are per family and so do not grow with streams)."""

    streams: dict[str, Part]
    fixed: Part
    comment_bytes: int
    total_bytes: int

    @property
    def total_series(self) -> int:
        return self.fixed.total_series + sum(p.total_series for p in self.streams.values())


def split_exposition(text: str) -> Exposition:
    families: dict[str, str] = {}  # sample name -> the family of the last TYPE line that covers it
    current = ""
    streams: dict[str, Part] = {}
    fixed = Part()
    comments = 0
    for line in text.splitlines():
        size = len(line.encode()) + 1
        if not line:
            continue
        if line.startswith("#"):
            comments += size
            words = line.split()
            if len(words) >= 3 and words[1] == "TYPE":
                current = words[2]
            continue
        match = SAMPLE.match(line)
        if match is None:
            raise ValueError(f"not a sample line: {line!r}")
        name = match.group(1)
        family = families.setdefault(name, current if name.startswith(current) else name)
        stream = STREAM_LABEL.search(match.group(2) or "")
        part = streams.setdefault(stream.group(1), Part()) if stream else fixed
        part.series[family] += 1
        part.bytes[family] += size
    return Exposition(streams, fixed, comments, len(text.encode()))


def series_keys(text: str) -> set[str]:
    """Each sample's name and labels: what must stay the same between two scrapes once every series exists."""
    return {m.group(1) + (m.group(2) or "") for line in text.splitlines() if (m := SAMPLE.match(line))}


# -- the projection (pure; tested) -------------------------------------------------------------------------------------


@dataclass
class Fleet:
    workers: int
    cameras_per_worker: int
    series_per_worker: int  # exposed: fixed part + cameras x per stream
    series: int  # stored by Prometheus: every worker's, less what the shipped job drops, plus its own per target
    text_bytes_per_worker: int  # one scrape's exposition, uncompressed
    text_bytes_per_scrape_round: int  # every worker once
    samples_per_s: float
    memory_gib_rule_of_thumb: tuple[float, float]
    gzip_bytes_per_worker: int | None = None
    memory_gib_measured_basis: float | None = None  # from --fleet's heap per head series, when it ran

    @property
    def cameras(self) -> int:
        return self.workers * self.cameras_per_worker


def project(workers: int, per_worker: int, per_stream: tuple[int, int, int], fixed: tuple[int, int, int],
            interval_s: float = SCRAPE_INTERVAL_S, gzip_bytes: int | None = None,
            measured_bytes_per_series: float | None = None) -> Fleet:
    """``per_stream`` and ``fixed``: (series exposed, series the shipped scrape job drops, bytes)."""
    exposed = fixed[0] + per_worker * per_stream[0]
    kept = exposed - fixed[1] - per_worker * per_stream[1]
    stored = workers * (kept + len(PER_TARGET))
    text = fixed[2] + per_worker * per_stream[2]
    low, high = (stored * kib * 1024 / 2**30 for kib in RULE_OF_THUMB_KIB)
    return Fleet(workers, per_worker, exposed, stored, text, workers * text, stored / interval_s, (low, high),
                 gzip_bytes, None if measured_bytes_per_series is None else stored * measured_bytes_per_series / 2**30)


def dropped(series_by_family: dict[str, int]) -> int:
    """Series the shipped scrape jobs drop (metric_relabel_configs in deploy/prometheus/prometheus.yml: _created)."""
    return sum(n for fam, n in series_by_family.items() if fam.endswith("_created"))


# -- the stand-ins' exposition (pure; tested) --------------------------------------------------------------------------


def fleet_template(text: str, stream: str) -> list[tuple[str, list[str], list[str]]]:
    """``text`` as (header lines, fixed sample lines, ``stream``'s sample lines) per family, in order: a stand-in
    writes each family's header and fixed lines once and the stream's lines once per camera, renamed."""
    out: list[tuple[str, list[str], list[str]]] = []
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# HELP"):
            out.append((line, [], []))
            continue
        if line.startswith("#"):
            out[-1] = (out[-1][0] + "\n" + line, *out[-1][1:])
            continue
        found = STREAM_LABEL.search(line)
        if found is None:
            out[-1][1].append(line)
        elif found.group(1) == stream:
            out[-1][2].append(line)
    return out


class StandIn:
    """One stand-in worker's exposition: the template's fixed lines (the ``worker`` label set to this worker's id)
    and its stream lines for ``cameras`` streams; counter-like samples grow by 10% of their first value a scrape."""

    def __init__(self, template: list[tuple[str, list[str], list[str]]], stream: str, worker: str,
                 cameras: int) -> None:
        self.scrapes = 0
        self.series = 0
        self.parts: list[str | tuple[str, float]] = []  # text as it is, or (line up to its value, first value)
        names = [f"{worker}-cam-{j:03d}" for j in range(cameras)]
        for header, fixed, mine in template:
            self._text(header + "\n")
            for line in fixed:
                self._add(re.sub(r'worker="[^"]*"', f'worker="{worker}"', line))
            for name in names:
                for line in mine:
                    self._add(line.replace(f'stream="{stream}"', f'stream="{name}"'))
        self.lock = threading.Lock()

    def _text(self, text: str) -> None:
        if self.parts and isinstance(self.parts[-1], str):
            self.parts[-1] += text
        else:
            self.parts.append(text)

    def _add(self, line: str) -> None:
        self.series += 1
        head, _, value = line.rpartition(" ")
        if head.split("{", 1)[0].endswith(GROWS) and float(value):
            self.parts.append((head + " ", float(value)))
        else:
            self._text(line + "\n")

    def body(self) -> bytes:
        with self.lock:
            self.scrapes += 1
            k = 1.0 + 0.1 * self.scrapes
        return "".join(p if isinstance(p, str) else f"{p[0]}{p[1] * k!r}\n" for p in self.parts).encode()


# -- phase 1: a real worker's series -----------------------------------------------------------------------------------


def fetch(url: str, accept: str, gzipped: bool) -> tuple[int, int, str]:
    """(bytes on the wire, bytes uncompressed, content type) of one GET, as Prometheus would ask."""
    headers = {"Accept": accept}
    if gzipped:
        headers["Accept-Encoding"] = "gzip"
    with open_local(urllib.request.Request(url, headers=headers), timeout=10) as answer:
        raw = answer.read()
        kind = answer.headers.get("Content-Type", "")
        if answer.headers.get("Content-Encoding") == "gzip":
            return len(raw), len(gzip.decompress(raw)), kind
    return len(raw), len(raw), kind


def wire(worker: Any) -> dict[str, Any]:
    url = f"http://{worker.metrics_address}/metrics"
    out = {}
    for key, accept in (("openmetrics", PROMETHEUS_ACCEPT), ("text", TEXT_ACCEPT)):
        zipped, plain, kind = fetch(url, accept, True)
        out[key] = {"gzip_bytes": zipped, "bytes": plain, "content_type": kind}
    return out


def settle(worker: Any, files: Iterable[str], timeout_s: float = 60.0) -> str:
    """The exposition once every file stream has classified frames and two scrapes a second apart list the same
    series (each series exists: the keyframe interval gauge, for one, appears once measured)."""
    from prometheus_client import generate_latest

    files = set(files)
    deadline = time.monotonic() + timeout_s
    last: set[str] | None = None
    while True:
        text = generate_latest(worker.pipeline.metrics.registry).decode()
        keys = series_keys(text)
        done = {s["name"] for s in worker.pipeline.statuses() if int(s.get("frames_inferred") or 0) > 0}
        if keys == last and files <= done:
            return text
        if time.monotonic() > deadline:
            raise RuntimeError(f"series still changing after {timeout_s:.0f} s (classified: {sorted(done)})")
        last = keys
        time.sleep(1.0)


def start_worker(folder: Path, model: Path, worker_id: str, extra: dict[str, Any] | None = None) -> Any:
    from sightline.stream.cluster.worker import PipelineWorker
    from sightline.stream.config import RunConfig

    config = RunConfig.model_validate({
        "model": {"source": str(model), "device": "cpu"}, "output_dir": str(folder / worker_id),
        "media_root": str(folder), "cluster": {"worker_fps": 50, "metrics_host": "127.0.0.1", "metrics_port": 0},
        **(extra or {})})
    return PipelineWorker(config.model_dump(mode="json"), worker_id)


def add(worker: Any, stream: dict[str, Any]) -> None:
    answer = worker.add_stream(stream)
    if "error" in answer:
        raise RuntimeError(f"{stream['name']}: {answer}")


def measure_series(folder: Path) -> tuple[dict[str, Any], Any]:
    """Phase 1. Returns the figures and the ``plain`` worker, still running (``--fleet`` scrapes it too)."""
    from sightline.synthetic_media import make_test_clip

    model = tiny_classifier().bundle.save(folder / "model.pt")
    clip = make_test_clip(folder / "clip.mp4", frames=40, fps=10, size=(96, 64))
    file_stream = {"url": str(clip), "loop": True, "infer_fps": 5}

    plain = start_worker(folder, model, "w1")
    try:
        return measure_on(plain, folder, model, file_stream), plain
    except BaseException:
        plain.shutdown()
        raise


def measure_on(plain: Any, folder: Path, model: Path, file_stream: dict[str, Any]) -> dict[str, Any]:
    """The ``plain`` worker's streams added step by step, then the ``events`` worker (started and stopped here)."""
    network = {"open_timeout_s": 1, "reconnect": {"initial_s": 0.2, "max_s": 1}}
    out: dict[str, Any] = {}
    add(plain, {"name": "cam-1", **file_stream})
    one = split_exposition(settle(plain, ["cam-1"]))
    one_wire = wire(plain)
    for name in ("cam-2", "cam-3"):
        add(plain, {"name": name, **file_stream})
    three_text = settle(plain, ["cam-1", "cam-2", "cam-3"])
    three = split_exposition(three_text)
    three_wire = wire(plain)
    out["one_vs_three"] = {"one": summary(one), "three": summary(three), "wire_one": one_wire,
                           "wire_three": three_wire}
    add(plain, {"name": "rec", **file_stream, "record": True})
    add(plain, {"name": "door", "url": f"{DEAD_RTSP}/door", **network})
    add(plain, {"name": "gate", **network, "inputs": [
        {"name": "main", "url": f"{DEAD_RTSP}/main", "roles": ["record", "view"]},
        {"name": "sub", "url": f"{DEAD_RTSP}/sub", "roles": ["classify"]}]})
    full_text = settle(plain, ["cam-1", "cam-2", "cam-3", "rec"])
    full = split_exposition(full_text)
    out["plain_worker"] = summary(full)
    out["plain_worker"]["wire"] = wire(plain)
    out["template_text"] = three_text

    events = start_worker(folder, model, "w2", {"events": {
        "rules": [{"name": "seen", "labels": ["a"], "min_prob": 0.99}],
        "outputs": {"webhooks": [{"name": "hook", "url": "http://127.0.0.1:9/hook"}]}}})
    try:
        add(events, {"name": "ev-1", **file_stream})
        out["events_worker"] = summary(split_exposition(settle(events, ["ev-1"])))
    finally:
        events.shutdown()
    return out


def summary(exp: Exposition) -> dict[str, Any]:
    return {"total_series": exp.total_series, "total_bytes": exp.total_bytes, "comment_bytes": exp.comment_bytes,
            "fixed": {"series": dict(exp.fixed.series), "bytes": dict(exp.fixed.bytes),
                      "total_series": exp.fixed.total_series, "total_bytes": exp.fixed.total_bytes},
            "streams": {name: {"series": dict(p.series), "bytes": dict(p.bytes), "total_series": p.total_series,
                               "total_bytes": p.total_bytes} for name, p in sorted(exp.streams.items())}}


def gzip_of_replicated(template_text: str, cameras: int) -> dict[str, int]:
    """The size of one stand-in worker's body with ``cameras`` streams, plain and gzipped (prometheus_client
    compresses with ``gzip.compress``'s default level, as here)."""
    body = StandIn(fleet_template(template_text, "cam-1"), "cam-1", "w1", cameras).body()
    return {"cameras": cameras, "bytes": len(body), "gzip_bytes": len(gzip.compress(body))}


# -- phase 2: a real Prometheus at fleet size --------------------------------------------------------------------------


def serve(stand_in: StandIn) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        accept: list[str] = []

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            Handler.accept[:] = [self.headers.get("Accept", "")]
            body = stand_in.body()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.accept_seen = Handler.accept  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def prom_get(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    with open_local(url, timeout=120) as answer:
        body = json.load(answer)
    if body.get("status") != "success":
        raise RuntimeError(f"{path} {params}: {body}")
    return body["data"]


def scalar(base: str, expr: str) -> float | None:
    result = prom_get(base, "/api/v1/query", query=expr)["result"]
    return float(result[0]["value"][1]) if result else None


def by_label(base: str, expr: str, label: str) -> dict[str, float]:
    return {s["metric"].get(label, ""): float(s["value"][1])
            for s in prom_get(base, "/api/v1/query", query=expr)["result"]}


# (panel, raw query as the dashboard asked before, the query it asks now from deploy/prometheus/recording.yml)
QUERIES = (
    ("Frames classified / s (all streams)", "sum(rate(sightline_frames_inferred_total[1m]))",
     "sum(worker:sightline_frames_inferred:rate1m)"),
    ("End-to-end p99 (all streams)",
     "histogram_quantile(0.99, sum by (le) (rate(sightline_end_to_end_latency_seconds_bucket[1m])))",
     "histogram_quantile(0.99, sum by (le) (worker:sightline_end_to_end_latency_seconds_bucket:rate1m))"),
    ("Streams up", "sum(sightline_stream_up)", 'sum(worker:sightline_stream_state:sum{state="live"})'),
    ("p99 per stream, the 20 slowest",
     "topk(20, histogram_quantile(0.99, sum by (le, stream) (rate(sightline_end_to_end_latency_seconds_bucket[1m]))))",
     "topk(20, stream:sightline_end_to_end_latency_seconds:p99_1m)"),
    ("Classified FPS per stream, the 20 lowest",
     "bottomk(20, sum by (stream) (rate(sightline_frames_inferred_total[1m])))",
     "bottomk(20, stream:sightline_frames_inferred:rate1m)"),
    ("Classified FPS per stream, every stream (the panel before: one line per camera)",
     "sum by (stream) (rate(sightline_frames_inferred_total[1m]))", None),
)


INSTANT = (("Stream state (table)", "max by (stream, state) (sightline_stream_state) == 1"),
           ("Inputs: up (table)", "max by (stream, input, roles) (sightline_input_up)"))


def time_instant(base: str, expr: str, tries: int = 3) -> dict[str, Any]:
    times, series = [], 0
    for _ in range(tries):
        started = time.perf_counter()
        series = len(prom_get(base, "/api/v1/query", query=expr)["result"])
        times.append(time.perf_counter() - started)
    return {"median_s": statistics.median(times), "times_s": times, "series": series}


def time_query(base: str, expr: str, seconds: float, step_s: float = 15.0, tries: int = 3) -> dict[str, Any]:
    end = time.time()
    times, series = [], 0
    for _ in range(tries):
        started = time.perf_counter()
        data = prom_get(base, "/api/v1/query_range", query=expr, start=f"{end - seconds:.3f}", end=f"{end:.3f}",
                        step=f"{step_s:g}")
        times.append(time.perf_counter() - started)
        series = len(data["result"])
    return {"median_s": statistics.median(times), "times_s": times, "series": series}


def fleet_config(targets: Path) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml as shipped (global settings, rule files, the sightline-workers job with its
    relabelling), the job's targets read from ``targets`` (a file in the controller's /api/cluster/targets format)
    instead of the controller, and no scrape token (the stand-ins and the worker here ask for none)."""
    shipped = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    (job,) = [j for j in shipped["scrape_configs"] if j["job_name"] == "sightline-workers"]
    job = {k: v for k, v in job.items() if k not in ("authorization", "http_sd_configs")}
    job["file_sd_configs"] = [{"files": [str(targets)]}]
    return {"global": shipped["global"], "rule_files": shipped["rule_files"], "scrape_configs": [job]}


def run_fleet(folder: Path, template_text: str, real: Any, workers: int, cameras: int, minutes: float,
              prometheus: str) -> dict[str, Any]:
    template = fleet_template(template_text, "cam-1")
    stand_ins = [StandIn(template, "cam-1", f"w{t:02d}", cameras) for t in range(workers)]
    servers = [serve(s) for s in stand_ins]
    node_id = "{:056x}".format
    targets = [{"targets": [f"127.0.0.1:{srv.server_address[1]}"],
                "labels": {"worker": f"w{t:02d}", "node": f"node-{t:02d}", "node_id": node_id(t + 1)}}
               for t, srv in enumerate(servers)]
    targets.append({"targets": [real.metrics_address], "labels": {"worker": "real", "node": "node-real",
                                                                  "node_id": node_id(10_000)}})
    work = folder / "prometheus"
    work.mkdir()
    for name in fleet_config(work / "targets.json")["rule_files"]:
        shutil.copy(PROMETHEUS_DIR / name, work / name)
    (work / "targets.json").write_text(json.dumps(targets))
    (work / "prometheus.yml").write_text(json.dumps(fleet_config(work / "targets.json")))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (work / "prometheus.log").open("w")
    proc = subprocess.Popen([prometheus, f"--config.file={work / 'prometheus.yml'}",
                             f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    started = time.monotonic()

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError((work / "prometheus.log").read_text()[-2000:])
        try:
            with open_local(f"{base}/-/ready", timeout=1):
                return True
        except OSError:
            return False

    try:
        wait_until(ready, 120, "Prometheus did not answer /-/ready", step=0.2)
        print(f"prometheus on {base}: {workers} stand-in workers x {cameras} cameras, {minutes:g} min", flush=True)
        own = OwnMetrics(base)
        own.run_for(minutes * 60)
        targets = 'job="sightline-workers", worker!="real"'
        fleet = targets + ', __name__!~".+:.+"'  # scraped, not recorded
        out: dict[str, Any] = {
            "workers": workers, "cameras_per_worker": cameras, "minutes": minutes,
            "prometheus_version": prometheus_version(prometheus),
            "accept_header_seen": servers[0].accept_seen[0] if servers[0].accept_seen else None,  # type: ignore
            "stand_in_series_exposed": stand_ins[0].series,
            "rule_intervals": rule_intervals(),
            "fleet_series_stored": scalar(base, f"count({{{fleet}}})"),
            "stored_per_stand_in_target": scalar(base, f'count({{{fleet}, worker="w00"}})'),
            "stored_per_stand_in_stream": scalar(base, f'count({{{fleet}, stream="w00-cam-000"}})'),
            "real_target": by_label(base, 'count by (stream) ({worker="real", __name__!~".+:.+"})', "stream"),
            "real_target_total": scalar(base, 'count({worker="real", __name__!~".+:.+"})'),
            "real_target_created": scalar(base, 'count({worker="real", __name__=~".+_created"})') or 0.0,
            "recorded_per_stand_in_target": scalar(base, 'count({worker="w00", __name__=~".+:.+"})'),
            "recorded_per_stream": scalar(base, 'count({stream="w00-cam-000", __name__=~".+:.+"})'),
            "exported_worker_label": scalar(base, 'count({exported_worker!=""})'),
            "created_series": scalar(base, f'count({{__name__=~".+_created", {fleet}}})') or 0.0,
            "recorded_series": scalar(base, 'count({__name__=~"(stream|worker|job):.+"})'),
            "targets_up": scalar(base, f"sum(up{{{targets}}})"),
            "scrape_duration_s": {
                "avg": scalar(base, f"avg(scrape_duration_seconds{{{targets}}})"),
                "max": scalar(base, f"max(max_over_time(scrape_duration_seconds{{{targets}}}[2m]))")},
            **own.figures(),
        }
        span = min(minutes * 60 - 60, 15 * 60)
        out["queries"] = [{"panel": panel, "raw": raw, "recorded": rec, "range_s": span,
                           "raw_timing": time_query(base, raw, span),
                           "recorded_timing": time_query(base, rec, span) if rec else None}
                          for panel, raw, rec in QUERIES]
        out["instant_queries"] = [{"panel": panel, "expr": expr, "timing": time_instant(base, expr)}
                                  for panel, expr in INSTANT]
        out["elapsed_s"] = time.monotonic() - started
        return out
    finally:
        stop(proc, signal.SIGTERM)
        log.close()
        for srv in servers:
            srv.shutdown()
            srv.server_close()


class OwnMetrics:
    """Prometheus' own /metrics, read every 5 s while it scrapes (this Prometheus does not scrape itself: its own
    series would count in the figures)."""

    NAMES = ("prometheus_tsdb_head_series", "go_memstats_heap_inuse_bytes", "process_resident_memory_bytes",
             "prometheus_tsdb_head_samples_appended_total", "process_cpu_seconds_total",
             "prometheus_rule_group_last_duration_seconds", "prometheus_rule_evaluation_failures_total",
             "prometheus_rule_group_iterations_missed_total")

    def __init__(self, base: str) -> None:
        self.base = base
        self.url = f"{base}/metrics"
        self.reads: list[tuple[float, dict[str, dict[str, float]]]] = []
        self.rule_reads: list[tuple[float, dict[str, float]]] = []  # each recording rule's last evaluation time

    def read(self) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        with open_local(self.url, timeout=30) as answer:
            text = answer.read().decode()
        values: dict[str, dict[str, float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in self.NAMES:
                    key = sample.labels.get("rule_group", "")
                    values.setdefault(sample.name, {})[key] = values.get(sample.name, {}).get(key, 0) + sample.value
        rules = prom_get(self.base, "/api/v1/rules", type="record")["groups"]
        timings = {f"{g['name']}/{r['name']}": float(r.get("evaluationTime") or 0) for g in rules for r in g["rules"]}
        values["load_average_1m"] = {"": os.getloadavg()[0]}  # the machine's, every process on it
        self.reads.append((time.monotonic(), values))
        self.rule_reads.append((time.monotonic(), timings))

    def run_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.read()
            time.sleep(5.0)
        self.read()

    def figures(self) -> dict[str, Any]:
        (t1, last) = self.reads[-1]
        recent = [(t, v) for t, v in self.reads if t >= t1 - 120]
        t0, first = recent[0]
        minute = next((t, v) for t, v in self.reads if t >= t1 - 60)
        one = lambda values, name: sum(values.get(name, {}).values())  # noqa: E731
        groups = last.get("prometheus_rule_group_last_duration_seconds", {})
        return {
            "head_series": one(last, "prometheus_tsdb_head_series"),
            "heap_inuse_bytes": one(last, "go_memstats_heap_inuse_bytes"),
            "rss_bytes": one(last, "process_resident_memory_bytes"),
            "rss_max_bytes": max(one(v, "process_resident_memory_bytes") for _, v in self.reads),
            "samples_appended_per_s": (one(last, "prometheus_tsdb_head_samples_appended_total")
                                       - one(minute[1], "prometheus_tsdb_head_samples_appended_total"))
            / max(t1 - minute[0], 1e-9),
            "cpu_cores_last_2min": (one(last, "process_cpu_seconds_total") - one(first, "process_cpu_seconds_total"))
            / max(t1 - t0, 1e-9),
            "rule_group_last_s": groups,
            "rule_group_max_s": {g: max(v.get("prometheus_rule_group_last_duration_seconds", {}).get(g, 0.0)
                                        for _, v in recent) for g in groups},
            "recording_rule_max_s": {name: max(r.get(name, 0.0) for t, r in self.rule_reads if t >= t1 - 120)
                                     for name in self.rule_reads[-1][1]},
            "rule_evaluation_failures": one(last, "prometheus_rule_evaluation_failures_total"),
            "iterations_missed": one(last, "prometheus_rule_group_iterations_missed_total"),
            "iterations_missed_by_group": {g.rsplit(";", 1)[-1]: n for g, n in
                                           last.get("prometheus_rule_group_iterations_missed_total", {}).items()},
            "load_average_1m": [min(one(v, "load_average_1m") for _, v in self.reads),
                                max(one(v, "load_average_1m") for _, v in self.reads)],
        }


def prometheus_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    return (out.stdout or out.stderr).splitlines()[0].strip()


# -- report ------------------------------------------------------------------------------------------------------------


def per_stream(figures: dict[str, Any]) -> dict[str, Any]:
    """A plain stream's series and bytes: cam-1's own, checked against the 1-to-3-stream difference."""
    one, three = figures["one_vs_three"]["one"], figures["one_vs_three"]["three"]
    mine = three["streams"]["cam-1"]
    diff_series = (three["total_series"] - one["total_series"]) / 2
    diff_bytes = (three["total_bytes"] - one["total_bytes"]) / 2
    w1, w3 = figures["one_vs_three"]["wire_one"], figures["one_vs_three"]["wire_three"]
    return {"series": mine["total_series"], "bytes": mine["total_bytes"], "by_family": mine["series"],
            "bytes_by_family": mine["bytes"], "diff_series": diff_series, "diff_bytes": diff_bytes,
            "wire_diff": {k: {"bytes": (w3[k]["bytes"] - w1[k]["bytes"]) / 2,
                              "gzip_bytes": (w3[k]["gzip_bytes"] - w1[k]["gzip_bytes"]) / 2} for k in w1},
            "fixed_series": three["fixed"]["total_series"], "fixed_bytes": three["fixed"]["total_bytes"]
            + three["comment_bytes"], "fixed_by_family": three["fixed"]["series"]}


EXTRAS = (  # (stream, what it has, the stream it is compared with)
    ("rec", "`record: true` (a file stream)", "cam-1"),
    ("door", "one RTSP `url`, reconnecting (nothing listens)", "cam-1"),
    ("gate", "two RTSP `inputs` (main: record+view, sub: classify), reconnecting", "door"),
    ("ev-1", "events on: one rule with one label (worker `events`)", "cam-1"),
)


def extras(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """Each stream of EXTRAS against a plain one: its series, and the families that differ."""
    streams = {**figures["plain_worker"]["streams"], **figures["events_worker"]["streams"]}
    rows = []
    for name, what, base in EXTRAS:
        mine, other = streams[name]["series"], streams[base]["series"]
        diff = {fam: mine.get(fam, 0) - other.get(fam, 0) for fam in sorted(set(mine) | set(other))}
        rows.append({"stream": name, "what": what, "series": streams[name]["total_series"], "against": base,
                     "added": streams[name]["total_series"] - streams[base]["total_series"],
                     "families": {fam: n for fam, n in diff.items() if n}})
    return rows


def families_table(by_family: dict[str, int], bytes_by_family: dict[str, int]) -> list[str]:
    lines = ["| family | series | bytes |", "|---|---|---|"]
    for fam, n in sorted(by_family.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"| `{fam}` | {n} | {bytes_by_family.get(fam, 0)} |")
    return lines


def write_report(out: Path, result: dict[str, Any]) -> None:
    s = result["per_stream"]
    cpu = result["cpu"]
    lines = [
        "# Prometheus at fleet size (benchmarks/prometheus_series.py)", "",
        f"CPU {cpu}, {result.get('cores')} cores; Python {platform.python_version()}; "
        f"prometheus_client {result['prometheus_client']}. A real `PipelineWorker` (stream/cluster/worker.py) in one "
        "process, Ray blocked, the tiny random ResNet18, looping 96x64 file streams at 5 frames/s. Series = sample "
        "lines of the text exposition (`generate_latest`, what /metrics writes); bytes = those lines with their "
        "newlines.", "",
        "## One stream, one worker (measured)", "",
        f"- **A plain file stream: {s['series']} series, {s['bytes']} bytes** of exposition "
        f"(cam-1's own lines; 3 streams minus 1 stream, halved: {s['diff_series']:g} series, {s['diff_bytes']:g} "
        "bytes).",
        f"- Each character of a stream's name adds {s['series']} bytes per stream to every scrape (the name is in each "
        "of its series; `cam-1` here has 5).",
        f"- Fixed per worker process: **{s['fixed_series']} series**, {s['fixed_bytes']} bytes (HELP/TYPE lines "
        f"included), of which `sightline_worker_*`: {result['worker_gauges']} series.",
        f"- Over HTTP from the worker's own endpoint, per added stream: "
        f"{s['wire_diff']['openmetrics']['bytes']:g} bytes OpenMetrics (what Prometheus asks for), "
        f"{s['wire_diff']['openmetrics']['gzip_bytes']:g} gzipped; a 200-stream body built from cam-1's lines: "
        f"{result['replicated']['bytes']} bytes, {result['replicated']['gzip_bytes']} gzipped.", "",
        "Per plain stream, by family:", "", *families_table(s["by_family"], s["bytes_by_family"]), "",
        "Streams with features that add series (each stream's own series, same worker):", "",
        "| stream | what | series | against | added | families that differ |", "|---|---|---|---|---|---|",
        *[f"| {e['stream']} | {e['what']} | {e['series']} | {e['against']} | {e['added']:+d} | "
          + ", ".join(f"`{fam}` {n:+d}" for fam, n in e["families"].items()) + " |" for e in result["extras"]],
        "",
        "`door` and `gate` never connected: they lack the two decode gauges (`sightline_stream_decode_keyframes_only`, "
        "`sightline_stream_keyframe_interval_seconds`), which a stream gets once its source is open (metrics.py "
        "`_decode_families`); a connected RTSP camera has a plain file stream's series, and each further input the "
        "`sightline_input_*` families once more.", "",
        f"Events also add, once per process: {result['events_fixed_extra']} series (the event log gauge, the webhook "
        "output's counters and gauges: per output, not per stream).", "",
        "## Projection (arithmetic on the figures above)", "",
        f"Shipped scrape_interval {SCRAPE_INTERVAL_S:g} s. Stored: each worker's series less the `_created` ones the "
        f"shipped jobs drop ({dropped(s['by_family'])} per stream, {dropped(s['fixed_by_family'])} per worker), plus "
        f"the {len(PER_TARGET)} Prometheus writes per target. Memory: the commonly quoted 3-4 KiB per active head "
        "series of Prometheus 2.x, a rule of thumb, **not measured**" + (
            "; the measured-basis column uses the heap per head series of the --fleet run below." if
            result.get("fleet") else "."), "",
        "| cameras | workers x cameras | series per worker (exposed) | series stored | text bytes per worker scrape | "
        "gzip per worker (built) | bytes per scrape round | samples/s | memory (rule of thumb) | memory (measured "
        "basis) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for p in result["projection"]:
        measured = f"{p['memory_gib_measured_basis']:.1f} GiB" if p["memory_gib_measured_basis"] else "-"
        gz = f"{p['gzip_bytes_per_worker'] / 1e3:.0f} kB" if p["gzip_bytes_per_worker"] else "-"
        lines.append(
            f"| {p['workers'] * p['cameras_per_worker']:,} | {p['workers']} x {p['cameras_per_worker']} | "
            f"{p['series_per_worker']:,} | {p['series']:,} | {p['text_bytes_per_worker'] / 1e6:.2f} MB | {gz} | "
            f"{p['text_bytes_per_scrape_round'] / 1e6:.0f} MB | {p['samples_per_s']:,.0f} | "
            f"{p['memory_gib_rule_of_thumb'][0]:.1f}-{p['memory_gib_rule_of_thumb'][1]:.1f} GiB (estimate) | "
            f"{measured} |")
    fl = result.get("fleet")
    if fl:
        lines += fleet_section(fl, cpu, result.get("cores"))
    out.write_text("\n".join(lines) + "\n")


def rule_intervals() -> str:
    default = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())["global"]["evaluation_interval"]
    out = []
    for name in ("alerts.yml", "recording.yml"):
        for group in yaml.safe_load((PROMETHEUS_DIR / name).read_text())["groups"]:
            out.append(f"{group['name']} every {group.get('interval', default)}")
    return ", ".join(out)


def fleet_section(fl: dict[str, Any], cpu: str, cores: int | None) -> list[str]:
    cameras = fl["workers"] * fl["cameras_per_worker"]
    per_series = fl["heap_inuse_bytes"] / fl["head_series"]
    lines = [
        "", f"## A real Prometheus at {cameras:,} cameras (--fleet {fl['workers']}x{fl['cameras_per_worker']}, "
        f"measured)", "",
        f"{fl['prometheus_version']} on the same machine ({cpu}, {cores} cores, shared with the stand-ins "
        "that serve the expositions and the real worker; the machine's 1-minute load average ran "
        f"{fl['load_average_1m'][0]:.1f}-{fl['load_average_1m'][1]:.1f}, other jobs included), after "
        f"{fl['minutes']:g} minutes of 5 s scrapes, deploy/prometheus/prometheus.yml's sightline-workers job and "
        f"rule files as shipped ({fl.get('rule_intervals') or rule_intervals()}). A young head block: bytes per "
        "series grow until each series' chunk fills (120 samples, 10 minutes at 5 s), and a Prometheus compacting "
        "its 2 h block or answering heavy queries needs more: size for about twice the figure.", "",
        f"- Head series: {fl['head_series']:,.0f} (the fleet's stored: {fl['fleet_series_stored']:,.0f}, "
        f"{fl['stored_per_stand_in_target']:,.0f} per stand-in target, {fl['stored_per_stand_in_stream']:.0f} per "
        f"stream; the real worker's cam-1: {fl['real_target'].get('cam-1', 0):.0f})",
        f"- Targets up: {fl['targets_up']:.0f} of {fl['workers']}; scrape duration avg "
        f"{fl['scrape_duration_s']['avg'] * 1e3:.0f} ms, max over 2 min {fl['scrape_duration_s']['max'] * 1e3:.0f} ms",
        f"- Samples appended: {fl['samples_appended_per_s']:,.0f}/s; Prometheus' CPU: "
        f"{fl['cpu_cores_last_2min']:.2f} cores over the last 2 minutes",
        f"- Heap in use {fl['heap_inuse_bytes'] / 2**30:.2f} GiB, RSS {fl['rss_bytes'] / 2**30:.2f} GiB (max "
        f"{fl['rss_max_bytes'] / 2**30:.2f}): "
        f"**{per_series / 1024:.1f} KiB heap per head series**",
        f"- Recorded series: {fl['recorded_series']:,.0f} ({fl['recorded_per_stream']:.0f} per stream, "
        f"{fl['recorded_per_stand_in_target']:,.0f} per stand-in worker with its streams)",
        f"- `_created` series stored: {fl['created_series'] or 0:.0f}; series with an `exported_worker` label: "
        f"{fl['exported_worker_label']:.0f}",
        "- Rule groups, last evaluation (max over 2 min): " + ", ".join(
            f"{g.rsplit(';', 1)[-1]} {v * 1e3:.0f} ms ({fl['rule_group_max_s'].get(g, v) * 1e3:.0f})"
            for g, v in sorted(fl["rule_group_last_s"].items())),
        f"- Rule evaluation failures {fl['rule_evaluation_failures']:.0f}; iterations missed (a group still "
        f"evaluating when its next turn came): {fl['iterations_missed']:.0f}" + "".join(
            f", {g} {n:.0f}" for g, n in sorted(fl["iterations_missed_by_group"].items()) if n), "",
        f"Dashboard queries, range {fl['queries'][0]['range_s']:.0f} s at a 15 s step, median of 3 "
        "(wall time of the HTTP query on 127.0.0.1):", "",
        "| panel | raw | series | recorded | series |", "|---|---|---|---|---|"]
    for q in fl["queries"]:
        raw, rec = q["raw_timing"], q["recorded_timing"]
        rec_text = f"{rec['median_s'] * 1e3:.0f} ms | {rec['series']}" if rec else "- | -"
        lines.append(f"| {q['panel']} | {raw['median_s'] * 1e3:.0f} ms | {raw['series']} | {rec_text} |")
    for q in fl.get("instant_queries", []):
        t = q["timing"]
        lines.append(f"| {q['panel']}, instant: `{q['expr']}` | {t['median_s'] * 1e3:.0f} ms | {t['series']} | - | - |")
    lines += ["", "Recording rules, each one's longest evaluation over the last 2 minutes:", "",
              "| group / rule | ms |", "|---|---|"]
    for name, v in sorted(fl.get("recording_rule_max_s", {}).items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {v * 1e3:.0f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/prometheus-fleet-cpu.md")
    parser.add_argument("--fleet", help="WORKERSxCAMERAS: also run a real Prometheus against that many stand-ins")
    parser.add_argument("--minutes", type=float, default=6.0, help="--fleet: how long Prometheus scrapes")
    parser.add_argument("--report", type=Path, help="write --out's markdown again from this run's JSON, run nothing")
    args = parser.parse_args(argv)
    if args.report:
        write_report(args.out, json.loads(args.report.read_text()))
        return 0
    prometheus = shutil.which("prometheus")
    if args.fleet and prometheus is None:
        parser.error("--fleet needs the prometheus binary (Debian package 'prometheus')")
    sys.modules["ray"] = None  # type: ignore[assignment]  # the worker class is plain Python; no Ray here
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("sightline").setLevel(logging.ERROR)  # the unreachable RTSP cameras' reconnects, every second
    from importlib.metadata import version

    result: dict[str, Any] = {"cpu": cpu_name(), "cores": os.cpu_count(),
                              "prometheus_client": version("prometheus-client")}
    with tempfile.TemporaryDirectory(prefix="prom-series-") as tmp:
        folder = Path(tmp)
        figures, plain = measure_series(folder)
        try:
            s = per_stream(figures)
            result["figures"] = {k: v for k, v in figures.items() if k != "template_text"}
            result["per_stream"] = s
            fixed = figures["one_vs_three"]["three"]["fixed"]["series"]
            result["worker_gauges"] = sum(n for fam, n in fixed.items() if fam.startswith("sightline_worker_"))
            result["extras"] = extras(figures)
            result["events_fixed_extra"] = (figures["events_worker"]["fixed"]["total_series"]
                                            - figures["plain_worker"]["fixed"]["total_series"])
            result["replicated"] = gzip_of_replicated(figures["template_text"], 200)
            if args.fleet:
                workers, cameras = (int(x) for x in args.fleet.lower().split("x"))
                result["fleet"] = run_fleet(folder, figures["template_text"], plain, workers, cameras, args.minutes,
                                            prometheus)
        finally:
            plain.shutdown()
    per_series = (result["fleet"]["heap_inuse_bytes"] / result["fleet"]["head_series"]) if args.fleet else None
    result["projection"] = [asdict(project(
        w, c, (s["series"], dropped(s["by_family"]), s["bytes"]),
        (s["fixed_series"], dropped(s["fixed_by_family"]), s["fixed_bytes"]),
        gzip_bytes=result["replicated"]["gzip_bytes"] if c == 200 else None,
        measured_bytes_per_series=per_series)) for w, c in FLEETS]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    write_report(args.out, result)
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
