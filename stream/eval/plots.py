"""The report's pictures: confusion matrices and per-video timelines (truth vs prediction over time).

Figures are built with matplotlib's object API (``Figure`` + ``savefig``), not pyplot, so no global
backend or figure state is touched and nothing needs a display.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Patch

OTHER_COLOUR = (0.78, 0.78, 0.78, 1.0)
ANNOTATE_MAX = 20  # classes up to which each confusion cell shows its count


def class_colours(n: int) -> list[tuple[float, float, float, float]]:
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    size = 10 if n <= 10 else 20
    return [tuple(cmap(i % size)) for i in range(n)]  # type: ignore[misc]


def runs(times: np.ndarray, labels: np.ndarray, end_s: float) -> list[tuple[float, float, int]]:
    """Stretches of equal label as (start, width, label); a frame lasts until the next one (the last until end_s)."""
    times, labels = np.asarray(times, dtype=np.float64), np.asarray(labels)
    if not len(times):
        return []
    cuts = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    starts = np.concatenate([[0], cuts])
    stops = np.concatenate([cuts, [len(times)]])
    out = []
    for a, b in zip(starts, stops, strict=True):
        t0 = float(times[a])
        t1 = float(times[b]) if b < len(times) else max(end_s, t0)
        out.append((t0, t1 - t0, int(labels[a])))
    return out


def plot_confusion(path: Path, rows: Sequence[str], columns: Sequence[str],
                   matrices: dict[str, np.ndarray]) -> Path:
    """One panel per matrix (raw, smoothed), colour = share of the row, counts written in small matrices."""
    n = len(rows)
    side = min(14.0, 2.5 + 0.45 * len(columns))
    fig = Figure(figsize=(side * len(matrices), side * 0.85), layout="constrained")
    axes = fig.subplots(1, len(matrices), squeeze=False)[0]
    for ax, (title, matrix) in zip(axes, matrices.items(), strict=True):
        matrix = np.asarray(matrix)
        totals = matrix.sum(axis=1, keepdims=True)
        share = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=np.float64), where=totals > 0)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(columns)), labels=list(columns), rotation=45, ha="right")
        ax.set_yticks(range(n), labels=list(rows))
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{title} ({int(matrix.sum())} frames)")
        if n <= ANNOTATE_MAX:
            for i in range(n):
                for j in range(len(columns)):
                    if matrix[i, j]:
                        ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=8,
                                color="white" if share[i, j] > 0.6 else "black")
    fig.savefig(path, dpi=100)
    return path


def plot_timeline(path: Path, title: str, times: np.ndarray, end_s: float, rows: dict[str, np.ndarray],
                  classes: Sequence[str], other: str) -> Path:
    """Horizontal bands over time, one per row (truth, raw, smoothed), coloured by class; ``-1`` is left blank."""
    colours = [*class_colours(len(classes)), OTHER_COLOUR]
    fig = Figure(figsize=(11, 1.2 + 0.55 * len(rows)), layout="constrained")
    ax = fig.subplots()
    names = list(rows)
    seen: set[int] = set()
    for y, name in enumerate(reversed(names)):
        for t0, width, label in runs(times, rows[name], end_s):
            if label < 0:
                continue
            seen.add(label)
            ax.broken_barh([(t0, width)], (y - 0.4, 0.8), facecolors=[colours[label]])
    ax.set_yticks(range(len(names)), labels=list(reversed(names)))
    ax.set_xlim(0, max(end_s, float(times[-1]) if len(times) else 0.0, 1e-3))
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_xlabel("time (s)")
    ax.set_title(title, fontsize=10)
    labels = [*classes, other]
    handles = [Patch(facecolor=colours[i], label=labels[i]) for i in sorted(seen)]
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    fig.savefig(path, dpi=100)
    return path
