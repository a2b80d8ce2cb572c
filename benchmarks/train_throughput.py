"""Training throughput (images/s) on the current device: fp32 vs mixed precision, head vs full.

Runs the real optimizer step of `sightline train` (training.step.TrainStep: host uint8 batch -> device,
normalize, autocast forward, scaled backward, SGD step, cosine schedule) on synthetic batches, so the
figures are the model-side ceiling; decoding and augmentation run in DataLoader workers beside it.
Mixed precision is bf16 autocast on the CPU and fp16 autocast + GradScaler on CUDA.

    python benchmarks/train_throughput.py                         # CPU-sized defaults (batch 16, crop 112)
    python benchmarks/train_throughput.py --device cuda --batch-size 128 --crop 224 --steps 30
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from sightline.model.architectures import build_network
from sightline.model.bundle import PreprocessSpec
from sightline.model.device import describe_device, resolve_device
from sightline.training.data import Batch
from sightline.training.network import build_optimizer, param_groups, set_phase, train_mode
from sightline.training.schedule import WarmupCosine
from sightline.training.step import Normalizer, StepTotals, TrainStep, training_memory_format


def measure(device: torch.device, mode: str, amp_dtype: torch.dtype | None, args: argparse.Namespace) -> float:
    torch.manual_seed(0)
    net = build_network(args.arch, args.classes).to(device, memory_format=training_memory_format(device))
    phase = "head" if mode == "head" else "full"
    set_phase(net, phase)
    train_mode(net, phase)
    opt = build_optimizer("sgd", param_groups(net, 0.01, 0.01, 1e-4), 0.01, 0.9)
    step = TrainStep(net, opt, WarmupCosine(opt, 10_000, 0), torch.amp.GradScaler(device.type,
                     enabled=amp_dtype == torch.float16), Normalizer(PreprocessSpec(args.crop, args.crop), device),
                     amp_dtype, args.batch_size)
    g = torch.Generator().manual_seed(0)
    batch = Batch(torch.randint(0, 256, (args.batch_size, 3, args.crop, args.crop), dtype=torch.uint8, generator=g),
                  torch.randint(0, args.classes, (args.batch_size,), generator=g))
    if device.type == "cuda":
        batch = batch.pin_memory()
    totals = StepTotals.zeros(device)
    for _ in range(args.warmup):
        step([batch], totals)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step([batch], totals)
    float(totals.loss_sum)  # waits for the device
    return args.steps * args.batch_size / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--crop", type=int, default=112, help="training crop (224 is the ImageNet setting)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--steps", type=int, default=5, help="timed optimizer steps per setting")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (allocator, cuDNN autotune)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    amp = torch.float16 if device.type == "cuda" else torch.bfloat16
    rows = []
    for mode in ("head", "full"):
        for name, dtype in (("fp32", None), (f"amp {str(amp).removeprefix('torch.')}", amp)):
            rows.append({"mode": mode, "precision": name, "images_per_s": measure(device, mode, dtype, args)})
    info = {"device": describe_device(device), "arch": args.arch, "batch_size": args.batch_size, "crop": args.crop,
            "steps": args.steps, "torch": torch.__version__, "results": rows}
    if args.json:
        print(json.dumps(info, indent=2))
        return
    print(f"device: {info['device']}; {args.arch}, batch {args.batch_size}, crop {args.crop}, "
          f"{args.steps} timed steps, torch {torch.__version__}")
    print(f"{'mode':<6} {'precision':<14} {'images/s':>9}")
    for r in rows:
        print(f"{r['mode']:<6} {r['precision']:<14} {r['images_per_s']:9.1f}")


if __name__ == "__main__":
    main()
