"""TensorRT on NVIDIA GPUs: an engine built from the bundle's ONNX export (fp32, fp16, or int8 with TensorRT's
entropy calibrator fed calibration images). Device memory is torch's: inputs and outputs are CUDA tensors,
so no pycuda / cuda-python is needed. Not runnable without a GPU; no figures are claimed for it here."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import torch
from sightline.model.backends.base import BackendError, softmax
from sightline.model.backends.onnx_export import INPUT, OUTPUT, export_onnx
from sightline.model.bundle import ModelBundle

ENGINE_FILE = "model.engine"
PRECISIONS = ("fp32", "fp16", "int8")
MAX_BATCH = 64


def import_tensorrt() -> ModuleType:
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendError("backend 'tensorrt' is not installed: pip install -e '.[tensorrt]'") from exc
    return tensorrt


def version() -> str:
    return import_tensorrt().__version__


def require_cuda(device: torch.device) -> None:
    if device.type != "cuda" or not torch.cuda.is_available():
        raise BackendError(f"backend 'tensorrt' needs a CUDA device (got {device}; CUDA available: "
                           f"{torch.cuda.is_available()})")


def calibration_batches(calibration: Sequence[torch.Tensor], batch_size: int) -> list[torch.Tensor]:
    """1×3×H×W tensors grouped into contiguous N×3×H×W batches (the calibrator's unit); the last may be short."""
    return [torch.cat(list(calibration[i:i + batch_size])).contiguous()
            for i in range(0, len(calibration), batch_size)]


def build(bundle: ModelBundle, precision: str, calibration: Sequence[torch.Tensor], folder: Path,
          device: torch.device) -> Path:
    if precision not in PRECISIONS:
        raise BackendError(f"backend 'tensorrt' supports {', '.join(PRECISIONS)}, not {precision}")
    trt = import_tensorrt()
    require_cuda(device)
    onnx_path = export_onnx(bundle, folder / "model.onnx")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT could not parse the ONNX export: {errors[:300]}")
    config = builder.create_builder_config()
    crop = bundle.preprocess.crop
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT, (1, 3, crop, crop), (8, 3, crop, crop), (MAX_BATCH, 3, crop, crop))
    config.add_optimization_profile(profile)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        if not calibration:
            raise BackendError("int8 needs calibration images (--calibrate DIR_OR_VIDEO)")
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _calibrator(trt, calibration_batches(calibration, 8), device)
        config.set_calibration_profile(profile)
    with torch.cuda.device(device):
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError("TensorRT failed to build an engine (see its log above)")
    path = folder / ENGINE_FILE
    path.write_bytes(bytes(serialized))
    onnx_path.unlink()
    return path


def _calibrator(trt: ModuleType, batches: list[torch.Tensor], device: torch.device) -> object:
    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()
            self._batches = iter(batches)
            self._current: torch.Tensor | None = None

        def get_batch_size(self) -> int:
            return int(batches[0].shape[0])

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(self._batches, None)
            if batch is None or batch.shape[0] != self.get_batch_size():
                return None
            self._current = batch.to(device)  # kept alive until the next call
            return [int(self._current.data_ptr())]

        def read_calibration_cache(self) -> bytes | None:
            return None

        def write_calibration_cache(self, cache: bytes) -> None:
            return None

    return EntropyCalibrator()


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, folder: Path, precision: str, device: torch.device) -> None:
        trt = import_tensorrt()
        require_cuda(device)
        self.precision = precision
        self.version = trt.__version__
        self.device = device
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine((folder / ENGINE_FILE).read_bytes())
        if self.engine is None:
            raise BackendError(f"TensorRT could not load {folder / ENGINE_FILE} (built for another GPU or version?)")
        self._local = threading.local()

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        context = getattr(self._local, "context", None)
        if context is None:
            context = self._local.context = self.engine.create_execution_context()
        x = batch.to(self.device, dtype=torch.float32).contiguous()
        context.set_input_shape(INPUT, tuple(x.shape))
        out = torch.empty(tuple(context.get_tensor_shape(OUTPUT)), device=self.device, dtype=torch.float32)
        context.set_tensor_address(INPUT, x.data_ptr())
        context.set_tensor_address(OUTPUT, out.data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not context.execute_async_v3(stream.cuda_stream):
            raise BackendError("TensorRT execution failed")
        stream.synchronize()
        return softmax(out)
