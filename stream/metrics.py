"""Prometheus, as one reader of the plain statistics (``stats.py``): everything computed at scrape time.

The pipeline's threads count into ``StreamStats``/``StageStats`` and never call Prometheus. ``Metrics``
registers one collector that, when ``/metrics`` is scraped, reads the watched pipeline's registered
streams, its stage histograms and its current classifier, and builds every family from them. A removed
stream's series disappear with it; a swapped model shows in ``sightline_model_info`` on the next scrape.

Every series a stream can have exists from its first scrape, at 0: reasons and states from the fixed
tuples, sinks from the names the stream declared when it was built (``StreamStats.declare_sinks``), swap
results from ``SWAP_RESULTS`` (a counter that appears only when it first counts makes ``rate()`` and
``increase()`` miss that first count, and dashboards show "no data" instead of 0).

Labels come from finite sets only: ``stream`` (names from the config), ``stage``, ``reason``,
``sink``, ``state``. Never URLs, credentials or frame ids.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from sightline.stream.lifecycle import StreamState
from sightline.stream.stats import (  # noqa: F401  (re-exported: the metric vocabulary lives with the stats)
    BATCH_BUCKETS,
    DROP_REASONS,
    LATENCY_BUCKETS,
    LOSS_REASONS,
    STAGE_BUCKETS,
    STAGES,
    Histogram,
    StageStats,
    StreamStats,
)

STATES = tuple(s.value for s in StreamState)
SWAP_RESULTS = ("swapped", "unchanged", "refused", "failed")  # model hot-swaps (stream/pipeline/model_swap.py)


class MetricsView(Protocol):
    """What the collector reads at scrape time (``Pipeline`` provides it)."""

    @property
    def classifier(self) -> Any: ...

    stage_stats: StageStats

    def stream_stats(self) -> list[StreamStats]: ...

    @property
    def model_id(self) -> str: ...  # the serving model's id (bundle content hash), changes with a hot-swap

    swap_counts: dict[str, int]  # model hot-swaps asked for, by result (SWAP_RESULTS)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._views: list[MetricsView] = []
        self._gpu_memory: Callable[[], tuple[int, int]] | None = None
        self.registry.register(_PipelineCollector(self))

    def watch(self, view: MetricsView) -> None:
        """Export ``view``'s statistics from now on (a pipeline calls this once when it is built)."""
        self._views = [view]

    def watch_gpu_memory(self, read: Callable[[], tuple[int, int]]) -> None:
        """Export allocated/reserved bytes from ``read`` at scrape time (a CUDA model does this by itself)."""
        self._gpu_memory = read

    def collect(self) -> Iterator[Metric]:
        views = list(self._views)
        streams = [s for v in views for s in v.stream_stats()]
        stages = views[0].stage_stats if views else StageStats()
        classifier = views[0].classifier if views else None
        yield from _stream_families(streams)
        yield _histogram("sightline_stage_latency_seconds", "Time spent per pipeline stage", ["stage"],
                         ((stage, stages.stages[stage]) for stage in STAGES))
        yield _histogram("sightline_batch_size", "Frames per model batch", [], [((), stages.batch_size)])
        info = GaugeMetricFamily("sightline_model_info", "The served model (value is always 1)",
                                 labels=["arch", "classes", "device", "precision", "model"])
        if classifier is not None:
            d = classifier.describe()
            info.add_metric([str(d["arch"]), str(d["classes"]), str(d["device"]), str(d["precision"]),
                             str(getattr(views[0], "model_id", ""))], 1)
        yield info
        swaps = CounterMetricFamily("sightline_model_swaps_total", "Model hot-swaps asked for, by result",
                                    labels=["result"])
        counts = dict(getattr(views[0], "swap_counts", {})) if views else {}
        for result in SWAP_RESULTS:
            swaps.add_metric([result], counts.get(result, 0))
        yield swaps
        read = self._gpu_memory or _cuda_memory_reader(classifier)
        if read is not None:
            allocated, reserved = read()
            family = GaugeMetricFamily("sightline_gpu_memory_bytes", "CUDA memory held by the model process",
                                       labels=["kind"])
            family.add_metric(["allocated"], allocated)
            family.add_metric(["reserved"], reserved)
            yield family


class _PipelineCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics.collect()


def _stream_families(streams: list[StreamStats]) -> Iterator[Metric]:
    def counter(name: str, doc: str, value: Callable[[StreamStats], float]) -> CounterMetricFamily:
        family = CounterMetricFamily(name, doc, labels=["stream"])
        for s in streams:
            family.add_metric([s.name], value(s))
        return family

    def by(name: str, doc: str, kind: str, keys: Callable[[StreamStats], Iterable[str]],
           values: Callable[[StreamStats], dict[str, int]]) -> CounterMetricFamily:
        family = CounterMetricFamily(name, doc, labels=["stream", kind])
        for s in streams:
            counts = dict(values(s))
            for key in keys(s):
                family.add_metric([s.name, key], counts.get(key, 0))
        return family

    yield counter("sightline_frames_decoded_total", "Frames decoded from a source", lambda s: s.frames_decoded)
    yield counter("sightline_frames_inferred_total", "Frames classified by the model", lambda s: s.frames_inferred)
    yield by("sightline_frames_dropped_total", "Frames discarded before a result, by reason", "reason",
             lambda s: DROP_REASONS, lambda s: s.dropped)
    yield _histogram("sightline_end_to_end_latency_seconds", "Capture (or due time, for paced files) to prediction",
                     ["stream"], ((s.name, s.latency) for s in streams))
    up = GaugeMetricFamily("sightline_stream_up", "1 while the stream delivers frames", labels=["stream"])
    state = GaugeMetricFamily("sightline_stream_state", "1 for the stream's current state", labels=["stream", "state"])
    fps = GaugeMetricFamily("sightline_stream_fps", "Frames classified per second over the last seconds",
                            labels=["stream"])
    for s in streams:
        current = s.state
        up.add_metric([s.name], 1 if current == StreamState.LIVE else 0)
        for name in STATES:
            state.add_metric([s.name, name], 1 if current == name else 0)
        fps.add_metric([s.name], s.fps())
    yield up
    yield state
    yield from _decode_families(streams)
    yield counter("sightline_reconnects_total", "Reconnect attempts after a source failed", lambda s: s.reconnects)
    yield by("sightline_sink_errors_total", "Sink writes that failed", "sink",
             lambda s: sorted(set(s.sinks) | set(s.sink_errors)), lambda s: s.sink_errors)
    yield fps
    yield counter("sightline_corrupt_packets_total",
                  "Packets the demuxer flagged corrupt or the decoder rejected (skipped)", lambda s: s.corrupt_packets)
    yield by("sightline_frames_lost_total",
             "Frames lost for good: missing from the source (timestamp gaps) or not recorded", "reason",
             lambda s: LOSS_REASONS, lambda s: s.frames_lost)
    yield by("sightline_records_lost_total",
             "Output records (JSONL lines) not written because the write failed (disk full)", "sink",
             lambda s: sorted(set(s.record_sinks) | set(s.records_lost)), lambda s: s.records_lost)


def _decode_families(streams: list[StreamStats]) -> Iterator[Metric]:
    """Which frames each stream decodes (``streams[].decode``): the mode in force and the keyframe interval."""
    keyframes = GaugeMetricFamily("sightline_stream_decode_keyframes_only",
                                  "1 while the stream decodes only its keyframes, 0 while every frame",
                                  labels=["stream"])
    interval = GaugeMetricFamily("sightline_stream_keyframe_interval_seconds",
                                 "Measured keyframe interval (median of the last GOPs); absent until measured",
                                 labels=["stream"])
    for s in streams:
        decode = s.decode
        if decode is None:
            continue
        keyframes.add_metric([s.name], 1 if decode.mode == "keyframes" else 0)
        if decode.keyframe_interval_s is not None:
            interval.add_metric([s.name], decode.keyframe_interval_s)
    yield keyframes
    yield interval


def _histogram(name: str, doc: str, labels: list[str],
               series: Iterable[tuple[str | tuple[()], Histogram]]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for label, hist in series:
        counts, total = hist.read()
        buckets, running = [], 0
        for bound, n in zip((*hist.buckets, float("inf")), counts, strict=True):
            running += n
            buckets.append((_bound(bound), running))
        family.add_metric([] if label == () else [str(label)], buckets, total)
    return family


def _bound(value: float) -> str:
    return floatToGoString(value)  # the same bucket labels prometheus_client's own Histogram writes


def _cuda_memory_reader(classifier: Any) -> Callable[[], tuple[int, int]] | None:
    device = getattr(classifier, "device", None)
    if device is None or getattr(device, "type", None) != "cuda":
        return None
    import torch

    return lambda: (torch.cuda.memory_allocated(device), torch.cuda.memory_reserved(device))
