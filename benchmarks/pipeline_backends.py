"""End to end with several backends in ONE run: the same generated 720p clip, the same machine minute by minute.

For each BACKEND:PRECISION[:latency] in --specs (``:latency`` keeps OpenVINO on one stream over all cores, the
mode before per-lane streams), interleaved round by round so the shared machine's load hits them alike:

  (a) model only: working-size frames from memory -> Classifier (preprocessing + forward), on the lanes the
      pipeline uses;
  (b) Sightline end to end: N fast (lossless) file streams through the real pipeline;
  (d) decode only: the same N streams decoded and scaled, no model (once per round, model-independent);

plus where (b)'s time goes: process CPU seconds per frame (all threads), and per-frame wall seconds of the
pipeline's own stage histograms (decode in the source threads; preprocess and inference in the lanes).
Then the realtime ladder per spec: N live 30 fps streams, frames classified/s, dropped, p50/p99 latency.

    flock /tmp/sightline-bench.lock python benchmarks/pipeline_backends.py \\
        --specs torch:fp32,torch:bf16,openvino:fp32,openvino:bf16,openvino:int8:latency,openvino:int8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import decode_only
import numpy as np
import torch
from backend_setup import backend_classifier
from pipeline import bench_model, decode_working_size, load_bundle
from prometheus_client import CollectorRegistry
from sightline.model.device import describe_device
from sightline.stream.config import BatchingConfig, RunConfig, StreamConfig
from sightline.stream.inference.lanes import plan_lanes
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.synthetic_media import make_test_clip


def run_pipeline(classifier, clip: Path, n: int, out: Path, max_batch: int, mode: str = "fast",
                 seconds: float | None = None) -> dict[str, float]:
    config = RunConfig(output_dir=out, media_root=clip.parent, batching={"max_batch": max_batch, "max_wait_ms": 10},
                       streams=[StreamConfig(name=f"s{i}", url=str(clip), mode=mode, loop=mode == "realtime")
                                for i in range(n)])
    metrics = Metrics(CollectorRegistry())
    pipeline = Pipeline(classifier, config, metrics)
    cpu0, start = time.process_time(), time.perf_counter()
    asyncio.run(pipeline.run(duration=seconds))
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
    stats = [pipeline.get(f"s{i}").stats for i in range(n)]
    inferred = sum(s.frames_inferred for s in stats)
    decoded = sum(s.frames_decoded for s in stats)
    dropped = sum(sum(s.dropped.values()) for s in stats)
    latencies = np.asarray([lat for s in stats for lat in s.recent_latencies()])

    def stage_ms(stage: str, per: int) -> float:
        total = metrics.registry.get_sample_value("sightline_stage_latency_seconds_sum", {"stage": stage}) or 0.0
        return 1000 * total / max(per, 1)

    return {"fps": inferred / elapsed, "inferred": inferred, "decoded": decoded,
            "drop_rate": dropped / decoded if decoded else 0.0,
            "p50_ms": float(np.percentile(latencies, 50) * 1000) if len(latencies) else float("nan"),
            "p99_ms": float(np.percentile(latencies, 99) * 1000) if len(latencies) else float("nan"),
            "busy_cores": cpu / elapsed, "cpu_ms_per_frame": 1000 * cpu / max(inferred, 1),
            "decode_ms": stage_ms("decode", decoded), "preprocess_ms": stage_ms("preprocess", inferred),
            "inference_ms": stage_ms("inference", inferred),
            "mean_batch": inferred / max(pipeline.worker.batches, 1), "lanes": pipeline.worker.lanes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--specs", default="torch:fp32,torch:bf16,openvino:fp32,openvino:bf16,openvino:int8:latency,"
                                       "openvino:int8")
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=2.0, help="length of the generated 720p clip")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--realtime", default="1,2,4")
    ap.add_argument("--realtime-seconds", type=float, default=5.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    bundle = load_bundle("random")
    results: dict[str, object] = {"specs": {}, "rounds": []}
    with tempfile.TemporaryDirectory() as tmp:
        classifiers = {}
        for spec in args.specs.split(","):
            backend, precision, *mode = spec.split(":")
            clf = backend_classifier(bundle, backend, precision, "cpu", Path(tmp) / spec.replace(":", "-"))
            if mode == ["latency"]:
                clf.backend.per_lane_streams = False  # OpenVINO: one stream over all cores whatever the lanes
            classifiers[spec] = clf
        first = next(iter(classifiers.values()))
        max_batch = BatchingConfig().batch_size("cpu")
        clip = make_test_clip(Path(tmp) / "clip.mp4", frames=round(args.seconds * 30), fps=30, size=(1280, 720),
                              pattern="photos", counter=False)
        frames = decode_working_size(clip, first)
        total = len(frames) * args.streams
        hwdecode = decode_only.hwdecode_for(first)
        print(f"device: {describe_device(first.device)}; torch {torch.__version__}; {args.streams} fast 1280x720 "
              f"streams, clip {args.seconds:.0f} s; batches of up to {max_batch}", flush=True)
        for r in range(args.rounds):
            d = decode_only.bench_decode(first, clip, args.streams, hwdecode)
            row: dict[str, object] = {"decode_fps": d}
            print(f"\nround {r + 1}: (d) decode only {d:.1f} frames/s", flush=True)
            for spec, clf in classifiers.items():
                lanes, threads = plan_lanes(clf, "auto", throughput=True)
                serve = getattr(clf, "serve_lanes", None)
                if serve:
                    serve(lanes)
                a = bench_model(clf, frames, total, max_batch, lanes, threads)
                b = run_pipeline(clf, clip, args.streams, Path(tmp) / f"out-{r}-{spec.replace(':', '-')}", max_batch)
                row[spec] = {"model_fps": a, **b}
                print(f"  {spec:22} (a) {a:7.1f}  (b) {b['fps']:7.1f} frames/s  b/a {b['fps'] / a:4.2f}  "
                      f"busy cores {b['busy_cores']:.2f}  CPU {b['cpu_ms_per_frame']:5.1f} ms/frame  "
                      f"stage wall ms/frame:"
                      f" decode {b['decode_ms']:5.1f} preprocess {b['preprocess_ms']:5.1f} inference "
                      f"{b['inference_ms']:5.1f}  mean batch {b['mean_batch']:.1f}", flush=True)
            results["rounds"].append(row)
        base = args.specs.split(",")[0]
        print(f"\nmedians over {args.rounds} rounds; x = (b) over {base}'s (b) in the same round, then the median")
        print("| backend | (a) model, lanes | (b) end to end | x | b/a | busy cores | CPU ms/frame | decode / "
              "preprocess / inference wall ms/frame |")
        print("|---|---|---|---|---|---|---|---|")
        for spec in classifiers:
            rows = [rw[spec] for rw in results["rounds"]]
            med = {k: float(np.median([x[k] for x in rows])) for k in rows[0]}
            med["speedup"] = float(np.median([rw[spec]["fps"] / rw[base]["fps"] for rw in results["rounds"]]))
            results["specs"][spec] = med
            print(f"| {spec} | {med['model_fps']:.1f} | {med['fps']:.1f} | {med['speedup']:.2f}× | "
                  f"{med['fps'] / med['model_fps']:.2f} | {med['busy_cores']:.2f} | {med['cpu_ms_per_frame']:.1f} | "
                  f"{med['decode_ms']:.1f} / {med['preprocess_ms']:.1f} / {med['inference_ms']:.1f} |")
        decode = float(np.median([rw["decode_fps"] for rw in results["rounds"]]))
        results["decode_fps"] = decode
        print(f"(d) decode only, {args.streams} streams: {decode:.1f} frames/s (median)", flush=True)

        ladder = [int(v) for v in args.realtime.split(",") if v]
        results["realtime"] = {}
        for spec, clf in classifiers.items():
            lanes = plan_lanes(clf, "auto", throughput=False)[0]
            print(f"\nrealtime ladder {spec}: 30 fps streams, {args.realtime_seconds:.0f} s each, {lanes} lane(s)")
            rows = []
            for n in ladder:
                rr = run_pipeline(clf, clip, n, Path(tmp) / f"rt-{spec.replace(':', '-')}-{n}", max_batch,
                                  "realtime", args.realtime_seconds)
                rows.append({"streams": n, **rr})
                print(f"  {n} streams: classified {rr['fps']:6.1f} fps, dropped {100 * rr['drop_rate']:5.1f}%, "
                      f"p50 {rr['p50_ms']:6.1f} ms, p99 {rr['p99_ms']:7.1f} ms, busy cores {rr['busy_cores']:.2f}",
                      flush=True)
            results["realtime"][spec] = rows
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
