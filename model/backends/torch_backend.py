"""The reference backend: the bundle's network in torch eager (BN folded, channels_last, autocast)."""

from __future__ import annotations

import torch
from sightline.model.bundle import ModelBundle
from sightline.model.classifier import fold_batchnorm
from sightline.model.device import autocast_dtype, precision_name


class TorchBackend:
    name = "torch"

    def __init__(self, bundle: ModelBundle, device: torch.device, precision: str = "fp32") -> None:
        self.device = device
        self.amp_dtype = autocast_dtype(precision, device)
        self.precision = precision_name(self.amp_dtype)
        self.version = torch.__version__
        self.network = fold_batchnorm(bundle.build()).to(device, memory_format=torch.channels_last)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        amp = torch.autocast(device_type=self.device.type, dtype=self.amp_dtype or torch.float32,
                             enabled=self.amp_dtype is not None)
        with torch.inference_mode(), amp:
            logits = self.network(batch)
        return torch.softmax(logits.float(), dim=1).cpu()
