"""ONNX Runtime: the bundle as ONNX (fp32), or statically quantized to int8 (QDQ, per-channel weights, after
ONNX Runtime's quantization pre-processing) with ONNX Runtime's own calibrator on calibration images. CPU
execution provider (CUDA's when asked and present)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from sightline.model.backends.base import BackendError, softmax
from sightline.model.backends.onnx_export import INPUT, export_onnx
from sightline.model.bundle import ModelBundle

MODEL_FILE = "model.onnx"
PRECISIONS = ("fp32", "int8")


def import_onnxruntime() -> ModuleType:
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendError("backend 'onnxruntime' is not installed: pip install -e '.[onnxruntime]'") from exc
    return onnxruntime


def version() -> str:
    return import_onnxruntime().__version__


def build(bundle: ModelBundle, precision: str, calibration: Sequence[torch.Tensor], folder: Path,
          device: torch.device | None = None) -> Path:
    if precision not in PRECISIONS:
        raise BackendError(f"backend 'onnxruntime' supports {', '.join(PRECISIONS)}, not {precision}")
    import_onnxruntime()
    path = folder / MODEL_FILE
    if precision == "fp32":
        return export_onnx(bundle, path)
    if not calibration:
        raise BackendError("int8 needs calibration images (--calibrate DIR_OR_VIDEO)")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items: Iterator[torch.Tensor] = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._items, None)
            return None if batch is None else {INPUT: np.ascontiguousarray(batch.numpy())}

    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32 = export_onnx(bundle, folder / "model.fp32.onnx")
    # The exporter passes some convolution biases through Identity nodes (identical folded biases are stored
    # once); quantize_static then leaves those convolutions in fp32 between Dequantize/Quantize pairs, slower
    # than plain fp32. ONNX Runtime's pre-processing (its optimizer + shape inference) inlines them first.
    ready = folder / "model.pre.onnx"
    quant_pre_process(str(fp32), str(ready))
    quantize_static(str(ready), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    fp32.unlink()
    ready.unlink()
    return path


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, folder: Path, precision: str, device: torch.device) -> None:
        ort = import_onnxruntime()
        if precision not in PRECISIONS:
            raise BackendError(f"backend 'onnxruntime' supports {', '.join(PRECISIONS)}, not {precision}")
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendError("backend 'onnxruntime' on CUDA needs onnxruntime-gpu (CUDAExecutionProvider)")
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
        self.precision = precision
        self.version = ort.__version__
        self.device = device
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = max(1, torch.get_num_threads())
        try:
            self.session = ort.InferenceSession(str(folder / MODEL_FILE), options, providers=providers)
        except (RuntimeError, ValueError) as exc:
            raise BackendError(f"ONNX Runtime could not load {folder / MODEL_FILE}: {str(exc)[:300]}") from exc

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Session.run is thread-safe: every inference lane calls the one session."""
        data = np.ascontiguousarray(batch.detach().cpu().numpy())
        return softmax(torch.from_numpy(self.session.run(None, {INPUT: data})[0]))
