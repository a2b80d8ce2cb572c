"""A stream's prediction log as tests read it, wherever the stream's kind writes it (docs/recordings.md)."""

from __future__ import annotations

import json
from pathlib import Path

from sightline.stream.storage.layout import predictions_dir, stamped_files


def prediction_files(out: Path, stream: str) -> list[Path]:
    """The rotated files of a stream that runs until stopped, oldest first; else the one ``<stream>.jsonl``."""
    rotated = stamped_files(predictions_dir(out, stream), stream, ".jsonl")
    return rotated or [out / f"{stream}.jsonl"]


def prediction_lines(out: Path, stream: str) -> list[str]:
    """Every line so far (none before the first file is written)."""
    return [line for path in prediction_files(out, stream) if path.exists() for line in path.read_text().splitlines()]


def predictions(out: Path, stream: str) -> list[dict]:
    return [json.loads(line) for line in prediction_lines(out, stream)]
