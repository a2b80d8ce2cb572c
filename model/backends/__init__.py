"""Inference backends: the torch reference and compiled forms of the same bundle (OpenVINO, ONNX Runtime,
TensorRT), each an optional extra. Everything heavy is imported inside the functions that need it."""

from __future__ import annotations

BACKENDS = ("auto", "torch", "openvino", "onnxruntime", "tensorrt")
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")
