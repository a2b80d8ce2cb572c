"""Sightline's classifier: bundles, batched preprocessing and prediction. No streaming code here."""

from model.bundle import ModelBundle, PreprocessSpec, load_checkpoint
from model.classifier import Classifier, Prediction
from model.errors import ConfigError, DeviceError, ImageLoadError, ModelLoadError, SightlineError
from model.images import load_image, to_rgb_array
from model.preprocess import Preprocessor
from model.sources import IMAGENET, imagenet_cache_path, load_model_source

__all__ = [
    "IMAGENET", "Classifier", "ConfigError", "DeviceError", "ImageLoadError", "ModelBundle", "ModelLoadError",
    "Prediction", "PreprocessSpec", "Preprocessor", "SightlineError", "imagenet_cache_path",
    "load_checkpoint", "load_image", "load_model_source", "to_rgb_array",
]
