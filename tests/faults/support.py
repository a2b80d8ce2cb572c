"""Shared helpers for the fault regressions: run a pipeline on generated media, read its outputs."""

from __future__ import annotations

import asyncio
import json
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from sightline import synthetic_media as media
from sightline.model.classifier import Classifier
from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline

from tests.support.models import tiny_bundle


def run(classifier: Classifier, tmp_path: Path, streams: list[dict], duration: float | None = 60.0,
        out: Path | None = None, **extra) -> Pipeline:
    extra.setdefault("media_root", tmp_path)
    config = RunConfig(output_dir=out or tmp_path / "out", streams=[StreamConfig(**s) for s in streams], **extra)
    pipeline = Pipeline(classifier, config, Metrics())
    pipeline.last_exit_code = asyncio.run(pipeline.run(duration=duration))  # type: ignore[attr-defined]
    return pipeline


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def recorded(path: Path) -> list[np.ndarray]:
    """Every picture of a recording, RGB."""
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def counters(pictures: list[np.ndarray]) -> list[int]:
    """The frame counters painted in the bottom half (the overlay panel covers the top-left corner)."""
    return [media.read_frame_counter(p[p.shape[0] // 2:]) for p in pictures]


def write_ts_segment(path: Path, size: tuple[int, int], first: int, frames: int, fps: int = 25) -> Path:
    """An MPEG-TS whose frames carry counters ``first``.. in their bottom half; timestamps start at 0."""
    width, height = size
    with av.open(str(path), "w", format="mpegts") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "x264-params": f"keyint={fps}:scenecut=0"}
        for i in range(frames):
            image = media._gradient((width, height), first + i)
            media.draw_frame_counter(image[height // 2:], first + i)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def concatenate(dst: Path, parts: list[Path]) -> Path:
    """Byte-wise concatenation, as `cat a.ts b.ts > c.ts` (each part's timestamps restart at 0)."""
    dst.write_bytes(b"".join(p.read_bytes() for p in parts))
    return dst


class SlowClassifier(Classifier):
    """The real tiny ResNet, plus a fixed delay per batch: a model that cannot keep up with a live stream."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(tiny_bundle(), device="cpu")
        self.delay_s = delay_s

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        time.sleep(self.delay_s)
        return super().forward(batch)
