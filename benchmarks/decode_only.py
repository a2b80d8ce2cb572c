"""Decode-only throughput: the pipeline's own sources (PyAV decode threads, FFmpeg scaling to the working
size, NVDEC when the probe allows) with no model behind them, for the pipeline benchmark's (d) column."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import torch
from sightline.model.classifier import Classifier
from sightline.stream.buffers import BoundedQueue
from sightline.stream.config import StreamConfig
from sightline.stream.frames import Frame
from sightline.stream.sources.hwdecode import HwDecode, probe_nvdec, software_decode
from sightline.stream.sources.video_source import VideoSource
from sightline.stream.stats import StreamStats


def hwdecode_for(classifier: Classifier, hwaccel: str = "auto") -> HwDecode:
    """What the pipeline would choose for this classifier and ``streams[].hwaccel`` (one probe, one log line)."""
    if hwaccel == "off":
        return software_decode("software decode (--hwaccel off)")
    if classifier.device.type == "cuda":
        return probe_nvdec(classifier.device.index)
    return software_decode("the model runs on the CPU")


def bench_decode(classifier: Classifier, clip: Path, n: int, hwdecode: HwDecode, timeout: float = 600.0) -> float:
    """Frames/s decoded by ``n`` fast file sources at once; each keeps only its newest frame (nothing waits)."""
    stop = threading.Event()
    sources = []
    for i in range(n):
        config = StreamConfig(name=f"d{i}", url=str(clip), mode="fast")
        queue: BoundedQueue[Frame] = BoundedQueue(1, "latest")
        sources.append(VideoSource(config, queue, StreamStats(config.name), classifier.preprocessor.working_size,
                                   keep_display=False, stop=stop, hwdecode=hwdecode))
    start = time.perf_counter()
    for source in sources:
        source.start()
    deadline = start + timeout
    for source in sources:
        source.join(max(0.0, deadline - time.perf_counter()))
    elapsed = time.perf_counter() - start
    stop.set()
    decoded = sum(s.stats.frames_decoded for s in sources)
    return decoded / elapsed


def gpu_memory_mib(device: torch.device) -> tuple[float, float]:
    """(peak allocated, peak reserved) MiB since the last reset; zeros off CUDA."""
    if device.type != "cuda":
        return 0.0, 0.0
    return (torch.cuda.max_memory_allocated(device) / 2**20, torch.cuda.max_memory_reserved(device) / 2**20)


def reset_gpu_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
