"""Prometheus, as one reader of the plain statistics (``stats.py``): everything computed at scrape time.

The pipeline's threads count into ``StreamStats``/``StageStats`` and never call Prometheus. ``Metrics``
registers one collector that, when ``/metrics`` is scraped, reads the watched pipeline's registered
streams, its stage histograms and its current classifier, and builds every family from them. A removed
stream's series disappear with it; a swapped model shows in ``sightline_model_info`` on the next scrape.

Every series a stream can have exists from its first scrape, at 0: reasons and states from the fixed
tuples, sinks from the names the stream declared when it was built (``StreamStats.declare_sinks``), swap
results from ``SWAP_RESULTS`` (a counter that appears only when it first counts makes ``rate()`` and
``increase()`` miss that first count, and dashboards show "no data" instead of 0).

Labels come from finite sets only: ``stream`` and ``input`` (names from the config), ``roles``, ``stage``,
``reason``, ``sink``, ``state``. Never URLs, credentials or frame ids.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString
from sightline.stream.capacity import CapacityStats
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
from sightline.stream.storage.layout import KINDS
from sightline.stream.storage.stats import StorageStats

STATES = tuple(s.value for s in StreamState)
SWAP_RESULTS = ("swapped", "unchanged", "refused", "failed")  # model hot-swaps (stream/pipeline/model_swap.py)
LOGIN_FAILURES = ("wrong", "limited")  # a wrong password or token; a try refused while its address is limited


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
        self.login_failures = Counter("sightline_login_failures", "Failed logins (the login page and HTTP Basic), "
                                      "by reason", ["reason"], registry=self.registry)
        for reason in LOGIN_FAILURES:
            self.login_failures.labels(reason)

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
        yield from _capacity_families(getattr(views[0], "capacity", None) if views else None)
        yield from _storage_families(getattr(views[0], "storage", None) if views else None)
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
    yield from _input_families(streams)
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


def _input_families(streams: list[StreamStats]) -> Iterator[Metric]:
    """Per input of each stream (streams[].inputs; one, "main", for a stream with one url): connection and figures.
    The classify input's are the stream's own; the others are read on connections of their own, never decoded."""
    rows = [(s.name, i) for s in streams for i in s.inputs_snapshot()["inputs"]]  # type: ignore[union-attr]
    up = GaugeMetricFamily("sightline_input_up", "1 while the input's connection delivers packets",
                           labels=["stream", "input", "roles"])
    families = {key: CounterMetricFamily(f"sightline_input_{key}_total", doc, labels=["stream", "input"])
                for key, doc in (("packets", "Packets read on the input's connection"),
                                 ("bytes", "Bytes of video packets read on the input's connection"),
                                 ("reconnects", "Reconnect attempts of the input after it failed or stalled"),
                                 ("frames_decoded", "Frames decoded from the input (0 for an input only recorded)"))}
    for stream, row in rows:
        up.add_metric([stream, row["name"], "+".join(row["roles"])], 1 if row["state"] == StreamState.LIVE else 0)
        for key, family in families.items():
            family.add_metric([stream, row["name"]], row[key])
    yield up
    yield from families.values()


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
    # the samples HistogramMetricFamily.add_metric makes, without its per-bucket list and dict building
    # (200 streams' latency histograms are ~3,800 samples a scrape)
    add, bucket, count, summed = family.samples.append, f"{name}_bucket", f"{name}_count", f"{name}_sum"
    bounds: dict[tuple[float, ...], tuple[str, ...]] = {}
    for label, hist in series:
        counts, total = hist.read()
        les = bounds.get(hist.buckets)
        if les is None:
            les = bounds[hist.buckets] = tuple(_bound(b) for b in (*hist.buckets, float("inf")))
        base = {} if label == () else {labels[0]: str(label)}
        running = 0
        for le, n in zip(les, counts, strict=True):
            running += n
            add(Sample(bucket, {**base, "le": le}, running))
        add(Sample(count, base, running))
        add(Sample(summed, dict(base), total))
    return family


def _bound(value: float) -> str:
    return floatToGoString(value)  # the same bucket labels prometheus_client's own Histogram writes


def _cuda_memory_reader(classifier: Any) -> Callable[[], tuple[int, int]] | None:
    device = getattr(classifier, "device", None)
    if device is None or getattr(device, "type", None) != "cuda":
        return None
    import torch

    return lambda: (torch.cuda.memory_allocated(device), torch.cuda.memory_reserved(device))


def _capacity_families(capacity: CapacityStats | None) -> Iterator[Metric]:
    """The box's capacity (capacity.py), over its window; nothing where it is not measured (a cluster's controller:
    each worker's own /metrics has them)."""
    if capacity is None:
        return
    rates = capacity.box()
    window = f" over the last {capacity.window_s} s"
    for name, doc, value in (
            ("sightline_capacity_demand_per_second",
             "Frames to classify per second the streams asked for (served + dropped because the model was behind)"
             + window, rates.demand_per_s),
            ("sightline_capacity_served_per_second", "Frames per second handed to the model" + window,
             rates.served_per_s),
            ("sightline_capacity_overload_ratio",
             "Demand / served: 1 while every frame asked for is classified, 1.5 when the streams ask for half as "
             "much again as the model classifies (0: nothing asked)" + window, rates.ratio),
            ("sightline_capacity_over", "1 while the box is over capacity (from a ratio of 1.1 until back under 1.02)",
             1.0 if capacity.over_capacity() else 0.0)):
        yield GaugeMetricFamily(name, doc, value=value)


def _storage_families(storage: StorageStats | None) -> Iterator[Metric]:
    """output_dir's disk (storage/stats.py), every series at 0 until the first retention pass; nothing where there is
    no output_dir here (a cluster's controller: each worker's own /metrics has them)."""
    if storage is None:
        return
    figures = storage.figures()
    kinds: dict[str, dict[str, Any]] = figures["kinds"]  # type: ignore[assignment]
    last: dict[str, Any] = figures["retention"]  # type: ignore[assignment]

    def per_kind(family: type[GaugeMetricFamily] | type[CounterMetricFamily], name: str, doc: str,
                 value: Callable[[dict[str, Any]], float]) -> Metric:
        metric = family(name, doc, labels=["kind"])
        for kind in KINDS:
            metric.add_metric([kind], value(kinds[kind]))
        return metric

    yield per_kind(GaugeMetricFamily, "sightline_storage_bytes", "Bytes of output_dir by kind of file, as of the "
                   "last retention pass", lambda k: k["bytes"])
    yield per_kind(GaugeMetricFamily, "sightline_storage_files", "Files in output_dir by kind, as of the last "
                   "retention pass", lambda k: k["files"])
    yield per_kind(CounterMetricFamily, "sightline_retention_deleted_files", "Files deleted by retention, by kind",
                   lambda k: k["deleted_files"])
    yield per_kind(CounterMetricFamily, "sightline_retention_freed_bytes", "Bytes freed by retention, by kind",
                   lambda k: k["freed_bytes"])
    yield per_kind(CounterMetricFamily, "sightline_storage_write_errors", "Writes to output_dir that failed (disk "
                   "full, I/O error), by kind", lambda k: k["write_errors"])
    yield per_kind(GaugeMetricFamily, "sightline_storage_writes_failing", "1 from a kind's failed write until its "
                   "next good one", lambda k: 0 if k["failing"] is None else 1)
    for name, doc, value in (
            ("sightline_storage_free_bytes", "Free bytes on output_dir's volume, as of the last retention pass",
             figures["free_bytes"] or 0),
            ("sightline_storage_volume_bytes", "Size of output_dir's volume", figures["volume_bytes"] or 0),
            ("sightline_storage_min_free_bytes", "The free space retention keeps (storage.retention.min_free_gb)",
             figures["min_free_bytes"]),
            ("sightline_retention_behind", "1 while the last retention pass left a kind over its size budget or the "
             "free space under the floor", 0 if last["behind"] is None else 1),
            ("sightline_retention_last_pass_seconds", "How long the last retention pass took", last["duration_s"]),
            ("sightline_retention_last_pass_timestamp_seconds", "When the last retention pass finished (Unix time; "
             "0 before the first)", last["finished_at"] or 0)):
        yield GaugeMetricFamily(name, doc, value=value)
    yield CounterMetricFamily("sightline_retention_errors", "Files retention could not delete (vanished, EACCES)",
                              value=last["errors"])


# -- the text exposition ---------------------------------------------------------------------------------------------

_LEGACY_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LEGACY_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_TYPES = {"counter": "counter", "gauge": "gauge", "histogram": "histogram", "summary": "summary",
          "unknown": "untyped"}  # what this path writes (the others are renamed or split by generate_latest)
_OM_SUFFIXES = ("_created", "_gsum", "_gcount")


def exposition(registry: Collector) -> bytes:
    """The Prometheus text format of ``registry``: byte for byte what ``prometheus_client.generate_latest`` writes.

    Its writer validates and escapes every label name of every sample (~4 us a sample): with 200 streams a
    scrape is ~7,500 samples, ~30 ms of the event loop's time on an idle 2-core box and several times that
    beside 400 busy threads. Here names are checked once per family and label values escaped once per value;
    a family with anything this path does not write (timestamps, exemplars, names outside the legacy set,
    OpenMetrics-only samples) is written by ``generate_latest`` itself."""
    out: list[str] = []
    escaped: dict[str, str] = {}  # label value -> escaped
    numbers: dict[int, str] = {}  # count -> Go's spelling (counts repeat a lot)
    for metric in registry.collect():
        if not _plain(metric):
            out.append(generate_latest(_Single(metric)).decode("utf-8"))
            continue
        name = metric.name + "_total" if metric.type == "counter" else metric.name
        doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {_TYPES[metric.type]}\n")
        for sample in metric.samples:
            value = numbers.get(sample.value) if type(sample.value) is int else None
            if value is None:
                value = floatToGoString(sample.value)
                if type(sample.value) is int:  # not floats: 0.0 and -0.0 are one key but two spellings
                    numbers[sample.value] = value
            labels = sample.labels
            if not labels:
                out.append(f"{sample.name} {value}\n")
                continue
            parts = []
            for key in sorted(labels):
                raw = labels[key]
                text = escaped.get(raw)
                if text is None:
                    text = escaped[raw] = raw.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
                parts.append(f'{key}="{text}"')
            out.append(f"{sample.name}{{{','.join(parts)}}} {value}\n")
    return "".join(out).encode("utf-8")


def _plain(metric: Metric) -> bool:
    """Every name legacy-valid, no timestamps, exemplars or OpenMetrics-only samples (what ``exposition`` writes)."""
    if metric.type not in _TYPES or not _LEGACY_NAME.match(metric.name):
        return False
    labels: set[str] = set()
    om = {metric.name + suffix for suffix in _OM_SUFFIXES}
    for sample in metric.samples:
        if (sample.timestamp is not None or sample.exemplar is not None or sample.native_histogram is not None
                or sample.name in om or not _LEGACY_NAME.match(sample.name)):
            return False
        labels.update(sample.labels)
    return all(_LEGACY_LABEL.match(label) for label in labels)


class _Single:
    def __init__(self, metric: Metric) -> None:
        self._metric = metric

    def collect(self) -> Iterator[Metric]:
        yield self._metric
