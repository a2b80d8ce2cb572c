"""The streaming pipeline: sources -> per-stream queues -> batcher -> inference worker -> per-stream outputs.

Threads do all the heavy work (decode, model, encode); the asyncio side only starts and stops
streams, waits, and serves HTTP. Each stream has its own decode thread and output thread, so a
slow or failing stream never stalls the others.

``Pipeline`` is a facade over three parts with one job each: ``StreamFactory`` (stream_factory.py) builds a
stream's parts, ``StreamRegistry`` (registry.py) keeps streams by name and decides who may be added or
removed, ``StreamRunner`` (runner.py) starts and stops threads, the inference worker and the capture
watchdog. Statistics are plain objects (stats.py); Prometheus reads them at scrape time (metrics.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from sightline.model.classifier import Classifier
from sightline.model.errors import ConfigError
from sightline.stream.capacity import CapacityStats
from sightline.stream.config import RunConfig, StreamConfig, check_source, redact_url
from sightline.stream.errors import (
    DuplicateStreamError,
    StreamBusyError,
    StreamOutputError,
    TooManyStreamsError,
    UnknownStreamError,
)
from sightline.stream.inference.batcher import Batcher
from sightline.stream.inference.lanes import Routes
from sightline.stream.inference.model_holder import ModelHolder, ModelSpec, ServedModel
from sightline.stream.inference.workers import create_worker
from sightline.stream.lifecycle import StreamState
from sightline.stream.outputs.annotated_video import VideoOut
from sightline.stream.outputs.sinks import Sink
from sightline.stream.pipeline.registry import StreamRegistry
from sightline.stream.pipeline.runner import StreamRunner
from sightline.stream.pipeline.stream_factory import StreamFactory
from sightline.stream.pipeline.stream_runtime import OUTPUT_QUEUE, StreamOutput, StreamRuntime
from sightline.stream.sources.hwdecode import probe_nvdec, software_decode
from sightline.stream.stats import StageStats, StreamStats
from sightline.stream.storage.retention import Retention, RetentionThread
from sightline.stream.storage.stats import StorageStats

if TYPE_CHECKING:
    from sightline.stream.metrics import Metrics

log = logging.getLogger(__name__)

__all__ = ["OUTPUT_QUEUE", "DuplicateStreamError", "Pipeline", "StreamBusyError", "StreamOutput",
           "StreamOutputError", "StreamRuntime", "TooManyStreamsError", "UnknownStreamError"]




class Pipeline:
    def __init__(self, classifier: Classifier, config: RunConfig, metrics: Metrics | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 extra_sinks: Callable[[StreamConfig], list[Sink]] | None = None,
                 storage: StorageStats | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self.clock = clock
        # Set by the API when it adds or removes a stream: from then on the service runs until it is told to
        # stop, not until its streams have finished (an operator replacing a camera must not end it).
        self.streams_changed_by_api = False
        self.stage_stats = StageStats()
        self.capacity = CapacityStats(clock=clock)  # frames to classify asked for vs served (status, /readyz, metrics)
        # output_dir: sizes, free space, retention, write failures (status, metrics); shared with the event hub
        self.storage = storage if storage is not None else StorageStats()
        # retention runs wherever a pipeline runs (one process, or each cluster worker over its own output_dir)
        self.retention = RetentionThread(Retention(config.output_dir, config.storage.retention, self.storage,
                                                   self._event_footage), config.storage.retention.interval_s)
        self.batcher = Batcher(config.batching.batch_size(classifier.device.type), config.batching.max_wait_ms / 1000,
                               clock, self.capacity)
        self.routes = Routes()
        self.worker = create_worker(classifier, self.batcher, config.model.topk, self.routes, self.stage_stats,
                                    clock, lanes=config.model.workers,
                                    throughput=any(not s.live for s in config.streams),
                                    cuda_graphs=config.model.cuda_graphs)
        self.hwdecode = (probe_nvdec(classifier.device.index) if classifier.device.type == "cuda"
                         else software_decode("the model runs on the CPU"))
        self.models = ModelHolder(ServedModel.of(classifier, ModelSpec.of(config.model)))  # model_swap.py
        self.worker.models = self.models
        self.video_out = VideoOut(config.annotated_video, metrics)  # annotated video: WebRTC viewers, publish
        self.events: Any = None  # the event service (stream/events) whoever builds the service attaches
        self.factory = StreamFactory(classifier, config, self.batcher, self.stage_stats, self.hwdecode, clock,
                                     extra_sinks, self.video_out, storage=self.storage)
        self.registry = StreamRegistry(config.server.max_streams)
        self.runner = StreamRunner(self.worker, self.routes, self.factory, self.registry.runtimes, clock)
        self._started = False
        if metrics is not None:
            metrics.watch(self)  # Prometheus reads stream_stats()/stage_stats/classifier at scrape time

    @property
    def classifier(self) -> Classifier:
        """The model in use: the inference worker reads it once per batch."""
        return self.worker.classifier

    @classifier.setter
    def classifier(self, classifier: Classifier) -> None:
        """Swap the model between two batches (and for streams added from now on)."""
        self.worker.classifier = classifier
        self.factory.classifier = classifier

    @property
    def model_id(self) -> str:
        """The serving model's id (12 hex digits of its bundle's content hash)."""
        return self.models.current.id

    @property
    def swap_counts(self) -> dict[str, int]:
        """Model hot-swaps asked for, by result (read by Prometheus at scrape time)."""
        return self.models.swap_counts

    @property
    def extra_sinks(self) -> Callable[[StreamConfig], list[Sink]] | None:
        """More sinks per stream (replay evaluation collects results this way; event rules too)."""
        return self.factory.extra_sinks

    @extra_sinks.setter
    def extra_sinks(self, extra: Callable[[StreamConfig], list[Sink]] | None) -> None:
        self.factory.extra_sinks = extra

    @property
    def watchdog(self):  # noqa: ANN201 (CaptureWatchdog; kept off the import list)
        return self.runner.watchdog

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the inference worker, the capture watchdog and every configured stream."""
        if self._started:
            return
        self._started = True
        self.runner.start()
        self.retention.start()
        for stream in self.config.streams:
            self.add_stream(stream, check=False)  # load_run_config already checked the files

    def add_stream(self, config: StreamConfig, check: bool = True) -> StreamRuntime:
        """Register and start a stream (see ``StreamRegistry.add``)."""
        name = config.name

        def build() -> StreamRuntime:  # under the registry's lock, after its name and cap checks
            if check:  # a file check (no decoding): cheap enough to hold the lock for
                problem = check_source(config, self.config.media_root)
                if problem:
                    raise ConfigError(f"streams.{name}.url: {problem}")
            try:
                runtime = self.factory.build(config)
                runtime.capacity = self.capacity
                return runtime
            except OSError as exc:  # an output file cannot be opened: build undid its queue
                raise StreamOutputError(f"stream {name!r}: cannot open its outputs in the output directory "
                                        f"({exc.strerror or type(exc).__name__})") from None

        runtime = self.registry.add(name, build, self.runner.start_stream)
        log.info("stream %s: started (%s, %s)", name, redact_url(config.source_url), config.mode)
        return runtime

    def remove_stream(self, name: str, timeout: float = 10.0) -> StreamRuntime:
        """Stop a stream, finalize its sinks, forget it. Exactly one caller stops a stream: a concurrent
        removal gets StreamBusyError, an unknown name UnknownStreamError."""
        runtime = self.registry.claim(name)
        self.runner.stop_stream(runtime, timeout)
        self.registry.forget(runtime)
        return runtime

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop every source, drain what is in flight, finalize sinks, stop the watchdog and the worker."""
        self.models.closing.set()  # a swap stuck loading (a stalled mount) gives up; shutdown never waits on it
        runtimes = self.registry.runtimes()
        for runtime in runtimes:
            self.runner.signal_stop(runtime)
        for runtime in runtimes:
            self.runner.stop_stream(runtime, timeout)
        self.runner.stop(timeout)
        self.retention.stop(timeout)

    def _event_footage(self) -> list[tuple[str, float, float]]:
        """The events' footage retention keeps (on the retention thread): none without events."""
        return [] if self.events is None else self.events.footage()

    # -- queries -----------------------------------------------------------------------------------

    def names(self) -> list[str]:
        return self.registry.names()

    def get(self, name: str) -> StreamRuntime:
        return self.registry.get(name)

    def runtimes(self) -> list[StreamRuntime]:
        return self.registry.runtimes()

    def stream_stats(self) -> list[StreamStats]:
        return [r.stats for r in self.registry.runtimes()]

    def statuses(self) -> list[dict[str, object]]:
        """Plain figures per stream (name, URL redacted, mode, its stats' snapshot) for summaries and logs.

        The API's JSON (labels, preview links) is built by the service layer (``service.status.stream_status``);
        the core never imports it."""
        return [{"name": r.config.name, "url": redact_url(r.config.source_url), "mode": r.config.mode,
                 **r.stats.snapshot()} for r in self.registry.runtimes()]

    def snapshot(self, name: str) -> np.ndarray | None:
        """The latest annotated frame of a stream (rendered on request, not per frame)."""
        latest = self.get(name).output.latest
        return None if latest is None else latest.annotated(name)

    @property
    def finished(self) -> bool:
        runtimes = self.registry.runtimes()
        return bool(runtimes) and all(r.finished for r in runtimes)

    def exit_code(self) -> int:
        """0 when no stream failed, 1 when every stream failed, 3 when some did."""
        states = [r.stats.state for r in self.registry.runtimes()]
        return exit_code_for(sum(s == StreamState.FAILED for s in states), len(states))

    async def run(self, duration: float | None = None, stop: asyncio.Event | None = None) -> int:
        """Run until every stream finished (when the config has streams and the API changed none of them),
        ``duration`` passed, or ``stop``."""
        await asyncio.to_thread(self.start)
        try:
            await wait_until_done(lambda: self.finished and not self.streams_changed_by_api, not self.config.streams,
                                  self.clock, duration, stop)
        finally:
            await asyncio.to_thread(self.shutdown)
        return self.exit_code()


def exit_code_for(failed: int, streams: int) -> int:
    """0 when no stream failed, 1 when every stream failed, 3 when some did."""
    if not failed:
        return 0
    return 1 if failed == streams else 3


async def wait_until_done(finished: Callable[[], bool], forever: bool, clock: Callable[[], float],
                          duration: float | None = None, stop: asyncio.Event | None = None,
                          poll_s: float = 0.05) -> None:
    """Until ``stop`` is set, ``duration`` has passed, or (unless ``forever``) every stream ``finished``."""
    deadline = None if duration is None else clock() + duration
    while not (stop is not None and stop.is_set()):
        if deadline is not None and clock() >= deadline:
            return
        if not forever and finished():
            return
        await asyncio.sleep(poll_s)
