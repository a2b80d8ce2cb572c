"""How far a compiled backend is from the torch fp32 reference, on held-out images."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

THRESHOLDS = {"fp32": 0.99, "fp16": 0.99, "bf16": 0.99, "int8": 0.98}


@dataclass(frozen=True)
class Agreement:
    images: int
    top1_agreement: float
    max_prob_diff: float
    reference_acc1: float | None  # None when the held-out images carry no labels
    backend_acc1: float | None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def describe(self) -> str:
        text = f"top-1 agreement {100 * self.top1_agreement:.2f}% on {self.images} held-out images"
        if self.reference_acc1 is not None and self.backend_acc1 is not None:
            text += (f"; accuracy torch fp32 {100 * self.reference_acc1:.2f}%, "
                     f"this backend {100 * self.backend_acc1:.2f}%")
        return text + f"; largest probability difference {self.max_prob_diff:.4f}"


def compare(reference: torch.Tensor, candidate: torch.Tensor, labels: Sequence[int | None]) -> Agreement:
    """Probabilities (N×C) of the reference and the candidate on the same images."""
    if reference.shape != candidate.shape or reference.shape[0] == 0:
        raise ValueError(f"cannot compare probabilities of shapes {tuple(reference.shape)} and "
                         f"{tuple(candidate.shape)}")
    ref_top, cand_top = reference.argmax(1), candidate.argmax(1)
    agree = float((ref_top == cand_top).float().mean())
    diff = float((reference - candidate).abs().max())
    ref_acc = cand_acc = None
    if labels and all(label is not None for label in labels):
        truth = torch.tensor(list(labels))
        ref_acc = float((ref_top == truth).float().mean())
        cand_acc = float((cand_top == truth).float().mean())
    return Agreement(int(reference.shape[0]), agree, diff, ref_acc, cand_acc)


def probabilities(forward: Callable[[torch.Tensor], torch.Tensor], batches: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([forward(batch) for batch in batches])
