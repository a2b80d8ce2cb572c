"""Plain statistics on the hot path: per-stream counters and windows, process-wide stage histograms.

Nothing here knows Prometheus (anchor: vLLM's ``IterationStats`` beside ``StatLoggerBase``): the
threads only count into these objects, and ``metrics.Metrics`` reads them when Prometheus scrapes.
Reading (``fps()``, ``snapshot()``) has no side effects. State changes are checked in one place,
``StreamStats._change_state``, against the table in ``lifecycle.py``.
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sightline.model.echo import bounded
from sightline.stream.lifecycle import CLEAR_ERROR_STATES, TERMINAL_STATES, StreamState, allowed
from sightline.stream.urls import scrub_urls

log = logging.getLogger(__name__)

STAGES = ("decode", "queue", "preprocess", "inference", "sink")
DROP_REASONS = ("stale", "output_behind", "inference_error")
# Data lost for good (not a live policy's choice): frames the source never delivered (a gap in its
# timestamps: cut or corrupt input) and decoded frames the recorder could not take in time.
LOSS_REASONS = ("source_gap", "recorder_behind")

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)
STAGE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Histogram:
    """Bucket counts and a sum (Prometheus semantics: a value lands in the first bucket ``>=`` it)."""

    def __init__(self, buckets: Iterable[float]) -> None:
        self.buckets = tuple(buckets)
        self._counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        i = bisect_left(self.buckets, value)
        with self._lock:
            self._counts[i] += 1
            self._sum += value

    def read(self) -> tuple[list[int], float]:
        """(per-bucket counts, the last one +Inf; sum), consistent with each other."""
        with self._lock:
            return list(self._counts), self._sum

    @property
    def count(self) -> int:
        with self._lock:
            return sum(self._counts)


@dataclass(frozen=True, slots=True)
class DecodeStatus:
    """Which frames a stream's source decodes now, and why (``sources/decode_policy.py`` decides)."""

    setting: str  # streams[].decode: auto | all | keyframes
    mode: str  # in force: all | keyframes
    reason: str  # one line: why this mode
    keyframe_interval_s: float | None  # measured (median of the last few GOPs); None until two keyframes
    classify_fps_max: float | None  # the most this stream can be classified per second in this mode (None: no cap)

    def as_dict(self) -> dict[str, object]:
        interval = self.keyframe_interval_s
        ceiling = self.classify_fps_max
        return {"setting": self.setting, "mode": self.mode, "reason": self.reason,
                "keyframe_interval_s": None if interval is None else round(interval, 3),
                "classify_fps_max": None if ceiling is None else round(ceiling, 3)}


@dataclass(frozen=True, slots=True)
class BatchStats:
    """What one inference step measured (returned by the step, recorded by the worker)."""

    classified: int  # frames that went through the model (0: none needed it, or the batch failed)
    preprocess_s: float | None  # None when nothing was classified
    inference_s: float | None
    queue_waits: tuple[float, ...]  # per frame of the batch: decoded -> batched


@dataclass
class StageStats:
    """Process-wide: time per pipeline stage and frames per model batch."""

    stages: dict[str, Histogram] = field(default_factory=lambda: {s: Histogram(STAGE_BUCKETS) for s in STAGES})
    batch_size: Histogram = field(default_factory=lambda: Histogram(BATCH_BUCKETS))

    def record(self, batch: BatchStats) -> None:
        queue = self.stages["queue"]
        for wait in batch.queue_waits:
            queue.observe(wait)
        if batch.preprocess_s is not None:
            self.stages["preprocess"].observe(batch.preprocess_s)
        if batch.inference_s is not None:
            self.stages["inference"].observe(batch.inference_s)
        if batch.classified:
            self.batch_size.observe(batch.classified)


class InputStats:
    """One input of a camera on a connection of its own (a recorded main stream): its state and figures.

    The stream's classify input is the stream itself (``StreamStats``); this is for the others. Its state uses
    the streams' vocabulary (connecting, live, reconnecting, stopped) and the same transition table."""

    def __init__(self, stream: str, name: str, roles: Iterable[str], clock: Callable[[], float] = time.monotonic,
                 url: str = "") -> None:
        self.stream = stream
        self.name = name
        self.roles = tuple(roles)
        self.url = url  # redacted (``redact_url``): shown to anyone who may see the stream
        self.clock = clock
        self.state = StreamState.CONNECTING
        self.error: str | None = None
        self.packets = 0
        self.bytes = 0
        self.reconnects = 0
        self.frames_decoded = 0  # a record input is never decoded; a view input only while someone watches
        self.last_packet_at: float | None = None
        self._state_lock = threading.Lock()

    def set_state(self, state: StreamState, error: str | None = None) -> bool:
        with self._state_lock:
            if not allowed(self.state, state):
                return False
            self.state = state
            if error is not None or state in CLEAR_ERROR_STATES:
                self.error = None if error is None else bounded(scrub_urls(error), 500)
            return True

    def on_packet(self, size: int) -> None:
        self.packets += 1
        self.bytes += size
        self.last_packet_at = self.clock()

    def on_reconnect(self) -> None:
        self.reconnects += 1

    def snapshot(self) -> dict[str, object]:
        age = None if self.last_packet_at is None else round(self.clock() - self.last_packet_at, 3)
        return {"name": self.name, "roles": list(self.roles), "url": self.url, "state": self.state.value,
                "error": self.error,
                "packets": self.packets, "bytes": self.bytes, "reconnects": self.reconnects,
                "frames_decoded": self.frames_decoded, "last_packet_age_s": age}


class StreamStats:
    def __init__(self, name: str, stages: StageStats | None = None, clock: Callable[[], float] = time.monotonic,
                 window_s: float = 30.0, fps_window_s: float = 5.0) -> None:
        self.name = name
        self.stages = stages if stages is not None else StageStats()
        self.clock = clock
        self.window_s = window_s
        self.fps_window_s = fps_window_s
        self.state = StreamState.CONNECTING
        self.error: str | None = None
        self.frames_decoded = 0
        self.frames_inferred = 0
        self.dropped: dict[str, int] = {}
        self.reconnects = 0
        self.sink_errors: dict[str, int] = {}
        self.corrupt_packets = 0
        self.frames_lost: dict[str, int] = {}  # reason -> frames lost for good (LOSS_REASONS)
        self.records_lost: dict[str, int] = {}  # sink -> records not written
        # the stream's sinks, and those that keep records (JSONL lines): their counters are exported at 0
        # from the start (declare_sinks), not only after a first error
        self.sinks: tuple[str, ...] = ()
        self.record_sinks: tuple[str, ...] = ()
        self.latency = Histogram(LATENCY_BUCKETS)  # capture -> result, every classified frame
        self.last_frame_at: float | None = None  # clock() of the last decoded frame
        # clock() of the last packet read: the capture watchdog's liveness (a keyframes-only stream with a long
        # GOP decodes a frame every few seconds but reads packets all the time)
        self.last_packet_at: float | None = None
        self.decode: DecodeStatus | None = None  # None: the source decodes no compressed video (WebRTC)
        self.packets = 0  # packets read by the stream's own source (its classify input)
        self.bytes = 0
        # the classify input's name and roles, and the stream's other inputs (streams[].inputs)
        self.input_name = "main"
        self.input_roles: tuple[str, ...] = ()
        self.input_url = ""  # redacted
        self.inputs: tuple[InputStats, ...] = ()
        self.first_frame_at: float | None = None  # clock() of the first decoded frame: where active_s starts
        self.last_inferred_at: float | None = None
        self._inferred_at: deque[float] = deque()
        self._latency: deque[tuple[float, float]] = deque(maxlen=4096)
        self._lock = threading.Lock()
        self._state_lock = threading.Lock()

    # -- state --------------------------------------------------------------------------------------

    def set_state(self, state: StreamState | str, error: str | None = None) -> bool:
        """Change state (see ``_change_state``); False when the table does not allow it."""
        return self._change_state(StreamState(state), error)

    def _change_state(self, new: StreamState, error: str | None = None) -> bool:
        """The one place a stream's state changes: checked against ``states.TRANSITIONS``."""
        with self._state_lock:
            old = self.state
            if not allowed(old, new):
                log.warning("stream %s: state change %s -> %s refused%s", self.name, old, new,
                            f" ({bounded(scrub_urls(error), 200)})" if error else "")
                return False
            self.state = new
            if error is not None or new in CLEAR_ERROR_STATES:
                self.error = None if error is None else bounded(scrub_urls(error), 500)  # shown to anyone
            return True

    def declare_sinks(self, sinks: Iterable[str], record_sinks: Iterable[str] = ()) -> None:
        """Name the stream's sinks (once it is built), so their error and loss counters exist at 0."""
        self.sinks = tuple(dict.fromkeys(sinks))
        self.record_sinks = tuple(dict.fromkeys(record_sinks))

    # -- events (hot path: plain counting) ---------------------------------------------------------

    def on_decoded(self) -> None:
        self.frames_decoded += 1
        self.last_frame_at = self.clock()
        if self.first_frame_at is None:
            self.first_frame_at = self.last_frame_at

    def on_packet(self, size: int = 0) -> None:
        self.packets += 1
        self.bytes += size
        self.last_packet_at = self.clock()

    def set_decode(self, status: DecodeStatus) -> None:
        self.decode = status

    def on_decode_stage(self, seconds: float) -> None:
        self.stages.stages["decode"].observe(seconds)

    def on_sink_stage(self, seconds: float) -> None:
        self.stages.stages["sink"].observe(seconds)

    def on_dropped(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def on_reconnect(self) -> None:
        self.reconnects += 1

    def on_sink_error(self, sink: str) -> None:
        self.sink_errors[sink] = self.sink_errors.get(sink, 0) + 1

    def on_corrupt_packet(self) -> None:
        self.corrupt_packets += 1

    def on_lost(self, reason: str, n: int = 1) -> None:
        if n <= 0:
            return
        with self._lock:
            self.frames_lost[reason] = self.frames_lost.get(reason, 0) + n

    def on_records_lost(self, sink: str, n: int) -> None:
        if n <= 0:
            return
        with self._lock:
            self.records_lost[sink] = self.records_lost.get(sink, 0) + n

    def on_inferred(self, latency_s: float) -> None:
        now = self.clock()
        self.frames_inferred += 1
        self.last_inferred_at = now
        with self._lock:
            self._inferred_at.append(now)  # trimmed here, by the writer: reads have no side effects
            while now - self._inferred_at[0] > self.fps_window_s:
                self._inferred_at.popleft()
            self._latency.append((now, latency_s))
        self.latency.observe(latency_s)

    # -- reads (no side effects) -------------------------------------------------------------------

    def fps(self) -> float:
        """Frames classified per second over the last ``fps_window_s``."""
        now = self.clock()
        with self._lock:
            stale = 0  # the writer trims on each frame: only the last few can have aged out since
            for t in self._inferred_at:
                if now - t <= self.fps_window_s:
                    break
                stale += 1
            n = len(self._inferred_at) - stale
            if n < 2:
                return 0.0
            span = max(now - self._inferred_at[stale], 1e-6)
        return (n - 1) / span if span < self.fps_window_s / 2 else n / self.fps_window_s

    def active_s(self) -> float:
        """Seconds this stream has been at work: from its first decoded frame to now, or, once it is over
        (ended, failed, stopped), to its last decoded or classified frame.

        A stream's own rate is frames over this, not over the run: a file replayed in 8 s of a 60 s run
        classified at ``frames / 8``, and a stream added late or still connecting is not diluted either."""
        start = self.first_frame_at
        if start is None:
            return 0.0
        if self.state not in TERMINAL_STATES:
            return max(0.0, self.clock() - start)
        ends = [t for t in (self.last_frame_at, self.last_inferred_at) if t is not None]
        return max(0.0, max(ends, default=start) - start)

    def recent_latencies(self) -> list[float]:
        """Capture-to-result latencies (seconds) of the frames classified within the window."""
        now = self.clock()
        with self._lock:
            return [lat for t, lat in self._latency if now - t <= self.window_s]

    def latency_quantiles(self) -> dict[str, float | None]:
        recent = self.recent_latencies()
        if not recent:
            return {"p50_ms": None, "p99_ms": None}
        recent.sort()  # plain Python: numpy's percentile cost ~0.4 ms a stream, 200 streams in every GET /api/streams
        return {"p50_ms": round(quantile(recent, 0.50) * 1000, 2), "p99_ms": round(quantile(recent, 0.99) * 1000, 2)}

    def snapshot(self) -> dict[str, object]:
        return {
            "state": self.state.value,
            "error": self.error,
            "fps": round(self.fps(), 2),
            **self.latency_quantiles(),
            "frames_decoded": self.frames_decoded,
            "frames_inferred": self.frames_inferred,
            "active_s": round(self.active_s(), 3),
            "dropped": dict(self.dropped),
            "reconnects": self.reconnects,
            "sink_errors": dict(self.sink_errors),
            "corrupt_packets": self.corrupt_packets,
            "frames_lost": dict(self.frames_lost),
            "records_lost": dict(self.records_lost),
            "decode": None if self.decode is None else self.decode.as_dict(),
            **self.inputs_snapshot(),
        }

    def inputs_snapshot(self) -> dict[str, object]:
        """Every input, the classify input (this stream's own source) first, and the names of those down."""
        age = None if self.last_packet_at is None else round(self.clock() - self.last_packet_at, 3)
        own = {"name": self.input_name, "roles": list(self.input_roles), "url": self.input_url,
               "state": self.state.value,
               "error": self.error, "packets": self.packets, "bytes": self.bytes, "reconnects": self.reconnects,
               "frames_decoded": self.frames_decoded, "last_packet_age_s": age}
        inputs = [own, *(i.snapshot() for i in self.inputs)]
        down = [i["name"] for i in inputs if i["state"] != StreamState.LIVE.value]
        return {"inputs": inputs, "inputs_down": down}


def quantile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of sorted values, interpolated linearly between the two nearest (numpy's default)."""
    at = q * (len(ordered) - 1)
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)
