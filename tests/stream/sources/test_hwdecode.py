"""NVDEC decode: the probe, and the software fallback with one log line (real PyAV, real clips)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from sightline.stream.buffers import BoundedQueue
from sightline.stream.config import StreamConfig
from sightline.stream.sources.hwdecode import HwDecode, cuda_accel_factory, probe_nvdec
from sightline.stream.sources.video_source import VideoSource
from sightline.stream.stats import StreamStats
from sightline.synthetic_media import make_test_clip

pytestmark = pytest.mark.timeout(60)
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here: NVDEC may well work")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_clip(tmp_path_factory.mktemp("hw") / "clip.mp4", frames=12, fps=25, size=(160, 120),
                          counter=False)


def decode(clip: Path, hwdecode: HwDecode | None, hwaccel: str = "auto") -> tuple[VideoSource, list[np.ndarray]]:
    config = StreamConfig(name="cam", url=str(clip), mode="fast", hwaccel=hwaccel)
    queue = BoundedQueue(100, "block")
    source = VideoSource(config, queue, StreamStats("cam"), lambda h, w: (h // 2, w // 2), keep_display=False,
                         stop=threading.Event(), hwdecode=hwdecode)
    source.start()
    assert source.join(30)
    images = []
    while (frame := queue.get_nowait()) is not None:
        images.append(frame.image)
    return source, images


@no_cuda
def test_probe_without_a_gpu_chooses_software_and_says_why_once(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="sightline.stream.sources.hwdecode"):
        verdict = probe_nvdec()
    assert not verdict.enabled and verdict.factory is None
    assert "NVDEC unavailable" in verdict.reason and "decoding in software" in verdict.reason
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"decode: {verdict.reason}"]


def test_probe_reports_a_failing_hardware_context() -> None:
    class NoDevice:
        def create(self, codec):
            raise OSError(19, "No such device")

    verdict = probe_nvdec(factory=NoDevice)
    assert not verdict.enabled and verdict.reason == "NVDEC unavailable (No such device); decoding in software"


def test_probe_accepts_a_working_hardware_context() -> None:
    made: list[str] = []

    class Works:
        def create(self, codec):
            made.append(codec.name)
            return self

    verdict = probe_nvdec(device_index=1, factory=Works)
    assert verdict.enabled and made == ["h264"] and verdict.reason.startswith("NVDEC (cuda:1) for h264/hevc")


@no_cuda
def test_a_source_whose_nvdec_open_fails_decodes_in_software_and_logs_one_line(clip, caplog) -> None:
    _, reference = decode(clip, None)
    forced = HwDecode(cuda_accel_factory(None), "forced for the test")
    with caplog.at_level(logging.INFO, logger="sightline.stream.sources.video_source"):
        source, images = decode(clip, forced)
    assert source.hwdecode is None  # given up for this source's lifetime
    assert len(images) == len(reference) == 12
    assert all(np.array_equal(a, b) for a, b in zip(images, reference, strict=True))
    warnings = [r.getMessage() for r in caplog.records if "NVDEC" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("stream cam: NVDEC open failed (")
    assert warnings[0].endswith("decoding in software")


def test_hwaccel_off_never_tries_the_hardware(clip) -> None:
    forced = HwDecode(cuda_accel_factory(None), "forced for the test")
    source, images = decode(clip, forced, hwaccel="off")
    assert source.hwdecode is None and source.hw_used is None and len(images) == 12


def test_a_missing_file_is_still_an_open_error_with_nvdec_asked(tmp_path, caplog) -> None:
    forced = HwDecode(cuda_accel_factory(None), "forced for the test")
    config = StreamConfig(name="cam", url=str(tmp_path / "nope.mp4"), mode="fast")
    stats = StreamStats("cam")
    source = VideoSource(config, BoundedQueue(4, "block"), stats, lambda h, w: (h, w), keep_display=False,
                         stop=threading.Event(), hwdecode=forced)
    source.start()
    assert source.join(30)
    assert stats.state == "failed" and "cannot open" in (stats.error or "")
    assert source.hwdecode is forced  # the file was at fault, not the GPU: NVDEC stays on for the next open


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_nvdec_decodes_h264_like_software(clip) -> None:
    verdict = probe_nvdec(torch.cuda.current_device())
    if not verdict.enabled:
        pytest.skip(verdict.reason)  # a GPU without NVDEC, or an FFmpeg build without it
    _, reference = decode(clip, None)
    source, images = decode(clip, verdict)
    assert source.hw_used is True
    assert len(images) == len(reference)
    diff = np.mean([np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(images, reference, strict=True)])
    assert diff < 3.0  # NV12 vs YUV420P conversion paths differ by rounding only


def test_a_software_verdict_decodes_in_software(clip) -> None:
    source, images = decode(clip, HwDecode(None, "the model runs on the CPU"))
    assert source.hwdecode is None and source.hw_used is None and len(images) == 12
