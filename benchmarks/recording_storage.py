"""What recording one camera costs: write amplification (bytes written / the camera's bytes) and CPU seconds per
stream-minute, for passthrough and annotated recordings, as one file and in segments.

One 720p30 H.264 stream (ffmpeg's testsrc2 at a camera's ~2 Mbit/s, a keyframe every 2 s):

- passthrough: the clip's packets, read once, fed to the recorder ``--loops`` times (a looping camera; the
  recorder rebases the restarting clock), so the figure is the recorder's own work: copying, remuxing, writing;
- annotated: a real source decodes every frame full size and the recorder draws the labels and re-encodes
  (libx264 veryfast); its CPU is the run's minus a decode-only run of the same source (what a stream that is
  classified at all pays anyway).

CPU is the process's (every thread: the recorder's, FFmpeg's, libx264's), so run it on an otherwise idle box
for stable figures. Results: benchmarks/results/recording-storage-cpu.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import av
from common import cpu_name
from sightline.model.classifier import Prediction
from sightline.stream.buffers import BoundedQueue
from sightline.stream.config import StreamConfig
from sightline.stream.outputs.passthrough import PassthroughWriter
from sightline.stream.outputs.recording import RecordingWriter, SegmentedRecorder
from sightline.stream.outputs.segments import SegmentPlan
from sightline.stream.sources.video_source import VideoSource
from sightline.stream.stats import StreamStats
from sightline.stream.storage.stats import StorageStats


def make_clip(path: Path, seconds: float, size: str, fps: int = 30, bitrate: str = "2M") -> Path:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}",
                    "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-b:v", bitrate,
                    "-maxrate", bitrate, "-bufsize", bitrate, "-g", str(2 * fps), "-bf", "0",
                    "-pix_fmt", "yuv420p", str(path)], check=True, timeout=600)
    return path


def written(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.mp4"))


def measure(run: Callable[[], None]) -> float:
    """CPU seconds of the whole process while ``run`` runs."""
    started = time.process_time()
    run()
    return time.process_time() - started


def passthrough(clip: Path, out: Path, loops: int, segment_s: float | None) -> dict[str, float]:
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
        seconds = float(sum(p.duration for p in packets) * stream.time_base) * loops
        plan = SegmentPlan(out, "cam", segment_s, live=False, storage=StorageStats())
        writer = PassthroughWriter(plan, StreamStats("cam"), live=False, stop=threading.Event())

        def record() -> None:
            writer.start()
            writer.begin(stream)
            for _ in range(loops):
                for packet in packets:
                    writer.submit(packet)
            writer.close()
            writer.join()

        cpu = measure(record)
    camera_bytes = sum(p.size for p in packets) * loops
    return {"stream_s": seconds, "cpu_s": cpu, "camera_bytes": camera_bytes, "written_bytes": written(out)}


class Labels:
    """Every frame already classified, always the same label: the recorder never waits."""

    def wait_handled(self, seq: int, timeout: float) -> bool:
        return True

    def current_labels(self) -> tuple:
        return (Prediction(0, "tabby cat", 0.9),), None, 12.0


def decode(clip: Path, segment_s: float | None, out: Path | None) -> float:
    """CPU seconds of a fast source decoding every frame full size, recording annotated when ``out`` is given."""
    config = StreamConfig(name="cam", url=str(clip), mode="fast")
    stats, stop = StreamStats("cam"), threading.Event()
    source = VideoSource(config, BoundedQueue(1, "latest"), stats, lambda h, w: (56, 56), keep_display=True,
                         stop=stop)
    writer = None
    if out is not None:
        plan = SegmentPlan(out, "cam", segment_s, live=False, storage=StorageStats())
        writer = RecordingWriter(SegmentedRecorder(plan), Labels(), stats, live=False, stop=stop)
        source.recording = writer

    def run() -> None:
        if writer is not None:
            writer.start()
        source.start()
        source.join()
        if writer is not None:
            writer.join()

    return measure(run)


def annotated(clip: Path, out: Path, segment_s: float | None, baseline_cpu: float) -> dict[str, float]:
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        seconds = float(stream.duration * stream.time_base)
        camera_bytes = sum(p.size for p in container.demux(stream) if p.size)
    cpu = decode(clip, segment_s, out) - baseline_cpu
    return {"stream_s": seconds, "cpu_s": cpu, "camera_bytes": camera_bytes, "written_bytes": written(out)}


def report(rows: list[tuple[str, dict[str, float]]], args: argparse.Namespace) -> str:
    lines = [f"| {'mode':<34} | stream s | files | write amplification | CPU s per stream-minute |",
             f"|{'-' * 36}|---:|---:|---:|---:|"]
    for label, r in rows:
        lines.append(f"| {label:<34} | {r['stream_s']:.0f} | {r['files']:.0f} | "
                     f"{r['written_bytes'] / r['camera_bytes']:.3f} | {r['cpu_s'] / (r['stream_s'] / 60):.2f} |")
    return "\n".join([f"CPU: {cpu_name()} (2 vCPU, no AMX); clip {args.size} {args.fps} fps, {args.bitrate}bit/s, "
                      f"{args.seconds:g} s (passthrough fed {args.loops}x)", "", *lines])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="the clip's length")
    parser.add_argument("--loops", type=int, default=6, help="passthrough: the clip fed this many times")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--bitrate", default="2M")
    parser.add_argument("--short-segment", type=float, default=5.0, help="the short segment length, seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="recording-storage-") as tmp:
        root = Path(tmp)
        clip = make_clip(root / "camera.mp4", args.seconds, args.size, args.fps, args.bitrate)
        rows: list[tuple[str, dict[str, float]]] = []

        def add(label: str, folder: str, result: dict[str, float]) -> None:
            result["files"] = len(list((root / folder).rglob("*.mp4")))
            rows.append((label, result))
            print(f"{label}: {result}", file=sys.stderr)

        for label, segment_s in (("(a) passthrough, one file", None), ("(b) passthrough, 60 s segments", 60.0),
                                 (f"(b) passthrough, {args.short_segment:g} s segments", args.short_segment)):
            folder = f"pass-{segment_s}"
            add(label, folder, passthrough(clip, root / folder, args.loops, segment_s))
        baseline = decode(clip, None, None)
        print(f"decode only (every frame, full size): {baseline:.2f} CPU s", file=sys.stderr)
        for label, segment_s in (("(c) annotated, one file", None),
                                 (f"(d) annotated, {args.short_segment:g} s segments", args.short_segment)):
            folder = f"annotated-{segment_s}"
            add(label, folder, annotated(clip, root / folder, segment_s, baseline))
        print(report(rows, args))


if __name__ == "__main__":
    main()
