"""One stream at run time: its output thread (``StreamOutput``) and the parts that make it (``StreamRuntime``).

``StreamOutput`` is the stream's route for inference results (``inference.Route``): smoothing, the
labels to show, sinks, and the latest frame for previews. It counts into the stream's plain stats.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from sightline.stream.buffers import BoundedQueue, Consumer
from sightline.stream.capacity import CapacityStats
from sightline.stream.config import StreamConfig
from sightline.stream.frames import FrameDemand, Result, Smoothed
from sightline.stream.lifecycle import StreamState
from sightline.stream.outputs.passthrough import PassthroughWriter
from sightline.stream.outputs.recording import RecordingWriter
from sightline.stream.outputs.sinks import Labelled, Sink
from sightline.stream.outputs.smoothing import Smoother
from sightline.stream.sources.packet_source import PacketSource
from sightline.stream.sources.video_source import FrameSource
from sightline.stream.stats import StreamStats

log = logging.getLogger(__name__)

OUTPUT_QUEUE = {True: 8, False: 256}  # live: small, newest wins; fast: roomy, blocking
# A stream with a view input of its own shows that input's pictures; when none came for this long (nobody looked,
# or the input is down) previews fall back to the classified frames.
VIEW_STALE_S = 2.0


class StreamOutput:
    """One stream's output thread: smoothing, the labels to show, sinks, and the latest frame for previews."""

    def __init__(self, name: str, smoother: Smoother, sinks: list[Sink], stats: StreamStats, live: bool) -> None:
        self.name = name
        self.smoother = smoother
        self.sinks = sinks
        self.stats = stats
        self.queue: BoundedQueue[Result] = BoundedQueue(
            OUTPUT_QUEUE[live], "latest" if live else "block", on_drop=lambda _: stats.on_dropped("output_behind"))
        self.latest: Labelled | None = None
        self.view_sinks: list[Sink] = []  # fed by a view input of its own (``show``), not by the classified frames
        self._shown_at = -float("inf")  # clock() of the last picture from that view input
        self.done = threading.Event()
        self._top: tuple = ()
        self._smoothed: Smoothed | None = None
        self._latency_ms: float | None = None
        self.model_id: str | None = None  # the model that classified the latest result (changes with a swap)
        self._handled = -1  # seq of the last frame handled: a recording waits for its frame's labels
        self._progress = threading.Condition()
        self._consumer = Consumer(self.queue, f"output-{name}", self.handle, self._finalize)

    def start(self) -> None:
        self._consumer.start()

    def submit(self, result: Result) -> None:
        while not self.queue.put(result, timeout=0.5):
            if self.queue.closed:
                return

    def finish(self) -> None:
        self.queue.close()

    def join(self, timeout: float | None = None) -> bool:
        return self._consumer.join(timeout)

    def _finalize(self) -> None:
        for sink in self.sinks + self.view_sinks:
            self._close(sink)
        with self._progress:
            self.done.set()
            self._progress.notify_all()
        if self.stats.state == StreamState.ENDED:  # said when it happens, not only in the summary at exit
            log.info("stream %s: ended, %d frames decoded, %d classified%s", self.name, self.stats.frames_decoded,
                     self.stats.frames_inferred, f" ({self.stats.error})" if self.stats.error else "")

    def wait_handled(self, seq: int, timeout: float) -> bool:
        """Wait until frame ``seq`` (or a later one) was handled, or the output ended; False on timeout."""
        with self._progress:
            return self._progress.wait_for(lambda: self._handled >= seq or self.done.is_set(), timeout)

    def current_labels(self) -> tuple[tuple, Smoothed | None, float | None]:
        """The latest classified frame's top-k, smoothed label and latency (what overlays show)."""
        return self._top, self._smoothed, self._latency_ms

    def handle(self, result: Result) -> None:
        if result.probs is not None and result.timings is not None:
            if result.model is not None:  # a swapped-in model with other classes starts smoothing afresh
                self.model_id = result.model.id
                self.smoother.retarget(result.model.class_names)
            self._smoothed = self.smoother.update(result.probs)
            self._top = result.top
            self._latency_ms = result.timings.latency_s * 1000
            self.stats.on_inferred(result.timings.latency_s)
        elif result.frame.infer:
            self.stats.on_dropped("inference_error")
        item = Labelled(result, self._top, self._smoothed, self.stats.fps(), self._latency_ms)
        if time.monotonic() - self._shown_at > VIEW_STALE_S:
            self.latest = item
        with self._progress:
            self._handled = result.frame.seq
            self._progress.notify_all()
        started = time.perf_counter()
        for sink in self.sinks:
            try:
                sink.write(item)
            except Exception as exc:  # any sink failure is counted and logged; inference goes on
                self.stats.on_sink_error(sink.name)
                if self.stats.sink_errors[sink.name] in (1, 10, 100) or self.stats.sink_errors[sink.name] % 1000 == 0:
                    log.error("stream %s: sink %s failed (%d so far): %s", self.name, sink.name,
                              self.stats.sink_errors[sink.name], exc, exc_info=log.isEnabledFor(logging.DEBUG))
        if self.sinks:
            self.stats.on_sink_stage(time.perf_counter() - started)

    def show(self, item: Labelled) -> None:
        """A picture of the stream's own view input, with the latest labels (on that input's thread)."""
        self._shown_at = time.monotonic()
        self.latest = item
        for sink in self.view_sinks:
            try:
                sink.write(item)
            except Exception as exc:  # a viewer's encoder failing never stops the input
                self.stats.on_sink_error(sink.name)
                log.error("stream %s: sink %s failed on the view input: %s", self.name, sink.name, exc)

    def _close(self, sink: Sink) -> None:
        try:
            sink.close()
        except Exception as exc:  # a sink that cannot finalize is reported; the others still close
            self.stats.on_sink_error(sink.name)
            log.error("stream %s: closing sink %s failed: %s", self.name, sink.name, exc)


@dataclass
class StreamRuntime:
    config: StreamConfig
    stats: StreamStats
    source: FrameSource
    output: StreamOutput
    stop: threading.Event = field(default_factory=threading.Event)
    recording: RecordingWriter | PassthroughWriter | None = None  # record: annotated | passthrough
    removing: bool = False  # set once, under the registry's lock, by the one remove_stream that stops it
    preview: FrameDemand | None = None
    capacity: CapacityStats | None = None  # the box's, where this stream's share of the model is counted
    inputs: list[PacketSource] = field(default_factory=list)  # inputs read on connections of their own

    @property
    def finished(self) -> bool:
        return self.output.done.is_set() and (self.recording is None or self.recording.done.is_set())

    def watch_preview(self) -> None:
        """A preview client is looking: keep full-size pictures for the next seconds."""
        if self.preview is not None:
            self.preview.touch()
