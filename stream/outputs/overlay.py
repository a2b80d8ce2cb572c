"""Draw labels on a frame with OpenCV, scaled so text stays legible from 360p to 4K."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from sightline.model.classifier import Prediction
from sightline.stream.frames import Smoothed

FONT = cv2.FONT_HERSHEY_SIMPLEX
WHITE = (255, 255, 255)
GREEN = (90, 230, 120)
PANEL = (16, 16, 16)


def text_size(height: int) -> tuple[float, int]:
    """OpenCV font scale and stroke for a frame ``height`` lines tall.

    The text is a fixed share of the frame (a capital ~3.5% of the height: ~13 px at 360p, ~38 px at
    1080p) so a preview shown in a page card, scaled down, still reads; from 360p up the strokes are
    at least 2 px, since 1 px anti-aliased strokes on the dimmed panel blur away once the JPEG or the
    browser scales them. Below 360p (working-size frames) the text keeps a floor instead.
    """
    scale = max(0.45, height / 640)
    thick = 1 if height < 360 else max(2, round(scale * 2))
    return scale, thick


def draw_overlay(image: np.ndarray, stream: str, top: Sequence[Prediction], smoothed: Smoothed | None,
                 fps: float | None, latency_ms: float | None) -> np.ndarray:
    """Return a copy of ``image`` (H×W×3 RGB uint8) with a label panel in the top-left corner."""
    out = np.ascontiguousarray(image).copy()
    h = out.shape[0]
    scale, thick = text_size(h)
    line_h = round(36 * scale)
    pad = round(10 * scale)

    header = stream
    if fps is not None:
        header += f"  {fps:.1f} fps"
    if latency_ms is not None:
        header += f"  {latency_ms:.0f} ms"
    lines: list[tuple[str, tuple[int, int, int]]] = [(header, WHITE)]
    if smoothed is not None:
        lines.append((f"{smoothed.label}  {100 * smoothed.prob:.0f}%", GREEN))
    lines.extend((f"{100 * p.prob:5.1f}%  {p.label}", WHITE) for p in top)

    widths = [cv2.getTextSize(text, FONT, scale, thick)[0][0] for text, _ in lines]
    panel_w = min(out.shape[1], max(widths) + 2 * pad)
    panel_h = min(h, line_h * len(lines) + 2 * pad)
    region = out[:panel_h, :panel_w]
    region[:] = (region.astype(np.uint16) * 2 // 5 + np.array(PANEL, np.uint16) * 3 // 5).astype(np.uint8)
    for i, (text, color) in enumerate(lines):
        y = pad + line_h * (i + 1) - int(line_h * 0.25)
        cv2.putText(out, text, (pad, y), FONT, scale, color, thick, cv2.LINE_AA)
    return out


def encode_jpeg(image: np.ndarray, quality: int = 80) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()
