"""Side-by-side throughput of (a) the model alone, (b) Sightline end to end, (c) a seed-style loop.

All three run in one process on the same generated clips and the same model, so the ratios are
measured in one run:

  (a) model only: working-size frames already in memory -> Classifier (device preprocessing + forward),
      batches of --max-batch;
  (b) Sightline: N fast (lossless) file streams through the real pipeline -- PyAV decode threads with
      FFmpeg scaling, cross-stream batching, inference worker, smoothing, JSONL sinks;
  (c) seed-style: OpenCV VideoCapture -> RGB -> PIL -> torchvision IMAGENET1K_V1 transforms -> model,
      one frame at a time (the tutorial's loop), with the same device and autocast setting;
  (c') the same loop with Sightline's model tricks (BatchNorm folded into the convolutions,
      channels_last), so b/c' is the pipeline's own gain and c'/c the model's.

Then N realtime 30 fps streams for each N in --realtime: p50/p99 capture->result latency and the
share of frames dropped as stale (live policy: newest frame wins when the model falls behind).

    python benchmarks/pipeline.py                      # CPU-sized defaults
    python benchmarks/pipeline.py --device cuda --streams 16 --realtime 8,16,32,64 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import threading
import time
from pathlib import Path

import av
import cv2
import decode_only  # benchmarks/ is on sys.path when this script runs
import numpy as np
import torch
from PIL import Image
from sightline.model import Classifier, ModelBundle, load_model_source
from sightline.model.architectures import build_network
from sightline.model.classifier import fold_batchnorm
from sightline.model.device import describe_device
from sightline.model.weights import imagenet_classes, imagenet_preprocess
from sightline.stream.config import BatchingConfig, RunConfig, StreamConfig
from sightline.stream.inference.lanes import plan_lanes
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.synthetic_media import make_test_clip
from torchvision.models import ResNet18_Weights


def load_bundle(source: str) -> ModelBundle:
    if source == "random":  # throughput does not depend on the weights
        torch.manual_seed(0)
        return ModelBundle("resnet18", imagenet_classes(), build_network("resnet18", 1000).state_dict(),
                           imagenet_preprocess(), {"source": "random-init"})
    return load_model_source(source)


def decode_working_size(clip: Path, classifier: Classifier) -> list[np.ndarray]:
    with av.open(str(clip)) as container:
        frames = []
        for frame in container.decode(video=0):
            h, w = classifier.preprocessor.working_size(frame.height, frame.width)
            frames.append(frame.to_ndarray(format="rgb24", width=w, height=h, interpolation="AREA"))
    return frames


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_model(classifier: Classifier, frames: list[np.ndarray], total: int, batch: int, lanes: int,
                threads_per_lane: int | None) -> float:
    """Batches straight from memory through the classifier, on as many lanes as the pipeline uses."""
    pool = (frames * (total // len(frames) + 1))[:total]
    starts = iter(range(0, total, batch))
    take = threading.Lock()

    def lane() -> None:
        if threads_per_lane is not None:
            torch.set_num_threads(threads_per_lane)
        classifier.probabilities(pool[:batch])  # warm this thread
        ready.wait()
        while True:
            with take:
                i = next(starts, None)
            if i is None:
                return
            classifier.probabilities(pool[i:i + batch])

    saved = torch.get_num_threads()
    ready = threading.Barrier(lanes + 1)
    threads = [threading.Thread(target=lane) for _ in range(lanes)]
    for t in threads:
        t.start()
    ready.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    sync(classifier.device)
    torch.set_num_threads(saved)
    return total / (time.perf_counter() - start)


def bench_pipeline(classifier: Classifier, clip: Path, n: int, out: Path, max_batch: int, workers: int | str,
                   mode: str = "fast", seconds: float | None = None,
                   live_buffer: int | None = None, hwaccel: str = "auto") -> dict[str, float]:
    config = RunConfig(output_dir=out, media_root=clip.parent, model={"workers": workers},
                       batching={"max_batch": max_batch, "max_wait_ms": 10},
                       streams=[StreamConfig(name=f"s{i}", url=str(clip), mode=mode, loop=mode == "realtime",
                                             buffer=live_buffer if mode == "realtime" else None, hwaccel=hwaccel)
                                for i in range(n)])
    pipeline = Pipeline(classifier, config, Metrics())
    start = time.perf_counter()
    asyncio.run(pipeline.run(duration=seconds))
    elapsed = time.perf_counter() - start
    stats = [pipeline.get(f"s{i}").stats for i in range(n)]
    inferred = sum(s.frames_inferred for s in stats)
    decoded = sum(s.frames_decoded for s in stats)
    dropped = sum(sum(s.dropped.values()) for s in stats)
    latencies = np.asarray([lat for s in stats for lat in s.recent_latencies()])
    return {
        "fps": inferred / elapsed,
        "decoded": decoded,
        "inferred": inferred,
        "drop_rate": dropped / decoded if decoded else 0.0,
        "p50_ms": float(np.percentile(latencies, 50) * 1000) if len(latencies) else float("nan"),
        "p99_ms": float(np.percentile(latencies, 99) * 1000) if len(latencies) else float("nan"),
        "mean_batch": inferred / max(pipeline.worker.batches, 1),
    }


def bench_seed(bundle: ModelBundle, clip: Path, device: torch.device, amp: torch.dtype | None, limit: int,
               model_tricks: bool = False) -> float:
    """The tutorial's loop: OpenCV -> PIL -> torchvision transforms -> model, one frame at a time.

    ``model_tricks``: the network as the Classifier serves it (BN folded, channels_last weights and input).
    """
    model = bundle.build().to(device)
    layout = torch.channels_last if model_tricks else torch.contiguous_format
    if model_tricks:
        model = fold_batchnorm(model).to(memory_format=layout)
    transform = ResNet18_Weights.IMAGENET1K_V1.transforms()
    cap = cv2.VideoCapture(str(clip))
    done = 0
    start = None
    with torch.no_grad():
        while done < limit:
            ok, bgr = cap.read()
            if not ok:
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                continue
            image = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            x = transform(image).unsqueeze(0).to(device, memory_format=layout)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                probs = torch.softmax(model(x), dim=1)
            probs.argmax().item()  # a result per frame, as the tutorial prints one
            if start is None:  # first frame is warm-up
                start = time.perf_counter()
            else:
                done += 1
    cap.release()
    return done / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="random", help="'random' (default; weights do not change speed), "
                                                      "'imagenet' or a bundle path")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--streams", type=int, default=4, help="fast file streams for (b)")
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each generated 720p clip")
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--max-batch", default="auto", help="batching.max_batch for (a) and (b): auto = 8 on a CPU, 32 on "
                                                       "a GPU")
    ap.add_argument("--workers", default="auto", help="inference lanes (model.workers) for (a) and (b)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the network for (a) and (b)")
    ap.add_argument("--seed-frames", type=int, default=120, help="frames for the seed-style loop (c)")
    ap.add_argument("--rounds", type=int, default=5, help="(a), (b), (c) back to back this many times; medians")
    ap.add_argument("--realtime", default="1,2,4", help="realtime stream counts for the latency table")
    ap.add_argument("--realtime-seconds", type=float, default=10.0)
    ap.add_argument("--live-buffer", type=int, default=None,
                    help="per-stream buffer of the realtime streams (default: the config default)")
    ap.add_argument("--skip-throughput", action="store_true", help="only the realtime table")
    ap.add_argument("--skip-seed", action="store_true", help="leave out (c), the seed-style loop")
    ap.add_argument("--hwaccel", choices=["auto", "off"], default="auto",
                    help="streams' decode: auto = NVDEC when the model is on CUDA and the probe allows; off = software")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--backend", default="torch", help="torch (default), openvino, onnxruntime, tensorrt or auto: "
                                                       "(a) and (b) run on it; (c) stays torch")
    ap.add_argument("--calibrate", default=None, help="int8: calibration images (default: scikit-image photos)")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")

    width, height = (int(v) for v in args.size.split("x"))
    bundle = load_bundle(args.model)
    if args.backend == "torch":
        classifier = Classifier(bundle, device=args.device, precision=args.precision, compile=args.compile)
    else:  # a compiled backend (benchmarks/backend_setup.py); its artefact lives in a temporary folder
        from backend_setup import backend_classifier

        workdir = tempfile.TemporaryDirectory()
        classifier = backend_classifier(bundle, args.backend, args.precision, args.device, Path(workdir.name),
                                        args.calibrate)
    device = classifier.device
    max_batch = BatchingConfig(max_batch=args.max_batch if args.max_batch == "auto"
                               else int(args.max_batch)).batch_size(device.type)
    classifier.warmup(batch_size=max_batch)
    workers = args.workers if args.workers == "auto" else int(args.workers)
    lanes, threads_per_lane = plan_lanes(classifier, workers, throughput=True)  # what fast streams get
    layout = f"{lanes} lane(s)" + (f" × {threads_per_lane} torch thread(s)" if threads_per_lane else "")
    live_lanes = plan_lanes(classifier, workers, throughput=False)[0]
    print(f"device: {describe_device(device)}; {layout}; backend {args.backend}; precision {classifier.precision}; "
          f"{'torch.compile; ' if args.compile else ''}torch {torch.__version__}; "
          f"clip {width}x{height} @ {args.fps} fps, {args.seconds:.0f} s")

    results: dict[str, object] = {"device": describe_device(device), "lanes": lanes, "realtime_lanes": live_lanes,
                                  "threads_per_lane": threads_per_lane, "precision": classifier.precision,
                                  "backend": args.backend,
                                  "compiled": args.compile,
                                  "clip": f"{width}x{height}@{args.fps}", "streams": args.streams}
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_test_clip(Path(tmp) / "clip.mp4", frames=round(args.seconds * args.fps), fps=args.fps,
                              size=(width, height), pattern="photos", counter=False)
        frames = decode_working_size(clip, classifier)
        total = len(frames) * args.streams

        if not args.skip_throughput:
            hwdecode = decode_only.hwdecode_for(classifier, args.hwaccel)
            results["decode"] = hwdecode.reason
            rounds = []
            header = ("round", "(a) model", "(b) Sightline", "(c) seed", "(c') +tricks", "(d) decode", "b/a", "b/c",
                      "b/c'", "c'/c", "b/d")
            widths = (5, 10, 14, 9, 13, 11, 6, 6, 6, 6, 6)
            print("\n" + " ".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True))
                  + "   frames/s; (b) mean batch")
            nan = float("nan")
            for r in range(args.rounds):  # a-d back to back each round: the ratios share the machine's mood
                a = bench_model(classifier, frames, total, max_batch, lanes, threads_per_lane)
                b = bench_pipeline(classifier, clip, args.streams, Path(tmp) / f"out{r}", max_batch, workers,
                                   hwaccel=args.hwaccel)
                c = nan if args.skip_seed else bench_seed(bundle, clip, device, classifier.amp_dtype, args.seed_frames)
                ct = nan if args.skip_seed else bench_seed(bundle, clip, device, classifier.amp_dtype, args.seed_frames,
                                                           model_tricks=True)
                d = decode_only.bench_decode(classifier, clip, args.streams, hwdecode)
                rounds.append({"model_fps": a, "pipeline_fps": b["fps"], "seed_fps": c, "seed_tricks_fps": ct,
                               "decode_fps": d, "pipeline_mean_batch": b["mean_batch"],
                               "b_over_a": b["fps"] / a, "b_over_c": b["fps"] / c, "b_over_c_tricks": b["fps"] / ct,
                               "c_tricks_over_c": ct / c, "b_over_d": b["fps"] / d})
                print(f"{r + 1:>5} {a:>10.1f} {b['fps']:>14.1f} {c:>9.1f} {ct:>13.1f} {d:>11.1f} {b['fps'] / a:>6.2f} "
                      f"{b['fps'] / c:>6.2f} {b['fps'] / ct:>6.2f} {ct / c:>6.2f} {b['fps'] / d:>6.2f}   "
                      f"{b['mean_batch']:.1f}")
            median = {k: float(np.median([row[k] for row in rounds])) for k in rounds[0]}
            results.update({**median, "rounds": rounds})
            print(f"{'median':>5} {median['model_fps']:>10.1f} {median['pipeline_fps']:>14.1f} "
                  f"{median['seed_fps']:>9.1f} {median['seed_tricks_fps']:>13.1f} {median['decode_fps']:>11.1f} "
                  f"{median['b_over_a']:>6.2f} {median['b_over_c']:>6.2f} {median['b_over_c_tricks']:>6.2f} "
                  f"{median['c_tricks_over_c']:>6.2f} {median['b_over_d']:>6.2f}")
            print(f"(a) model only: batches of {max_batch} from memory on {lanes} lane(s); "
                  f"(b) {args.streams} fast {width}x{height} file streams end to end; "
                  f"(c) OpenCV -> PIL -> torchvision transforms -> model, batch 1; (c') the same with BN folded "
                  f"and channels_last; (d) the same {args.streams} streams decoded (sources only, no model; "
                  f"{hwdecode.reason})")
            print("b/a = pipeline efficiency, b/c = speed-up over the seed loop, b/c' = the pipeline's own gain "
                  "(model tricks in both), c'/c = the model tricks' gain, b/d = end to end over decode-only "
                  "(medians of per-round ratios)")

        rows = []
        buffer = args.live_buffer or StreamConfig(name="x", url="x.mp4").capacity
        ladder = [int(v) for v in args.realtime.split(",") if v]
        if ladder:
            print(f"\nrealtime {args.fps} fps streams, {args.realtime_seconds:.0f} s each, buffer {buffer}, "
                  f"{live_lanes} lane(s):")
            print(f"{'streams':>8} {'offered fps':>12} {'classified fps':>15} {'p50 ms':>8} {'p99 ms':>8} "
                  f"{'dropped':>8} {'GPU MiB peak (alloc/reserved)':>30}")
        for n in ladder:
            decode_only.reset_gpu_memory(device)
            r = bench_pipeline(classifier, clip, n, Path(tmp) / f"rt{n}", max_batch, workers, "realtime",
                               args.realtime_seconds, args.live_buffer, args.hwaccel)
            allocated, reserved = decode_only.gpu_memory_mib(device)
            rows.append({"streams": n, **r, "gpu_mib_allocated": allocated, "gpu_mib_reserved": reserved})
            print(f"{n:>8} {n * args.fps:>12} {r['fps']:>15.1f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} "
                  f"{100 * r['drop_rate']:>7.1f}% {allocated:>14.0f} / {reserved:<14.0f}", flush=True)
        results["realtime"] = rows
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
