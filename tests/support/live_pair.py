"""Watching a live RTSP stream of tests/support/gst_rtsp.py's ``GstRtspLivePair`` for its scene.

``SceneWatcher(url)`` reads the stream on a thread with PyAV (TCP interleaved), stamps every video packet with
time.monotonic() as it comes out of the demuxer (before decoding), decodes it, and keeps for each frame (by the
packet's pts) its arrival, the source frame's index painted into it (``read_code``) and whether it is dark or
bright. ``changes()`` lists when the scene was first seen dark or bright; ``match(toggles, changes)`` pairs each
of the server's toggles with the first change to the same state at or after it: the arrival latency of that
scene change through encoder, RTSP and demuxer. With the index, ``GstRtspLivePair.frame_time(index)`` says when
that frame left the scene source, for the latency of every frame.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import NamedTuple

import av
import numpy as np

# tests/support/gst_rtsp_server.py's paint_code at the scene's width (1280); a smaller picture is scaled
CODE_BITS, CODE_BLOCK, CODE_WIDTH = 24, 16, 1280


class Change(NamedTuple):
    t: float  # time.monotonic() when the packet of the first frame in ``state`` left the demuxer
    state: str  # "dark" or "bright"


class Seen(NamedTuple):
    t: float  # the frame's packet left the demuxer (time.monotonic())
    index: int | None  # the source frame's index painted into it (None: unreadable)
    state: str


def read_code(luma: np.ndarray) -> int | None:
    """The frame index painted into a picture's luma plane (rows x columns, uint8), or None when the blocks do
    not read as a code whose check matches. Knows only the low CODE_BITS - 4 bits of the index (2^20 frames,
    9.7 hours at 30 fps)."""
    scale = luma.shape[1] / CODE_WIDTH
    half = max(1, int(CODE_BLOCK * scale) // 4)
    row = int(1.5 * CODE_BLOCK * scale)
    value = 0
    for k in range(CODE_BITS):
        col = int((CODE_BLOCK + (k + 0.5) * CODE_BLOCK) * scale)
        block = luma[row - half:row + half + 1, col - half:col + half + 1]
        if block.size == 0:
            return None
        value = (value << 1) | int(float(block.mean()) > 128)
    index, check = value >> 4, value & 0xF
    return index if index % 15 == check else None


class SceneWatcher(threading.Thread):
    def __init__(self, url: str, transport: str = "tcp", open_timeout_s: float = 10.0) -> None:
        super().__init__(daemon=True, name=f"watch {url}")
        self.url, self.transport, self.open_timeout_s = url, transport, open_timeout_s
        self.halt = threading.Event()
        self.size: tuple[int, int] | None = None  # width, height of the decoded frames
        self.opened_at: float | None = None
        self.error: BaseException | None = None
        self._seen: list[Seen] = []
        self._lock = threading.Lock()

    @property
    def frames(self) -> int:
        return len(self._seen)

    def run(self) -> None:
        try:
            with av.open(self.url, options={"rtsp_transport": self.transport},
                         timeout=(self.open_timeout_s, 5.0)) as container:
                self.opened_at = time.monotonic()
                stream = container.streams.video[0]
                stream.thread_type = "SLICE"  # frame threads would hand back an earlier packet's frame
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
                        plane = frame.planes[0]
                        luma = np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)[:, :frame.width]
                        state = "bright" if float(luma[::7, ::11].mean()) > 128 else "dark"
                        self.size = (frame.width, frame.height)
                        with self._lock:
                            self._seen.append(Seen(arrived, read_code(luma), state))
        except BaseException as exc:  # noqa: BLE001 (kept for the test to report)
            self.error = exc

    def seen(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)

    def changes(self) -> list[Change]:
        out: list[Change] = []
        for s in self.seen():
            if not out or out[-1].state != s.state:
                out.append(Change(s.t, s.state))
        return out

    def arrivals(self) -> dict[int, float]:
        """Source frame index -> when it arrived here (frames whose code read)."""
        return {s.index: s.t for s in self.seen() if s.index is not None}

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
    ordered = sorted((t[0], t[1]) for t in toggles)
    for i, (t, state) in enumerate(ordered):
        until = min(t + within_s, ordered[i + 1][0] if i + 1 < len(ordered) else float("inf"))
        seen = next((c for c, s in sorted((c[0], c[1]) for c in changes) if s == state and t <= c <= until), None)
        if seen is not None:
            out.append((t, seen - t))
    return out
