"""Temporal smoothing and the overlay."""

from __future__ import annotations

import numpy as np
import pytest
from sightline.model.classifier import Prediction
from sightline.stream.frames import Smoothed
from sightline.stream.outputs.overlay import draw_overlay, encode_jpeg
from sightline.stream.outputs.smoothing import Smoother

NAMES = ["cat", "dog", "car"]


def test_ema_averages_and_hysteresis_keeps_the_shown_label() -> None:
    s = Smoother(NAMES, ema=0.5, hysteresis=0.25)
    assert s.update(np.array([0.6, 0.4, 0.0])).label == "cat"
    # smoothed: cat 0.45, dog 0.55 < 1.25 x 0.45 = 0.5625: dog does not lead by the relative margin, cat stays
    out = s.update(np.array([0.3, 0.7, 0.0]))
    assert out.label == "cat"
    assert out.prob == pytest.approx(0.45)
    out = s.update(np.array([0.1, 0.9, 0.0]))  # cat 0.275, dog 0.725: far more than 1.25 x cat
    assert out.label == "dog"


def test_the_hysteresis_margin_is_relative_so_a_low_confidence_model_changes_label() -> None:
    # A 1000-class model that is never sure: the scene's class scores 0.02, a stale one 0.015. An
    # absolute margin of 0.05 would keep the stale label for ever; 0.02 is 1.33 x 0.015, past 1.1.
    names = [f"class {i}" for i in range(1000)]
    s = Smoother(names)
    assert (s.ema, s.hysteresis) == (0.6, 0.1)  # the serving defaults (config.SmoothingConfig)
    first = np.full(1000, 0.98 / 998)
    first[[0, 1]] = 0.015, 0.005
    later = first.copy()
    later[[0, 1]] = 0.015, 0.02
    assert s.update(first).index == 0
    shown = [s.update(later).index for _ in range(30)]
    assert shown[-1] == 1
    assert shown.index(1) <= 10  # switched once the EMA settled (0.6^n of the old frame left)
    # and a near tie within the margin keeps the shown label: 0.021 is less than 1.1 x 0.02
    tie = later.copy()
    tie[0] = 0.021
    assert all(s.update(tie).index == 1 for _ in range(30))


def test_config_default_is_the_smoothers() -> None:
    from sightline.stream.config import SmoothingConfig

    assert SmoothingConfig().hysteresis == Smoother(NAMES).hysteresis


def test_smoothing_removes_flicker_between_near_tied_classes() -> None:
    rng = np.random.default_rng(0)
    raw_labels, smooth_labels = [], []
    s = Smoother(NAMES)  # the defaults: EMA 0.6, relative margin 0.1
    for _ in range(200):
        p = np.array([0.45, 0.40, 0.15]) + rng.normal(0, 0.08, 3)
        p = np.clip(p, 0.01, None)
        p /= p.sum()
        raw_labels.append(int(p.argmax()))
        smooth_labels.append(s.update(p).index)
    changes = lambda xs: sum(a != b for a, b in zip(xs, xs[1:], strict=False))  # noqa: E731
    assert changes(raw_labels) > 20
    assert changes(smooth_labels) <= changes(raw_labels) // 5


def test_ema_zero_is_the_raw_prediction() -> None:
    s = Smoother(NAMES, ema=0.0, hysteresis=0.0)
    s.update(np.array([0.9, 0.1, 0.0]))
    assert s.update(np.array([0.2, 0.8, 0.0])).label == "dog"


@pytest.mark.parametrize("height", [360, 720, 2160])
def test_overlay_text_scales_with_the_frame(height: int) -> None:
    width = height * 16 // 9
    frame = np.full((height, width, 3), 200, np.uint8)
    top = [Prediction(0, "tabby cat", 0.81), Prediction(1, "tiger cat", 0.12)]
    out = draw_overlay(frame, "lobby", top, Smoothed("tabby cat", 0.8, 0), fps=29.7, latency_ms=41.0)
    assert out.shape == frame.shape and (frame == 200).all()  # the input is not modified
    changed_rows = np.flatnonzero((out != 200).any(axis=(1, 2)))
    panel_height = changed_rows.max() + 1
    # four text lines; the panel is a similar share of the frame at every resolution
    assert 0.12 * height <= panel_height <= 0.35 * height
    assert encode_jpeg(out)[:2] == b"\xff\xd8"


def text_rows(height: int) -> int:
    """How many lines of a ``height``-line frame one overlay text line ("Ag": cap and descender) covers."""
    out = draw_overlay(np.zeros((height, height * 16 // 9, 3), np.uint8), "Ag", [], None, None, None)
    rows = np.flatnonzero((out > 180).all(axis=2).any(axis=1))
    return int(rows.max() - rows.min() + 1)


def test_overlay_text_is_legible_from_360p_to_1080p() -> None:
    # A 360p preview is shown in a ~320 px page card, at about half size: its text must be a good
    # share of the frame (~4%: 14 lines at 360p), and keep that share as the frame grows.
    sizes = {height: text_rows(height) for height in (360, 480, 720, 1080)}
    for height, rows in sizes.items():
        assert rows >= 0.037 * height, sizes
    assert 2.6 <= sizes[1080] / sizes[360] <= 3.4, sizes  # grows with the frame, in proportion
