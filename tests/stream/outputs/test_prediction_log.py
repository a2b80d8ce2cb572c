"""The prediction log (issue 25): levels (all / changes / off, true and false as before) and where a stream's
kind writes it: one ``<stream>.jsonl`` per run of a file, rotated files under ``predictions/<stream>/`` for a
stream that runs until stopped."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from sightline import synthetic_media as media
from sightline.model.classifier import Prediction
from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.frames import Frame, Result, Smoothed
from sightline.stream.metrics import Metrics
from sightline.stream.outputs.prediction_log import JsonlSink
from sightline.stream.outputs.sinks import Labelled
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.storage.layout import parse_stamped, predictions_dir
from sightline.stream.storage.line_log import LineLog

from tests.support.models import tiny_classifier
from tests.support.predictions import prediction_files, predictions

pytestmark = pytest.mark.timeout(120)


def item(seq: int, shown: str | None) -> Labelled:
    """A frame classified with ``shown`` as its smoothed label; None: a frame that was not classified."""
    frame = Frame("cam", seq, seq, None, 0.0, 0.0, np.zeros((4, 4, 3), np.uint8))
    top = (Prediction(0, shown or "cat", 0.9),)
    result = Result(frame, None if shown is None else np.array([0.9, 0.1]), top, None)
    return Labelled(result, top, None if shown is None else Smoothed(shown, 0.9, 0), 25.0, None)


def test_the_changes_level_writes_the_first_line_and_each_change_of_the_shown_label(tmp_path: Path) -> None:
    path = tmp_path / "cam.jsonl"
    sink = JsonlSink(LineLog("predictions", lambda _: path), "cam", "changes")
    for seq, shown in enumerate(["cat", "cat", None, "dog", "dog", "dog", "cat", "cat"]):
        sink.write(item(seq, shown))
    sink.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["seq"], r["smoothed"]["label"]) for r in records] == [(0, "cat"), (3, "dog"), (6, "cat")]


def run(tmp_path: Path, streams: list[dict], duration: float | None = 30.0, **extra) -> Pipeline:
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path,
                       streams=[StreamConfig(**s) for s in streams], **extra)
    pipeline = Pipeline(tiny_classifier(), config, Metrics())
    asyncio.run(pipeline.run(duration=duration))
    return pipeline


@pytest.mark.parametrize("level", [True, "all", "changes", False, "off"])
def test_log_predictions_levels_on_a_file_replay(tmp_path: Path, level: bool | str) -> None:
    clip = media.make_test_clip(tmp_path / "c.mp4", frames=12, fps=25, size=(96, 64))
    p = run(tmp_path, [{"name": "c", "url": str(clip), "mode": "fast"}], log_predictions=level)
    stats, out = p.get("c").stats, tmp_path / "out"
    assert stats.frames_inferred == 12
    if level in (False, "off"):  # no log, and no sink: no jsonl counters at 0 either
        assert not list(out.rglob("*.jsonl")) and "jsonl" not in stats.sinks and stats.record_sinks == ()
        return
    assert "jsonl" in stats.sinks and stats.record_sinks == ("jsonl",)
    records = predictions(out, "c")
    assert prediction_files(out, "c") == [out / "c.jsonl"]  # a file without loop: the plain name, as before
    labels = [r["smoothed"]["label"] for r in records]
    if level == "changes":
        assert len(records) >= 1 and all(a != b for a, b in zip(labels, labels[1:], strict=False))
    else:
        assert [r["seq"] for r in records] == list(range(12))


def test_a_looping_stream_writes_rotated_files_named_by_stream_and_start(tmp_path: Path) -> None:
    clip = media.make_test_clip(tmp_path / "c.mp4", frames=10, fps=25, size=(96, 64))
    p = run(tmp_path, [{"name": "c", "url": str(clip), "mode": "fast", "loop": True}], duration=2.0,
            storage={"rotate": {"max_mb": 0.002}})  # 2 KB: a file a flush (a second of lines is more)
    out = tmp_path / "out"
    files = prediction_files(out, "c")
    assert not (out / "c.jsonl").exists() and all(f.parent == predictions_dir(out, "c") for f in files)
    assert len(files) >= 2
    stamps = [parse_stamped(f.name) for f in files]
    assert all(s is not None and s[0] == "c" for s in stamps)
    seqs = [r["seq"] for r in predictions(out, "c")]  # whole across files: every line, once, in order
    assert seqs == list(range(len(seqs))) and len(seqs) == p.get("c").stats.frames_inferred
    assert not any(p.storage.is_open(f) for f in files)  # closed at shutdown: retention may take them
