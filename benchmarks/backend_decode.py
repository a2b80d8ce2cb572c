"""Decode-only frames/s: N threads each decoding the same generated 720p clip to the model's working size
(FFmpeg's scaler, as the stream sources do): the bound that end-to-end throughput meets once the model is fast.

    python benchmarks/backend_decode.py --threads 1,2,4
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import av
from sightline.synthetic_media import make_test_clip


def decode(clip: Path, counts: list[int]) -> None:
    with av.open(str(clip)) as container:
        n = 0
        for frame in container.decode(video=0):
            frame.to_ndarray(format="rgb24", width=455, height=256, interpolation="AREA")
            n += 1
    counts.append(n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2,4")
    ap.add_argument("--seconds", type=float, default=4.0, help="clip length")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_test_clip(Path(tmp) / "clip.mp4", frames=round(args.seconds * 30), fps=30, size=(1280, 720),
                              pattern="photos", counter=False)
        for n in (int(v) for v in args.threads.split(",")):
            counts: list[int] = []
            threads = [threading.Thread(target=decode, args=(clip, counts)) for _ in range(n)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            print(f"{n} decode thread(s): {sum(counts) / (time.perf_counter() - start):.1f} frames/s "
                  f"(720p H.264 -> 455×256 RGB)")


if __name__ == "__main__":
    main()
