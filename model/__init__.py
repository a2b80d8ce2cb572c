"""Sightline's classifier: bundles, batched preprocessing and prediction. No streaming code here.

The names below are imported on first use (PEP 562), so ``import sightline.model.errors`` does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ModelBundle": "bundle", "PreprocessSpec": "bundle", "load_checkpoint": "bundle",
    "Classifier": "classifier", "Prediction": "classifier",
    "ConfigError": "errors", "DeviceError": "errors", "ImageLoadError": "errors", "ModelLoadError": "errors",
    "SightlineError": "errors",
    "load_image": "images", "to_rgb_array": "images",
    "Preprocessor": "preprocess",
    "IMAGENET": "weights", "imagenet_cache_path": "weights", "load_model_source": "weights",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
