"""OpenVINO on the CPU: the bundle converted to IR (fp32 weights); bf16 is a compile-time hint on the same IR,
int8 an IR quantized by NNCF post-training quantization on calibration images.

Telemetry: ``openvino.tools.ovc`` (used by ``convert_model``) and NNCF send usage events through the
``openvino_telemetry`` package unless a consent file says otherwise. ``import_openvino`` blocks that package
before anything of OpenVINO is imported; both then fall back to their built-in no-op stubs.
"""

from __future__ import annotations

import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from sightline.model.backends.base import BackendError, softmax
from sightline.model.bundle import ModelBundle

IR_FILE = "model.xml"
HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def block_telemetry() -> None:
    """A None entry in sys.modules makes ``import openvino_telemetry`` raise ImportError (no events sent)."""
    sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]
    sys.modules["openvino_telemetry.backend"] = None  # type: ignore[assignment]


def import_openvino() -> ModuleType:
    block_telemetry()
    try:
        import openvino
    except ImportError as exc:
        raise BackendError("backend 'openvino' is not installed: pip install -e '.[openvino]'") from exc
    return openvino


def version() -> str:
    return import_openvino().get_version().split("-")[0]


def cpu_capabilities() -> list[str]:
    return list(import_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def build(bundle: ModelBundle, precision: str, calibration: Sequence[torch.Tensor], folder: Path,
          device: torch.device | None = None) -> Path:
    """Write the IR for ``precision`` into ``folder``; ``calibration`` (1×3×H×W preprocessed batches) for int8."""
    ov = import_openvino()
    crop = bundle.preprocess.crop
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace deprecation notices from the converter
        model = ov.convert_model(bundle.build(), example_input=torch.zeros(1, 3, crop, crop),
                                 input=[(-1, 3, crop, crop)])
    if precision == "int8":
        if not calibration:
            raise BackendError("int8 needs calibration images (--calibrate DIR_OR_VIDEO)")
        try:
            import nncf
        except ImportError as exc:
            raise BackendError("int8 with OpenVINO needs NNCF: pip install -e '.[openvino]'") from exc
        dataset = nncf.Dataset(list(calibration), lambda batch: batch.contiguous().numpy())
        model = nncf.quantize(model, dataset, subset_size=len(calibration), preset=nncf.QuantizationPreset.MIXED)
    path = folder / IR_FILE
    ov.save_model(model, str(path), compress_to_fp16=False)
    return path


class OpenVINOBackend:
    """One compiled model; each calling thread (inference lane) gets its own infer request. LATENCY hint: one
    stream over all cores per request, as torch runs a batch (THROUGHPUT is not exposed yet)."""

    name = "openvino"

    def __init__(self, folder: Path, precision: str, device: torch.device) -> None:
        if device.type != "cpu":
            raise BackendError(f"backend 'openvino' runs on the CPU here, not on {device}")
        if precision not in HINTS:
            raise BackendError(f"backend 'openvino' supports {', '.join(HINTS)}, not {precision}")
        ov = import_openvino()
        self.precision = precision
        self.version = version()
        self.device = device
        core = ov.Core()
        try:
            self.compiled = core.compile_model(str(folder / IR_FILE), "CPU", {
                "INFERENCE_PRECISION_HINT": HINTS[precision], "PERFORMANCE_HINT": "LATENCY"})
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendError(f"OpenVINO could not compile {folder / IR_FILE}: {first[:300]}") from exc
        self._local = threading.local()

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        data = np.ascontiguousarray(batch.detach().cpu().numpy())
        logits = request.infer({0: data}, share_inputs=True)[0]
        return softmax(torch.from_numpy(np.array(logits, copy=True)))
