"""Model-only images/s: the network alone on a preprocessed batch already on the device.

For each precision (fp32, bf16, fp16 autocast) and batch size, four ways to run the same ResNet18:

- eager:          the BN-folded network in the default (contiguous) layout;
- channels_last:  the same network and input in channels_last (what Sightline serves);
- compile:        channels_last under torch.compile (one static shape per batch size, compiled in warm-up);
- cudagraphs:     channels_last captured once per batch size in a CUDA graph, then replayed (CUDA only).

Probabilities stay on the device; the clock stops after a device synchronize. fp16 and CUDA graphs are
CUDA only and are reported as "n/a" on a CPU. ``--budget-s`` bounds the whole table: configurations not
reached in time are reported as not run, never guessed.

    python benchmarks/model_throughput.py --model-only --device cuda
    python benchmarks/model_throughput.py --model-only --device cpu --batches 1,2 --seconds 0.2
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from sightline.model.bundle import ModelBundle
from sightline.model.classifier import Classifier
from sightline.model.device import describe_device
from sightline.model.errors import DeviceError

MODES = ("eager", "channels_last", "compile", "cudagraphs")
PRECISIONS = ("fp16", "bf16", "fp32")
DEFAULT_BATCHES = "1,2,4,8,16,32,64,128,256"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model only (--model-only)")
    group.add_argument("--model-only", action="store_true",
                       help="time the network alone on device-resident batches, per precision and mode")
    group.add_argument("--modes", default=",".join(MODES), help=f"comma-separated: {', '.join(MODES)}")
    group.add_argument("--precisions", default=",".join(PRECISIONS), help="comma-separated: fp16, bf16, fp32")
    group.add_argument("--compile-batches", default="all",
                       help="batch sizes that get torch.compile (each is a compilation): 'all' or a list")
    group.add_argument("--budget-s", type=float, default=None, help="stop starting configurations after this")
    group.add_argument("--json", type=Path, default=None, help="also write the rows here")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_runner(clf: Classifier, mode: str, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """A no-argument callable that runs one batch in ``mode`` (building/capturing what the mode needs)."""
    if mode == "eager":
        net = clf.network.to(memory_format=torch.contiguous_format)
        xc = x.contiguous()
        return lambda: _forward(clf, net, xc)
    net = clf.network.to(memory_format=torch.channels_last)
    if mode == "channels_last":
        return lambda: _forward(clf, net, x)
    if mode == "compile":
        compiled = torch.compile(net, dynamic=False)
        return lambda: _forward(clf, compiled, x)
    if mode == "cudagraphs":
        stream = torch.cuda.Stream(clf.device)
        stream.wait_stream(torch.cuda.current_stream(clf.device))
        with torch.cuda.stream(stream):
            for _ in range(3):
                _forward(clf, net, x, cache=False)
        torch.cuda.current_stream(clf.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = _forward(clf, net, x, cache=False)

        def replay() -> torch.Tensor:
            graph.replay()
            return out

        return replay
    raise ValueError(f"unknown mode {mode!r}")


def _forward(clf: Classifier, net: torch.nn.Module, x: torch.Tensor, cache: bool = True) -> torch.Tensor:
    amp = torch.autocast(clf.device.type, dtype=clf.amp_dtype or torch.float32, enabled=clf.amp_dtype is not None,
                         cache_enabled=cache)
    with amp:
        return torch.softmax(net(x).float(), dim=1)


def time_runner(run: Callable[[], torch.Tensor], device: torch.device, batch: int, seconds: float,
                warmup: int) -> tuple[float, float]:
    """(images/s, ms per batch): at least 3 timed batches and ``seconds``, after ``warmup`` batches."""
    for _ in range(warmup):
        run()
    sync(device)
    done, start = 0, time.perf_counter()
    while True:
        chunk = max(1, done)  # double the batches between synchronizations: few syncs, bounded overshoot
        for _ in range(chunk):
            run()
        sync(device)
        done += chunk
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and done >= 3:
            return done * batch / elapsed, 1000 * elapsed / done


def run(args: argparse.Namespace, bundle: ModelBundle) -> int:
    torch.backends.cudnn.benchmark = True
    if hasattr(torch, "_dynamo"):  # one compiled graph per batch size: allow that many recompilations
        for name in ("recompile_limit", "cache_size_limit"):
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name, 64)
    batches = [int(b) for b in args.batches.split(",")]
    modes = [m for m in args.modes.split(",") if m]
    precisions = [p for p in args.precisions.split(",") if p]
    for m in modes:
        if m not in MODES:
            raise SystemExit(f"unknown mode {m!r}; use {', '.join(MODES)}")
    compile_batches = (set(batches) if args.compile_batches == "all"
                       else {int(b) for b in args.compile_batches.split(",")})
    started = time.perf_counter()
    first = Classifier(bundle, device=args.device, precision="fp32")
    device = first.device
    crop = bundle.preprocess.crop
    print(f"model only: {bundle.arch} on {device} — {describe_device(device)}; torch {torch.__version__}; "
          f"input {crop}×{crop} preprocessed on the device; {args.seconds:g} s per configuration after "
          f"{args.warmup} warm-up batches; cudnn.benchmark on", flush=True)
    rows: list[dict[str, object]] = []
    classifiers: dict[str, Classifier] = {}
    for precision in precisions:
        try:
            classifiers[precision] = Classifier(bundle, device=str(device), precision=precision)
        except DeviceError as exc:
            print(f"  {precision}: n/a ({exc})")
            rows += [{"precision": precision, "mode": m, "batch": b, "status": "n/a"} for m in modes for b in batches]
    # compilation is the slow part: every other mode first, so a time budget cuts compile runs only
    for mode in sorted(modes, key=lambda m: m == "compile"):
        for precision, clf in classifiers.items():
            for batch in batches:
                row: dict[str, object] = {"precision": precision, "mode": mode, "batch": batch}
                rows.append(row)
                if mode == "cudagraphs" and device.type != "cuda":
                    row["status"] = "n/a"
                    continue
                if mode == "compile" and batch not in compile_batches:
                    row["status"] = "not compiled (--compile-batches)"
                    continue
                if args.budget_s is not None and time.perf_counter() - started > args.budget_s:
                    row["status"] = "not run (time budget)"
                    continue
                measure(clf, mode, batch, row, args)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print("\nimages/s, model only:\n")
    print(table(rows, batches))
    ok = [r for r in rows if r.get("status") == "ok"]
    if ok:
        best = max(ok, key=lambda r: float(r["images_per_s"]))  # type: ignore[arg-type]
        print(f"\nbest: {best['images_per_s']:.1f} images/s — {best['precision']} {best['mode']} batch {best['batch']}")
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"device": describe_device(device), "torch": torch.__version__,
                                         "seconds": args.seconds, "rows": rows}, indent=2))
    return 0


def measure(clf: Classifier, mode: str, batch: int, row: dict[str, object], args: argparse.Namespace) -> None:
    device = clf.device
    crop = clf.bundle.preprocess.crop
    x = torch.randn(batch, 3, crop, crop, device=device).contiguous(memory_format=torch.channels_last)
    t0 = time.perf_counter()
    try:
        with torch.inference_mode():
            runner = make_runner(clf, mode, x)
            ips, ms = time_runner(runner, device, batch, args.seconds, args.warmup)
    except torch.cuda.OutOfMemoryError:
        row["status"] = "out of memory"
        torch.cuda.empty_cache()
        print(f"  {row['precision']:4} {mode:13} batch {batch:3}: out of memory", flush=True)
        return
    except RuntimeError as exc:  # a compile/capture failure is a result too: report it, go on
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        row["status"] = f"failed: {reason}"
        print(f"  {row['precision']:4} {mode:13} batch {batch:3}: failed ({reason})", flush=True)
        return
    row.update(status="ok", images_per_s=ips, ms_per_batch=ms, setup_s=time.perf_counter() - t0 - args.seconds)
    print(f"  {row['precision']:4} {mode:13} batch {batch:3}: {ips:10.1f} images/s ({ms:8.2f} ms/batch)", flush=True)


def table(rows: list[dict[str, object]], batches: list[int]) -> str:
    lines = ["| precision | mode | " + " | ".join(f"batch {b}" for b in batches) + " |",
             "|" + "---|" * (2 + len(batches))]
    rank = {name: i for i, name in enumerate((*PRECISIONS, *MODES))}
    keys = sorted(dict.fromkeys((str(r["precision"]), str(r["mode"])) for r in rows),
                  key=lambda k: (rank.get(k[0], 99), rank.get(k[1], 99)))
    for precision, mode in keys:
        cells = {}
        for r in rows:
            if (r["precision"], r["mode"]) == (precision, mode):
                status = str(r.get("status"))
                cells[r["batch"]] = f"{r['images_per_s']:.0f}" if status == "ok" else status.split(" (")[0][:24]
        lines.append(f"| {precision} | {mode} | " + " | ".join(cells.get(b, "") for b in batches) + " |")
    return "\n".join(lines)
