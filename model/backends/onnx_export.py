"""The bundle's network as ONNX (fp32, dynamic batch): the input of ONNX Runtime and TensorRT builds."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from sightline.model.backends.base import BackendError
from sightline.model.bundle import ModelBundle

INPUT = "input"
OUTPUT = "logits"


def export_onnx(bundle: ModelBundle, path: Path) -> Path:
    """TorchScript-based exporter (needs only the ``onnx`` package; the dynamo exporter needs onnxscript)."""
    try:
        import onnx  # noqa: F401  (the exporter needs it; say so plainly when it is missing)
    except ImportError as exc:
        raise BackendError("ONNX export needs the 'onnx' package: pip install -e '.[onnxruntime]'") from exc
    crop = bundle.preprocess.crop
    net = bundle.build()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(net, (torch.zeros(1, 3, crop, crop),), str(path), dynamo=False, opset_version=17,
                          input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
    return path
