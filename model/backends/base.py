"""The backend contract: a preprocessed float batch in, softmax probabilities out (N×C float32, CPU).

Preprocessing stays the project's own (``model.preprocess.Preprocessor``) and is identical for every
backend; a backend only replaces the network call. The torch backend is the reference the others are
checked against.
"""

from __future__ import annotations

from typing import Protocol

import torch
from sightline.model.errors import SightlineError


class BackendError(SightlineError):
    """A backend is not installed, cannot run here, or refused a build (e.g. agreement below threshold)."""


class Backend(Protocol):
    name: str
    precision: str
    version: str

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """N×3×H×W normalized float batch (on the classifier's device) -> N×C probabilities on the CPU."""
        ...


def softmax(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.float(), dim=1).cpu()
