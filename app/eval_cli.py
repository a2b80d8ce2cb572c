"""`sightline eval`: replay recorded video through the serving pipeline and score it against labels.csv."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

from sightline.model.cli import add_model_arguments, positive_int

log = logging.getLogger("sightline.eval")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="score a model on recorded video against ground-truth label segments",
        description="Replay videos through the same pipeline as live serving (decode, batching, preprocessing, "
                    "smoothing) and score every classified frame against labels.csv. Writes report.json, "
                    "report.md, predictions.jsonl, confusion.png and one timeline PNG per video.")
    p.add_argument("--labels", type=Path, required=True, metavar="CSV",
                   help="video,start_s,end_s,label rows; videos are found relative to this file")
    add_model_arguments(p)
    p.add_argument("--video", type=Path, action="append", default=[], metavar="PATH",
                   help="evaluate this file (repeatable), matched to labels.csv by name; default: every video "
                        "labels.csv names")
    p.add_argument("--realtime", action="store_true",
                   help="replay at native speed as a live camera would (frames the model cannot keep up with "
                        "are dropped and counted); default: lossless, as fast as the model goes")
    p.add_argument("--out", type=Path, default=Path("runs/eval"), metavar="DIR", help="default runs/eval")
    p.add_argument("--compare", metavar="MODEL_B", help="also evaluate this model and write a side-by-side table")
    p.add_argument("--background", metavar="CLASS",
                   help="score frames outside every segment as this class (default: leave them out)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="most frames per forward pass (default: 32 on a GPU, 8 on a CPU, as serving)")
    p.add_argument("--smoothing-ema", type=fraction(upper_open=True), default=0.6, metavar="W",
                   help="weight of the past in the probability EMA, 0 = none (default 0.6, as serving)")
    p.add_argument("--hysteresis", type=fraction(upper_open=False), default=0.1, metavar="R",
                   help="relative margin a new label needs to replace the shown one: it must score "
                        "(1 + R) x the shown label's smoothed probability (default 0.1, as serving)")
    p.add_argument("--parallel", type=positive_int, default=4, metavar="N", help="videos replayed at once (default 4)")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="spread the videos over a Ray cluster's workers (auto: this machine's cluster; "
                        "docs/cluster.md); the report is the same as from one process")
    p.set_defaults(func=cmd_eval)


def fraction(upper_open: bool) -> Callable[[str], float]:
    """An argparse type for a number in [0, 1) or [0, 1]."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (0 <= value < 1 if upper_open else 0 <= value <= 1):
            raise argparse.ArgumentTypeError(f"must be within [0, 1{')' if upper_open else ']'}, got {text}")
        return value

    return parse


def cmd_eval(args: argparse.Namespace) -> int:
    from sightline.model.yamlconfig import validate
    from sightline.stream.config import BatchingConfig, SmoothingConfig
    from sightline.stream.eval.evaluate import EvalOptions, evaluate
    from sightline.stream.eval.report import summary_rows, table

    opts = EvalOptions(
        labels=args.labels,
        models=[args.model, *([args.compare] if args.compare else [])],
        out=args.out,
        videos=list(args.video),
        realtime=args.realtime,
        background=args.background,
        device=args.device,
        precision=args.precision,
        backend=args.backend,
        batching=validate({"max_batch": args.batch_size or "auto"}, BatchingConfig, "--batch-size"),
        smoothing=validate({"ema": args.smoothing_ema, "hysteresis": args.hysteresis}, SmoothingConfig,
                           "smoothing options"),
        parallel=args.parallel,
        ray=args.ray,
    )
    outcome = evaluate(opts)
    if outcome.comparison is not None:
        print(outcome.comparison)
        print(f"\nwritten: {opts.out / 'compare.md'}, " + ", ".join(str(d / "report.md") for d in outcome.out_dirs))
    else:
        report = outcome.reports[0]
        print(table(["metric", "raw", "smoothed"], summary_rows(report)))
        f = report["frames"]
        print(f"\n{f['classified']} frames classified, {f['scored']} scored, {f['dropped']} dropped; "
              f"{report['throughput_fps']} frames/s; written: {opts.out / 'report.md'}")
    if outcome.failed_videos:
        log.error("%d video(s) could not be replayed to the end; see the report's warnings", outcome.failed_videos)
        return 1
    return 0
