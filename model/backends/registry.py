"""Backend name -> its module (imported on use) and the choices ``auto`` makes for a device."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
from sightline.model.backends.base import BackendError

COMPILED = {"openvino": "openvino_backend", "onnxruntime": "onnxruntime_backend", "tensorrt": "tensorrt_backend"}
CLASSES = {"openvino": "OpenVINOBackend", "onnxruntime": "OnnxRuntimeBackend", "tensorrt": "TensorRTBackend"}

# ``auto``'s table: ResNet18 224×224 model-only images/s at batch 8, each backend at the precision ``auto``
# gives it there, measured on a 2-core AMD EPYC (avx512_bf16, no AMX) shared with other work
# (benchmarks/results/backends-cpu.md). Ranked by these figures; CUDA: order only, no GPU figure measured here.
CPU_MEASURED = {"openvino": 108.3, "torch": 95.5, "onnxruntime": 51.5}  # bf16, bf16 autocast, fp32
CPU_RANKING = tuple(sorted(CPU_MEASURED, key=CPU_MEASURED.__getitem__, reverse=True))
TORCH_CPU_BF16_SPEEDUP = 95.5 / 50.7  # torch bf16 autocast vs fp32, batch 8, same run
CUDA_RANKING = ("tensorrt", "torch")


def module(name: str) -> ModuleType:
    if name not in COMPILED:
        raise BackendError(f"unknown backend {name!r}; use auto, torch, {', '.join(COMPILED)}")
    return importlib.import_module(f"sightline.model.backends.{COMPILED[name]}")


def open_compiled(name: str, folder: Path, precision: str, device: torch.device) -> object:
    return getattr(module(name), CLASSES[name])(folder, precision, device)


def installed(name: str) -> bool:
    if name == "torch":
        return True
    try:
        module(name).version()
    except BackendError:
        return False
    return True


@dataclass(frozen=True)
class Choice:
    backend: str
    precision: str
    reason: str


def choose(backend: str, precision: str, device: torch.device) -> Choice:
    """Resolve ``auto`` for backend and precision, saying why (the start-up log line)."""
    reasons = []
    chose_backend = backend == "auto"
    if backend == "auto":
        ranking = CUDA_RANKING if device.type == "cuda" else CPU_RANKING
        usable = [b for b in ranking if installed(b)]
        backend = usable[0]
        missing = [b for b in ranking[:ranking.index(backend)]]
        reasons.append(f"backend auto -> {backend} (fastest installed for {device.type} in the measured ranking "
                       f"{' > '.join(ranking)}" + (f"; not installed: {', '.join(missing)}" if missing else "") + ")")
    elif backend != "torch":
        module(backend).version()  # an unknown or uninstalled backend fails here, before any model is loaded
    if precision == "int8" and backend == "torch":
        raise BackendError("precision int8 needs a compiled backend (--backend openvino, onnxruntime or tensorrt)")
    if precision == "auto":
        precision, why = auto_precision(backend, device, chose_backend)
        reasons.append(f"precision auto -> {precision} ({why})")
    return Choice(backend, precision, "; ".join(reasons) or f"backend {backend}, precision {precision} as configured")


def auto_precision(backend: str, device: torch.device, chose_backend: bool = False) -> tuple[str, str]:
    """bf16 only where the CPU runs it natively (flags / the engine's own report), fp32 elsewhere; for torch
    too, whether ``backend: torch`` was configured or ``auto`` fell back to it (torch's fp32 reference for
    agreement checks is built explicitly, never through ``auto``)."""
    native = sorted(cpu_flags() & {"avx512_bf16", "amx_bf16"})
    if backend == "torch":
        if device.type != "cpu":
            return "auto", "torch's own rule: fp16 autocast on CUDA"
        if not native:
            return "auto", "this CPU has no native bf16 (no avx512_bf16 / amx_bf16 in /proc/cpuinfo): torch fp32"
        if not torch_cpu_bf16():
            return "auto", (f"the CPU flags say native bf16 ({', '.join(native)}) but this torch build's oneDNN "
                            f"does not report bf16 support: torch fp32")
        return "bf16", (f"this CPU runs bf16 natively ({', '.join(native)} in /proc/cpuinfo; torch's oneDNN agrees): "
                        f"torch bf16 autocast measured {TORCH_CPU_BF16_SPEEDUP:.1f}x fp32 at batch 8"
                        + ("" if chose_backend else "; set precision: fp32 for the exact fp32 reference"))
    if backend == "tensorrt":
        return "fp16", "every CUDA GPU TensorRT supports runs fp16 natively"
    if backend == "onnxruntime":
        return "fp32", "ONNX Runtime's CPU provider has no bf16 kernels; int8 only when asked (needs calibration)"
    from sightline.model.backends.openvino_backend import cpu_capabilities

    if "BF16" in cpu_capabilities():
        return "bf16", f"OpenVINO reports native BF16 on this CPU (flags: {', '.join(native) or 'none seen'})"
    return "fp32", "this CPU has no native bf16 (no avx512_bf16 / amx_bf16)"


def torch_cpu_bf16() -> bool:
    """torch's own view: oneDNN bf16 kernels usable on this CPU (avx512bw/vl/dq at least)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()
