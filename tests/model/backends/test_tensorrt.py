"""TensorRT cannot run without an NVIDIA GPU: what can be checked here is that it fails clearly, and the
calibration batching it would feed TensorRT's calibrator."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from sightline.model.backends import registry
from sightline.model.backends.base import BackendError
from sightline.model.backends.tensorrt_backend import calibration_batches, require_cuda


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_missing_tensorrt_names_the_extra():
    with pytest.raises(BackendError, match=r"pip install -e '\.\[tensorrt\]'"):
        registry.choose("tensorrt", "fp16", torch.device("cpu"))
    assert not registry.installed("tensorrt")


def test_tensorrt_on_a_cpu_device_is_refused():
    with pytest.raises(BackendError, match="needs a CUDA device"):
        require_cuda(torch.device("cpu"))


def test_calibration_images_are_grouped_into_contiguous_batches():
    images = [torch.full((1, 3, 4, 4), float(i)).to(memory_format=torch.channels_last) for i in range(19)]
    batches = calibration_batches(images, 8)
    assert [b.shape[0] for b in batches] == [8, 8, 3]
    assert all(b.is_contiguous() for b in batches)
    assert torch.equal(torch.cat(batches)[:, 0, 0, 0], torch.arange(19, dtype=torch.float32))


def test_auto_on_cuda_prefers_tensorrt_when_installed(monkeypatch):
    monkeypatch.setattr(registry, "installed", lambda name: True)
    choice = registry.choose("auto", "auto", torch.device("cuda"))
    assert (choice.backend, choice.precision) == ("tensorrt", "fp16")
