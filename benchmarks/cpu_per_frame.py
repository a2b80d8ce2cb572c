"""CPU seconds per frame of each stage alone (process CPU time, so other work on a shared machine does not
count), to split Sightline's end-to-end CPU per frame (benchmarks/pipeline_backends.py) into decode and
model: (d) the 4 fast 720p streams decoded and scaled, no model; (a) model only on the pipeline's lanes
(preprocessing + forward) for each BACKEND:PRECISION.

    flock /tmp/sightline-bench.lock python benchmarks/cpu_per_frame.py --specs torch:fp32,openvino:int8
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import decode_only
from backend_setup import backend_classifier
from pipeline import bench_model, decode_working_size, load_bundle
from sightline.stream.config import BatchingConfig
from sightline.stream.inference.lanes import plan_lanes
from sightline.synthetic_media import make_test_clip


def cpu_ms(frames: int, run, *args) -> tuple[float, float]:
    """(CPU ms per frame, cores busy) while ``run(*args)`` processes ``frames`` frames."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    run(*args)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return 1000 * cpu / frames, cpu / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--specs", default="torch:fp32,openvino:int8")
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=4.0)
    args = ap.parse_args()
    bundle = load_bundle("random")
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_test_clip(Path(tmp) / "clip.mp4", frames=round(args.seconds * 30), fps=30, size=(1280, 720),
                              pattern="photos", counter=False)
        max_batch = BatchingConfig().batch_size("cpu")
        for i, spec in enumerate(args.specs.split(",")):
            backend, precision = spec.split(":")
            clf = backend_classifier(bundle, backend, precision, "cpu", Path(tmp) / spec.replace(":", "-"))
            if i == 0:
                hw = decode_only.hwdecode_for(clf)
                n = round(args.seconds * 30) * args.streams
                ms, busy = cpu_ms(n, decode_only.bench_decode, clf, clip, args.streams, hw)
                print(f"(d) decode only, {args.streams} streams: {ms:.2f} CPU ms/frame ({busy:.2f} cores busy)")
            frames = decode_working_size(clip, clf)
            lanes, threads = plan_lanes(clf, "auto", throughput=True)
            if hasattr(clf, "serve_lanes"):
                clf.serve_lanes(lanes)
            total = len(frames) * args.streams
            ms, busy = cpu_ms(total, bench_model, clf, frames, total, max_batch, lanes, threads)
            print(f"(a) model only {spec}, {lanes} lanes: {ms:.2f} CPU ms/frame ({busy:.2f} cores busy)",
                  flush=True)


if __name__ == "__main__":
    main()
