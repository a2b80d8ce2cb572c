"""Checks that a picture is Sightline's annotated video: a flat grey clip, and its overlay panel found again."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

GREY = 128


def grey_clip(path: Path, seconds: float = 2.0, fps: int = 25, size: tuple[int, int] = (320, 240)) -> Path:
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
        video.options = {"g": str(fps)}
        for i in range(round(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(np.full((size[1], size[0], 3), GREY, np.uint8), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    return path


def panel_box(snapshot: np.ndarray, size: tuple[int, int]) -> tuple[int, int]:
    """Where the label panel ends (x, y) in a frame of ``size`` (w, h): the snapshot's dark region, scaled."""
    dark = snapshot.mean(axis=2) < GREY - 30
    ys, xs = np.nonzero(dark)
    sx, sy = size[0] / snapshot.shape[1], size[1] / snapshot.shape[0]
    return int(xs.max() * sx), int(ys.max() * sy)


def assert_overlay(frame: np.ndarray, snapshot: np.ndarray) -> None:
    h, w = frame.shape[:2]
    x1, y1 = panel_box(snapshot, (w, h))
    assert x1 > w // 8 and y1 > h // 8, (x1, y1)  # a panel of some size
    panel = frame[: y1 - 2, : x1 - 2]
    assert np.median(panel) < GREY - 40, np.median(panel)  # darkened where the overlay is
    assert (panel > 200).mean() > 0.01  # with white text in it
    rest = frame[y1 + 4:, x1 + 4:]
    assert abs(float(np.median(rest)) - GREY) < 12  # and the grey picture elsewhere
    ref = cv2.resize(snapshot, (w, h), interpolation=cv2.INTER_AREA)
    assert float(np.abs(frame.astype(int) - ref.astype(int)).mean()) < 12  # the same picture as the snapshot
