"""`sightline export`: build a backend's compiled form of a bundle ahead of time and prove its accuracy.

Everything heavy (torch, OpenVINO, ONNX Runtime, TensorRT) is imported inside the command."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sightline.model.cli import parse_number

BACKEND_CHOICES = ["auto", "openvino", "onnxruntime", "tensorrt"]
PRECISION_CHOICES = ["auto", "fp32", "fp16", "bf16", "int8"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="compile a bundle for a backend (OpenVINO, ONNX Runtime, TensorRT) and check its accuracy",
        description="Build the backend's compiled form of MODEL next to it (MODEL.compiled/, keyed by the bundle's "
                    "hash, backend version and precision), measure top-1 agreement and accuracy against the torch "
                    "fp32 reference on held-out images, and refuse when agreement is below the threshold.")
    p.add_argument("model", metavar="MODEL", help="'imagenet', a Sightline bundle or a torchvision .pth")
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES,
                   help="auto: the fastest installed for the device")
    p.add_argument("--precision", default="auto", choices=PRECISION_CHOICES,
                   help="auto: bf16 on CPUs with native bf16 (OpenVINO), fp16 for TensorRT, else fp32")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--calibrate", metavar="DIR_OR_VIDEO",
                   help="int8 calibration images: an image folder or a video (default: the bundle's own train/)")
    p.add_argument("--holdout", metavar="DIR_OR_VIDEO",
                   help="held-out images for the agreement check; class subfolders named like the bundle's classes "
                        "also give accuracy (default: the bundle's own val/, else the part of --calibrate not "
                        "calibrated on)")
    p.add_argument("--threshold", type=percent, default=None, metavar="PERCENT",
                   help="least top-1 agreement in %% (default 99 for fp32/fp16/bf16, 98 for int8)")
    p.add_argument("--force", action="store_true", help="keep the artefact even below the threshold")
    p.add_argument("--rebuild", action="store_true", help="build again even when a cached artefact exists")
    p.add_argument("--json", action="store_true", help="print the stored build record as JSON")
    p.set_defaults(func=cmd_export)


def percent(text: str) -> float:
    value = parse_number(text, float, "a percentage")
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be within 0-100, got {text}")
    return value / 100


def cmd_export(args: argparse.Namespace) -> int:
    from sightline.model.backends import registry
    from sightline.model.backends.build import BuildOptions, compiled_backend
    from sightline.model.backends.serving import bundle_path
    from sightline.model.device import resolve_device
    from sightline.model.weights import load_model_source

    device = resolve_device(args.device)
    choice = registry.choose(args.backend, args.precision, device)
    if choice.backend == "torch":
        from sightline.model.backends.base import BackendError

        raise BackendError("no compiled backend is installed (pip install -e '.[openvino]'); torch needs no export")
    bundle = load_model_source(args.model)
    options = BuildOptions(calibrate=args.calibrate, holdout=args.holdout, force=args.force,
                           threshold=args.threshold, rebuild=args.rebuild, require_check=True)
    built = compiled_backend(bundle, bundle_path(args.model), choice.backend, choice.precision, device, options)
    if args.json:
        print(json.dumps({**built.meta, "artefact": str(built.folder), "cached": built.cached}, indent=2))
        return 0
    meta = built.meta
    print(f"{choice.reason}")
    print(f"artefact:    {built.folder}{' (cached)' if built.cached else ''}")
    print(f"backend:     {meta['backend']} {meta['backend_version']} {meta['precision']} on {meta['machine']}")
    if meta.get("calibration"):
        print(f"calibration: {meta['calibration']['images']} images from {meta['calibration']['source']}")
    for note in built.notes:
        print(f"note:        {note}")
    agreement = meta.get("agreement")
    if agreement is None:
        print("agreement:   NOT measured (no held-out images; kept because of --force)")
        return 0
    ref, own = agreement["reference_acc1"], agreement["backend_acc1"]
    print(f"held-out:    {agreement['images']} images from {meta['holdout']['source']}")
    print(f"agreement:   top-1 {100 * agreement['top1_agreement']:.2f}% with torch fp32 "
          f"(threshold {100 * agreement['threshold']:.1f}%: {'passed' if agreement['passed'] else 'FAILED'}"
          f"{', kept with --force' if meta['forced'] else ''})")
    if ref is not None:
        print(f"accuracy:    torch fp32 {100 * ref:.2f}%, {meta['backend']} {meta['precision']} {100 * own:.2f}%")
    print(f"max |p diff|: {agreement['max_prob_diff']:.4f}")
    print(f"stored:      {Path(built.folder) / 'agreement.json'}")
    return 0
