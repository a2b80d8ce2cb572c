"""`sightline train` and `sightline evaluate-images` (also `python -m sightline.training`, same arguments as train).

The heavy imports (matplotlib, the trainer) happen inside the commands, so registering them does not slow
down every other `sightline` command.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from sightline.model.cli import add_backend_argument
from sightline.model.errors import ConfigError, SightlineError

log = logging.getLogger("sightline.training")

# flag dest -> config key (flags override the file; on --resume they override the stored config)
FLAG_KEYS = ("data", "out", "epochs", "mode", "init", "batch_size", "accumulate", "lr", "optimizer", "amp",
             "precision", "device", "seed", "deterministic", "num_workers", "val_split", "resize", "crop",
             "class_weighting", "progress")


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="fine-tune ResNet18 on an ImageFolder dataset into a servable bundle",
                       description="Fine-tune on ROOT/train/<class>/* (and ROOT/val/<class>/*); writes bundle.pt, "
                                   "last.pt, metrics.csv, curves.png, confusion_matrix.png and report.json.")
    add_train_arguments(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate-images", help="accuracy, per-class table and confusion matrix on an image folder",
                       description="Evaluate any model on DATASET_DIR/<class>/* exactly as serving runs it. Class "
                                   "folders are matched to the model's class names.")
    e.add_argument("model", metavar="MODEL", help="'imagenet', a Sightline bundle, or a .pth state dict")
    e.add_argument("dataset", metavar="DATASET_DIR", help="folder of class folders (e.g. ROOT/val)")
    e.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    e.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16", "int8"],
                   help="auto: fp16 autocast on CUDA; on a CPU bf16 where native, else fp32; per backend")
    add_backend_argument(e)
    e.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    e.add_argument("--num-workers", type=int, default=None,
                   help="image decoding processes (default: one per usable core, at most 4)")
    e.add_argument("--out", help="also write report.json, per_class.csv and confusion_matrix.png here")
    e.add_argument("--json", action="store_true", help="print the report as JSON")
    e.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    e.set_defaults(func=cmd_evaluate)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="ROOT", help="dataset root with train/<class>/ (and val/<class>/)")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory for the outputs")
    p.add_argument("--config", metavar="YAML", help="training config (see configs/train.yaml); flags override it")
    p.add_argument("--epochs", type=int, help="epochs to train (default 10); on --resume, the new total")
    p.add_argument("--mode", choices=["head", "full", "head-then-full"],
                   help="head: train fc on a frozen backbone; full: all layers; head-then-full (default; full "
                        "from scratch): head_epochs of head, then all layers with a lower backbone lr")
    p.add_argument("--init", metavar="imagenet|scratch|PATH",
                   help="starting weights: imagenet (default; downloaded once, refused offline), scratch "
                        "(picks a from-scratch recipe for the settings not given), or a local bundle / .pth "
                        "to fine-tune (a new fc when its classes differ)")
    p.add_argument("--batch-size", type=int,
                   help="images per loader batch, the micro-batch (default 32; 16 from scratch)")
    p.add_argument("--accumulate", type=int, help="loader batches per optimizer step (effective batch = product)")
    p.add_argument("--lr", type=float, help="peak learning rate of the head, and of the backbone in mode full "
                                            "(default 0.001; 0.003 with AdamW from scratch)")
    p.add_argument("--optimizer", choices=["sgd", "adamw"],
                   help="sgd with momentum (default) or adamw (default from scratch)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision (fp16 + GradScaler on CUDA; on the CPU with --precision bf16)")
    p.add_argument("--precision", choices=["auto", "fp16", "bf16"], help="autocast dtype when --amp")
    p.add_argument("--device", help="auto (default: CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, help="seed of every random stream: same seed and data, same run (default 0)")
    p.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=None,
                   help="deterministic algorithms (slower on CUDA)")
    p.add_argument("--num-workers", type=int,
                   help="DataLoader worker processes (default: one per usable core, at most 4; 0: none)")
    p.add_argument("--val-split", type=float, help="fraction of train/ held out when there is no val/ (default 0.2)")
    p.add_argument("--resize", type=int, help="serving resize (shorter side); default from the initial model "
                                              "(256 for ImageNet, 64 from scratch)")
    p.add_argument("--crop", type=int, help="serving centre crop and training crop size (default: the initial "
                                            "model's, or resize * 224/256 with --resize alone; 56 from scratch)")
    p.add_argument("--class-weighting", choices=["none", "balanced"],
                   help="none (default) or balanced: loss weighted by inverse class frequency")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="tqdm progress bars (default on)")
    p.add_argument("--resume", metavar="RUN_DIR/last.pt",
                   help="continue a run exactly where it stopped (after Ctrl-C the command prints this line); "
                        "its stored settings stay, flags given now override them")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in FLAG_KEYS}


def cmd_train(args: argparse.Namespace) -> int:
    from sightline.training.config import load_config
    from sightline.training.distributed import DistContext
    from sightline.training.trainer import Trainer

    dist = DistContext.from_env(os.environ)
    if args.resume:
        if args.config:
            raise ConfigError("--config cannot be combined with --resume: the run's config is stored in last.pt; "
                              "override single values with flags (e.g. --epochs)")
        trainer = Trainer.resume(args.resume, _overrides(args), dist)
    else:
        trainer = Trainer(load_config(args.config, _overrides(args)), dist)
    try:
        result = trainer.run()
    except KeyboardInterrupt:  # Ctrl-C: say how to continue; the command then exits with 130
        if dist.is_main:
            print(f"\n{trainer.interrupted_message()}", file=sys.stderr, flush=True)
        raise
    if dist.is_main:
        bundle = result.out / "bundle.pt"
        print(f"best val top-1 {result.best_acc1:.4f} at epoch {result.best_epoch} of {result.epochs_run}"
              f"{' (stopped early)' if result.stopped_early else ''}")
        print(f"bundle: {bundle}\nreport: {result.out / 'report.json'}")
        print(f"serve it: sightline predict --model {bundle} IMAGE")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from sightline.model.backends.serving import open_classifier
    from sightline.training.config import default_workers
    from sightline.training.data import EvalImages, SkipLog, collate_eval, read_image_folder
    from sightline.training.evaluate import (
        Tally,
        evaluate_classifier,
        format_confusion,
        format_table,
        match_classes,
    )
    from sightline.training.reports import write_evaluation
    from torch.utils.data import DataLoader

    if args.num_workers is None:
        args.num_workers = default_workers()
    if args.batch_size < 1 or args.num_workers < 0:
        raise ConfigError("--batch-size must be at least 1 and --num-workers at least 0")
    dataset = Path(args.dataset)
    if dataset.is_dir() and {p.name for p in dataset.iterdir() if p.is_dir()} >= {"train", "val"}:
        raise ConfigError(f"{dataset} looks like a training root (train/ and val/); pass {dataset / 'val'}")
    folder = read_image_folder(dataset)
    classifier = open_classifier(args.model, device=args.device, precision=args.precision, backend=args.backend)
    mapping = match_classes(folder.class_names, classifier.class_names, str(dataset))
    loader = DataLoader(EvalImages(folder.samples), batch_size=args.batch_size, num_workers=args.num_workers,
                        collate_fn=collate_eval)
    skips = SkipLog(log.warning)
    tally = Tally(folder.class_names, mapping, classifier.bundle.num_classes, classifier.device)
    result = evaluate_classifier(classifier, loader, tally, skips.record, progress=args.progress,
                                 total=len(loader)).result()
    report = {"model": args.model, "dataset": str(dataset), "device": str(classifier.device),
              "precision": classifier.precision, "backend": classifier.describe().get("backend", "torch"),
              "skipped_images": {"count": skips.count, "files": dict(skips.files)}, **result.to_dict()}
    if args.out:
        write_evaluation(Path(args.out), result, report, title=f"{Path(args.model).name} on {dataset.name}")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"model {args.model} on {dataset} ({classifier.device}, {classifier.precision})")
        print(format_table(result))
        if len(result.class_names) <= 20:
            print("confusion matrix (rows true, columns predicted):")
            print(format_confusion(result.class_names, result.columns, result.confusion))
        if skips.count:
            print(f"{skips.count} unreadable image(s) skipped")
    return 0


def train_main(argv: list[str] | None = None) -> int:
    """`python -m sightline.training`: the train command on its own (what torchrun launches)."""
    parser = argparse.ArgumentParser(prog="python -m sightline.training",
                                     description="Fine-tune ResNet18 on an ImageFolder dataset (= sightline train).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return cmd_train(args)
    except SightlineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
