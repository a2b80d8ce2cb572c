"""Which frames a stream decodes: every frame, or only its keyframes (``streams[].decode``).

A camera classified once a second needs one picture a second, yet decoding every frame of a 720p30
H.264 stream costs ~67 ms of CPU per camera-second (~2.25 ms a frame, AMD EPYC); its keyframes alone,
one a second with a 1 s GOP, cost ~3.5 ms (DeepStream's ``skip-frames`` is the same lever). Packets are
still read, timed and counted; the decoder is fed only keyframes, and the pictures between them are
never decoded, converted or scaled.

The decision is taken at each keyframe, the one place a decoder can start over cleanly (a GOP is
decoded whole or not at all), from the rules in ``DecodePolicy._decide``; one log line per change, and the
stream's status and metrics carry the mode, the measured keyframe interval and the reason.
"""

from __future__ import annotations

import logging
import statistics
from collections import deque

from sightline.stream.config import StreamConfig
from sightline.stream.frames import FrameDemand
from sightline.stream.stats import DecodeStatus, StreamStats

log = logging.getLogger(__name__)

GOPS_KEPT = 5  # the keyframe interval is the median of the last few GOPs: one odd GOP does not flip the mode
RATE_SLACK = 1.05  # infer_fps up to 5% above the keyframe rate still counts as "at most" (clock jitter)
MAX_GOP_S = 60.0  # a longer step between keyframes is a clock jump (a looped file, a reconnect), not a GOP
NO_KEYFRAME_S = 10.0  # auto: this long in keyframes mode without a keyframe (intra refresh): decode all frames


class KeyframeClock:
    """A stream's keyframe interval on its own clock: the median of its last ``GOPS_KEPT`` GOPs."""

    def __init__(self) -> None:
        self.last: float | None = None
        self.interval: float | None = None  # seconds; None until two keyframes were seen
        self._gops: deque[float] = deque(maxlen=GOPS_KEPT)

    def see(self, t: float) -> None:
        if self.last is not None and 0.0 < t - self.last <= MAX_GOP_S:
            self._gops.append(t - self.last)
            self.interval = statistics.median(self._gops)  # once a keyframe, not each time a frame asks
        self.last = t


class DecodePolicy:
    """Asked for every packet whether to decode it; changes mode only at a keyframe (or when none comes)."""

    def __init__(self, config: StreamConfig, stats: StreamStats, demand: FrameDemand | None = None) -> None:
        self.name = config.name
        self.setting = config.decode
        self.infer_fps = config.infer_fps
        self.stats = stats
        self.demand = demand
        self.always = config.every_frame_output
        self.clock = KeyframeClock()
        self.keyframes_only = False
        self._logged: bool | None = None  # the mode the log last announced

    def decode(self, is_keyframe: bool, t: float | None) -> bool:
        """Whether to decode this packet (``t``: its time in seconds on the stream's clock, if known).

        When it returns True for a keyframe and ``keyframes_only`` has just turned True, the caller drains
        the decoder first: the frames it still holds belong to the GOP decoded whole."""
        if is_keyframe:
            if t is not None:
                self.clock.see(t)
            self._apply(*self._decide())
            return True
        if not self.keyframes_only:
            return True
        last = self.clock.last
        if self.setting == "auto" and t is not None and last is not None and t - last > NO_KEYFRAME_S:
            self._apply(False, f"no keyframe for {NO_KEYFRAME_S:.0f}s (intra refresh?): decoding every frame")
            return True
        return False

    def _decide(self) -> tuple[bool, str]:
        """(keyframes only?, why) for the GOP that starts now."""
        if self.setting == "all":
            return False, "decode: all"
        interval = self.clock.interval
        if self.setting == "keyframes":
            ceiling = self._keyframe_ceiling(interval)
            return True, "decode: keyframes" + (f"; {ceiling}" if ceiling else "")
        if self.always is not None:
            return False, f"{self.always} needs every frame"
        if self.infer_fps is None:
            return False, "infer_fps is unset: every frame is classified"
        who = self.demand.every_frame() if self.demand is not None else None
        if who is not None:
            return False, f"{who} needs every frame"
        if interval is None:
            return True, "keyframes only until the keyframe interval is measured"
        rate = 1.0 / interval
        if self.infer_fps <= rate * RATE_SLACK:
            return True, f"infer_fps {self.infer_fps:g} is at most the keyframe rate ({rate:.2f}/s)"
        return False, f"infer_fps {self.infer_fps:g} is above the keyframe rate ({rate:.2f}/s)"

    def _keyframe_ceiling(self, interval: float | None) -> str | None:
        """For ``decode: keyframes``: a line when the keyframe rate, not infer_fps, bounds classification."""
        if interval is None:
            return None
        rate = 1.0 / interval
        if self.infer_fps is not None and self.infer_fps <= rate * RATE_SLACK:
            return None
        wanted = "every frame" if self.infer_fps is None else f"infer_fps {self.infer_fps:g}"
        return f"classified at most {rate:.2f}/s (one frame per {interval:.2f}s GOP), not {wanted}"

    def _apply(self, keyframes_only: bool, reason: str) -> None:
        self.keyframes_only = keyframes_only
        interval = self.clock.interval
        if keyframes_only:
            ceilings = [c for c in (self.infer_fps, 1.0 / interval if interval else None) if c is not None]
            ceiling = min(ceilings) if ceilings else None
        else:
            ceiling = self.infer_fps
        mode = "keyframes" if keyframes_only else "all"
        self.stats.set_decode(DecodeStatus(self.setting, mode, reason, interval, ceiling))
        provisional = self.setting == "auto" and keyframes_only and interval is None  # the first GOP
        if keyframes_only != self._logged and not provisional:
            log.info("stream %s: decoding %s (%s)", self.name, "keyframes only" if keyframes_only else "every frame",
                     reason)
            self._logged = keyframes_only
