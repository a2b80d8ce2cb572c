"""OpenVINO serving modes on this CPU, measured in one run (benchmarks/results/openvino-modes-*.txt):

  1. model only, images/s: LATENCY hint (one stream over all cores) vs THROUGHPUT with one stream per
     inference lane, for 1 and 2 lanes (threads calling ``forward`` at once, each with its own request),
     batch 1 and 8, on the backend's own code path (``OpenVINOBackend.serve_lanes``);
  2. start time: a fresh process opening the artefact (read IR + compile) without and with OpenVINO's
     compiled-blob cache (CACHE_DIR = the artefact folder's ``ov-cache/``), median of --starts processes.

    flock /tmp/sightline-bench.lock python benchmarks/openvino_modes.py --precision int8,bf16,fp32
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from backend_setup import backend_classifier
from pipeline import load_bundle
from sightline.model.backends.openvino_backend import CACHE_DIR, OpenVINOBackend

OPEN = """
import sys, time
t0 = time.perf_counter()
from pathlib import Path
import torch
from sightline.model.backends.openvino_backend import OpenVINOBackend
t1 = time.perf_counter()
b = OpenVINOBackend(Path(sys.argv[1]), sys.argv[2], torch.device("cpu"), cache=sys.argv[3] == "1")
t2 = time.perf_counter()
b.forward(torch.zeros(1, 3, 224, 224))
t3 = time.perf_counter()
print(f"{t2 - t1:.4f} {t3 - t2:.4f} {b.compile_seconds:.4f}")
"""


def lanes_rate(backend: OpenVINOBackend, lanes: int, batch: int, seconds: float) -> float:
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32))
    counts = [0] * lanes
    ready = threading.Barrier(lanes + 1)
    stop = [0.0]

    def lane(i: int) -> None:
        backend.forward(x)  # this lane's request, warmed
        ready.wait()
        while time.perf_counter() < stop[0]:
            backend.forward(x)
            counts[i] += batch

    threads = [threading.Thread(target=lane, args=(i,)) for i in range(lanes)]
    for t in threads:
        t.start()
    stop[0] = time.perf_counter() + 1e9
    ready.wait()
    start = time.perf_counter()
    stop[0] = start + seconds
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


def start_times(folder: Path, precision: str, cache: bool, starts: int) -> tuple[float, float]:
    """(median seconds to open = read + compile, median first inference) over ``starts`` fresh processes."""
    shutil.rmtree(folder / CACHE_DIR, ignore_errors=True)
    opens, firsts = [], []
    for i in range(starts + (1 if cache else 0)):  # with the cache: one extra process fills it first
        out = subprocess.run([sys.executable, "-c", OPEN, str(folder), precision, "1" if cache else "0"],
                             check=True, capture_output=True, text=True).stdout.split()
        if cache and i == 0:
            print(f"    cache filled by a first process: open {float(out[0]):.3f} s", flush=True)
            continue
        opens.append(float(out[0]))
        firsts.append(float(out[1]))
    return statistics.median(opens), statistics.median(firsts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--precision", default="int8,bf16,fp32")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--starts", type=int, default=3)
    args = ap.parse_args()
    bundle = load_bundle("random")
    with tempfile.TemporaryDirectory() as tmp:
        for precision in args.precision.split(","):
            clf = backend_classifier(bundle, "openvino", precision, "cpu", Path(tmp) / precision)
            folder = clf.compiled_artefact.folder
            print(f"== OpenVINO {precision} ({folder.name}) ==", flush=True)
            backend = OpenVINOBackend(folder, precision, torch.device("cpu"), cache=False)
            for hint, per_lane in (("LATENCY (1 stream)", False), ("per-lane streams", True)):
                backend.per_lane_streams = per_lane
                for lanes in (1, 2):
                    note = backend.serve_lanes(lanes)
                    rates = [lanes_rate(backend, lanes, batch, args.seconds) for batch in (1, 8)]
                    print(f"  {hint:18} {lanes} lane(s): batch 1 {rates[0]:7.1f}  batch 8 {rates[1]:7.1f} images/s"
                          f"   [{note}]", flush=True)
            for cache in (False, True):
                opened, first = start_times(folder, precision, cache, args.starts)
                print(f"  start {'with' if cache else 'without'} CACHE_DIR: open (read + compile) {opened:.3f} s, "
                      f"first inference {first:.3f} s (median of {args.starts} processes)", flush=True)


if __name__ == "__main__":
    main()
