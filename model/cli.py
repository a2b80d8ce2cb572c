"""`sightline predict` and `sightline info`: the tutorial's first steps, batched and safe on bad input.

torch and the model code are imported inside the commands, so `sightline --help` answers at once."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

N = TypeVar("N", int, float)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="top-k classes for image files",
                       description="Classify images in batches and print the top-k classes of each.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format PIL reads)")
    add_model_arguments(p)
    p.add_argument("--topk", type=positive_int, default=5, help="classes to show per image (default 5)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="images per forward pass (default 16)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of text")
    p.set_defaults(func=cmd_predict)

    i = sub.add_parser("info", help="describe a model or bundle",
                       description="Print a model's architecture, classes, preprocessing and provenance.")
    i.add_argument("model", metavar="MODEL", help="'imagenet', a Sightline bundle or a torchvision .pth")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=cmd_info)


def parse_number(text: str, parse: Callable[[str], N], what: str) -> N:
    """``parse(text)``, or an argparse error that says what was expected."""
    try:
        return parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def positive_int(text: str) -> int:
    value = parse_number(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="imagenet",
                   help="'imagenet' (torchvision ResNet18 weights), a Sightline bundle, or a .pth state dict")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16", "int8"],
                   help="auto: fp16 autocast on CUDA; on a CPU bf16 where native, else fp32; per backend; "
                        "int8 needs a compiled backend")
    add_backend_argument(p)


def add_backend_argument(p: argparse.ArgumentParser, default: str | None = "torch") -> None:
    p.add_argument("--backend", default=default, choices=["auto", "torch", "openvino", "onnxruntime", "tensorrt"],
                   help="inference backend (default torch, the reference); a compiled one is built next to the "
                        "bundle on first use (see `sightline export`)")


def cmd_predict(args: argparse.Namespace) -> int:
    from sightline.model.backends.serving import open_classifier
    from sightline.model.errors import ImageLoadError
    from sightline.model.images import load_image

    classifier = open_classifier(args.model, device=args.device, precision=args.precision, backend=args.backend)
    results: list[dict] = []
    failures = 0
    paths = list(args.images)
    for start in range(0, len(paths), args.batch_size):
        chunk, arrays = [], []
        for path in paths[start:start + args.batch_size]:
            try:
                arrays.append(load_image(path))
                chunk.append(path)
            except ImageLoadError as exc:
                failures += 1
                print(f"error: {exc}", file=sys.stderr)
        if not arrays:
            continue
        for path, top in zip(chunk, classifier.predict(arrays, args.topk), strict=True):
            results.append({"image": path, "top": [
                {"index": p.index, "label": p.label, "prob": round(p.prob, 6)} for p in top]})
            if not args.json:
                print(path)
                for p in top:
                    print(f"  {100 * p.prob:6.2f}%  {p.label} ({p.index})")
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    return 1 if failures else 0


def cmd_info(args: argparse.Namespace) -> int:
    from sightline.model.weights import load_model_source

    bundle = load_model_source(args.model)
    info = bundle.describe()
    info["source"] = args.model if args.model == "imagenet" else str(Path(args.model))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    pre = info["preprocess"]
    names = info["class_names"]
    shown = ", ".join(names[:10]) + (f", ... ({len(names) - 10} more)" if len(names) > 10 else "")
    print(f"model:         {info['source']}")
    print(f"architecture:  {info['arch']}  ({info['parameters']:,} parameters)")
    print(f"classes:       {info['num_classes']}: {shown}")
    print(f"preprocessing: shorter side {pre['resize']} (bilinear, antialiased), centre crop {pre['crop']}, "
          f"mean {pre['mean']}, std {pre['std']}")
    if info["provenance"]:
        print("provenance:")
        for key, value in info["provenance"].items():
            print(f"  {key + ':':14} {value}")
    return 0
