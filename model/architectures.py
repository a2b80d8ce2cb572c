"""Which networks a bundle may name, and how to build them without downloading anything."""

from __future__ import annotations

from collections.abc import Callable

import torch
from sightline.model.errors import ModelLoadError
from torchvision import models

_BUILDERS: dict[str, Callable[..., torch.nn.Module]] = {
    "resnet18": models.resnet18,
    "resnet34": models.resnet34,
    "resnet50": models.resnet50,
}

ARCHITECTURES = tuple(_BUILDERS)


def build_network(arch: str, num_classes: int) -> torch.nn.Module:
    """A randomly initialised network with a ``num_classes``-wide final layer."""
    try:
        builder = _BUILDERS[arch]
    except KeyError:
        raise ModelLoadError(
            f"unknown architecture {arch!r}; supported: {', '.join(ARCHITECTURES)}"
        ) from None
    return builder(weights=None, num_classes=num_classes)


def fc_width(arch: str, state_dict: dict[str, torch.Tensor]) -> int:
    """Number of outputs of the checkpoint's final layer."""
    if arch not in _BUILDERS:
        raise ModelLoadError(f"unknown architecture {arch!r}; supported: {', '.join(ARCHITECTURES)}")
    weight = state_dict.get("fc.weight")
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise ModelLoadError(f"checkpoint has no 2-D 'fc.weight' tensor, so it is not a {arch} state dict")
    return int(weight.shape[0])
