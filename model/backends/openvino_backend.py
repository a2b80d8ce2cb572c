"""OpenVINO on the CPU: the bundle converted to IR (fp32 weights); bf16 is a compile-time hint on the same IR,
int8 an IR quantized by NNCF post-training quantization on calibration images.

Telemetry: ``openvino.tools.ovc`` (used by ``convert_model``) and NNCF send usage events through the
``openvino_telemetry`` package unless a consent file says otherwise. ``import_openvino`` blocks that package
before anything of OpenVINO is imported; both then fall back to their built-in no-op stubs.
"""

from __future__ import annotations

import os
import sys
import threading
import time
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
CACHE_DIR = "ov-cache"  # OpenVINO's compiled-blob cache, in the artefact folder (same key as the artefact)


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


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def compile_config(precision: str, streams: int) -> dict[str, str]:
    """One stream over all cores (LATENCY) for one lane; one stream per lane (THROUGHPUT) for several."""
    config = {"INFERENCE_PRECISION_HINT": HINTS[precision]}
    if streams <= 1:
        config["PERFORMANCE_HINT"] = "LATENCY"
    else:
        config.update({"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": str(streams)})
    return config


class OpenVINOBackend:
    """One compiled model; each calling thread (inference lane) gets its own infer request.

    Compiled with the LATENCY hint (one stream over all cores per request, as torch runs a batch) until
    ``serve_lanes(n)`` says n lanes will call it at once: then THROUGHPUT with one stream per lane (at most
    one per core), so the lanes' requests run side by side instead of queueing on one stream.

    ``cache=True``: OpenVINO's compiled-blob cache (CACHE_DIR) in the artefact folder's ``ov-cache/`` when it
    is writable. Off by default: measured ~35 ms saved per start for ResNet18 int8 on a 2-core CPU, for one
    blob of about the IR's size per compile mode (benchmarks/results/serving-modes-cpu.md).
    """

    name = "openvino"

    def __init__(self, folder: Path, precision: str, device: torch.device, *, cache: bool = False,
                 per_lane_streams: bool = True) -> None:
        if device.type != "cpu":
            raise BackendError(f"backend 'openvino' runs on the CPU here, not on {device}")
        if precision not in HINTS:
            raise BackendError(f"backend 'openvino' supports {', '.join(HINTS)}, not {precision}")
        ov = import_openvino()
        self.precision = precision
        self.version = version()
        self.device = device
        self.path = folder / IR_FILE
        self.per_lane_streams = per_lane_streams
        self.core = ov.Core()
        self.cache_dir: Path | None = None
        if cache and folder.is_dir() and os.access(folder, os.W_OK):
            self.cache_dir = folder / CACHE_DIR
            self.core.set_property({"CACHE_DIR": str(self.cache_dir)})
        self._lock = threading.Lock()
        self._local = threading.local()
        self.streams = 1
        self.compiled = self._compile(1)

    def _compile(self, streams: int) -> object:
        start = time.perf_counter()
        try:
            compiled = self.core.compile_model(str(self.path), "CPU", compile_config(self.precision, streams))
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendError(f"OpenVINO could not compile {self.path}: {first[:300]}") from exc
        self.compile_seconds = time.perf_counter() - start
        return compiled

    def serve_lanes(self, lanes: int) -> str:
        """Match OpenVINO's streams to the inference lanes that will call ``forward`` concurrently."""
        streams = max(1, min(int(lanes), usable_cores())) if self.per_lane_streams else 1
        with self._lock:
            if streams != self.streams:
                self.compiled = self._compile(streams)
                self.streams = streams
        if streams == 1:
            return f"OpenVINO LATENCY hint: 1 stream over {usable_cores()} core(s) for {lanes} lane(s)"
        return f"OpenVINO THROUGHPUT hint: {streams} streams, one per inference lane"

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        compiled = self.compiled
        mine = getattr(self._local, "request", None)
        if mine is None or mine[0] is not compiled:  # first call on this lane, or recompiled for other lanes
            mine = self._local.request = (compiled, compiled.create_infer_request())
        data = np.ascontiguousarray(batch.detach().cpu().numpy())
        logits = mine[1].infer({0: data}, share_inputs=True)[0]
        return softmax(torch.from_numpy(np.array(logits, copy=True)))
