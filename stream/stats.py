"""Plain per-stream statistics: what the API reports (fps, p50/p99 over a recent window, counters).

Prometheus gets the same events through the bound children in ``StreamMetrics``; this object keeps
the small amount of state a JSON status needs, and nothing else.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np
from sightline.model.echo import bounded
from sightline.stream.metrics import StreamMetrics
from sightline.stream.urls import scrub_urls


class StreamStats:
    def __init__(self, name: str, metrics: StreamMetrics | None = None, clock: Callable[[], float] = time.monotonic,
                 window_s: float = 30.0, fps_window_s: float = 5.0) -> None:
        self.name = name
        self.metrics = metrics
        self.clock = clock
        self.window_s = window_s
        self.fps_window_s = fps_window_s
        self.state = "connecting"
        self.error: str | None = None
        self.frames_decoded = 0
        self.frames_inferred = 0
        self.dropped: dict[str, int] = {}
        self.reconnects = 0
        self.sink_errors: dict[str, int] = {}
        self.corrupt_packets = 0
        self.frames_lost: dict[str, int] = {}  # reason -> frames lost for good (metrics.LOSS_REASONS)
        self.records_lost: dict[str, int] = {}  # sink -> records not written
        self._inferred_at: deque[float] = deque()
        self._latency: deque[tuple[float, float]] = deque(maxlen=4096)
        self._lock = threading.Lock()

    def set_state(self, state: str, error: str | None = None) -> None:
        self.state = state
        if error is not None or state in ("live", "connecting"):
            self.error = None if error is None else bounded(scrub_urls(error), 500)  # shown to anyone: no secrets
        if self.metrics:
            self.metrics.set_state(state)

    def on_decoded(self) -> None:
        self.frames_decoded += 1
        if self.metrics:
            self.metrics.decoded.inc()

    def on_decode_stage(self, seconds: float) -> None:
        if self.metrics:
            self.metrics.decode_stage.observe(seconds)

    def on_dropped(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        if self.metrics:
            self.metrics.dropped[reason].inc()

    def on_reconnect(self) -> None:
        self.reconnects += 1
        if self.metrics:
            self.metrics.reconnects.inc()

    def on_sink_error(self, sink: str) -> None:
        self.sink_errors[sink] = self.sink_errors.get(sink, 0) + 1
        if self.metrics:
            self.metrics.sink_error(sink)

    def on_corrupt_packet(self) -> None:
        self.corrupt_packets += 1
        if self.metrics:
            self.metrics.corrupt.inc()

    def on_lost(self, reason: str, n: int = 1) -> None:
        if n <= 0:
            return
        with self._lock:
            self.frames_lost[reason] = self.frames_lost.get(reason, 0) + n
        if self.metrics:
            self.metrics.lost[reason].inc(n)

    def on_records_lost(self, sink: str, n: int) -> None:
        if n <= 0:
            return
        with self._lock:
            self.records_lost[sink] = self.records_lost.get(sink, 0) + n
        if self.metrics:
            self.metrics.record_lost(sink, n)

    def on_inferred(self, latency_s: float) -> None:
        now = self.clock()
        self.frames_inferred += 1
        with self._lock:
            self._inferred_at.append(now)
            self._latency.append((now, latency_s))
        if self.metrics:
            self.metrics.inferred.inc()
            self.metrics.latency.observe(latency_s)

    def fps(self) -> float:
        now = self.clock()
        with self._lock:
            while self._inferred_at and now - self._inferred_at[0] > self.fps_window_s:
                self._inferred_at.popleft()
            n = len(self._inferred_at)
            if n < 2:
                return 0.0
            span = max(now - self._inferred_at[0], 1e-6)
        fps = (n - 1) / span if span < self.fps_window_s / 2 else n / self.fps_window_s
        if self.metrics:
            self.metrics.fps.set(fps)
        return fps

    def recent_latencies(self) -> list[float]:
        """Capture-to-result latencies (seconds) of the frames classified within the window."""
        now = self.clock()
        with self._lock:
            return [lat for t, lat in self._latency if now - t <= self.window_s]

    def latency_quantiles(self) -> dict[str, float | None]:
        recent = self.recent_latencies()
        if not recent:
            return {"p50_ms": None, "p99_ms": None}
        p50, p99 = np.percentile(np.asarray(recent), [50, 99])
        return {"p50_ms": round(float(p50) * 1000, 2), "p99_ms": round(float(p99) * 1000, 2)}

    def snapshot(self) -> dict[str, object]:
        return {
            "state": self.state,
            "error": self.error,
            "fps": round(self.fps(), 2),
            **self.latency_quantiles(),
            "frames_decoded": self.frames_decoded,
            "frames_inferred": self.frames_inferred,
            "dropped": dict(self.dropped),
            "reconnects": self.reconnects,
            "sink_errors": dict(self.sink_errors),
            "corrupt_packets": self.corrupt_packets,
            "frames_lost": dict(self.frames_lost),
            "records_lost": dict(self.records_lost),
        }
