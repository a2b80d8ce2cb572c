"""The prediction log: a JSON line per classified frame, or per change of the shown label (docs/recordings.md)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Literal

from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.outputs.files import fresh_output
from sightline.stream.outputs.sinks import Labelled
from sightline.stream.storage.layout import free_stamped_path, predictions_dir
from sightline.stream.storage.line_log import LineLog
from sightline.stream.storage.stats import StorageStats


class JsonlSink:
    """Writes the stream's predictions to a LineLog: whole lines or nothing, rotated or not (line_log.py).

    ``all``: a line per classified frame. ``changes``: a line when the shown (smoothed) label changes, and the
    first one, for an operator who wants the story of a camera rather than every frame of it.
    """

    name = "jsonl"

    def __init__(self, lines: LineLog, stream: str, level: Literal["all", "changes"] = "all") -> None:
        self.lines = lines
        self.stream = stream
        self.level = level
        self._shown: str | None = None  # the smoothed label of the last line (``changes``)

    @classmethod
    def open(cls, config: RunConfig, stream: StreamConfig, storage: StorageStats,
             on_lost: Callable[[int], None] | None = None) -> JsonlSink:
        """A stream that runs until stopped writes rotated ``predictions/<stream>/<stream>.<start>.jsonl``; a file
        without loop writes one ``<stream>.jsonl`` per run (an earlier one is moved aside). OSError: the folder
        cannot be made."""
        name, out = stream.name, config.output_dir
        if stream.runs_until_stopped:
            folder = predictions_dir(out, name)
            folder.mkdir(parents=True, exist_ok=True)
            rotate = config.storage.rotate
            lines = LineLog("predictions", lambda wall: free_stamped_path(folder, name, wall, ".jsonl"),
                            rotate.max_bytes, rotate.max_s, storage=storage, on_lost=on_lost)
        else:
            path = fresh_output(out / f"{name}.jsonl")
            lines = LineLog("predictions", lambda _wall: path, storage=storage, on_lost=on_lost)
        level = config.prediction_level
        return cls(lines, name, "changes" if level == "changes" else "all")

    def write(self, item: Labelled) -> None:
        result = item.result
        shown = None if item.smoothed is None else item.smoothed.label
        if result.probs is None or (self.level == "changes" and shown == self._shown):
            self.lines.tick()
            return
        self._shown = shown
        frame = result.frame
        record = {
            "stream": self.stream,
            "seq": frame.seq,
            "pts": frame.pts,
            "time": None if frame.time_s is None else round(frame.time_s, 4),
            "top": [{"label": p.label, "prob": round(p.prob, 5)} for p in result.top],
            "smoothed": None if item.smoothed is None else {"label": item.smoothed.label,
                                                             "prob": round(item.smoothed.prob, 5)},
            "latency_ms": None if result.timings is None else round(result.timings.latency_s * 1000, 2),
            "model": None if result.model is None else result.model.id,
        }
        self.lines.append((json.dumps(record) + "\n").encode("utf-8"))

    def close(self) -> None:
        self.lines.close()
