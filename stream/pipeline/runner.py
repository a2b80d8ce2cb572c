"""Runs streams: starts and stops a stream's threads, the inference worker, and the capture watchdog.

Results reach a stream through its route (``inference.Routes``), registered here when the stream starts
and dropped by the worker once the stream's input has drained; nothing calls back into the pipeline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sightline.stream.buffers import BoundedQueue
from sightline.stream.errors import DuplicateStreamError
from sightline.stream.frames import Frame
from sightline.stream.inference.lanes import InferenceWorker, Routes
from sightline.stream.lifecycle import TERMINAL_STATES, StreamState
from sightline.stream.pipeline.capture_watchdog import CaptureWatchdog
from sightline.stream.pipeline.stream_factory import StreamFactory
from sightline.stream.pipeline.stream_runtime import StreamRuntime
from sightline.stream.sources.video_source import FrameSource, PacketTap, RecordingTap

log = logging.getLogger(__name__)

# A source that has not returned this long after its stop is inside a blocking FFmpeg call (opening a camera that
# accepts the connection and never answers waits open_timeout_s; a read waits stall_timeout_s): it is cut loose
# rather than waited for. Every other source returns within milliseconds of its stop.
STUCK_SOURCE_S = 1.0


class StreamRunner:
    def __init__(self, worker: InferenceWorker, routes: Routes, factory: StreamFactory,
                 runtimes: Callable[[], list[StreamRuntime]], clock: Callable[[], float] = time.monotonic) -> None:
        self.worker = worker
        self.routes = routes
        self.factory = factory
        self.watchdog = CaptureWatchdog(runtimes, self.restart_source, clock)
        self.started = False

    def start(self) -> None:
        self.started = True
        self.worker.start()
        self.watchdog.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.watchdog.stop()
        if self.started:
            self.worker.stop(timeout)

    def start_stream(self, runtime: StreamRuntime) -> None:
        name = runtime.config.name
        try:
            self.routes.add(name, runtime.output)
        except ValueError:  # the previous stream of this name has not delivered its last results yet
            self.factory.discard(name)
            raise DuplicateStreamError(f"stream {name!r} is still draining; try again") from None
        runtime.output.start()
        if runtime.recording is not None:
            runtime.recording.start()
        for reader in runtime.inputs:
            reader.start()
        runtime.source.start()

    def signal_stop(self, runtime: StreamRuntime) -> None:
        runtime.stop.set()
        runtime.source.wake()

    def stop_stream(self, runtime: StreamRuntime, timeout: float) -> None:
        """Stop the source, let in-flight frames drain through the output, finalize the recording."""
        self.signal_stop(runtime)
        source = runtime.source
        if not source.join(min(timeout, STUCK_SOURCE_S)):
            log.info("stream %s: the source is inside a blocking FFmpeg call; not waiting for it",
                     runtime.config.name)
            self._cut_loose(source)
        for reader in runtime.inputs:
            if not reader.join(STUCK_SOURCE_S):
                log.info("stream %s: input %s is inside a blocking FFmpeg call; not waiting for it",
                         runtime.config.name, reader.stats.name)
                reader.detach().close()
        if not runtime.output.done.wait(timeout):
            log.warning("stream %s: output did not drain within %.0fs", runtime.config.name, timeout)
        if runtime.recording is not None and not runtime.recording.done.wait(timeout):
            log.warning("stream %s: recording not finalized within %.0fs", runtime.config.name, timeout)
        if runtime.stats.state not in TERMINAL_STATES:
            runtime.stats.set_state(StreamState.STOPPED)

    def restart_source(self, runtime: StreamRuntime, reason: str) -> None:
        """The watchdog found the source stalled: a fresh source thread takes over its queue and recording."""
        old = runtime.source
        queue, recording, packets, stats = old.queue, old.recording, old.packets, runtime.stats
        old.detach()  # if the stalled thread ever wakes, it finds nothing of the stream's
        if runtime.stop.is_set():  # removed meanwhile: the stream's stop ends it; close what the old one held
            self._close(queue, recording, packets)
            return
        stats.set_state(StreamState.RECONNECTING, reason)
        stats.on_reconnect()
        fresh = self.factory.source(runtime.config, queue, stats, runtime.stop, runtime.preview, old.keep_display)
        fresh.recording, fresh.packets = recording, packets
        runtime.source = fresh
        fresh.start()

    def _cut_loose(self, source: FrameSource) -> None:
        """Detach a stuck source and close what it held for the stream, as its thread would on returning: the
        output drains and the recording is finalized now; the thread ends on its own when FFmpeg returns."""
        queue, recording, packets = source.queue, source.recording, source.packets
        source.detach()
        self._close(queue, recording, packets)

    @staticmethod
    def _close(queue: BoundedQueue[Frame], recording: RecordingTap | None, packets: PacketTap | None) -> None:
        queue.close()
        for tap in (recording, packets):
            if tap is not None:
                tap.close()
