"""OpenVINO request layouts on the raw API (the first look behind the backend's per-lane streams): LATENCY
(1 stream) vs THROUGHPUT (2 streams, or OpenVINO's own count) with 1 or 2 calling threads, each with one sync
request, and each caller's batch split into 2 async requests. Output: benchmarks/results/serving-modes-cpu.md.

    flock /tmp/sightline-bench.lock python benchmarks/openvino_requests.py int8
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from backend_setup import backend_classifier
from pipeline import load_bundle
from sightline.model.backends.openvino_backend import HINTS, import_openvino

MODES = [("LATENCY", {"PERFORMANCE_HINT": "LATENCY"}),
         ("THROUGHPUT-2", {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": "2"}),
         ("THROUGHPUT-auto", {"PERFORMANCE_HINT": "THROUGHPUT"})]


def rate(compiled, callers: int, batch: int, parts: int, x: np.ndarray, seconds: float = 4.0) -> float:
    """images/s with ``callers`` threads, each sending its batch as ``parts`` requests at once."""
    stop = time.perf_counter() + seconds
    counts = [0] * callers

    def lane(i: int) -> None:
        requests = [compiled.create_infer_request() for _ in range(parts)]
        chunks = np.array_split(x[:batch], parts)
        while time.perf_counter() < stop:
            if parts == 1:
                requests[0].infer({0: chunks[0]})
            else:
                for request, chunk in zip(requests, chunks, strict=True):
                    request.start_async({0: chunk})
                for request in requests:
                    request.wait()
            counts[i] += batch

    threads = [threading.Thread(target=lane, args=(i,)) for i in range(callers)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


def main() -> None:
    precision = sys.argv[1] if len(sys.argv) > 1 else "int8"
    ov = import_openvino()
    clf = backend_classifier(load_bundle("random"), "openvino", precision, "cpu", Path(tempfile.mkdtemp()))
    xml = str(clf.compiled_artefact.folder / "model.xml")
    x = np.random.default_rng(0).standard_normal((8, 3, 224, 224)).astype(np.float32)
    for name, config in MODES:
        start = time.perf_counter()
        compiled = ov.Core().compile_model(xml, "CPU", {"INFERENCE_PRECISION_HINT": HINTS[precision], **config})
        print(f"{name} compile {time.perf_counter() - start:.2f}s streams {compiled.get_property('NUM_STREAMS')} "
              f"threads {compiled.get_property('INFERENCE_NUM_THREADS')}", flush=True)
        for callers, batch, parts in [(1, 1, 1), (1, 8, 1), (2, 8, 1), (2, 1, 1), (1, 8, 2), (2, 8, 2)]:
            kind = "sync" if parts == 1 else f"split{parts}"
            print(f"  {kind} callers={callers} batch={batch}: {rate(compiled, callers, batch, parts, x):.1f} img/s",
                  flush=True)


if __name__ == "__main__":
    main()
