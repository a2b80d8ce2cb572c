"""An input read for its packets only: a camera's main stream recorded (and cut into event clips) beside the
substream that is classified.

Nothing here decodes: packets go to the input's taps (a passthrough recording, event clips) as the camera sent
them, so recording a 4K main stream costs what copying its bytes costs. The input has its own connection,
reconnect backoff (``streams[].reconnect``), liveness and figures (``InputStats``); it failing never stops the
stream's classify input, and that one failing never stops it. A read that stalls ends in FFmpeg's read timeout
(``stall_timeout_s``) and a reconnect, as the classify input's does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable

import av
from sightline.stream.config import StreamConfig, redact_url
from sightline.stream.errors import SourceOpenError, SourceReadError, describe_av_error
from sightline.stream.lifecycle import StreamState
from sightline.stream.sources.video_source import SOURCE_NICE, PacketTap, backoff_delay, open_arguments
from sightline.stream.stats import InputStats

log = logging.getLogger(__name__)


class PacketSource:
    """One input's reader thread: open, hand every video packet to ``tap``, reconnect, until ``stop``."""

    def __init__(self, config: StreamConfig, stats: InputStats, stop: threading.Event, tap: PacketTap,
                 clock: Callable[[], float] = time.monotonic, seed: int | None = None) -> None:
        self.config = config  # the single-URL copy for this input (StreamConfig.for_input)
        self.stats = stats
        self.stop = stop
        self.tap = tap
        self.clock = clock
        self._rng = random.Random(seed)
        self._thread = threading.Thread(target=self._run, name=f"input-{config.name}-{stats.name}", daemon=True)

    @property
    def safe_url(self) -> str:
        return redact_url(self.config.source_url)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def detach(self) -> PacketTap:
        """Cut a thread stuck in FFmpeg loose: it hands nothing on if it ever wakes. Returns the tap it had, for
        the caller to close now."""
        tap, self.tap = self.tap, _Nowhere()
        gone = threading.Event()
        gone.set()
        self.stop = gone
        self.stats = InputStats(self.stats.stream, self.stats.name, self.stats.roles)  # throwaway figures
        return tap

    def _run(self) -> None:
        with contextlib.suppress(OSError, AttributeError):  # read at the sources' priority (see SOURCE_NICE)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), SOURCE_NICE)
        try:
            self._read_until_stopped()
        except Exception as exc:  # a bug here must not kill the process or the stream's other inputs
            log.exception("stream %s: input %s crashed", self.config.name, self.stats.name)
            self.stats.set_state(StreamState.FAILED, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self.tap.close()

    def _read_until_stopped(self) -> None:
        attempt = 0
        rc = self.config.reconnect
        while not self.stop.is_set():
            read_before = self.stats.packets
            try:
                self._session()
                reason = "stream ended"
            except (SourceOpenError, SourceReadError) as exc:
                reason = str(exc)
            if self.stop.is_set():
                break
            if self.stats.packets > read_before:
                attempt = 0
            delay = backoff_delay(attempt, rc.initial_s, rc.max_s, rc.jitter, self._rng)
            attempt += 1
            log.warning("stream %s: input %s (%s): %s; reconnecting in %.1fs", self.config.name, self.stats.name,
                        self.safe_url, reason, delay)
            self.stats.set_state(StreamState.RECONNECTING, reason)
            self.stats.on_reconnect()
            self.stop.wait(delay)
        self.stats.set_state(StreamState.STOPPED)

    def _session(self) -> None:
        url, kwargs = open_arguments(self.config)
        try:
            container = av.open(url, **kwargs)  # type: ignore[arg-type]
        except (av.FFmpegError, OSError) as exc:
            raise SourceOpenError(f"cannot open {self.safe_url}: {describe_av_error(exc)}") from exc
        try:
            if not container.streams.video:
                raise SourceOpenError(f"{self.safe_url} has no video stream")
            stream = container.streams.video[0]
            self.tap.begin(stream)
            try:
                for packet in container.demux(stream):
                    if self.stop.is_set():
                        return
                    if not packet.size:  # the demuxer's flush packet at the end
                        continue
                    self.stats.on_packet(packet.size)
                    if self.stats.state != StreamState.LIVE:
                        self.stats.set_state(StreamState.LIVE)
                    self.tap.submit(packet)
            except (av.FFmpegError, OSError) as exc:
                raise SourceReadError(f"read failed in {self.safe_url}: {describe_av_error(exc)}") from exc
        finally:
            container.close()


class _Nowhere:
    """The tap of a detached reader: takes everything, keeps nothing."""

    def begin(self, stream: av.VideoStream) -> None:
        return None

    def submit(self, packet: av.Packet) -> None:
        return None

    def close(self) -> None:
        return None
