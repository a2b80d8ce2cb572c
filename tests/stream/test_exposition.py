"""``metrics.exposition`` writes what ``prometheus_client.generate_latest`` writes, byte for byte, faster."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from sightline.stream.metrics import Metrics, exposition
from sightline.stream.stats import StageStats, StreamStats


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class View:
    """What ``Metrics`` reads from a pipeline, with streams whose figures do not move while they are read."""

    classifier = None
    model_id = "abc"
    swap_counts = {"swapped": 2}

    def __init__(self, streams: list[StreamStats]) -> None:
        self._streams = streams
        self.stage_stats = StageStats()

    def stream_stats(self) -> list[StreamStats]:
        return self._streams


def streams(n: int) -> list[StreamStats]:
    clock = FakeClock()
    out = []
    for i in range(n):
        s = StreamStats(f"cam-{i}", clock=clock)
        s.declare_sinks(["annotated", "jsonl"], ["jsonl"])
        for k in range(i % 5):
            clock.now += 0.1
            s.on_decoded()
            s.on_inferred(0.01 * (k + 1) + i / 1000)
        s.on_dropped("stale")
        s.on_lost("source_gap", i)
        out.append(s)
    return out


class Odd:
    """Families the fast path hands to generate_latest: an OpenMetrics _created sample, odd label values."""

    def collect(self):
        family = GaugeMetricFamily("odd_values", 'a "doc" with \\ and\nnewline', labels=["path"])
        family.add_metric(['a "quoted" \\ back\nslash'], -0.0)
        family.add_metric(["b"], float("nan"))
        family.add_metric(["c"], float("inf"))
        family.add_metric(["d"], 1e22)
        yield family
        yield Metric("untyped_thing", "no type", "unknown")


def test_the_pipeline_families_and_prometheus_client_own_metrics_read_the_same() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.watch(View(streams(12)))
    Counter("plain_requests", "Requests", ["route"], registry=registry).labels("/x").inc(3)
    Gauge("plain_level", "A level", registry=registry).set(0.25)
    Histogram("plain_seconds", "Durations", ["kind"], registry=registry).labels("k").observe(0.3)
    Info("plain_build", "Build", registry=registry).info({"version": "1"})
    registry.register(Odd())
    assert exposition(registry) == generate_latest(registry)


@pytest.mark.parametrize("n", [0, 1, 200])
def test_same_text_for_any_number_of_streams(n: int) -> None:
    metrics = Metrics()
    metrics.watch(View(streams(n)))
    assert exposition(metrics.registry) == generate_latest(metrics.registry)
