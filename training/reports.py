"""What a run leaves on disk besides the weights: metrics.csv, curves.png, confusion_matrix.png, reports.

Plots use matplotlib's object API with the Agg canvas (no pyplot global state, no display needed).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sightline.training.evaluate import EvalResult

METRIC_COLUMNS = ("epoch", "phase", "train_loss", "train_acc1", "val_loss", "val_acc1", "val_acc5", "lr",
                  "backbone_lr", "images_per_s", "micro_batch", "effective_batch", "skipped_images", "seconds")
_FORMATS = {"train_loss": ".6f", "train_acc1": ".6f", "val_loss": ".6f", "val_acc1": ".6f", "val_acc5": ".6f",
            "lr": ".6g", "backbone_lr": ".6g", "images_per_s": ".2f", "seconds": ".2f"}


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_metrics_csv(path: Path, history: Sequence[dict[str, Any]]) -> None:
    """Rewritten whole each epoch from the stored history, so a resumed run's file is complete."""
    lines = [",".join(METRIC_COLUMNS)]
    for row in history:
        lines.append(",".join(format(row[c], _FORMATS.get(c, "")) for c in METRIC_COLUMNS))
    _atomic_write_text(path, "\n".join(lines) + "\n")


def read_metrics_csv(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)


def plot_curves(path: Path, history: Sequence[dict[str, Any]], *, topk: int, classes: int) -> None:
    _save(curves_figure(history, topk=topk, classes=classes), path)


def curves_figure(history: Sequence[dict[str, Any]], *, topk: int, classes: int) -> Figure:
    """Loss, accuracy and learning rate per epoch. Top-k is drawn only when it can miss (k < classes)."""
    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(12, 3.6), layout="constrained")
    loss, acc, lr = fig.subplots(1, 3)
    loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    loss.plot(epochs, [r["val_loss"] for r in history], "o-", label="val")
    loss.set(title="loss", xlabel="epoch")
    loss.legend()
    acc.plot(epochs, [r["val_acc1"] for r in history], "o-", label="val top-1")
    if topk < classes:
        acc.plot(epochs, [r["val_acc5"] for r in history], "o-", label=f"val top-{topk}")
    acc.plot(epochs, [r["train_acc1"] for r in history], "o--", label="train top-1")
    acc.set(title="accuracy", xlabel="epoch", ylim=(0, 1.02))
    acc.legend()
    lr.plot(epochs, [r["lr"] for r in history], "o-", label="head")
    lr.plot(epochs, [r["backbone_lr"] for r in history], "o-", label="backbone")
    lr.set(title="learning rate (end of epoch)", xlabel="epoch")
    lr.legend()
    for ax in (loss, acc, lr):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    return fig


def plot_confusion(path: Path, result: EvalResult, title: str = "confusion matrix") -> None:
    rows, cols = len(result.class_names), len(result.columns)
    side = min(20.0, 2.5 + 0.45 * max(rows, cols))
    fig = Figure(figsize=(side + 1.5, side), layout="constrained")
    ax = fig.subplots()
    totals = [max(1, sum(r)) for r in result.confusion]
    normed = [[v / t for v in row] for row, t in zip(result.confusion, totals, strict=True)]
    im = ax.imshow(normed, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, label="fraction of the true class")
    if rows <= 40:
        ax.set_xticks(range(cols), result.columns, rotation=60, ha="right")
        ax.set_yticks(range(rows), result.class_names)
    if rows * cols <= 400:
        for i, row in enumerate(result.confusion):
            for j, v in enumerate(row):
                ax.text(j, i, str(v), ha="center", va="center",
                        color="white" if normed[i][j] > 0.5 else "black", fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=f"{title} (top-1 {result.acc1:.3f}, {result.count} images)")
    _save(fig, path)


def write_per_class_csv(path: Path, result: EvalResult) -> None:
    lines = ["class,precision,recall,f1,support"]
    for r in result.per_class():
        lines.append(f"{_csv_field(r['class'])},{r['precision']:.6f},{r['recall']:.6f},{r['f1']:.6f},{r['support']}")
    _atomic_write_text(path, "\n".join(lines) + "\n")


def _csv_field(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: Path, data: dict[str, Any]) -> None:
    _atomic_write_text(path, json.dumps(_json_safe(data), indent=2) + "\n")


def write_evaluation(out: Path, result: EvalResult, report: dict[str, Any], title: str) -> None:
    """report.json, per_class.csv and confusion_matrix.png in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "report.json", report)
    write_per_class_csv(out / "per_class.csv", result)
    plot_confusion(out / "confusion_matrix.png", result, title)
