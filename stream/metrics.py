"""Every Prometheus metric Sightline exports, in one place. The registry is injected.

Labels come from finite sets only: ``stream`` (names from the config), ``stage``, ``reason``,
``sink``, ``state``. Never URLs, credentials or frame ids. Hot-path code holds pre-bound children
(``StreamMetrics``) so recording is a plain ``inc()``/``observe()``.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

STATES = ("connecting", "live", "reconnecting", "ended", "failed", "stopped")
STAGES = ("decode", "queue", "preprocess", "inference", "sink")
DROP_REASONS = ("stale", "output_behind", "inference_error")
# Data lost for good (not a live policy's choice): frames the source never delivered (a gap in its
# timestamps: cut or corrupt input) and decoded frames the recorder could not take in time.
LOSS_REASONS = ("source_gap", "recorder_behind")
SWAP_RESULTS = ("swapped", "unchanged", "refused", "failed")  # model hot-swaps (stream/model_swap.py)

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)
STAGE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.frames_decoded = Counter("sightline_frames_decoded_total", "Frames decoded from a source",
                                      ["stream"], registry=r)
        self.frames_inferred = Counter("sightline_frames_inferred_total", "Frames classified by the model",
                                       ["stream"], registry=r)
        self.frames_dropped = Counter("sightline_frames_dropped_total", "Frames discarded before a result, by reason",
                                      ["stream", "reason"], registry=r)
        self.latency = Histogram("sightline_end_to_end_latency_seconds",
                                 "Capture (or due time, for paced files) to prediction", ["stream"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.stage_latency = Histogram("sightline_stage_latency_seconds", "Time spent per pipeline stage",
                                       ["stage"], buckets=STAGE_BUCKETS, registry=r)
        self.batch_size = Histogram("sightline_batch_size", "Frames per model batch", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.stream_up = Gauge("sightline_stream_up", "1 while the stream delivers frames", ["stream"], registry=r)
        self.stream_state = Gauge("sightline_stream_state", "1 for the stream's current state", ["stream", "state"],
                                  registry=r)
        self.reconnects = Counter("sightline_reconnects_total", "Reconnect attempts after a source failed",
                                  ["stream"], registry=r)
        self.sink_errors = Counter("sightline_sink_errors_total", "Sink writes that failed", ["stream", "sink"],
                                   registry=r)
        self.stream_fps = Gauge("sightline_stream_fps", "Frames classified per second over the last seconds",
                                ["stream"], registry=r)
        self.corrupt_packets = Counter("sightline_corrupt_packets_total",
                                       "Packets the demuxer flagged corrupt or the decoder rejected (skipped)",
                                       ["stream"], registry=r)
        self.frames_lost = Counter("sightline_frames_lost_total",
                                   "Frames lost for good: missing from the source (timestamp gaps) or not recorded",
                                   ["stream", "reason"], registry=r)
        self.records_lost = Counter("sightline_records_lost_total",
                                    "Output records (JSONL lines) not written because the write failed (disk full)",
                                    ["stream", "sink"], registry=r)
        self.model_info = Gauge("sightline_model_info", "The served model (value is always 1)",
                                ["arch", "classes", "device", "precision", "model"], registry=r)
        self.model_swaps = Counter("sightline_model_swaps_total", "Model hot-swaps asked for, by result",
                                   ["result"], registry=r)
        for result in SWAP_RESULTS:
            self.model_swaps.labels(result)
        self.stage = {s: self.stage_latency.labels(s) for s in STAGES}
        self._sinks: dict[str, set[str]] = {}  # sink label values per stream, to forget them with it

    def set_model(self, arch: str, classes: int, device: str, precision: str, model: str = "") -> None:
        """``model``: the served model's id (bundle content hash), which changes with a hot-swap."""
        self.model_info.clear()
        self.model_info.labels(arch, str(classes), device, precision, model).set(1)

    def watch_gpu_memory(self, read: Callable[[], tuple[int, int]]) -> None:
        """Export allocated/reserved bytes from ``read`` at scrape time (CUDA only)."""
        self.registry.register(_GpuMemoryCollector(read))

    def stream(self, name: str) -> StreamMetrics:
        return StreamMetrics(self, name)

    def sink_error(self, stream: str, sink: str) -> None:
        self._sinks.setdefault(stream, set()).add(sink)
        self.sink_errors.labels(stream, sink).inc()

    def record_lost(self, stream: str, sink: str, n: int) -> None:
        self._sinks.setdefault(stream, set()).add(sink)
        self.records_lost.labels(stream, sink).inc(n)

    def forget_stream(self, name: str) -> None:
        for metric, extra in ((self.frames_decoded, ()), (self.frames_inferred, ()), (self.latency, ()),
                              (self.stream_up, ()), (self.reconnects, ()), (self.stream_fps, ()),
                              (self.corrupt_packets, ())):
            _remove(metric, (name, *extra))
        for reason in DROP_REASONS:
            _remove(self.frames_dropped, (name, reason))
        for reason in LOSS_REASONS:
            _remove(self.frames_lost, (name, reason))
        for state in STATES:
            _remove(self.stream_state, (name, state))
        for sink in self._sinks.pop(name, ()):
            _remove(self.sink_errors, (name, sink))
            _remove(self.records_lost, (name, sink))


class StreamMetrics:
    """Children bound to one stream's label, created once when the stream is added."""

    def __init__(self, metrics: Metrics, name: str) -> None:
        self._m = metrics
        self.name = name
        self.decoded = metrics.frames_decoded.labels(name)
        self.inferred = metrics.frames_inferred.labels(name)
        self.latency = metrics.latency.labels(name)
        self.up = metrics.stream_up.labels(name)
        self.reconnects = metrics.reconnects.labels(name)
        self.fps = metrics.stream_fps.labels(name)
        self.decode_stage = metrics.stage["decode"]
        self.dropped = {reason: metrics.frames_dropped.labels(name, reason) for reason in DROP_REASONS}
        self.corrupt = metrics.corrupt_packets.labels(name)
        self.lost = {reason: metrics.frames_lost.labels(name, reason) for reason in LOSS_REASONS}
        self.states = {state: metrics.stream_state.labels(name, state) for state in STATES}

    def set_state(self, state: str) -> None:
        for name, gauge in self.states.items():
            gauge.set(1 if name == state else 0)
        self.up.set(1 if state == "live" else 0)

    def sink_error(self, sink: str) -> None:
        self._m.sink_error(self.name, sink)

    def record_lost(self, sink: str, n: int) -> None:
        self._m.record_lost(self.name, sink, n)


class _GpuMemoryCollector(Collector):
    def __init__(self, read: Callable[[], tuple[int, int]]) -> None:
        self._read = read

    def collect(self):  # type: ignore[override]
        allocated, reserved = self._read()
        family = GaugeMetricFamily("sightline_gpu_memory_bytes", "CUDA memory held by the model process",
                                   labels=["kind"])
        family.add_metric(["allocated"], allocated)
        family.add_metric(["reserved"], reserved)
        yield family


def _remove(metric, labels: tuple[str, ...]) -> None:
    try:
        metric.remove(*labels)
    except KeyError:
        return
