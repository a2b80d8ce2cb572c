"""Small random-init models for tests: real ResNet18 code, tiny inputs, no downloads."""

from __future__ import annotations

import torch
from sightline.model.architectures import build_network
from sightline.model.bundle import ModelBundle, PreprocessSpec
from sightline.model.classifier import Classifier

TINY = PreprocessSpec(resize=64, crop=56)


def tiny_bundle(num_classes: int = 4, seed: int = 0, spec: PreprocessSpec = TINY) -> ModelBundle:
    torch.manual_seed(seed)
    net = build_network("resnet18", num_classes)
    names = [f"class_{chr(ord('a') + i)}" for i in range(num_classes)]
    return ModelBundle("resnet18", names, net.state_dict(), spec, {"source": "test", "seed": seed})


def tiny_classifier(num_classes: int = 4, seed: int = 0) -> Classifier:
    return Classifier(tiny_bundle(num_classes, seed), device="cpu")
