"""Accuracy, top-5, loss, per-class precision/recall/F1 and the confusion matrix.

Two callers share the tally: validation during training (the network being trained, fed by the serving
Preprocessor) and `evaluate-images` / the final report (a model.Classifier, i.e. exactly what serving runs).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from sightline.model.classifier import Classifier
from sightline.model.preprocess import Preprocessor
from sightline.training.data import Batch
from sightline.training.errors import DatasetError
from torch import nn
from tqdm import tqdm

log = logging.getLogger("sightline.training")

OTHER = "(other)"


class Tally:
    """Sums over batches, kept on the device; rows are dataset classes, columns predicted dataset classes.

    ``model_index[i]`` is the model's output index for dataset class ``i``. A prediction of a model class
    that is not in the dataset lands in an extra ``(other)`` column.
    """

    def __init__(self, class_names: Sequence[str], model_index: Sequence[int], num_outputs: int,
                 device: torch.device, topk: int = 5) -> None:
        self.class_names = list(class_names)
        c = len(class_names)
        self.model_index = torch.tensor(list(model_index), dtype=torch.long, device=device)
        column = torch.full((num_outputs,), c, dtype=torch.long)
        column[torch.tensor(list(model_index), dtype=torch.long)] = torch.arange(c)
        self.column = column.to(device)
        self.has_other = num_outputs > c
        self.width = c + (1 if self.has_other else 0)
        self.k = min(topk, num_outputs)
        self.confusion = torch.zeros((c, self.width), dtype=torch.int64, device=device)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.topk_correct = torch.zeros((), dtype=torch.int64, device=device)

    def update(self, log_probs: torch.Tensor, labels: torch.Tensor) -> None:
        """``log_probs``: N×outputs; ``labels``: dataset class indices."""
        log_probs = log_probs.to(self.confusion.device).float()
        labels = labels.to(self.confusion.device)
        target = self.model_index[labels]
        self.loss_sum -= log_probs.gather(1, target[:, None]).sum().double()
        cols = self.column[log_probs.argmax(1)]
        self.confusion += torch.bincount(labels * self.width + cols,
                                         minlength=self.confusion.numel()).view_as(self.confusion)
        self.topk_correct += (log_probs.topk(self.k, dim=1).indices == target[:, None]).any(1).sum()

    def tensors(self) -> list[torch.Tensor]:
        """What a distributed run sums across ranks."""
        return [self.confusion, self.loss_sum, self.topk_correct]

    def result(self) -> EvalResult:
        columns = self.class_names + ([OTHER] if self.has_other else [])
        return EvalResult(self.class_names, columns, self.confusion.cpu().tolist(), float(self.loss_sum),
                          int(self.topk_correct), self.k)


@dataclass
class EvalResult:
    class_names: list[str]
    columns: list[str]
    confusion: list[list[int]]
    loss_sum: float
    topk_correct: int
    k: int

    @property
    def count(self) -> int:
        return sum(sum(row) for row in self.confusion)

    @property
    def correct(self) -> int:
        return sum(self.confusion[i][i] for i in range(len(self.class_names)))

    @property
    def acc1(self) -> float:
        return self.correct / self.count if self.count else math.nan

    @property
    def acc5(self) -> float:
        return self.topk_correct / self.count if self.count else math.nan

    @property
    def loss(self) -> float:
        return self.loss_sum / self.count if self.count else math.nan

    def per_class(self) -> list[dict[str, Any]]:
        rows = []
        for i, name in enumerate(self.class_names):
            tp = self.confusion[i][i]
            support = sum(self.confusion[i])
            predicted = sum(row[i] for row in self.confusion)
            precision = tp / predicted if predicted else 0.0
            recall = tp / support if support else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            rows.append({"class": name, "precision": precision, "recall": recall, "f1": f1, "support": support})
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {"images": self.count, "acc1": self.acc1, f"acc{self.k}": self.acc5, "topk": self.k,
                "loss": self.loss, "per_class": self.per_class(),
                "confusion": {"rows": self.class_names, "columns": self.columns, "counts": self.confusion}}


def format_table(result: EvalResult) -> str:
    """The per-class table as aligned text (what the CLI prints)."""
    width = max([len("class")] + [len(n) for n in result.class_names])
    lines = [f"{'class':<{width}}  precision  recall     f1  support"]
    for r in result.per_class():
        lines.append(f"{r['class']:<{width}}  {r['precision']:9.3f}  {r['recall']:6.3f}  {r['f1']:5.3f}  "
                     f"{r['support']:7d}")
    lines.append(f"{'overall':<{width}}  top-1 {result.acc1:.4f}  top-{result.k} {result.acc5:.4f}  "
                 f"loss {result.loss:.4f}  ({result.count} images)")
    return "\n".join(lines)


def format_confusion(rows: Sequence[str], columns: Sequence[str], counts: Sequence[Sequence[int]]) -> str:
    """The confusion matrix as aligned text; every column as wide as its full class name."""
    label = max(len(r) for r in rows)
    widths = [max(len(c), len(str(max((row[j] for row in counts), default=0)))) for j, c in enumerate(columns)]
    lines = [" " * label + "  " + " ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True))]
    for name, row in zip(rows, counts, strict=True):
        lines.append(f"{name:>{label}}  " + " ".join(f"{v:>{w}d}" for v, w in zip(row, widths, strict=True)))
    return "\n".join(lines)


def evaluate_network(net: nn.Module, batches: Iterable[Batch], preprocessor: Preprocessor,
                     amp_dtype: torch.dtype | None, tally: Tally,
                     on_skip: Callable[[list[tuple[str, str]]], None]) -> Tally:
    """Validation during training: serving preprocessing and the same autocast as serving."""
    device = preprocessor.device
    net.eval()
    with torch.inference_mode():
        for batch in batches:
            on_skip(batch.skipped)
            if not len(batch):
                continue
            x = preprocessor(batch.images)
            with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32,
                                enabled=amp_dtype is not None):
                logits = net(x)
            tally.update(torch.log_softmax(logits.float(), dim=1), batch.labels)
    return tally


def evaluate_classifier(classifier: Classifier, batches: Iterable[Batch], tally: Tally,
                        on_skip: Callable[[list[tuple[str, str]]], None], progress: bool = False,
                        total: int | None = None) -> Tally:
    """Evaluation through model.Classifier: the exact preprocessing, precision and network serving uses."""
    for batch in tqdm(batches, desc="evaluate", unit="batch", total=total, disable=not progress, leave=False):
        on_skip(batch.skipped)
        if not len(batch):
            continue
        probs = classifier.probabilities(batch.images)
        tally.update(probs.clamp_min(torch.finfo(torch.float32).tiny).log(), batch.labels)
    return tally


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", " ").replace("-", " ")


def match_classes(folder_classes: Sequence[str], model_classes: Sequence[str], folder: str) -> list[int]:
    """Model output index of each dataset class folder (exact name, else case/underscore-insensitive)."""
    exact = {n: i for i, n in enumerate(model_classes)}
    loose: dict[str, int] = {}
    for i, n in enumerate(model_classes):
        loose.setdefault(_norm(n), i)
    out, missing = [], []
    for name in folder_classes:
        idx = exact.get(name, loose.get(_norm(name)))
        if idx is None:
            missing.append(name)
        else:
            out.append(idx)
    if missing:
        shown = ", ".join(list(model_classes)[:10]) + (" ..." if len(model_classes) > 10 else "")
        raise DatasetError(f"{folder}: class folder(s) not among the model's {len(model_classes)} classes: "
                           f"{', '.join(missing)} (model classes: {shown})")
    return out
