"""The capture watchdog (anchor: Frigate's ``CameraWatchdog``): a supervisor beside the source threads.

Every ``interval_s`` it looks at each registered stream that is not finished and not being removed:

* its source thread died without saying why (a crash ``FrameSource._run`` could not catch): the
  stream is marked failed, so readiness and metrics tell the truth;
* a live network or device stream read no packet for ``stall_limit(config)`` seconds (three times its
  ``stall_timeout_s``: FFmpeg's read timeout, which can take twice that, should have fired and did not, e.g. a read
  blocked inside FFmpeg): the stream goes to reconnecting, a reconnect is counted, the stalled thread is
  cut loose (``FrameSource.detach``) and a fresh source takes over the same queue and recording.

Files are not watched (a fast file waits on its full queue; a paced one on its own clock) and neither is
WebRTC (a publisher may pause; its peer's state already says when it is gone).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sightline.stream.config import StreamConfig
from sightline.stream.lifecycle import TERMINAL_STATES, WATCHED_STATES, StreamState
from sightline.stream.pipeline.stream_runtime import StreamRuntime

log = logging.getLogger(__name__)

WATCHDOG_INTERVAL_S = 1.0
STALL_FACTOR = 3.0  # x stall_timeout_s without a frame: FFmpeg's read timeout (up to 2x) did not fire


def stall_limit(config: StreamConfig) -> float | None:
    """Seconds without a frame after which a live stream counts as stalled; None: not watched."""
    if not (config.is_network or config.is_device):
        return None
    return STALL_FACTOR * config.stall_timeout_s


class CaptureWatchdog:
    def __init__(self, runtimes: Callable[[], list[StreamRuntime]], restart: Callable[[StreamRuntime, str], None],
                 clock: Callable[[], float] = time.monotonic, interval_s: float = WATCHDOG_INTERVAL_S) -> None:
        self.runtimes = runtimes
        self.restart = restart
        self.clock = clock
        self.interval_s = interval_s
        self.restarts = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="capture-watchdog", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception:  # the supervisor must outlive a bug in one check
                log.exception("capture watchdog: check failed")

    def check(self) -> list[str]:
        """One pass over the streams; returns what it did, one line per stream it acted on."""
        done = []
        for runtime in self.runtimes():
            what = self._check(runtime)
            if what:
                done.append(f"{runtime.config.name}: {what}")
        return done

    def _check(self, runtime: StreamRuntime) -> str | None:
        stats, source, config = runtime.stats, runtime.source, runtime.config
        if runtime.removing or runtime.stop.is_set() or stats.state in TERMINAL_STATES:
            return None
        if not source.alive:
            if stats.state in TERMINAL_STATES:  # it said goodbye just now
                return None
            log.error("stream %s: its source thread is gone without a word; marking it failed", config.name)
            stats.set_state(StreamState.FAILED, "the capture thread stopped unexpectedly")
            return "source thread died"
        limit = stall_limit(config)
        # packets, not decoded frames: a keyframes-only stream with a long GOP decodes one frame in many seconds
        last = stats.last_packet_at if stats.last_packet_at is not None else stats.last_frame_at
        if limit is None or stats.state not in WATCHED_STATES or last is None:
            return None
        idle = self.clock() - last
        if idle <= limit:
            return None
        reason = f"no packet for {idle:.0f}s (capture watchdog); restarting the source"
        log.warning("stream %s: %s", config.name, reason)
        self.restarts += 1
        self.restart(runtime, reason)
        return "stalled source restarted"
