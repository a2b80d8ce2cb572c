"""Builds one stream's parts from its config: source, input queue, sinks, output, recording.

Building has no side effects beyond the batcher's input queue (which ``StreamFactory.discard`` undoes)
and the files the sinks open; registering and starting the parts is the registry's job.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sightline.model.classifier import Classifier
from sightline.stream.buffers import BoundedQueue
from sightline.stream.config import RunConfig, StreamConfig, redact_url
from sightline.stream.errors import DuplicateStreamError
from sightline.stream.events.packet_clips import PacketClips
from sightline.stream.frames import Frame, FrameDemand
from sightline.stream.inference.batcher import Batcher
from sightline.stream.outputs.annotated_video import VideoOut
from sightline.stream.outputs.passthrough import PassthroughWriter
from sightline.stream.outputs.prediction_log import JsonlSink
from sightline.stream.outputs.publish import Publisher
from sightline.stream.outputs.recording import RecordingWriter, SegmentedRecorder
from sightline.stream.outputs.remux_view import RemuxedView
from sightline.stream.outputs.segments import SegmentPlan
from sightline.stream.outputs.sinks import Sink, VideoRecorder
from sightline.stream.outputs.smoothing import Smoother
from sightline.stream.outputs.view_feed import ViewFeed
from sightline.stream.pipeline.stream_runtime import StreamOutput, StreamRuntime
from sightline.stream.sources.hwdecode import HwDecode
from sightline.stream.sources.packet_source import PacketSource
from sightline.stream.sources.video_source import FrameSource, PacketTap, Taps, VideoSource
from sightline.stream.stats import InputStats, StageStats, StreamStats
from sightline.stream.storage.stats import StorageStats


def keeps_display(config: StreamConfig) -> bool:
    """Whether the stream's own config needs every classified input's frame full size (an annotated recording,
    publishing, unless a view input of its own is published)."""
    return config.every_frame_output is not None and not separate_view(config)


def separate_view(config: StreamConfig) -> bool:
    """Viewers see an input other than the classified one (``ViewFeed``)."""
    return config.view_input.label != config.classify_input.label


SourceBuilder = Callable[..., FrameSource]


class StreamFactory:
    def __init__(self, classifier: Classifier, config: RunConfig, batcher: Batcher, stages: StageStats,
                 hwdecode: HwDecode, clock: Callable[[], float] = time.monotonic,
                 extra_sinks: Callable[[StreamConfig], list[Sink]] | None = None,
                 video_out: VideoOut | None = None, *, storage: StorageStats) -> None:
        self.classifier = classifier  # for new streams: working size and class names
        self.config = config
        self.batcher = batcher
        self.stages = stages
        self.hwdecode = hwdecode
        self.clock = clock
        self.extra_sinks = extra_sinks
        self.video_out = video_out  # the annotated-video encoders (WebRTC viewers, publishing)
        self.storage = storage  # the output_dir's figures: write failures, files open

    def build(self, config: StreamConfig) -> StreamRuntime:
        """Every part of a stream, not started. OSError: an output cannot be opened (the queue is undone)."""
        name = config.name
        stats = StreamStats(name, self.stages, clock=self.clock)
        classify = config.classify_input
        stats.input_name, stats.input_roles = classify.label, tuple(classify.roles)
        stats.input_url = redact_url(classify.url)
        try:
            queue = self.batcher.add_stream(name, config.capacity, "latest" if config.live else "block",
                                            on_drop=lambda _: stats.on_dropped("stale"))
        except ValueError:  # the previous stream of this name has not drained out of the batcher yet
            raise DuplicateStreamError(f"stream {name!r} is still draining; try again") from None
        try:
            return self._parts(config, stats, queue)
        except BaseException:
            self.discard(name)
            raise

    def discard(self, name: str) -> None:
        """Undo ``build`` for a stream that will not start: its queue drains out of the batcher."""
        self.batcher.close_stream(name)

    def _parts(self, config: StreamConfig, stats: StreamStats, queue: BoundedQueue[Frame]) -> StreamRuntime:
        name = config.name
        stop = threading.Event()
        preview = FrameDemand(self.clock)  # asked of the classify input (event clips; previews when it is the view)
        view = FrameDemand(self.clock) if separate_view(config) else preview
        extra = self.extra_sinks(config) if self.extra_sinks is not None else []
        clips_from_record = config.live and config.clips_input == "record" and config.record_input is not None
        packet_clips = []
        for sink in extra:
            if hasattr(sink, "demand"):  # a sink that asks for every frame at times (an event clip)
                sink.demand = preview
            if clips_from_record and hasattr(sink, "packet_clips"):  # event clips cut from the recorded input
                sink.packet_clips = PacketClips(self.config.events, name, clock=self.clock)
                packet_clips.append(sink.packet_clips)
        # every frame full size for the visual outputs: recordings, publishing, event clips
        display = keeps_display(config) or any(getattr(s, "needs_display", False) for s in extra)
        source = self.source(config, queue, stats, stop, preview, display)
        sinks: list[Sink] = []
        logs = self.config.prediction_level != "off"
        if logs:
            sinks.append(JsonlSink.open(self.config, config, self.storage,
                                        on_lost=lambda n: stats.on_records_lost(JsonlSink.name, n)))
        sinks.extend(extra)
        encoder = remuxed = None
        if self.video_out is not None and config.view == "remux":  # the view input's own packets, no labels
            remuxed = RemuxedView(name)
            self.video_out.adopt(remuxed)
            if config.publish:
                Publisher(name, config.publish, self.video_out.config, self.video_out.metrics).attach(remuxed)
        elif self.video_out is not None:
            encoder = self.video_out.sink(config, view)
            if config.publish:  # the annotated video pushed to a media server, from the same encoder
                Publisher(name, config.publish, self.video_out.config, self.video_out.metrics).attach(encoder)
            if view is preview:
                sinks.append(encoder)
        smoother = Smoother(self.classifier.class_names, self.config.smoothing.ema, self.config.smoothing.hysteresis)
        output = StreamOutput(name, smoother, sinks, stats, config.live)
        taps: dict[str, list[PacketTap]] = {i.label: [] for i in config.input_list}
        if packet_clips:
            taps[config.record_input.label].extend(packet_clips)
        if remuxed is not None:
            taps[config.view_input.label].append(remuxed)
        readers = {i.label: InputStats(name, i.label, i.roles, clock=self.clock, url=redact_url(i.url))
                   for i in config.separate_inputs}
        if view is not preview:  # the view input's pictures, decoded while watched, with the classified labels
            if encoder is not None:
                output.view_sinks.append(encoder)
            watched = view.wanted if encoder is None else (lambda: view.wanted() or encoder.subscribers > 0)
            taps[config.view_input.label].append(ViewFeed(name, watched, output.current_labels, stats.fps,
                                                          output.show, readers[config.view_input.label],
                                                          clock=self.clock))
        recording = self._recording(config, stats, output, stop, source, taps)
        inputs = self._inputs(config, stats, stop, source, taps, readers)
        names = [sink.name for sink in sinks] + ([VideoRecorder.name] if recording is not None else [])
        stats.declare_sinks(names, [JsonlSink.name] if logs else [])
        return StreamRuntime(config, stats, source, output, stop, recording, preview=view, inputs=inputs)

    def _inputs(self, config: StreamConfig, stats: StreamStats, stop: threading.Event, source: FrameSource,
                taps: dict[str, list[PacketTap]], input_stats: dict[str, InputStats]) -> list[PacketSource]:
        """The packet taps on each input: the classify input's go to its source; every other input that has a tap
        is read on a connection of its own (a ``PacketSource``, nothing decoded)."""
        own = taps.pop(config.classify_input.label)
        if own:
            source.packets = own[0] if len(own) == 1 else Taps(own)
        readers = []
        for inp in config.separate_inputs:
            wanted = taps.get(inp.label)
            if not wanted:
                continue
            tap = wanted[0] if len(wanted) == 1 else Taps(wanted)
            readers.append(PacketSource(config.for_input(inp), input_stats[inp.label], stop, tap, clock=self.clock))
        stats.inputs = tuple(r.stats for r in readers)
        return readers

    def _recording(self, config: StreamConfig, stats: StreamStats, output: StreamOutput, stop: threading.Event,
                   source: FrameSource, taps: dict[str, list[PacketTap]]) -> RecordingWriter | PassthroughWriter | None:
        """The stream's recorder, fed by its record input: every packet read (passthrough) or every frame its
        source decoded (annotated), not the model's (lossy, live) copy."""
        record = config.record_input
        if config.record_mode is None or record is None:
            return None
        segment_s = self.config.storage.recordings.segment_s if config.runs_until_stopped else None
        plan = SegmentPlan(self.config.output_dir, config.name, segment_s, config.live, self.storage)
        if config.record_mode == "passthrough":
            writer = PassthroughWriter(plan, stats, config.live, stop)
            taps[record.label].append(writer)
            return writer
        recording = RecordingWriter(SegmentedRecorder(plan, clock=self.clock), output, stats, config.live, stop,
                                    clock=self.clock)
        source.recording = recording
        return recording

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        """The size the decoders scale to, for the model serving now (a hot-swap may change it)."""
        return self.classifier.preprocessor.working_size(height, width)

    def source(self, config: StreamConfig, queue: BoundedQueue[Frame], stats: StreamStats, stop: threading.Event,
               preview: FrameDemand | None, keep_display: bool | None = None) -> FrameSource:
        """The source thread for ``config`` (not started); the capture watchdog asks for a fresh one too.

        ``keep_display``: every decoded frame also kept full size (default: ``keeps_display(config)``)."""
        display = keeps_display(config) if keep_display is None else keep_display
        config = config.for_input(config.classify_input)  # the stream's own source opens its classify input
        size = self.working_size
        if config.is_webrtc:  # aiortc is imported only where WebRTC is used
            from sightline.stream.ice import IcePolicy
            from sightline.stream.sources.webrtc_ingest import WebRtcSource

            return WebRtcSource(config, queue, stats, size, keep_display=display, stop=stop, clock=self.clock,
                                preview=preview, ice=IcePolicy.from_server(self.config.server))
        return VideoSource(config, queue, stats, size, keep_display=display, stop=stop, clock=self.clock,
                           preview=preview, hwdecode=self.hwdecode)
