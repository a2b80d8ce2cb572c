"""Device and precision choice, shared by serving and training so both read flags the same way."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Literal

import torch
from sightline.model.errors import DeviceError

Precision = Literal["auto", "fp32", "fp16", "bf16"]
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


DEVICE_TYPES = ("cpu", "cuda", "mps")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present; an explicit device that is not here is a clear error.

    A CUDA device is also tried with one tiny kernel, so a torch build that does not match the GPU
    or driver fails here with advice instead of in the middle of the first batch.
    """
    if name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(name)
        except RuntimeError as exc:
            raise DeviceError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from exc
    if device.type not in DEVICE_TYPES:
        raise DeviceError(f"unsupported device {name!r} (use auto, cpu, cuda or cuda:N)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            built = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA (a CPU-only build)"
            raise DeviceError(
                f"device {name!r} requested but CUDA is not available (torch {torch.__version__} built with "
                f"{built}; no GPU or driver found). Use --device cpu, or install a torch build matching "
                f"your driver"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {name!r} requested but only {torch.cuda.device_count()} GPU(s) are visible"
            )
        _probe_cuda(device)
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("device 'mps' requested but MPS is not available")
    return device


def _probe_cuda(device: torch.device) -> None:
    try:
        torch.ones(1, device=device).add_(1).item()
    except RuntimeError as exc:  # "no kernel image is available", driver too old, device busy...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        archs = " ".join(torch.cuda.get_arch_list()) or "none"
        raise DeviceError(
            f"CUDA device {device} is visible but unusable with torch {torch.__version__} (built for CUDA "
            f"{torch.version.cuda}, GPU architectures {archs}): {reason}. "
            f"Install a torch build that supports this GPU and driver, or use --device cpu"
        ) from exc


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``, or None for plain fp32."""
    if precision not in PRECISIONS:
        raise DeviceError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else None
    if precision == "fp32":
        return None
    if precision == "fp16":
        if device.type != "cuda":
            raise DeviceError("fp16 needs a CUDA device; on the CPU use bf16 or fp32")
        return torch.float16
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError("bf16 is not supported on this GPU; use fp16")
    return torch.bfloat16


def precision_name(dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]


def describe_device(device: torch.device) -> str:
    """The hardware behind ``device``, for benchmark output: GPU name and CUDA, or CPU model and threads."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"CPU {model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
