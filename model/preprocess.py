"""Batched serving preprocessing on the model's device.

uint8 frames travel to the device as uint8 (a quarter of the float bytes), are resized there with
antialiasing (shorter side to ``spec.resize``), centre-cropped and normalized into a channels_last
float batch. Frames of the same size are resized together as one batch. A frame that already has the
working size (the stream decoders ask FFmpeg for it) skips the resize entirely.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from model.bundle import PreprocessSpec
from model.errors import ImageLoadError


def resized_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """torchvision's Resize(int) rule: shorter side to ``short_side``, longer side truncated."""
    if height <= width:
        return short_side, int(short_side * width / height)
    return int(short_side * height / width), short_side


class Preprocessor:
    """Turns a list of H×W×3 uint8 RGB arrays into an N×3×crop×crop normalized batch on ``device``."""

    def __init__(self, spec: PreprocessSpec, device: torch.device) -> None:
        self.spec = spec
        self.device = device
        self._mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1) * 255.0
        self._inv_std = 1.0 / (torch.tensor(spec.std, device=device).view(1, 3, 1, 1) * 255.0)
        self._pin = device.type == "cuda"

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        """The size decoders should produce so that no resize is needed here."""
        return resized_size(height, width, self.spec.resize)

    def __call__(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        if not images:
            raise ImageLoadError("no images to preprocess")
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, img in enumerate(images):
            if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                shape = getattr(img, "shape", None)
                raise ImageLoadError(
                    f"image {i}: expected an H×W×3 uint8 RGB array, got {type(img).__name__} "
                    f"shape={shape} dtype={getattr(img, 'dtype', None)}; convert with model.images.to_rgb_array"
                )
            groups[img.shape].append(i)
        crop = self.spec.crop
        out = torch.empty((len(images), 3, crop, crop), device=self.device, dtype=torch.float32,
                          memory_format=torch.channels_last)
        for shape, idx in groups.items():
            batch = self._crop_group([images[i] for i in idx], shape[0], shape[1])
            out[torch.as_tensor(idx, device=self.device)] = batch.float()
        # (x/255 - mean)/std == (x - 255*mean) / (255*std), done in place on the whole batch
        return out.sub_(self._mean).mul_(self._inv_std)

    def _crop_group(self, arrays: list[np.ndarray], height: int, width: int) -> torch.Tensor:
        host = torch.from_numpy(np.stack(arrays) if len(arrays) > 1 else arrays[0][None])
        if self._pin:
            host = host.pin_memory()
        x = host.to(self.device, non_blocking=True).permute(0, 3, 1, 2)  # N,3,H,W view, uint8
        target = resized_size(height, width, self.spec.resize)
        if target != (height, width):
            x = TF.resize(x.contiguous(), list(target), antialias=True)
        return TF.center_crop(x, [self.spec.crop, self.spec.crop])
