"""Inference backends: the torch reference and compiled forms of the same bundle (OpenVINO, ONNX Runtime,
TensorRT), each an optional extra. Everything heavy is imported inside the functions that need it."""

from __future__ import annotations

from importlib.util import find_spec

BACKENDS = ("auto", "torch", "openvino", "onnxruntime", "tensorrt")
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")

# compiled backend -> (the top-level modules it imports, the extra that installs them)
EXTRAS = {"openvino": (("openvino",), "openvino"), "onnxruntime": (("onnxruntime", "onnx"), "onnxruntime"),
          "tensorrt": (("tensorrt", "onnx"), "tensorrt")}


def missing_extra(backend: str) -> str | None:
    """None when ``backend`` can be used here, else one line naming the install. Imports nothing (find_spec):
    a config that asks for an absent backend is refused when it is read, not after the model has loaded."""
    if backend not in EXTRAS:
        return None
    modules, extra = EXTRAS[backend]
    absent = [m for m in modules if find_spec(m) is None]
    if not absent:
        return None
    return f"backend {backend} needs {', '.join(absent)}, not installed here: pip install -e '.[{extra}]'"
