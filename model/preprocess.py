"""Batched serving preprocessing on the model's device.

uint8 frames travel to the device as uint8 (a quarter of the float bytes), are resized there with
antialiasing (shorter side to ``spec.resize``), centre-cropped and normalized into a channels_last
float batch. Frames of the same size are resized together as one batch. A frame that already has the
working size (the stream decoders ask FFmpeg for it) skips the resize entirely.

Memory: on the CPU no step makes a float copy of a full-size frame: torch's native uint8
antialiased kernel resizes the frame where it lies (the H×W×3 array viewed as channels_last N×3×H×W,
no copy). On a GPU the upload is resized in float (two passes rounded like PIL), so frames above
``HOST_RESIZE_PIXELS`` are resized on the host in uint8 first; only the small result travels.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from sightline.model.bundle import PreprocessSpec
from sightline.model.errors import ImageLoadError

# Above this many pixels a frame is resized on the host even when the model runs on a GPU
# (its float copy there would take 12 bytes per pixel: 1.2 GB for a 10000×10000 photo).
HOST_RESIZE_PIXELS = 4096 * 4096


def resized_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """torchvision's Resize(int) rule: shorter side to ``short_side``, longer side truncated."""
    if height <= width:
        return short_side, int(short_side * width / height)
    return int(short_side * height / width), short_side


def resize_uint8(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bilinear resize of a uint8 N×3×H×W batch, returned as uint8 on the same device.

    The CPU has a native uint8 kernel (fastest on a channels_last view, which is how an H×W×3 array
    looks to torch). Other devices interpolate floats only: see ``resize_two_pass``.
    """
    if x.device.type == "cpu":
        return F.interpolate(x, size=list(size), mode="bilinear", align_corners=False, antialias=True)
    return resize_two_pass(x, size).to(torch.uint8)


def resize_two_pass(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """PIL's resize in float: horizontal pass, round to 8 bits (half up), vertical pass, round again.

    A single 2-D float interpolation rounded once differs from PIL by one grey level on ~15% of the
    values; PIL (and torch's CPU uint8 kernel) keep an 8-bit intermediate between the two passes.
    Returns float values that are whole numbers in 0..255.
    """
    height, width = x.shape[-2:]
    y = x.float()
    if size[1] != width:
        y = _round_half_up(F.interpolate(y, size=[height, size[1]], mode="bilinear", align_corners=False,
                                         antialias=True))
    if size[0] != height:
        y = _round_half_up(F.interpolate(y, size=list(size), mode="bilinear", align_corners=False,
                                         antialias=True))
    return y


def _round_half_up(x: torch.Tensor) -> torch.Tensor:
    return x.add_(0.5).floor_().clamp_(0, 255)


def as_batch_view(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    """Same-shape H×W×3 uint8 arrays as an N×3×H×W uint8 tensor (channels_last memory), on the host.

    One array is viewed without copying; several are stacked (one copy, needed to batch them).
    """
    if len(arrays) == 1:
        arr = arrays[0]
        if any(s < 0 for s in arr.strides):  # e.g. a BGR->RGB flip [..., ::-1]; torch needs positive strides
            arr = np.ascontiguousarray(arr)
        stacked = arr[None]
    else:
        stacked = np.stack(arrays)
    with warnings.catch_warnings():
        # Arrays from PIL are read-only; the tensor is only ever read, never written.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        host = torch.from_numpy(stacked)
    return host.permute(0, 3, 1, 2)


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
        if len(images) == 0:
            raise ImageLoadError("no images to preprocess")
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, img in enumerate(images):
            if (not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3
                    or img.shape[0] == 0 or img.shape[1] == 0):
                shape = getattr(img, "shape", None)
                raise ImageLoadError(
                    f"image {i}: expected an H×W×3 uint8 RGB array, got {type(img).__name__} "
                    f"shape={shape} dtype={getattr(img, 'dtype', None)}; "
                    f"convert with model.images.to_rgb_array"
                )
            groups[img.shape].append(i)
        crop = self.spec.crop
        out = torch.empty((len(images), 3, crop, crop), device=self.device, dtype=torch.float32,
                          memory_format=torch.channels_last)
        for idx in groups.values():
            cropped = self._resize_crop([images[i] for i in idx])
            if len(idx) == len(images):
                out.copy_(cropped)
            else:
                out[torch.as_tensor(idx, device=self.device)] = cropped.float()
        # (x/255 - mean)/std == (x - 255*mean) / (255*std), done in place on the whole batch
        return out.sub_(self._mean).mul_(self._inv_std)

    def _resize_crop(self, arrays: list[np.ndarray]) -> torch.Tensor:
        """Same-shape arrays -> uint8 N×3×crop×crop on the device."""
        height, width = arrays[0].shape[:2]
        target = resized_size(height, width, self.spec.resize)
        crop = [self.spec.crop, self.spec.crop]
        x = as_batch_view(arrays)
        if target == (height, width):
            # A working-size frame: crop on the host, so less travels to the device.
            return self._upload(TF.center_crop(x, crop))
        if self.device.type == "cpu" or height * width > HOST_RESIZE_PIXELS:
            return self._upload(TF.center_crop(resize_uint8(x, target), crop))
        return TF.center_crop(resize_uint8(self._upload(x), target), crop)

    def _upload(self, x: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cpu":
            return x
        if self._pin:
            x = x.pin_memory()
        return x.to(self.device, non_blocking=self._pin)
