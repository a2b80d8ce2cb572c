"""Classifier throughput: images/s for batched preprocessing + forward, the inference worker's hot path.

For each batch size it times `Classifier.preprocessor(frames)` followed by `Classifier.forward(batch)`
(probabilities back on the host, so GPU work is complete when the clock stops), on:

- 720p frames (1280×720 uint8 RGB: what a camera delivers when nothing is rescaled upstream), and
- working-size frames (455×256: what the decoders produce when FFmpeg's scaler does the resize),

in fp32 and with autocast (fp16 on CUDA, bf16 on the CPU), with the network and batch in
channels_last (what Sightline serves) and, for comparison, in the default contiguous layout.
Each configuration gets a warm-up, then runs for ``--seconds``. Weights are a random-init
ResNet18 with 1000 classes unless ``--model`` names a source: speed does not depend on the values.

    python benchmarks/model_throughput.py --device cpu --batches 1,8 --seconds 2

With ``--model-only`` it times the network alone on device-resident batches instead, per precision
and per mode (eager, channels_last, torch.compile, CUDA graphs): see model_modes.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

import model_modes  # benchmarks/ is on sys.path when this script runs
import numpy as np
import torch
from sightline.model.architectures import build_network
from sightline.model.bundle import ModelBundle
from sightline.model.classifier import Classifier
from sightline.model.device import describe_device
from sightline.model.weights import imagenet_classes, imagenet_preprocess, load_model_source

FRAME_SIZES = {"720p": (720, 1280), "working": (256, 455)}
POOL = 8  # distinct frames cycled through a batch


@dataclass
class Row:
    frames: str
    precision: str
    layout: str
    batch: int
    images_per_s: float
    ms_per_batch: float
    images_per_cpu_s: float


def random_bundle() -> ModelBundle:
    torch.manual_seed(0)
    net = build_network("resnet18", 1000)
    return ModelBundle("resnet18", imagenet_classes(), net.state_dict(), imagenet_preprocess(),
                       {"source": "random init (benchmark)"})


def frames_of(size: tuple[int, int], rng: np.random.Generator) -> list[np.ndarray]:
    height, width = size
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(POOL)]


def time_config(classifier: Classifier, frames: list[np.ndarray], batch: int, contiguous: bool,
                seconds: float, warmup: int) -> tuple[float, float, float]:
    """(images/s, ms per batch, images per CPU-second of this process) after ``warmup`` batches.

    On a shared machine wall-clock figures move with the load; with one torch thread the CPU-time
    figure is what an otherwise idle core would deliver.
    """
    images = [frames[i % len(frames)] for i in range(batch)]

    def step() -> None:
        with torch.inference_mode():
            x = classifier.preprocessor(images)
            if contiguous:
                x = x.contiguous()
            classifier.forward(x)

    for _ in range(warmup):
        step()
    done, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while True:
        step()
        done += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    cpu = time.process_time() - cpu_start
    return done * batch / elapsed, 1000 * elapsed / done, done * batch / cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--batches", default="1,8,32,64", help="comma-separated batch sizes")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per configuration")
    parser.add_argument("--frames", default="720p,working", help="frame kinds: 720p, working")
    parser.add_argument("--layouts", default="channels_last,contiguous", help="channels_last, contiguous")
    parser.add_argument("--model", default=None, help="a model source; default: random-init resnet18")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches per configuration (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    model_modes.add_arguments(parser)
    parser.add_argument("--backend", default=None, metavar="B:P,...",
                        help="compare backends instead, e.g. torch:fp32,torch:bf16,openvino:fp32,openvino:bf16,"
                             "openvino:int8 (benchmarks/backend_setup.py)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model_only:  # the network alone, per precision and mode (eager/channels_last/compile/CUDA graphs)
        return model_modes.run(args, load_model_source(args.model) if args.model else random_bundle())
    batches = [int(b) for b in args.batches.split(",")]
    if args.backend:
        import tempfile
        from pathlib import Path

        from backend_setup import compare_backends

        bundle = load_model_source(args.model) if args.model else random_bundle()
        print(f"{describe_device(torch.device('cpu') if args.device in ('auto', 'cpu') else torch.device(args.device))}"
              f"; load average (1 min) {os.getloadavg()[0]:.1f}; working-size 455×256 frames, crop "
              f"{bundle.preprocess.crop}; {args.seconds:g} s per configuration")
        with tempfile.TemporaryDirectory() as tmp:
            compare_backends(bundle, args.backend, batches, args.seconds, args.warmup, args.device, Path(tmp))
        print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        return 0
    kinds = args.frames.split(",")
    layouts = args.layouts.split(",")

    bundle = load_model_source(args.model) if args.model else random_bundle()
    fp32 = Classifier(bundle, device=args.device, precision="fp32")
    device = fp32.device
    amp = Classifier(bundle, device=str(device), precision="fp16" if device.type == "cuda" else "bf16")
    flat = {}
    for name, clf in (("fp32", fp32), (amp.precision, amp)):
        other = Classifier(bundle, device=str(device), precision=clf.precision)
        other.network.to(memory_format=torch.contiguous_format)
        flat[name] = other

    print(f"device: {device} — {describe_device(device)}; load average (1 min) {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    print(f"torch {torch.__version__}, {bundle.arch}, crop {bundle.preprocess.crop}, "
          f"{args.seconds:g} s (at least 1 batch) per configuration after {args.warmup} warm-up batches")
    rng = np.random.default_rng(0)
    rows: list[Row] = []
    for kind in kinds:
        frames = frames_of(FRAME_SIZES[kind], rng)
        for name, clf in (("fp32", fp32), (amp.precision, amp)):
            for layout in layouts:
                runner = clf if layout == "channels_last" else flat[name]
                for batch in batches:
                    ips, ms, ipc = time_config(runner, frames, batch, layout == "contiguous", args.seconds,
                                               args.warmup)
                    rows.append(Row(kind, name, layout, batch, ips, ms, ipc))
                    print(f"  {kind:8} {name:5} {layout:14} batch {batch:3}: {ips:8.1f} images/s "
                          f"({ms:7.1f} ms/batch, {ipc:.1f} images per CPU-second)", flush=True)
    print("\nimages/s (wall clock):\n")
    print(markdown(rows, batches, "images_per_s"))
    if device.type == "cpu":
        print("\nimages per CPU-second of this process:\n")
        print(markdown(rows, batches, "images_per_cpu_s"))
    print(f"\nload average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0


def markdown(rows: list[Row], batches: list[int], field: str) -> str:
    head = "| frames | precision | layout | " + " | ".join(f"batch {b}" for b in batches) + " |"
    lines = [head, "|" + "---|" * (3 + len(batches))]
    keys = dict.fromkeys((r.frames, r.precision, r.layout) for r in rows)
    for key in keys:
        cells = {r.batch: f"{getattr(r, field):.1f}" for r in rows if (r.frames, r.precision, r.layout) == key}
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells.get(b, "") for b in batches) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
