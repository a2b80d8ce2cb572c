"""Watching a live RTSP stream of tests/support/gst_rtsp.py's ``GstRtspLivePair`` for its dark/bright scene.

``SceneWatcher(url)`` reads the stream on a thread with PyAV (TCP interleaved), stamps every video packet
with time.monotonic() as it comes out of the demuxer (before decoding), decodes it and reads the brightness of
the frame with that packet's pts; ``changes()`` lists when the scene was first seen dark or bright.
``match(toggles, changes)`` pairs each of the server's toggles with the first change to the same state at or
after it: the arrival latency of that scene change through encoder, RTSP and demuxer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import NamedTuple

import av
import numpy as np


class Change(NamedTuple):
    t: float  # time.monotonic() when the packet of the first frame in ``state`` left the demuxer
    state: str  # "dark" or "bright"


class SceneWatcher(threading.Thread):
    def __init__(self, url: str, transport: str = "tcp", open_timeout_s: float = 10.0) -> None:
        super().__init__(daemon=True, name=f"watch {url}")
        self.url, self.transport, self.open_timeout_s = url, transport, open_timeout_s
        self.halt = threading.Event()
        self.frames = 0
        self.size: tuple[int, int] | None = None  # width, height of the decoded frames
        self.opened_at: float | None = None
        self.error: BaseException | None = None
        self._changes: list[Change] = []
        self._lock = threading.Lock()

    def run(self) -> None:
        try:
            with av.open(self.url, options={"rtsp_transport": self.transport},
                         timeout=(self.open_timeout_s, 5.0)) as container:
                self.opened_at = time.monotonic()
                stream = container.streams.video[0]
                stream.thread_type = "SLICE"  # frame threads would hand back an earlier packet's frame
                shown = None
                arrivals: dict[int | None, float] = {}
                for packet in container.demux(stream):
                    arrivals[packet.pts] = time.monotonic()
                    if self.halt.is_set():
                        break
                    for frame in packet.decode():
                        arrived = arrivals.pop(frame.pts, None)
                        if arrived is None:
                            continue
                        for old in [k for k in arrivals if k is not None and frame.pts is not None and k < frame.pts]:
                            del arrivals[old]
                        luma = np.frombuffer(frame.planes[0], np.uint8)
                        state = "bright" if float(luma[::4099].mean()) > 128 else "dark"
                        self.frames += 1
                        self.size = (frame.width, frame.height)
                        if state != shown:
                            shown = state
                            with self._lock:
                                self._changes.append(Change(arrived, state))
        except BaseException as exc:  # noqa: BLE001 (kept for the test to report)
            self.error = exc

    def changes(self) -> list[Change]:
        with self._lock:
            return list(self._changes)

    def stop(self) -> None:
        self.halt.set()
        self.join(10)


def match(toggles: Sequence[tuple[float, str]], changes: Sequence[tuple[float, str]],
          within_s: float = 1.0) -> list[tuple[float, float]]:
    """(toggle time, latency) for each toggle seen: the first change to its state at or after it, within
    ``within_s`` and before the next toggle. A toggle whose change was not seen (the watcher was not yet
    reading, or missed it) is left out; the first change a watcher reports (the state it joined in) only
    counts when it follows its toggle closely."""
    out = []
    ordered = sorted(toggles)
    for i, (t, state) in enumerate(ordered):
        until = min(t + within_s, ordered[i + 1][0] if i + 1 < len(ordered) else float("inf"))
        seen = next((c for c, s in sorted(changes) if s == state and t <= c <= until), None)
        if seen is not None:
            out.append((t, seen - t))
    return out
