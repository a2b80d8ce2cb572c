"""Replay-evaluation metrics as pure functions of per-frame arrays (no video, no model, no files).

Conventions: class indices are *evaluation columns*: ``0..C-1`` are the classes labels.csv uses (plus the
background class), ``C`` is "(other)", any model class outside that set. Truth ``-1`` marks a frame
outside every segment that is not scored.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

IGNORED = -1


def truth_at(times: np.ndarray, starts: Sequence[float], ends: Sequence[float], labels: Sequence[int],
             background: int = IGNORED) -> np.ndarray:
    """The true class of a frame at each time: the segment with ``start <= t < end``, else ``background``.

    Segments must be sorted by start and must not overlap (labels.read_labels guarantees both).
    """
    times = np.asarray(times, dtype=np.float64)
    out = np.full(times.shape, background, dtype=np.int64)
    if len(starts) == 0:
        return out
    starts_a, ends_a = np.asarray(starts, dtype=np.float64), np.asarray(ends, dtype=np.float64)
    idx = np.searchsorted(starts_a, times, side="right") - 1
    inside = (idx >= 0) & (times < ends_a[np.clip(idx, 0, None)])
    out[inside] = np.asarray(labels, dtype=np.int64)[idx[inside]]
    return out


def to_columns(model_indices: np.ndarray, column_of_model_class: np.ndarray) -> np.ndarray:
    """Model class indices -> evaluation columns (``column_of_model_class`` maps unknown classes to C)."""
    return np.asarray(column_of_model_class)[np.asarray(model_indices, dtype=np.int64)]


def column_map(class_names: Sequence[str], eval_classes: Sequence[str]) -> np.ndarray:
    """For each model class, its evaluation column; classes outside ``eval_classes`` map to "(other)"."""
    where = {name: i for i, name in enumerate(eval_classes)}
    return np.array([where.get(name, len(eval_classes)) for name in class_names], dtype=np.int64)


def confusion_matrix(truth: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows: true class (``n_classes``); columns: predicted class plus "(other)". Ignored frames are left out."""
    truth, pred = np.asarray(truth, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    scored = truth != IGNORED
    width = n_classes + 1
    flat = truth[scored] * width + pred[scored]
    return np.bincount(flat, minlength=n_classes * width).reshape(n_classes, width)


def accuracy(truth: np.ndarray, pred: np.ndarray) -> float | None:
    """Share of scored frames predicted right; None when no frame is scored."""
    truth, pred = np.asarray(truth), np.asarray(pred)
    scored = truth != IGNORED
    if not scored.any():
        return None
    return float((truth[scored] == pred[scored]).mean())


def topk_accuracy(truth_model: np.ndarray, topk_model: np.ndarray) -> float | None:
    """Share of scored frames whose true model class is among the frame's top-k (``-1`` truth: not scored)."""
    truth_model = np.asarray(truth_model, dtype=np.int64)
    scored = truth_model != IGNORED
    if not scored.any():
        return None
    topk = np.asarray(topk_model, dtype=np.int64).reshape(len(truth_model), -1)
    return float((topk[scored] == truth_model[scored, None]).any(axis=1).mean())


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den else None


def per_class(confusion: np.ndarray) -> list[dict[str, float | int | None]]:
    """Precision, recall, F1 and support per true class of a confusion matrix (None where undefined)."""
    out: list[dict[str, float | int | None]] = []
    for c in range(confusion.shape[0]):
        tp = int(confusion[c, c])
        support = int(confusion[c].sum())
        predicted = int(confusion[:, c].sum())
        precision, recall = _ratio(tp, predicted), _ratio(tp, support)
        f1 = None
        if precision is not None and recall is not None:
            f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
        out.append({"support": support, "predicted": predicted, "precision": precision, "recall": recall, "f1": f1})
    return out


def macro_f1(scores: Sequence[dict[str, float | int | None]]) -> float | None:
    """Mean F1 over classes that occur in the truth (a class never shown cannot be recalled)."""
    values = [float(s["f1"] or 0.0) for s in scores if s["support"]]
    return float(np.mean(values)) if values else None


def label_changes(labels: Sequence[int] | np.ndarray) -> int:
    """How often consecutive frames show different labels."""
    labels = np.asarray(labels)
    return int((labels[1:] != labels[:-1]).sum()) if len(labels) > 1 else 0


def changes_per_minute(changes: int, duration_s: float) -> float | None:
    return changes * 60.0 / duration_s if duration_s > 0 else None


def time_to_correct(times: np.ndarray, pred: np.ndarray, start_s: float, end_s: float, label: int) -> float | None:
    """Seconds from a segment's start to its first frame predicted right; None if it never is (or has no frames)."""
    times, pred = np.asarray(times, dtype=np.float64), np.asarray(pred)
    hit = (times >= start_s) & (times < end_s) & (pred == label)
    if not hit.any():
        return None
    return float(times[np.argmax(hit)] - start_s)


def summarize_delays(delays: Sequence[float | None]) -> dict[str, float | int | None]:
    """Median/mean/max over segments that became correct, and how many never did."""
    reached = np.asarray([d for d in delays if d is not None], dtype=np.float64)
    if not len(reached):
        return {"median_s": None, "mean_s": None, "max_s": None, "never": len(delays), "segments": len(delays)}
    return {"median_s": float(np.median(reached)), "mean_s": float(reached.mean()), "max_s": float(reached.max()),
            "never": len(delays) - len(reached), "segments": len(delays)}


def latency_ms(latencies_s: np.ndarray) -> dict[str, float | None]:
    lat = np.asarray(latencies_s, dtype=np.float64)
    if not len(lat):
        return {"p50": None, "p99": None, "mean": None}
    p50, p99 = np.percentile(lat, [50, 99]) * 1000
    return {"p50": float(p50), "p99": float(p99), "mean": float(lat.mean() * 1000)}
