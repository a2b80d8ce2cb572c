"""Replay recorded videos through the serving pipeline and keep every result.

Evaluation must measure what serving does, so nothing here decodes, batches, preprocesses or smooths
on its own: each video becomes a StreamConfig (``fast``: lossless, as fast as the model goes;
``realtime``: paced at the native frame rate, dropping what the model cannot keep up with, as a live
camera would), a stream.pipeline.Pipeline runs them, and a collecting sink on each stream's output
records the raw top-k, the smoothed label and the latency of every classified frame.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from sightline.model.classifier import Classifier
from sightline.stream.config import BatchingConfig, ModelConfig, RunConfig, SmoothingConfig, StreamConfig, parse_stream
from sightline.stream.errors import describe_av_error
from sightline.stream.eval.labels import LabelsError, VideoJob, join_problems
from sightline.stream.outputs.sinks import Labelled, Sink
from sightline.stream.pipeline.pipeline import Pipeline
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

log = logging.getLogger(__name__)

TOPK = 5
POLL_S = 0.05


@dataclass(frozen=True)
class VideoInfo:
    """What the container says before decoding: where time starts, how long, how many frames per second."""

    start_s: float
    duration_s: float | None
    fps: float | None


@dataclass
class FrameLog:
    """Every classified frame of one video, as arrays. Times are seconds from the video's start."""

    seq: np.ndarray
    time_s: np.ndarray
    topk: np.ndarray  # N×k model class indices, best first
    topk_prob: np.ndarray  # N×k
    smoothed: np.ndarray  # model class index of the shown (smoothed) label
    smoothed_prob: np.ndarray
    latency_s: np.ndarray

    def __len__(self) -> int:
        return len(self.seq)

    @property
    def raw(self) -> np.ndarray:
        return self.topk[:, 0] if len(self) else np.zeros(0, dtype=np.int64)


@dataclass
class VideoRun:
    job: VideoJob
    info: VideoInfo
    frames: FrameLog
    state: str
    error: str | None
    decoded: int
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    @property
    def duration_s(self) -> float:
        """The container's duration, else the span of the frames seen (one frame interval past the last)."""
        if self.info.duration_s:
            return self.info.duration_s
        if not len(self.frames):
            return 0.0
        step = 1.0 / self.info.fps if self.info.fps else 0.0
        return float(self.frames.time_s[-1]) + step


@dataclass
class Replay:
    videos: list[VideoRun]
    wall_s: float
    mode: str

    @property
    def classified(self) -> int:
        return sum(len(v.frames) for v in self.videos)


class CollectingSink:
    """A pipeline sink that keeps what evaluation needs of each classified frame (written by one output thread)."""

    name = "eval"

    def __init__(self, start_s: float = 0.0, fps: float | None = None) -> None:
        self.start_s = start_s
        self.fps = fps
        self.count = 0
        self.unclassified = 0
        self._rows: list[tuple[int, float, list[int], list[float], int, float, float]] = []
        self._lock = threading.Lock()

    def write(self, item: Labelled) -> None:
        result = item.result
        if result.probs is None or result.timings is None:
            self.unclassified += 1
            return
        frame = result.frame
        # A stream without timestamps: its frame count is the best clock there is.
        untimed = frame.seq / self.fps if self.fps else 0.0
        t = frame.time_s - self.start_s if frame.time_s is not None else untimed
        smoothed = item.smoothed
        row = (frame.seq, t, [p.index for p in result.top], [p.prob for p in result.top],
               smoothed.index if smoothed is not None else result.top[0].index,
               smoothed.prob if smoothed is not None else result.top[0].prob, result.timings.latency_s)
        with self._lock:
            self._rows.append(row)
            self.count += 1

    def close(self) -> None:
        """Nothing to flush: the rows stay in memory until ``log()``."""

    def log(self) -> FrameLog:
        with self._lock:
            rows = sorted(self._rows, key=lambda r: r[0])
        k = max((len(r[2]) for r in rows), default=1)

        def pad(values: list, fill: float) -> list:
            return values + [fill] * (k - len(values))

        return FrameLog(
            seq=np.array([r[0] for r in rows], dtype=np.int64),
            time_s=np.array([r[1] for r in rows], dtype=np.float64),
            topk=np.array([pad(r[2], -1) for r in rows], dtype=np.int64).reshape(len(rows), k),
            topk_prob=np.array([pad(r[3], 0.0) for r in rows], dtype=np.float32).reshape(len(rows), k),
            smoothed=np.array([r[4] for r in rows], dtype=np.int64),
            smoothed_prob=np.array([r[5] for r in rows], dtype=np.float32),
            latency_s=np.array([r[6] for r in rows], dtype=np.float64),
        )


def probe(path: Path) -> VideoInfo:
    """Start time, duration and frame rate of a video file's first video stream (LabelsError if unreadable)."""
    try:
        with av.open(str(path), timeout=10.0) as container:
            if not container.streams.video:
                raise LabelsError(f"{path}: no video stream")
            stream = container.streams.video[0]
            tb = stream.time_base
            start = float(stream.start_time * tb) if stream.start_time is not None and tb else None
            if start is None and container.start_time is not None:
                start = container.start_time / av.time_base
            duration = float(stream.duration * tb) if stream.duration and tb else None
            if duration is None and container.duration:
                duration = container.duration / av.time_base
            rate = stream.average_rate or stream.guessed_rate
    except av.FFmpegError as exc:
        raise LabelsError(f"{path}: not a readable video ({describe_av_error(exc)})") from None
    return VideoInfo(start or 0.0, duration, float(rate) if rate else None)


def past_end_warnings(job: VideoJob, info: VideoInfo) -> list[str]:
    """Segments that run past the end of their video (their tail can never be scored)."""
    if not info.duration_s:
        return []
    slack = 1.0 / info.fps if info.fps else 0.0
    return [f"{job.name}: segment {seg.describe()} ends after the video ({info.duration_s:.3f} s)"
            for seg in job.segments if seg.end_s > info.duration_s + slack]


def stream_configs(jobs: list[VideoJob], realtime: bool) -> list[StreamConfig]:
    mode = "realtime" if realtime else "fast"
    return [parse_stream({"name": f"v{i:03d}", "url": str(job.path), "mode": mode}, origin=job.name)
            for i, job in enumerate(jobs)]


def replay(classifier: Classifier, jobs: list[VideoJob], infos: list[VideoInfo], *, realtime: bool,
           batching: BatchingConfig, smoothing: SmoothingConfig, out_dir: Path, parallel: int = 4,
           label: str = "eval") -> Replay:
    """Run every video through one Pipeline (``parallel`` streams at a time) and collect its results."""
    streams = stream_configs(jobs, realtime)
    root = Path(os.path.commonpath([str(job.path.resolve().parent) for job in jobs]))
    config = RunConfig(model=ModelConfig(source=label, topk=TOPK), batching=batching, smoothing=smoothing,
                       output_dir=out_dir, media_root=root, log_predictions=False)
    sinks = {s.name: CollectingSink(info.start_s, info.fps) for s, info in zip(streams, infos, strict=True)}

    def extra_sinks(stream: StreamConfig) -> list[Sink]:
        return [sinks[stream.name]]

    pipeline = Pipeline(classifier, config, extra_sinks=extra_sinks)
    pending = list(zip(streams, jobs, infos, strict=True))
    running: dict[str, tuple[VideoJob, VideoInfo]] = {}
    done: dict[str, VideoRun] = {}
    problems: list[str] = []
    started = time.perf_counter()
    pipeline.start()
    try:
        with logging_redirect_tqdm(), tqdm(total=len(jobs), unit="video", desc=label, disable=None,
                                           dynamic_ncols=True) as bar:
            while pending or running:
                while pending and len(running) < parallel:
                    stream, job, info = pending.pop(0)
                    pipeline.add_stream(stream)
                    running[stream.name] = (job, info)
                time.sleep(POLL_S)
                for name in [n for n in running if pipeline.get(n).finished]:
                    runtime = pipeline.get(name)
                    job, info = running.pop(name)
                    pipeline.remove_stream(name)
                    stats = runtime.stats
                    run = VideoRun(job, info, sinks[name].log(), stats.state, stats.error, stats.frames_decoded,
                                   dict(stats.dropped))
                    done[name] = run
                    if run.state == "failed":
                        problems.append(f"{job.name}: {run.error}")
                    bar.update(1)
                bar.set_postfix(frames=sum(s.count for s in sinks.values()), refresh=False)
    finally:
        pipeline.shutdown()
    wall = time.perf_counter() - started
    if problems:
        log.error("%d video(s) failed: %s", len(problems), join_problems(problems))
    return Replay([done[s.name] for s in streams], wall, "realtime" if realtime else "fast")
