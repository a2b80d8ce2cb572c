"""Camera density (issue 24): how many cameras one box classifies at ``infer_fps``, against its computed limit.

Everything runs on 127.0.0.1. A 720p30 H.264 clip with a 1 s GOP (ffmpeg's testsrc2, libx264, no B-frames,
no scene-cut keyframes) and a small trained 3-class bundle (ResNet18 fine-tuned on scikit-image photos
with Sightline's trainer at the demo classifier's input size; cached) are made offline. Then, for each
source kind and each N of the ladder, the real service (``python -m sightline run CONFIG --port P``, a
separate process) serves N cameras:

- ``file``: N realtime file streams (``mode: realtime``, ``loop: true``: paced like a camera);
- ``rtsp``: N RTSP streams (TCP interleaved) from Debian's GStreamer RTSP server
  (tests/support/gst_rtsp_server.py --mounts N, run by /usr/bin/python3), one mount per camera, each a shared
  media that only repackets the file (its CPU is measured and reported beside the service's).

The cameras are added through the API spread over ``--stagger-s`` (one GOP): real cameras' keyframes are
out of phase, while N copies of one clip started together would put every keyframe in the same instant.
Each camera is classified at ``--infer-fps``; ``--decode`` sets ``streams[].decode`` (left out of the
config when not given: the service's own default). After every stream is live and ``--warmup`` seconds
more, a ``--seconds`` window measures: per-camera classified rate (``frames_inferred`` deltas from
``GET /api/streams``; min/median), p99 capture->result (the deltas of the
``sightline_end_to_end_latency_seconds`` histogram on ``/metrics``, all cameras together; and the worst
camera's), the service's CPU (utime+stime deltas of its process tree, in cores), RSS, threads, mean batch,
and the p99 response time of ``GET /api/streams`` and ``GET /metrics`` polled ``--poll-per-s`` (0.5) times a
second each under that load. The ladder stops at the first N where a camera falls below 0.9 x ``infer_fps`` or the
p99 exceeds 1 s (the last passing N and the first failing one are reported).

In the same run, the expected limit from measured costs (single-thread, in this process, CPU time):
per-keyframe decode (only the keyframe packets fed to a one-thread decoder), per-frame decode of every
frame, the scale to the model's working size (the service's own ``working_image``), the demux per
camera-second, and the model's CPU per image at batch 1/2/4/8 (the served backend, working-size frames
through ``Classifier.probabilities``). The limit is

    cores / (frames decoded per camera-second x decode + infer_fps x (scale + model per image) + demux)

with every frame decoded (``decode: all``) or only keyframes (``keyframes``; ``auto`` when infer_fps is
at most the keyframe rate), the model cost taken at the mean batch the service formed at the last passing
N. The result is the reached N over that limit.

    flock /tmp/sightline-bench.lock .venv/bin/python benchmarks/density.py \
        --source file --infer-fps 1 --out benchmarks/results/density-baseline-cpu.json
    .venv/bin/python benchmarks/density.py --quick --source both       # ladder 5,10, short windows

Writes ``--out`` (JSON) and the same name with ``.md`` (the tables). Name the CPU with any figure quoted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common import cpu_name, open_local  # benchmarks/ is on sys.path when this script runs

ROOT = Path(__file__).resolve().parents[1]
# shared with the tests (one mount there, one shared mount per camera here)
SERVER_SCRIPT = Path(__file__).resolve().parents[1] / "tests" / "support" / "gst_rtsp_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"
TOKEN = "density-token"  # loopback only, one run: not a secret worth hiding
LATENCY_METRIC = "sightline_end_to_end_latency_seconds"
BATCH_METRIC = "sightline_batch_size"
CLASSES = {"chelsea": "cat", "coffee": "coffee", "rocket": "rocket"}  # scikit-image photo -> class
BUNDLE_VERSION = 1  # bump when the training recipe below changes (the cached bundle is rebuilt)
RATE_SHARE = 0.9  # a camera below this share of infer_fps fails the step
P99_LIMIT_S = 1.0


# -- pure figures (tested in tests/benchmarks/test_density.py) ------------------------------------------


def parse_histograms(text: str, name: str) -> dict[str, dict[float, float]]:
    """``name``'s cumulative buckets per ``stream`` label ("" without one): {stream: {le: count}}.

    Reads the Prometheus text format line by line (what /metrics serves); ``le="+Inf"`` is ``math.inf``.
    """
    out: dict[str, dict[float, float]] = {}
    prefix = name + "_bucket{"
    for line in text.splitlines():
        if not line.startswith(prefix):
            continue
        labels_text, _, value = line[len(prefix):].rpartition("} ")
        labels = dict(part.split("=", 1) for part in _split_labels(labels_text))
        le = labels.get("le", '"+Inf"').strip('"')
        out.setdefault(labels.get("stream", '""').strip('"'), {})[math.inf if le == "+Inf" else float(le)] = \
            float(value)
    return out


def _split_labels(text: str) -> list[str]:
    parts, current, quoted = [], "", False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append(current)
            current = ""
        else:
            current += ch
    if current:
        parts.append(current)
    return parts


def parse_sum_count(text: str, name: str) -> tuple[float, float]:
    """(sum, count) of an unlabelled histogram ``name`` (0, 0 when absent)."""
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith(name + "_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith(name + "_count"):
            count += float(line.rsplit(" ", 1)[1])
    return total, count


def bucket_delta(before: dict[float, float], after: dict[float, float]) -> dict[float, float]:
    return {le: after[le] - before.get(le, 0.0) for le in after}


def merge_buckets(histograms: Iterable[dict[float, float]]) -> dict[float, float]:
    merged: dict[float, float] = {}
    for h in histograms:
        for le, n in h.items():
            merged[le] = merged.get(le, 0.0) + n
    return merged


def quantile(buckets: dict[float, float], q: float) -> float | None:
    """Prometheus' histogram_quantile: linear inside the bucket; beyond the last finite bound, that bound."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_n = 0.0, 0.0
    for le in bounds:
        n = buckets[le]
        if n >= rank:
            if math.isinf(le):
                return prev_le
            if n == prev_n:
                return le
            return prev_le + (le - prev_le) * (rank - prev_n) / (n - prev_n)
        prev_le, prev_n = le, n
    return bounds[-2] if len(bounds) > 1 else None


def share_above(buckets: dict[float, float], bound: float) -> float | None:
    """Share of observations above ``bound`` (which must be a bucket bound)."""
    total = buckets.get(math.inf) or (buckets[max(buckets)] if buckets else 0.0)
    if not total or bound not in buckets:
        return None
    return 1.0 - buckets[bound] / total


@dataclass
class Step:
    """One N of a ladder, measured."""

    source: str
    cameras: int
    window_s: float
    rates: list[float]  # classified/s per camera over the window
    p99_s: float | None  # all cameras' results together, from the histogram deltas
    worst_camera_p99_s: float | None
    over_1s: float | None  # share of results slower than 1 s
    cpu_cores: float
    rss_mb: float
    threads: int
    api_streams_p99_ms: float | None
    metrics_p99_ms: float | None
    mean_batch: float | None
    start_s: float  # service start until every stream was live
    not_live: int = 0
    server_cpu_cores: float | None = None  # the RTSP server's, when the source is rtsp
    other_cores: float | None = None  # the rest of the machine (other work: a shared box), this script left out
    own_cores: float | None = None  # this script's own CPU in the window (polling the API, reading /proc)
    load_avg: tuple[float, float, float] = (0.0, 0.0, 0.0)  # at the end of the window
    decode: dict[str, int] = field(default_factory=dict)  # "setting/mode: reason" -> cameras
    problems: list[str] = field(default_factory=list)

    @property
    def rate_min(self) -> float:
        return min(self.rates) if self.rates else 0.0

    @property
    def rate_median(self) -> float:
        return statistics.median(self.rates) if self.rates else 0.0


def judge(step: Step, infer_fps: float, rate_share: float = RATE_SHARE, p99_limit_s: float = P99_LIMIT_S) -> list[str]:
    """Why this step fails (empty: it passes)."""
    problems = []
    if step.not_live:
        problems.append(f"{step.not_live} camera(s) not live")
    if step.rate_min < rate_share * infer_fps:
        problems.append(f"slowest camera {step.rate_min:.3f}/s < {rate_share:g} x {infer_fps:g}")
    if step.p99_s is None:
        problems.append("no result in the window")
    elif step.p99_s > p99_limit_s:
        problems.append(f"p99 {1000 * step.p99_s:.0f} ms > {1000 * p99_limit_s:.0f} ms")
    return problems


@dataclass(frozen=True)
class Costs:
    """CPU seconds, measured single-thread (model: the whole process) on this machine."""

    fps: float  # the clip's frame rate
    keyframe_rate: float  # keyframes per second of video
    keyframe_decode_s: float  # per keyframe, only keyframe packets fed to the decoder
    frame_decode_s: float  # per frame, every frame decoded
    scale_s: float  # per classified frame: 720p -> working size RGB (the service's working_image)
    demux_s: float  # per camera-second: reading packets, no decoding
    model_s: dict[int, float]  # batch -> CPU per image (preprocessing + forward)
    model_wall_s: dict[int, float]  # batch -> wall per image


def model_cost_at(costs: Costs, mean_batch: float | None) -> tuple[int, float]:
    """The per-image model cost at the measured batch size nearest below ``mean_batch`` (batch 1 if unknown)."""
    sizes = sorted(costs.model_s)
    pick = sizes[0]
    for b in sizes:
        if mean_batch is not None and b <= mean_batch + 1e-9:
            pick = b
    return pick, costs.model_s[pick]


def camera_cost(costs: Costs, infer_fps: float, mode: str, model_s: float) -> float:
    """CPU seconds per camera-second. ``mode``: all (every frame decoded) or keyframes."""
    if mode == "keyframes":
        classified = min(infer_fps, costs.keyframe_rate)
        return classified * (costs.keyframe_decode_s + costs.scale_s + model_s) + costs.demux_s
    classified = min(infer_fps, costs.fps)
    return costs.fps * costs.frame_decode_s + classified * (costs.scale_s + model_s) + costs.demux_s


def expected_mode(decode: str | None, infer_fps: float, keyframe_rate: float) -> str:
    """The decode mode the service should be in: the key left out is today's behaviour (all frames)."""
    if decode == "keyframes":
        return "keyframes"
    if decode == "auto" and infer_fps <= keyframe_rate + 1e-9:
        return "keyframes"
    return "all"


def ladder_outcome(steps: Sequence[Step]) -> tuple[int | None, int | None]:
    """(last passing N, first failing N)."""
    passed = failed = None
    for s in steps:
        if s.problems:
            failed = s.cameras
            break
        passed = s.cameras
    return passed, failed


def per_added_camera(steps: Sequence[Step]) -> dict[str, float] | None:
    """RSS (MB) and threads per added camera: the slope between the smallest and largest N measured."""
    if len(steps) < 2:
        return None
    a, b = steps[0], steps[-1]
    dn = b.cameras - a.cameras
    if dn <= 0:
        return None
    return {"rss_mb": (b.rss_mb - a.rss_mb) / dn, "threads": (b.threads - a.threads) / dn}


# -- procfs ------------------------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()  # fields from 3 (state) on


def tree_cpu_s(pid: int) -> float:
    """utime+stime of ``pid`` and its live descendants, plus the children it has reaped."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(_stat_fields(int(entry))[1])
            except (OSError, ValueError, IndexError):
                continue
    tree, frontier = {pid}, [pid]
    while frontier:
        p = frontier.pop()
        for child, parent in parents.items():
            if parent == p and child not in tree:
                tree.add(child)
                frontier.append(child)
    ticks = 0
    for p in tree:
        try:
            f = _stat_fields(p)
        except OSError:
            continue
        ticks += int(f[11]) + int(f[12]) + (int(f[13]) + int(f[14]) if p == pid else 0)
    return ticks / CLK_TCK


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (all cores; /proc/stat, idle and iowait left out)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK  # user nice system idle iowait irq softirq steal


def rss_threads(pid: int) -> tuple[float, int]:
    rss = threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return rss / 2**20, threads


# -- inputs: clip and bundle ---------------------------------------------------------------------------


def make_clip(path: Path, seconds: float, size: str, fps: int = 30, gop_s: float = 1.0) -> Path:
    """720p30 (``size``) H.264, fixed GOP of ``gop_s`` (no scene-cut keyframes), no B-frames, yuv420p."""
    if path.exists():
        return path
    gop = max(1, round(fps * gop_s))
    part = path.with_suffix(".partial.mp4")
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", f"testsrc2=size={size}:rate={fps}", "-t", f"{seconds:g}", "-c:v", "libx264",
                    "-preset", "veryfast", "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0", "-bf", "0",
                    "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(part)], check=True)
    os.replace(part, path)
    return path


def loop_clip(clip: Path, path: Path, seconds: float, clip_s: float) -> Path:
    """``clip`` repeated (stream copy, timestamps continued) to at least ``seconds``: the RTSP mounts do not loop."""
    repeats = max(0, math.ceil(seconds / clip_s) - 1)
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-stream_loop", str(repeats),
                    "-i", str(clip), "-c", "copy", "-movflags", "+faststart", str(path)], check=True)
    return path


def trained_bundle(path: Path) -> Path:
    """ResNet18 fine-tuned (from scratch, CPU, seconds) on crops of 3 scikit-image photos, at the demo
    classifier's input size: what `sightline demo` trains offline, with one class fewer."""
    if path.exists():
        return path
    import numpy as np
    from PIL import Image
    from sightline.demo import CROP, RESIZE, TRAIN_SIZE, random_crop
    from sightline.synthetic_media import photo
    from sightline.training.config import TrainConfig
    from sightline.training.trainer import Trainer

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="density-train-", dir=path.parent) as tmp:
        root = Path(tmp) / "data"
        for name, label in CLASSES.items():
            image = photo(name)
            for split, count in (("train", 16), ("val", 4)):
                folder = root / split / label
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(count):
                    crop = random_crop(image, rng)
                    Image.fromarray(np.ascontiguousarray(crop)).resize(TRAIN_SIZE).save(folder / f"{i:03d}.png")
        cfg = TrainConfig(data=root, out=Path(tmp) / "run", init="scratch", mode="full", epochs=3, batch_size=8,
                          optimizer="adamw", lr=0.003, warmup_epochs=0.5, resize=RESIZE, crop=CROP, num_workers=0,
                          progress=False, device="cpu", seed=0)
        result = Trainer(cfg).run()
        os.replace(result.out / "bundle.pt", path)
    print(f"trained the 3-class bundle (val top-1 {result.best_acc1:.2f}): {path}", flush=True)
    return path


def random_bundle(path: Path) -> Path:
    """The tests' tiny random-init ResNet18 (3 classes, 64/56 px): for the quick self-test only."""
    if not path.exists():
        sys.path.insert(0, str(ROOT))
        from tests.support.models import tiny_bundle

        tiny_bundle(num_classes=3).save(path)
    return path


# -- costs -----------------------------------------------------------------------------------------------


def measure_costs(clip: Path, classifier, batches: Sequence[int], model_seconds: float) -> Costs:
    import av
    import torch
    from av.video.reformatter import VideoReformatter
    from sightline.stream.sources.video_source import working_image

    def decoder(container):
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"
        stream.codec_context.thread_count = 1
        return stream

    with av.open(str(clip)) as c:  # demux only
        stream = c.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate)
        start = time.thread_time()
        packets = keyframes = 0
        for p in c.demux(stream):
            if p.size:
                packets += 1
                keyframes += bool(p.is_keyframe)
        demux = time.thread_time() - start
    video_s = packets / fps
    with av.open(str(clip)) as c:  # keyframes only
        stream = decoder(c)
        frames, spent = [], 0.0
        for p in c.demux(stream):
            if not (p.size and p.is_keyframe):
                continue
            start = time.thread_time()
            frames.extend(p.decode())
            spent += time.thread_time() - start
        keyframe_decode = spent / max(len(frames), 1)
    with av.open(str(clip)) as c:  # every frame
        stream = decoder(c)
        start = time.thread_time()
        decoded = sum(len(p.decode()) for p in c.demux(stream))
        frame_decode = (time.thread_time() - start) / max(decoded, 1)
    h, w = classifier.preprocessor.working_size(frames[0].height, frames[0].width)
    scale_ctx, rgb_ctx = VideoReformatter(), VideoReformatter()
    images = [working_image(f, w, h, scale_ctx, rgb_ctx) for f in frames[:3]]  # warm
    start = time.thread_time()
    images = [working_image(f, w, h, scale_ctx, rgb_ctx) for f in frames]
    scale = (time.thread_time() - start) / len(frames)
    model_s, model_wall = {}, {}
    with torch.inference_mode():
        for b in batches:
            batch = [images[i % len(images)] for i in range(b)]
            for _ in range(3):
                classifier.probabilities(batch)
            rounds = []
            for _ in range(5):  # the least of five: other work on a shared machine only ever adds
                done, cpu0, wall0 = 0, time.process_time(), time.perf_counter()
                while time.perf_counter() - wall0 < model_seconds / 5 or done < 2:
                    classifier.probabilities(batch)
                    done += 1
                rounds.append(((time.process_time() - cpu0) / (done * b), (time.perf_counter() - wall0) / (done * b)))
            model_s[b], model_wall[b] = min(rounds)
    return Costs(fps=fps, keyframe_rate=keyframes / video_s, keyframe_decode_s=keyframe_decode,
                 frame_decode_s=frame_decode, scale_s=scale, demux_s=demux / video_s, model_s=model_s,
                 model_wall_s=model_wall)


# -- the service and the RTSP server ----------------------------------------------------------------


class Api:
    """Plain HTTP to the service on 127.0.0.1 (the environment's proxy settings are ignored)."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self._open = open_local

    def get(self, path: str, timeout: float = 30.0) -> tuple[int, bytes, float]:
        """(status, body, seconds) of GET ``path``."""
        return self._send(urllib.request.Request(self.base + path, headers={"Authorization": f"Bearer {TOKEN}"}),
                          timeout)

    def post(self, path: str, payload: dict, timeout: float = 30.0) -> tuple[int, bytes, float]:
        """(status, body, seconds) of POST ``path`` with ``payload`` as JSON."""
        return self._send(urllib.request.Request(self.base + path, data=json.dumps(payload).encode(), method="POST",
                                                 headers={"Authorization": f"Bearer {TOKEN}",
                                                          "Content-Type": "application/json"}), timeout)

    def _send(self, request: urllib.request.Request, timeout: float) -> tuple[int, bytes, float]:
        started = time.perf_counter()
        try:
            with self._open(request, timeout=timeout) as reply:
                status, body = reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        return status, body, time.perf_counter() - started

    def streams(self) -> dict[str, dict]:
        status, body, _ = self.get("/api/streams")
        if status != 200:
            raise RuntimeError(f"GET /api/streams answered {status}: {body[:200]!r}")
        return {s["name"]: s for s in json.loads(body)["streams"]}

    def metrics(self) -> str:
        status, body, _ = self.get("/metrics")
        if status != 200:
            raise RuntimeError(f"GET /metrics answered {status}")
        return body.decode()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def die_with_parent() -> None:
    """In a child, before exec: SIGKILL when this script dies (a killed run leaves no service or server behind)."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def stop(proc: subprocess.Popen | None, sig: int = signal.SIGINT, wait_s: float = 30.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


class RtspServer:
    """tests/support/gst_rtsp_server.py under the system Python: N shared mounts, one per camera."""

    def __init__(self, file: Path, mounts: int, log: Path) -> None:
        self.port = free_port()
        self.log = log
        self.proc = subprocess.Popen([SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(self.port), "--mounts",
                                      str(mounts), "--file", str(file)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
                                     preexec_fn=die_with_parent)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("ready "):
            rest = "" if self.proc.poll() is None else self.proc.stdout.read()
            self.close()
            raise RuntimeError(f"the GStreamer RTSP server did not start: {line}{rest}".strip())
        # the rest of its output goes to the log (a pipe nobody reads would block it once full)
        self._drain = threading.Thread(target=self._copy, daemon=True)
        self._drain.start()

    def _copy(self) -> None:
        assert self.proc.stdout is not None
        with self.log.open("a") as out:
            for line in self.proc.stdout:
                out.write(line)

    def url(self, i: int) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam-{i}"

    def close(self) -> None:
        stop(self.proc, signal.SIGTERM, 10)


def missing_rtsp() -> str | None:
    """Why the RTSP source cannot run here, or None."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found"
    probe = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
             "print(' '.join(e for e in ('filesrc', 'qtdemux', 'h264parse', 'rtph264pay') "
             "if Gst.ElementFactory.find(e) is None))")
    result = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        return ("the GStreamer RTSP server is not importable by /usr/bin/python3 (apt-get install python3-gi "
                "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad)")
    if result.stdout.strip():
        return f"GStreamer elements missing: {result.stdout.strip()}"
    return None


def write_config(path: Path, *, bundle: Path, backend: str, device: str, media_root: Path, out_dir: Path,
                 urls: list[str], infer_fps: float, decode: str | None, port: int,
                 add_later: bool = False) -> tuple[Path, list[dict]]:
    """The service's config; with ``add_later`` its streams are left out (returned, to be added through the API)."""
    import yaml

    streams = []
    for i, url in enumerate(urls):
        s: dict[str, object] = {"name": f"cam-{i}", "url": url, "infer_fps": infer_fps}
        if url.startswith("rtsp://"):
            s.update(transport="tcp", open_timeout_s=20, stall_timeout_s=10)
        else:
            s.update(mode="realtime", loop=True)
        if decode is not None:
            s["decode"] = decode
        streams.append(s)
    config = {"model": {"source": str(bundle), "device": device, "backend": backend},
              "output_dir": str(out_dir), "media_root": str(media_root),
              "server": {"host": "127.0.0.1", "port": port, "max_streams": max(64, len(urls))},
              "streams": [] if add_later else streams}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, streams


def wait_until(check: Callable[[], bool], timeout: float, what: str, step: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:.0f} s")
        time.sleep(step)


class Poller(threading.Thread):
    """GET /api/streams and GET /metrics, each about ``per_s`` times a second, timed; RSS/threads each second."""

    def __init__(self, api: Api, pid: int, per_s: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.api, self.pid, self.period = api, pid, 1.0 / per_s
        self.times: dict[str, list[float]] = {"/api/streams": [], "/metrics": []}
        self.rss: list[float] = []
        self.threads: list[int] = []
        self.errors = 0
        self.halt = threading.Event()

    def run(self) -> None:
        next_usage = 0.0
        while not self.halt.is_set():
            started = time.monotonic()
            for path in self.times:
                try:
                    status, _, seconds = self.api.get(path, timeout=10)
                    self.times[path].append(seconds)
                    self.errors += status != 200
                except OSError:
                    self.errors += 1
            if started >= next_usage:
                try:
                    rss, threads = rss_threads(self.pid)
                    self.rss.append(rss)
                    self.threads.append(threads)
                except OSError:
                    pass
                next_usage = started + 1.0
            self.halt.wait(max(0.0, self.period - (time.monotonic() - started)))


def p99_ms(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


def start_service(config: Path, port: int, log: Path,
                  timeout: float) -> tuple[subprocess.Popen, Api, Callable[[], None]]:
    """``sightline run CONFIG`` as a child (its output in ``log``), once it answers /readyz: the process, its API,
    and ``alive()``, which raises with the log's tail once the child has exited (stopped here if it never answers)."""
    with log.open("wb") as out:
        service = subprocess.Popen([sys.executable, "-m", "sightline", "run", str(config), "--port", str(port)],
                                   cwd=ROOT, env={**os.environ, "SIGHTLINE_TOKEN": TOKEN}, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
    api = Api(port)

    def alive() -> None:
        if service.poll() is not None:
            raise RuntimeError(f"the service exited with {service.returncode}:\n"
                               f"{log.read_text(errors='replace')[-3000:]}")

    def answering() -> bool:
        alive()
        try:
            return api.get("/readyz", timeout=2)[0] in (200, 503)
        except OSError:
            return False

    try:
        wait_until(answering, timeout, "the service did not answer /readyz")
    except BaseException:
        stop(service)
        raise
    return service, api, alive


def run_step(source: str, n: int, args: argparse.Namespace, work: Path, bundle: Path, clip: Path,
             long_clip: Path | None) -> tuple[Step, dict]:
    """Start the RTSP server (rtsp) and the service with N cameras; measure one window; stop both."""
    step_dir = work / f"{source}-{n}"
    step_dir.mkdir(parents=True, exist_ok=True)
    server = service = None
    log = step_dir / "service.log"
    try:
        if source == "rtsp":
            assert long_clip is not None
            server = RtspServer(long_clip, n, step_dir / "rtsp-server.log")
            urls = [server.url(i) for i in range(n)]
        else:
            urls = [str(clip)] * n
        port = free_port()
        config, cameras = write_config(
            step_dir / "config.yaml", bundle=bundle, backend=args.backend, device=args.device,
            media_root=clip.parent, out_dir=step_dir / "out", urls=urls, infer_fps=args.infer_fps,
            decode=args.decode, port=port, add_later=args.stagger_s > 0)
        started = time.monotonic()
        service, api, alive = start_service(config, port, log, args.start_timeout)
        if args.stagger_s > 0:
            # real cameras' GOPs are out of phase; N copies of one clip started together are not (every
            # keyframe of every camera in the same instant): add them through the API spread over a GOP
            adding = time.monotonic()
            for i, camera in enumerate(cameras):
                status, body, _ = api.post("/api/streams", camera)
                if status != 201:
                    raise RuntimeError(f"POST /api/streams answered {status}: {body[:300]!r}")
                time.sleep(max(0.0, adding + (i + 1) * args.stagger_s / n - time.monotonic()))
        live_by = args.start_timeout + 0.5 * n

        def all_live() -> bool:
            alive()
            states = api.streams()
            return len(states) == n and all(s["state"] == "live" for s in states.values())

        try:
            wait_until(all_live, live_by, f"not every one of {n} cameras went live")
        except TimeoutError as exc:
            print(f"  {exc}; measuring anyway", flush=True)
        start_s = time.monotonic() - started
        time.sleep(args.warmup)
        alive()
        poller = Poller(api, service.pid, args.poll_per_s)
        s0, m0 = api.streams(), api.metrics()
        t0, c0 = time.monotonic(), tree_cpu_s(service.pid)
        sc0 = tree_cpu_s(server.proc.pid) if server is not None else None
        busy0, own0 = machine_busy_s(), time.process_time()
        poller.start()
        time.sleep(args.seconds)
        s1, m1 = api.streams(), api.metrics()
        t1, c1 = time.monotonic(), tree_cpu_s(service.pid)
        sc1 = tree_cpu_s(server.proc.pid) if server is not None else None
        busy1, own1 = machine_busy_s(), time.process_time()
        poller.halt.set()
        poller.join(15)
        alive()
        window = t1 - t0
        rates = [(s1[name]["frames_inferred"] - s0.get(name, {}).get("frames_inferred", 0)) / window for name in s1]
        h0, h1 = parse_histograms(m0, LATENCY_METRIC), parse_histograms(m1, LATENCY_METRIC)
        deltas = {name: bucket_delta(h0.get(name, {}), h) for name, h in h1.items()}
        merged = merge_buckets(deltas.values())
        camera_p99 = [q for q in (quantile(d, 0.99) for d in deltas.values()) if q is not None]
        b0, b1 = parse_sum_count(m0, BATCH_METRIC), parse_sum_count(m1, BATCH_METRIC)
        batches = b1[1] - b0[1]
        decode = Counter()
        for s in s1.values():
            d = s.get("decode")
            if isinstance(d, dict):
                decode[f"{d.get('setting')}->{d.get('mode')}: {d.get('reason')} "
                       f"(keyframe interval {d.get('keyframe_interval_s')} s)"] += 1
        rss, threads = rss_threads(service.pid)
        step = Step(source=source, cameras=n, window_s=round(window, 2), rates=[round(r, 3) for r in rates],
                    p99_s=quantile(merged, 0.99), worst_camera_p99_s=max(camera_p99, default=None),
                    over_1s=share_above(merged, 1.0), cpu_cores=(c1 - c0) / window,
                    rss_mb=max(poller.rss + [rss]), threads=max(poller.threads + [threads]),
                    api_streams_p99_ms=p99_ms(poller.times["/api/streams"]),
                    metrics_p99_ms=p99_ms(poller.times["/metrics"]),
                    mean_batch=(b1[0] - b0[0]) / batches if batches > 0 else None, start_s=round(start_s, 1),
                    not_live=sum(s["state"] != "live" for s in s1.values()) + max(0, n - len(s1)),
                    server_cpu_cores=None if sc0 is None else (sc1 - sc0) / window,
                    other_cores=((busy1 - busy0) - (c1 - c0) - (0.0 if sc0 is None else sc1 - sc0)
                                 - (own1 - own0)) / window,
                    own_cores=(own1 - own0) / window,
                    load_avg=os.getloadavg(), decode=dict(decode))
        step.problems = judge(step, args.infer_fps)
        extra = {"api_polls": {k: len(v) for k, v in poller.times.items()}, "api_errors": poller.errors,
                 "served_by": served_by(log)}
        return step, extra
    finally:
        stop(service)
        if server is not None:
            server.close()


def served_by(log: Path) -> str | None:
    """The service's 'serving with ...' start-up line (backend, precision, why)."""
    try:
        for line in log.read_text(errors="replace").splitlines():
            if "serving with" in line:
                return line.split("serving with", 1)[1].strip()
    except OSError:
        pass
    return None


# -- report ------------------------------------------------------------------------------------------------


def fmt(v: float | None, spec: str = ".0f", none: str = "-") -> str:
    return none if v is None else format(v, spec)


def step_row(s: Step) -> str:
    worst = s.worst_camera_p99_s
    p99 = f"{fmt(s.p99_s and 1000 * s.p99_s)} ms (worst cam {fmt(worst and 1000 * worst)})"
    server = f" + {s.server_cpu_cores:.2f} server" if s.server_cpu_cores is not None else ""
    verdict = "pass" if not s.problems else "**fail**: " + "; ".join(s.problems)
    return (f"| {s.source} | {s.cameras} | {s.rate_min:.2f} / {s.rate_median:.2f} | {p99} | "
            f"{s.cpu_cores:.2f}{server} | "
            f"{s.rss_mb:.0f} MB | {s.threads} | {fmt(s.api_streams_p99_ms)} ms | {fmt(s.metrics_p99_ms)} ms | "
            f"{fmt(s.mean_batch, '.1f')} | {s.start_s:.0f} s | {fmt(s.other_cores, '.2f')} "
            f"({fmt(s.own_cores, '.2f')}) | "
            f"{'/'.join(f'{x:.2f}' for x in s.load_avg)} | "
            f"{verdict} |")


TABLE_HEAD = ("| source | cameras | classified/s per camera (min / median) | p99 capture→result | CPU (cores) | RSS | "
              "threads | /api/streams p99 | /metrics p99 | mean batch | start→all live | other work (this script) | "
              "load avg (1/5/15) | verdict |\n|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")


def markdown(report: dict) -> str:
    m, c = report["meta"], report["costs"]
    lines = [f"# Camera density (benchmarks/density.py), {m['started']}", "",
             f"- command: `{m['command']}`",
             f"- CPU: {m['cpu']} ({m['cores']} logical cores), shared with other work; load average at the start "
             f"{'/'.join(f'{x:.2f}' for x in m['load_avg_start'])}, at the end "
             f"{'/'.join(f'{x:.2f}' for x in m['load_avg_end'])}",
             f"- commit {m['commit']}; torch {m['torch']}; backend `{m['backend']}` -> {m['served_by'] or '?'}",
             f"- clip: {m['clip']}; bundle: {m['bundle']}",
             f"- infer_fps {m['infer_fps']:g}; decode: {m['decode'] or 'key left out (the service default)'}; "
             f"window {m['seconds']:g} s after all live + {m['warmup']:g} s warm-up",
             "", "## Measured costs (CPU time, this machine, single thread; model: whole process)", "",
             f"- decode, keyframes only: {1000 * c['keyframe_decode_s']:.2f} ms per keyframe "
             f"({c['keyframe_rate']:.2f} keyframes/s of video)",
             f"- decode, every frame: {1000 * c['frame_decode_s']:.2f} ms per frame "
             f"({1000 * c['fps'] * c['frame_decode_s']:.0f} ms per camera-second at {c['fps']:g} fps)",
             f"- scale to the working size: {1000 * c['scale_s']:.2f} ms per classified frame",
             f"- demux: {1000 * c['demux_s']:.2f} ms per camera-second",
             "- model per image (CPU / wall): " + ", ".join(
                 f"batch {b}: {1000 * c['model_s'][b]:.2f} / {1000 * c['model_wall_s'][b]:.2f} ms"
                 for b in c["model_s"]),
             ""]
    for source, ladder in report["ladders"].items():
        lim = ladder["limit"]
        lines += [f"## {source}", "", TABLE_HEAD, *ladder["rows_md"], "",
                  f"- last passing N: **{fmt(ladder['passed'], 'd')}**, first failing N: "
                  f"{fmt(ladder['failed'], 'd', 'none (the ladder ended first: the reached N is a lower bound)')}",
                  f"- computed limit ({lim['mode']} decode, model at batch {lim['batch']}): "
                  f"**{lim['cameras']:.0f} cameras** ({1000 * lim['camera_cost_s']:.1f} ms CPU per camera-second); "
                  f"the other mode: {lim['other_mode']} {lim['other_cameras']:.0f} cameras",
                  f"- reached / computed: **{fmt(ladder['ratio'], '.2f')}**"]
        if ladder.get("per_added_camera"):
            pac = ladder["per_added_camera"]
            lines.append(f"- per added camera: {pac['rss_mb']:.1f} MB RSS, {pac['threads']:.1f} threads")
        for s in ladder["steps"]:
            if s["decode"]:
                lines.append(f"- decode at N={s['cameras']}: " + "; ".join(f"{k} x{v}" for k, v in s["decode"].items()))
        lines.append("")
    lines += ["Verdict per step: a camera below 0.9 x infer_fps, or p99 (all cameras' results in the window, "
              "from the histogram deltas) above 1 s, fails it. CPU: the service's process tree; for rtsp the "
              "GStreamer server's own CPU is added after '+'. Other work: the whole machine's busy CPU "
              "(/proc/stat) less the service's, the server's and this script's (in brackets: its polling), i.e. the "
              "rest of a shared machine. Limit: cores / CPU per camera-second from the costs above."]
    return "\n".join(lines) + "\n"


def limit_for(costs: Costs, args: argparse.Namespace, steps: Sequence[Step], passed: int | None) -> dict:
    """The computed limit for the mode in force, the model costed at the batch formed at the last passing N."""
    at = next((s for s in steps if s.cameras == passed), steps[0] if steps else None)
    batch, model = model_cost_at(costs, at.mean_batch if at else None)
    mode = expected_mode(args.decode, args.infer_fps, costs.keyframe_rate)
    if at is not None and at.decode:  # what the service says is in force, where it says it
        said = Counter(k.split(":", 1)[0].split("->")[-1] for k in Counter(at.decode).elements())
        mode = said.most_common(1)[0][0] if said.most_common(1)[0][0] in ("all", "keyframes") else mode
    other = "keyframes" if mode == "all" else "all"
    cores = os.cpu_count() or 1
    cost = camera_cost(costs, args.infer_fps, mode, model)
    return {"mode": mode, "batch": batch, "camera_cost_s": cost, "cameras": cores / cost, "cores": cores,
            "other_mode": other, "other_cameras": cores / camera_cost(costs, args.infer_fps, other, model)}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="see the module docstring for what is measured and how")
    p.add_argument("--source", choices=["file", "rtsp", "both"], default="file")
    p.add_argument("--infer-fps", type=float, default=1.0)
    p.add_argument("--decode", choices=["auto", "all", "keyframes"], default=None,
                   help="streams[].decode; left out of the config when not given (the service's default)")
    p.add_argument("--ladder", default=None, help="camera counts (default 10,20,30,40,60,80,100,120; --quick: 5,10)")
    p.add_argument("--seconds", type=float, default=None, help="measurement window per step (default 20; quick 8)")
    p.add_argument("--warmup", type=float, default=None, help="seconds after all live (default 8; quick 3)")
    p.add_argument("--device", default="cpu", help="model.device of the service and of the cost measurement "
                                                   "(cuda on a GPU machine: NVDEC decodes where FFmpeg opens it)")
    p.add_argument("--backend", default="auto", help="model.backend (default auto: the fastest installed for the CPU)")
    p.add_argument("--model", choices=["trained", "random"], default="trained",
                   help="trained: the 3-class bundle (cached); random: the tests' tiny random-init one (self-test)")
    p.add_argument("--bundle", type=Path, default=None, help="serve this bundle instead")
    p.add_argument("--clip-seconds", type=float, default=None, help="length of the clip (default 20; quick 10)")
    p.add_argument("--size", default="1280x720")
    p.add_argument("--model-seconds", type=float, default=None, help="per batch size (default 2; quick 0.5)")
    p.add_argument("--poll-per-s", type=float, default=0.5,
                   help="GET /api/streams and GET /metrics, each this many times a second during the window (default: "
                        "every 2 s, a dashboard's refresh; their p99 is reported, and answering them is part of the "
                        "service's CPU: at 200 cameras each answer holds the GIL for tens of ms)")
    p.add_argument("--start-timeout", type=float, default=90.0, help="seconds for the service to answer")
    p.add_argument("--stagger-s", type=float, default=1.0,
                   help="add the cameras through the API spread over this many seconds (one GOP: their keyframes "
                        "out of phase, as real cameras' are); 0: all in the config, started together")
    p.add_argument("--keep-going", action="store_true", help="measure every N even after one fails")
    p.add_argument("--quick", action="store_true", help="ladder 5,10, short windows: a smoke run")
    p.add_argument("--work", type=Path, default=None, help="folder for the clip, configs and logs (default: temporary)")
    p.add_argument("--out", type=Path, default=None,
                   help="results JSON (default benchmarks/results/density-<tag>.json; the .md beside it)")
    p.add_argument("--tag", default=None, help="for the default --out (default: <source>-fps<infer_fps>-<decode>)")
    args = p.parse_args(argv)
    q = args.quick
    args.ladder = [int(v) for v in (args.ladder or ("5,10" if q else "10,20,30,40,60,80,100,120")).split(",") if v]
    args.seconds = args.seconds if args.seconds is not None else (8.0 if q else 20.0)
    args.warmup = args.warmup if args.warmup is not None else (3.0 if q else 8.0)
    args.clip_seconds = args.clip_seconds if args.clip_seconds is not None else (10.0 if q else 20.0)
    args.model_seconds = args.model_seconds if args.model_seconds is not None else (0.5 if q else 2.0)
    if not args.ladder or min(args.ladder) < 1:
        p.error("--ladder needs positive camera counts")
    if args.out is None:
        tag = args.tag or f"{args.source}-fps{args.infer_fps:g}-{args.decode or 'default'}"
        args.out = ROOT / "benchmarks" / "results" / f"density-{tag}.json"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sources = ["file", "rtsp"] if args.source == "both" else [args.source]
    if "rtsp" in sources and (why := missing_rtsp()) is not None:
        print(f"rtsp source unavailable: {why}", file=sys.stderr)
        return 2
    import torch
    from sightline.model.backends.serving import open_classifier
    from sightline.model.device import describe_device

    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    load_start = os.getloadavg()
    commit = git_commit()  # now: the script may be edited while it runs
    cleanup = None
    if args.work is None:
        cleanup = tempfile.TemporaryDirectory(prefix="sightline-density-")
        work = Path(cleanup.name)
    else:
        work = args.work
        work.mkdir(parents=True, exist_ok=True)
    try:
        media = work / "media"
        media.mkdir(exist_ok=True)
        clip = make_clip(media / f"clip-{args.size}-{args.clip_seconds:g}s.mp4", args.clip_seconds, args.size)
        if args.bundle is not None:
            bundle = args.bundle
        elif args.model == "random":
            bundle = random_bundle(work / "random-3class.pt")
        else:
            from sightline.demo import cache_dir

            bundle = trained_bundle(cache_dir() / f"density-3class-v{BUNDLE_VERSION}.pt")
        # copied: a compiled backend writes its artefact next to the bundle, so the service finds it built
        served = work / "model" / bundle.name
        served.parent.mkdir(exist_ok=True)
        if not served.exists():
            shutil.copy2(bundle, served)
        classifier = open_classifier(str(served), device=args.device, precision="auto", backend=args.backend)
        batches = [1, 2, 4, 8]
        print(f"CPU: {cpu_name()} ({os.cpu_count()} logical cores); load average "
              f"{'/'.join(f'{x:.2f}' for x in load_start)}; {describe_device(classifier.device)}; "
              f"backend {args.backend} -> {type(classifier).__name__} {classifier.precision}", flush=True)
        costs = measure_costs(clip, classifier, batches, args.model_seconds)
        del classifier
        print(f"costs (CPU ms): keyframe decode {1000 * costs.keyframe_decode_s:.2f}, frame decode "
              f"{1000 * costs.frame_decode_s:.2f}, scale {1000 * costs.scale_s:.2f}, demux/camera-s "
              f"{1000 * costs.demux_s:.2f}, model/image " +
              ", ".join(f"b{b} {1000 * v:.2f}" for b, v in costs.model_s.items()), flush=True)
        for mode in ("all", "keyframes"):
            lo = camera_cost(costs, args.infer_fps, mode, max(costs.model_s.values()))
            hi = camera_cost(costs, args.infer_fps, mode, min(costs.model_s.values()))
            print(f"computed limit, decode {mode}: {os.cpu_count() / lo:.0f}-{os.cpu_count() / hi:.0f} cameras",
                  flush=True)
        long_clip = None
        if "rtsp" in sources:
            step_s = args.start_timeout + 0.5 * max(args.ladder) + args.warmup + args.seconds + 30
            long_clip = loop_clip(clip, media / "long.mp4", step_s, args.clip_seconds)
        ladders = {}
        print(TABLE_HEAD.splitlines()[0], flush=True)
        for source in sources:
            steps, extras = [], []
            for n in args.ladder:
                step, extra = run_step(source, n, args, work, served, clip, long_clip)
                steps.append(step)
                extras.append(extra)
                print(step_row(step), flush=True)
                for key, count in step.decode.items():
                    print(f"    decode: {key} x{count}", flush=True)
                if step.problems and not args.keep_going:
                    break
            passed, failed = ladder_outcome(steps)
            limit = limit_for(costs, args, steps, passed)
            ratio = passed / limit["cameras"] if passed else None
            print(f"{source}: last passing N {passed}, first failing N {failed}; computed limit "
                  f"{limit['cameras']:.0f} ({limit['mode']} decode, model at batch {limit['batch']}); "
                  f"reached/computed {fmt(ratio, '.2f')}", flush=True)
            ladders[source] = {"steps": [{**asdict(s), "rate_min": s.rate_min, "rate_median": s.rate_median}
                                         for s in steps],
                               "extra": extras, "rows_md": [step_row(s) for s in steps], "passed": passed,
                               "failed": failed, "limit": limit, "ratio": ratio,
                               "per_added_camera": per_added_camera(steps)}
        served_line = next((e["served_by"] for lad in ladders.values() for e in lad["extra"] if e["served_by"]), None)
        report = {
            "meta": {"started": started, "command": "python " + " ".join([Path(sys.argv[0]).as_posix(),
                                                                           *sys.argv[1:]]),
                     "cpu": cpu_name(), "cores": os.cpu_count(), "load_avg_start": load_start,
                     "load_avg_end": os.getloadavg(), "commit": commit, "torch": torch.__version__,
                     "backend": args.backend, "served_by": served_line, "infer_fps": args.infer_fps,
                     "decode": args.decode, "seconds": args.seconds, "warmup": args.warmup,
                     "clip": f"{args.size} 30 fps H.264 (libx264 veryfast, 1 s GOP, no B-frames), "
                             f"{args.clip_seconds:g} s, {clip.stat().st_size * 8 / args.clip_seconds / 1e6:.1f} Mbit/s",
                     "bundle": bundle_note(args, bundle), "ladder": args.ladder},
            "costs": {**asdict(costs)},
            "ladders": ladders,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
        args.out.with_suffix(".md").write_text(markdown(report))
        print(f"wrote {args.out} and {args.out.with_suffix('.md')}", flush=True)
        return 0
    finally:
        if cleanup is not None:
            cleanup.cleanup()


def bundle_note(args: argparse.Namespace, bundle: Path) -> str:
    if args.bundle is not None:
        return str(bundle)
    if args.model == "random":
        return "random-init ResNet18, 3 classes, 64/56 px (tests' tiny bundle)"
    from sightline.demo import CROP, RESIZE

    return f"ResNet18 trained on 3 scikit-image photos ({', '.join(CLASSES.values())}), resize {RESIZE} / crop {CROP}"


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
