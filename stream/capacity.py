"""The box's capacity: frames the streams ask the model to classify against frames it is handed, over a window.

A live stream's queue keeps its newest frames (buffers.py): when the model cannot keep up, the frames it
had to classify (``Frame.infer``) are dropped as stale and latency grows, and nothing else says so. The
batcher counts here, per stream, each frame to classify it hands to the model (served) and each one its
queue dropped (shed); a stream's demand is the two together. Summed over the streams and a sliding window
(1 s buckets, ``window_s``), demand over served is the overload ratio: 1.0 while every frame asked for is
classified, 1.5 when the streams ask for half as much again as the model classifies.

The box is *over capacity* from a ratio of ``OVER_AT`` (and ``MIN_SHED`` frames shed in the window) until it is
back under ``BACK_AT``: the gap keeps one busy second from flapping the state. The writer (the batcher's
thread) evaluates the state at most once a second and logs each change once; readers have no side effects.
Plain numbers only (vLLM's stats/logger split): ``metrics.py`` and the service read them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

WINDOW_S = 10
OVER_AT = 1.10  # demand / served at or above this (and some frames shed): over capacity
BACK_AT = 1.02  # ... until it is back at or under this
MIN_SHED = 5  # fewer frames shed than this in the window are noise (a stream's start, one slow batch)


@dataclass(frozen=True, slots=True)
class Rates:
    """Frames to classify per second over the window: asked for (demand), classified (served), dropped (shed)."""

    demand_per_s: float
    served_per_s: float
    span_s: float = 1.0  # the seconds the rates are over (the window, or less while it is young)

    @property
    def shed_per_s(self) -> float:
        return max(0.0, self.demand_per_s - self.served_per_s)

    @property
    def ratio(self) -> float:
        """demand / served: 1.0 while nothing asked for is shed (0.0 when nothing is asked)."""
        if self.demand_per_s <= 0:
            return 0.0
        return self.demand_per_s / max(self.served_per_s, 1e-9) if self.served_per_s > 0 else float("inf")


class Window:
    """Counts in 1 s buckets over the last ``window_s`` seconds (the current, partial second included)."""

    def __init__(self, window_s: int, clock: Callable[[], float]) -> None:
        self.window_s = window_s
        self.clock = clock
        self.started = clock()
        self._stamp = [-1] * window_s
        self._served = [0] * window_s
        self._shed = [0] * window_s

    def add(self, second: int, served: int, shed: int) -> None:
        i = second % self.window_s
        if self._stamp[i] != second:
            self._stamp[i], self._served[i], self._shed[i] = second, 0, 0
        self._served[i] += served
        self._shed[i] += shed

    def rates(self, now: float) -> Rates:
        second = int(now)
        served = shed = 0
        for stamp, s, d in zip(self._stamp, self._served, self._shed, strict=True):
            if second - self.window_s < stamp <= second:
                served += s
                shed += d
        span = max(1.0, min(float(self.window_s), now - self.started))  # a young window is not diluted
        return Rates((served + shed) / span, served / span, span)


class CapacityStats:
    """Thread-safe. The batcher calls ``on_served``/``on_shed`` per frame to classify; readers call ``box``,
    ``stream`` and ``share``."""

    def __init__(self, window_s: int = WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.clock = clock
        self._box = Window(window_s, clock)
        self._streams: dict[str, Window] = {}
        self._lock = threading.Lock()
        self.over = False  # the state in force (changed by the writer, at most once a second)
        self.changes = 0  # how many times it changed (tests, the log)
        self._evaluated = -1

    # -- writers (the batcher) ----------------------------------------------------------------------

    def add_stream(self, name: str) -> None:
        """A stream starts to count from now (a stream of the same name before it is forgotten)."""
        with self._lock:
            self._streams[name] = Window(self.window_s, self.clock)

    def remove_stream(self, name: str) -> None:
        with self._lock:
            self._streams.pop(name, None)

    def on_served(self, name: str, n: int = 1) -> None:
        self._count(name, n, 0)

    def on_shed(self, name: str, n: int = 1) -> None:
        self._count(name, 0, n)

    def _count(self, name: str, served: int, shed: int) -> None:
        now = self.clock()
        second = int(now)
        with self._lock:
            self._box.add(second, served, shed)
            window = self._streams.get(name)
            if window is not None:
                window.add(second, served, shed)
            if second == self._evaluated:
                return
            self._evaluated = second
            rates = self._box.rates(now)
            over = self._judge(rates)
            if over == self.over:
                return
            self.over = over
            self.changes += 1
        if over:
            log.warning("capacity: over capacity: %s; every stream keeps a fair share of the model", describe(rates))
        else:
            log.info("capacity: keeping up again: %s", describe(rates))

    def _judge(self, rates: Rates) -> bool:
        if self.over:
            return rates.ratio > BACK_AT
        return rates.shed_per_s * rates.span_s >= MIN_SHED and rates.ratio >= OVER_AT

    # -- readers (no side effects) --------------------------------------------------------------------

    def box(self) -> Rates:
        with self._lock:
            return self._box.rates(self.clock())

    def stream(self, name: str) -> Rates | None:
        with self._lock:
            window = self._streams.get(name)
            return None if window is None else window.rates(self.clock())

    def over_capacity(self) -> bool:
        return self._over_now(self.box())

    def _over_now(self, box: Rates) -> bool:
        """The state in force, unless nothing was shed for a whole window (no frame came to re-evaluate it)."""
        return self.over and box.shed_per_s > 0

    def figures(self) -> dict[str, object]:
        """The box's figures as the service shows them (status, /readyz)."""
        now = self.clock()
        with self._lock:
            box = self._box.rates(now)
            streams = [w.rates(now) for w in self._streams.values()]
            over = self._over_now(box)
        shares = sorted(s.served_per_s / s.demand_per_s for s in streams if s.demand_per_s > 0)
        return {"over_capacity": over, "demand_per_s": round(box.demand_per_s, 2),
                "served_per_s": round(box.served_per_s, 2), "shed_per_s": round(box.shed_per_s, 2),
                "overload_ratio": _finite(box.ratio), "window_s": self.window_s,
                "streams_shedding": sum(s.shed_per_s > 0 for s in streams),
                "served_share_min": round(shares[0], 3) if shares else None,
                "served_share_median": round(shares[len(shares) // 2], 3) if shares else None}


def stream_figures(rates: Rates | None) -> dict[str, float] | None:
    """One stream's fair-share view: what it asked the model for, what it got."""
    if rates is None:
        return None
    share = rates.served_per_s / rates.demand_per_s if rates.demand_per_s > 0 else 1.0
    return {"demand_per_s": round(rates.demand_per_s, 2), "served_per_s": round(rates.served_per_s, 2),
            "shed_per_s": round(rates.shed_per_s, 2), "served_share": round(share, 3)}


def describe(rates: Rates) -> str:
    """``asked for 120 classifications/s, served 80/s (1.5x over capacity)``."""
    text = f"asked for {rates.demand_per_s:.0f} classifications/s, served {rates.served_per_s:.0f}/s"
    ratio = rates.ratio
    if ratio > 1.0:
        text += " (nothing served)" if ratio == float("inf") else f" ({ratio:.1f}x over capacity)"
    return text


def _finite(ratio: float) -> float | None:
    return None if ratio == float("inf") else round(ratio, 3)
