"""The streaming pipeline: sources -> per-stream queues -> batcher -> inference worker -> per-stream outputs.

Threads do all the heavy work (decode, model, encode); the asyncio side only starts and stops
streams, waits, and serves HTTP. Each stream has its own decode thread and output thread, so a
slow or failing stream never stalls the others.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sightline.model.classifier import Classifier
from sightline.model.errors import ConfigError
from sightline.stream.batcher import Batcher
from sightline.stream.buffers import BoundedQueue, drain
from sightline.stream.config import RunConfig, StreamConfig, check_source, redact_url
from sightline.stream.errors import StreamError
from sightline.stream.frames import Result, Smoothed
from sightline.stream.hwdecode import probe_nvdec, software_decode
from sightline.stream.inference import create_worker
from sightline.stream.metrics import Metrics
from sightline.stream.model_swap import ModelHolder, ModelSpec, ServedModel, publish_model
from sightline.stream.recording import RecordingWriter
from sightline.stream.sinks import JsonlSink, Labelled, Sink, VideoRecorder
from sightline.stream.smoothing import Smoother
from sightline.stream.sources import FrameSource, PreviewDemand, VideoSource
from sightline.stream.stats import StreamStats
from sightline.stream.videoout import VideoOut

log = logging.getLogger(__name__)

OUTPUT_QUEUE = {True: 8, False: 256}  # live: small, newest wins; fast: roomy, blocking


class DuplicateStreamError(StreamError):
    pass


class UnknownStreamError(StreamError):
    pass


class StreamBusyError(StreamError):
    """The stream is being removed (API: 409); a retry after it is gone succeeds."""


class TooManyStreamsError(StreamError):
    """``server.max_streams`` streams are registered (API: 429)."""


class StreamOutputError(StreamError):
    """A stream's outputs (prediction log, recording) cannot be opened (API: 503); nothing is registered."""


class StreamOutput:
    """One stream's output thread: smoothing, the labels to show, sinks, and the latest frame for previews."""

    def __init__(self, name: str, smoother: Smoother, sinks: list[Sink], stats: StreamStats, live: bool,
                 metrics: Metrics | None = None) -> None:
        self.name = name
        self.smoother = smoother
        self.sinks = sinks
        self.stats = stats
        self.metrics = metrics
        self.queue: BoundedQueue[Result] = BoundedQueue(
            OUTPUT_QUEUE[live], "latest" if live else "block", on_drop=lambda _: stats.on_dropped("output_behind"))
        self.latest: Labelled | None = None
        self.done = threading.Event()
        self._top: tuple = ()
        self._smoothed: Smoothed | None = None
        self._latency_ms: float | None = None
        self.model_id: str | None = None  # the model that classified the latest result (changes with a swap)
        self._handled = -1  # seq of the last frame handled: a recording waits for its frame's labels
        self._progress = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"output-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, result: Result) -> None:
        while not self.queue.put(result, timeout=0.5):
            if self.queue.closed:
                return

    def finish(self) -> None:
        self.queue.close()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            drain(self.queue, self.handle)
        finally:
            for sink in self.sinks:
                self._close(sink)
            with self._progress:
                self.done.set()
                self._progress.notify_all()
            if self.stats.state == "ended":  # said when it happens, not only in the summary at exit
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
        if self.metrics and self.sinks:
            self.metrics.stage["sink"].observe(time.perf_counter() - started)

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
    recording: RecordingWriter | None = None
    removing: bool = False  # set once, under the pipeline's lock, by the one remove_stream that stops it

    @property
    def finished(self) -> bool:
        return self.output.done.is_set() and (self.recording is None or self.recording.done.is_set())

    def watch_preview(self) -> None:
        """A preview client is looking: keep full-size pictures for the next seconds."""
        if self.source.preview is not None:
            self.source.preview.touch()

    def status(self) -> dict[str, object]:
        latest = self.output.latest
        raw = smoothed = None
        if latest is not None:
            raw = [{"index": p.index, "label": p.label, "prob": round(p.prob, 5)} for p in latest.top]
            if latest.smoothed is not None:
                smoothed = {"label": latest.smoothed.label, "prob": round(latest.smoothed.prob, 5)}
        return {"name": self.config.name, "url": redact_url(self.config.url), "mode": self.config.mode,
                **self.stats.snapshot(), "prediction": raw, "smoothed": smoothed, "model": self.output.model_id}


class Pipeline:
    def __init__(self, classifier: Classifier, config: RunConfig, metrics: Metrics | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 extra_sinks: Callable[[StreamConfig], list[Sink]] | None = None) -> None:
        self.classifier = classifier
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.extra_sinks = extra_sinks  # more sinks per stream (replay evaluation collects results this way)
        self.batcher = Batcher(config.batching.batch_size(classifier.device.type), config.batching.max_wait_ms / 1000,
                               clock)
        self.worker = create_worker(classifier, self.batcher, config.model.topk, self._deliver, self._end_stream,
                                    metrics, clock, lanes=config.model.workers,
                                    throughput=any(not s.live for s in config.streams),
                                    cuda_graphs=config.model.cuda_graphs)
        self.models = ModelHolder(ServedModel.of(classifier, ModelSpec.of(config.model)))  # model_swap.py
        self.worker.models = self.models
        self.hwdecode = (probe_nvdec(classifier.device.index) if classifier.device.type == "cuda"
                         else software_decode("the model runs on the CPU"))
        self._streams: dict[str, StreamRuntime] = {}
        self._lock = threading.Lock()
        self._started = False
        self.video_out = VideoOut(config.annotated_video, metrics)  # annotated video: WebRTC viewers, publish
        self.events: Any = None  # the event service (stream/events) whoever builds the service attaches
        if metrics is not None:
            publish_model(metrics, self.models.current)
            if classifier.device.type == "cuda":
                dev = classifier.device
                metrics.watch_gpu_memory(lambda: (torch.cuda.memory_allocated(dev), torch.cuda.memory_reserved(dev)))

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the inference worker and every configured stream."""
        if self._started:
            return
        self._started = True
        self.worker.start()
        for stream in self.config.streams:
            self.add_stream(stream, check=False)  # load_run_config already checked the files

    def add_stream(self, config: StreamConfig, check: bool = True) -> StreamRuntime:
        """Register and start a stream. The registry is the lifecycle: a name is registered only with its
        threads started, and stays registered (refusing a new stream of that name) until it is stopped."""
        if check:
            problem = check_source(config, self.config.media_root)
            if problem:
                raise ConfigError(f"streams.{config.name}.url: {problem}")
        name = config.name
        with self._lock:
            existing = self._streams.get(name)
            if existing is not None:
                if existing.removing:
                    raise DuplicateStreamError(f"stream {name!r} is still being removed; try again")
                raise DuplicateStreamError(f"a stream named {name!r} already exists")
            limit = self.config.server.max_streams
            if len(self._streams) >= limit:
                raise TooManyStreamsError(f"{limit} streams are registered (server.max_streams); remove one first")
            try:
                runtime = self._build(config)
            except OSError as exc:  # an output file cannot be opened: undo what _build registered
                self.batcher.close_stream(name)
                if self.metrics:
                    self.metrics.forget_stream(name)
                raise StreamOutputError(f"stream {name!r}: cannot open its outputs in the output directory "
                                        f"({exc.strerror or type(exc).__name__})") from None
            self._streams[name] = runtime
            runtime.output.start()
            if runtime.recording is not None:
                runtime.recording.start()
            runtime.source.start()
        log.info("stream %s: started (%s, %s)", name, redact_url(config.url), config.mode)
        return runtime

    def _build(self, config: StreamConfig) -> StreamRuntime:
        name = config.name
        stats = StreamStats(name, self.metrics.stream(name) if self.metrics else None, clock=self.clock)
        try:
            queue = self.batcher.add_stream(name, config.capacity, "latest" if config.live else "block",
                                            on_drop=lambda _: stats.on_dropped("stale"))
        except ValueError:  # the previous stream of this name has not drained out of the batcher yet
            raise DuplicateStreamError(f"stream {name!r} is still draining; try again") from None
        stop = threading.Event()
        preview = PreviewDemand(self.clock)
        size = self.classifier.preprocessor.working_size
        extra = self.extra_sinks(config) if self.extra_sinks is not None else []
        # every frame full size for the visual outputs: recordings, publishing, event clips
        display = (config.record or config.publish is not None
                   or any(getattr(s, "needs_display", False) for s in extra))
        source: FrameSource
        if config.is_webrtc:  # aiortc is imported only where WebRTC is used
            from sightline.stream.ice import IcePolicy
            from sightline.stream.webrtc import WebRtcSource

            source = WebRtcSource(config, queue, stats, size, keep_display=display, stop=stop, clock=self.clock,
                                  preview=preview, ice=IcePolicy.from_server(self.config.server))
        else:
            source = VideoSource(config, queue, stats, size, keep_display=display, stop=stop, clock=self.clock,
                                 preview=preview, hwdecode=self.hwdecode)
        sinks: list[Sink] = []
        out_dir = self.config.output_dir
        if self.config.log_predictions:
            sinks.append(JsonlSink(out_dir / f"{name}.jsonl", name,
                                   on_lost=lambda n: stats.on_records_lost("jsonl", n)))
        sinks.extend(extra)
        sinks.append(self.video_out.sink(config, preview, fps_hint=lambda: source.fps_hint))
        smoother = Smoother(self.classifier.class_names, self.config.smoothing.ema, self.config.smoothing.hysteresis)
        output = StreamOutput(name, smoother, sinks, stats, config.live, self.metrics)
        recording = None
        if config.record:  # fed by the source with every decoded frame, not by the model's (lossy, live) copy
            recorder = VideoRecorder(out_dir / f"{name}.mp4", name, fps=lambda: source.fps_hint)
            recording = RecordingWriter(recorder, output, stats, config.live, stop, clock=self.clock)
            source.recording = recording
        return StreamRuntime(config, stats, source, output, stop, recording)

    def remove_stream(self, name: str, timeout: float = 10.0) -> StreamRuntime:
        """Stop a stream, finalize its sinks, forget it. Exactly one caller stops a stream: a concurrent
        removal gets StreamBusyError, an unknown name UnknownStreamError."""
        with self._lock:
            runtime = self._streams.get(name)
            if runtime is None:
                raise UnknownStreamError(f"no stream named {name!r}")
            if runtime.removing:
                raise StreamBusyError(f"stream {name!r} is already being removed")
            runtime.removing = True
        self._stop_runtime(runtime, timeout)
        with self._lock:
            if self._streams.get(name) is runtime:
                del self._streams[name]
                if self.metrics:
                    self.metrics.forget_stream(name)
        return runtime

    def _stop_runtime(self, runtime: StreamRuntime, timeout: float) -> None:
        runtime.stop.set()
        runtime.source.wake()
        runtime.source.join(timeout)
        if not runtime.output.done.wait(timeout):
            log.warning("stream %s: output did not drain within %.0fs", runtime.config.name, timeout)
        if runtime.recording is not None and not runtime.recording.done.wait(timeout):
            log.warning("stream %s: recording not finalized within %.0fs", runtime.config.name, timeout)
        if runtime.stats.state not in ("ended", "failed"):
            runtime.stats.set_state("stopped")

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop every source, drain what is in flight, finalize sinks, stop the worker."""
        runtimes = list(self._streams.values())
        for runtime in runtimes:
            runtime.stop.set()
            runtime.source.wake()
        for runtime in runtimes:
            self._stop_runtime(runtime, timeout)
        if self._started:
            self.worker.stop(timeout)

    # -- data path callbacks (inference thread) -----------------------------------------------------

    def _deliver(self, result: Result) -> None:
        runtime = self._streams.get(result.frame.stream_id)
        if runtime is not None:
            runtime.output.submit(result)

    def _end_stream(self, name: str) -> None:
        runtime = self._streams.get(name)
        if runtime is not None:
            runtime.output.finish()

    # -- queries -----------------------------------------------------------------------------------

    def names(self) -> list[str]:
        return list(self._streams)

    def get(self, name: str) -> StreamRuntime:
        try:
            return self._streams[name]
        except KeyError:
            raise UnknownStreamError(f"no stream named {name!r}") from None

    async def webrtc_offer(self, name: str, sdp: str, kind: str = "offer") -> tuple[str, str]:
        """Answer a WebRTC publisher's SDP offer for a ``webrtc://`` stream: (answer sdp, type)."""
        source = self.get(name).source
        from sightline.stream.webrtc import WebRtcSource

        if not isinstance(source, WebRtcSource):
            raise StreamError(f"stream {name!r} is not a webrtc:// stream")
        answer = await source.accept(sdp, kind)
        return answer.sdp, answer.type

    def statuses(self) -> list[dict[str, object]]:
        return [r.status() for r in list(self._streams.values())]

    def snapshot(self, name: str) -> np.ndarray | None:
        """The latest annotated frame of a stream (rendered on request, not per frame)."""
        latest = self.get(name).output.latest
        return None if latest is None else latest.annotated(name)

    @property
    def finished(self) -> bool:
        runtimes = list(self._streams.values())
        return bool(runtimes) and all(r.finished for r in runtimes)

    def exit_code(self) -> int:
        """0 when no stream failed, 1 when every stream failed, 3 when some did."""
        states = [r.stats.state for r in self._streams.values()]
        failed = sum(s == "failed" for s in states)
        if not failed:
            return 0
        return 1 if failed == len(states) else 3

    async def run(self, duration: float | None = None, stop: asyncio.Event | None = None) -> int:
        """Run until every stream finished (when the config has streams), ``duration`` passed, or ``stop``."""
        await asyncio.to_thread(self.start)
        serve_forever = not self.config.streams
        deadline = None if duration is None else self.clock() + duration
        try:
            while not (stop is not None and stop.is_set()):
                if deadline is not None and self.clock() >= deadline:
                    break
                if not serve_forever and self.finished:
                    break
                await asyncio.sleep(0.05)
        finally:
            await asyncio.to_thread(self.shutdown)
        return self.exit_code()
