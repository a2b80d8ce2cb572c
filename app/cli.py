"""The `sightline` command. Each package registers its own subcommands; this is only the root."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from sightline import eval_cli, run_cli
from sightline.model import cli as model_cli
from sightline.model import export_cli
from sightline.model.errors import SightlineError
from sightline.model.offline import OFFLINE_ENV
from sightline.stream.urls import install_log_redaction
from sightline.training import cli as training_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sightline",
        description="Streaming video recognition: batched ResNet18 over RTSP, WebRTC and file video.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--offline", action="store_true", help=OFFLINE_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (model_cli, export_cli, training_cli, run_cli, eval_cli):
        module.register(sub)
    for command in sub.choices.values():  # `sightline --offline train` and `sightline train --offline` alike
        command.add_argument("--offline", action="store_true", default=argparse.SUPPRESS, help=OFFLINE_HELP)
    return parser


OFFLINE_HELP = (f"never download model weights (also: {OFFLINE_ENV}=1); a missing ImageNet ResNet18 is then "
                "a one-line error naming what to do instead")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction()  # no URL secret reaches a log line, tracebacks included
    if args.offline:
        os.environ[OFFLINE_ENV] = "1"  # every loader consults it (model.weights.offline), the service included
    try:
        return int(args.func(args) or 0)
    except SightlineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
