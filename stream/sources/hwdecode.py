"""NVDEC decode through PyAV's hardware acceleration, with a software fallback that says why once.

The pipeline probes once, when the model runs on CUDA: can FFmpeg open a CUDA device for an H.264
decoder? If so, each source opens its container with a fresh ``HWAccel`` (software fallback allowed,
so a codec NVDEC lacks still decodes); decoded pictures come back to host memory (NV12) and the same
FFmpeg scaler makes the working-size RGB frame. If not, one log line says why and every source
decodes in software. A source whose open fails with the hardware device, but succeeds without it,
logs one line and stays in software for its lifetime.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import av
from av.codec.hwaccel import HWAccel
from sightline.stream.errors import describe_av_error

log = logging.getLogger(__name__)

HW_CODECS = ("h264", "hevc")  # what every NVDEC generation decodes

AccelFactory = Callable[[], HWAccel]


@dataclass(frozen=True)
class HwDecode:
    """The probe's verdict: ``factory`` makes a fresh HWAccel per open, or None for software decode."""

    factory: AccelFactory | None
    reason: str

    @property
    def enabled(self) -> bool:
        return self.factory is not None


def cuda_accel_factory(device_index: int | None) -> AccelFactory:
    """FFmpeg's CUDA device on the GPU's primary context (the one torch uses): without ``primary_ctx`` each
    stream's decoder would create a CUDA context of its own (hundreds of MB each, for hundreds of streams)."""
    device = None if device_index is None else str(device_index)
    return lambda: HWAccel("cuda", device=device, allow_software_fallback=True, options={"primary_ctx": "1"})


def probe_nvdec(device_index: int | None = None, factory: AccelFactory | None = None,
                codec: str = HW_CODECS[0]) -> HwDecode:
    """Try to create the CUDA hardware context for ``codec``'s decoder; log the outcome in one line."""
    factory = factory or cuda_accel_factory(device_index)
    try:
        factory().create(av.Codec(codec, "r"))
    except (av.FFmpegError, OSError, ValueError) as exc:
        reason = f"NVDEC unavailable ({describe_av_error(exc)}); decoding in software"
        log.info("decode: %s", reason)
        return HwDecode(None, reason)
    reason = f"NVDEC (cuda{'' if device_index is None else f':{device_index}'}) for {'/'.join(HW_CODECS)}"
    log.info("decode: %s, software for other codecs", reason)
    return HwDecode(factory, reason)


def software_decode(reason: str) -> HwDecode:
    return HwDecode(None, reason)
