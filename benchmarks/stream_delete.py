"""How long removing a stream takes (what DELETE /api/streams/{name} waits for), per kind of stream.

A stream is stopped, its in-flight frames drained and its sinks finalized before the DELETE answers.
Kinds: a WebRTC stream waiting for its publisher, a realtime looping file, an RTSP stream that keeps
reconnecting to a closed port on 127.0.0.1. The model is a small random-init ResNet18 on the CPU
(no download); each stream runs --settle seconds before it is removed.

    python benchmarks/stream_delete.py --rounds 10
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import tiny_classifier  # benchmarks/ is on sys.path when this script runs
from sightline import synthetic_media as media
from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--settle", type=float, default=0.3, help="seconds a stream runs before it is removed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        media.make_test_clip(root / "clip.mp4", frames=60, fps=10, size=(160, 120))
        pipeline = Pipeline(tiny_classifier(), RunConfig(output_dir=root / "out", media_root=root), Metrics())
        pipeline.start()
        kinds = {"webrtc (waiting)": "webrtc://x", "file (realtime, loop)": str(root / "clip.mp4"),
                 "rtsp (reconnecting)": "rtsp://127.0.0.1:9/x"}
        print(f"# {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}; "
              f"{args.rounds} rounds, each stream running {args.settle}s before removal")
        try:
            for kind, url in kinds.items():
                took = []
                for i in range(args.rounds):
                    name = f"s{i}"
                    pipeline.add_stream(StreamConfig(name=name, url=url, loop=True))
                    time.sleep(args.settle)
                    started = time.perf_counter()
                    pipeline.remove_stream(name)
                    took.append((time.perf_counter() - started) * 1000)
                print(f"{kind:24s} median {statistics.median(took):7.1f} ms   min {min(took):7.1f} ms   "
                      f"max {max(took):7.1f} ms")
        finally:
            pipeline.shutdown()


if __name__ == "__main__":
    main()
