"""Prometheus metrics of the event outputs, on the service's injected registry.

The ``output`` label is the output's name from the config (a finite set); ``reason`` comes from the
fixed tuples below. Never a URL, a host or a topic.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

# Delivery attempts that failed: no connection (or it was lost), no answer in time, an error answer.
FAILURE_REASONS = ("connect", "timeout", "rejected")
# Messages given up for good: the queue was full, the retries ran out, the receiver refused the
# message (a 4xx other than 408/429), or the service stopped before they went out.
DROP_REASONS = ("queue_full", "retries_exhausted", "rejected", "shutdown")


class OutputMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.delivered = Counter("sightline_event_output_delivered_total",
                                 "Event messages an output delivered (broker ack, 2xx answer)", ["output"], registry=r)
        self.failures = Counter("sightline_event_output_failures_total",
                                "Event delivery attempts (or broker connections) that failed, by reason",
                                ["output", "reason"], registry=r)
        self.dropped = Counter("sightline_event_output_dropped_total",
                               "Event messages an output gave up for good, by reason", ["output", "reason"],
                               registry=r)
        self.queue_depth = Gauge("sightline_event_output_queue_depth", "Event messages waiting in an output's queue",
                                 ["output"], registry=r)
        self.up = Gauge("sightline_event_output_up",
                        "1 while the output can deliver (MQTT: connected; webhook: the last attempt succeeded)",
                        ["output"], registry=r)

    def bind(self, output: str) -> BoundOutputMetrics:
        return BoundOutputMetrics(self, output)

    def forget(self, output: str) -> None:
        for metric, labels in ((self.delivered, (output,)), (self.queue_depth, (output,)), (self.up, (output,)),
                               *((self.failures, (output, r)) for r in FAILURE_REASONS),
                               *((self.dropped, (output, r)) for r in DROP_REASONS)):
            try:
                metric.remove(*labels)
            except KeyError:
                continue


class BoundOutputMetrics:
    """Children for one output, created when it starts (so every series exists from the first scrape)."""

    def __init__(self, metrics: OutputMetrics, output: str) -> None:
        self.delivered = metrics.delivered.labels(output)
        self.failures = {r: metrics.failures.labels(output, r) for r in FAILURE_REASONS}
        self.dropped = {r: metrics.dropped.labels(output, r) for r in DROP_REASONS}
        self.queue_depth = metrics.queue_depth.labels(output)
        self.up = metrics.up.labels(output)
