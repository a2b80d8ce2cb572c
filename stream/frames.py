"""What travels between the pipeline's stages: plain frozen dataclasses, no PyAV objects."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from sightline.model.classifier import Prediction


@dataclass(frozen=True, slots=True)
class Frame:
    stream_id: str
    seq: int
    pts: int | None
    time_base: Fraction | None
    captured_at: float  # monotonic seconds: when the frame was due (files) or arrived (live)
    decoded_at: float  # monotonic seconds: when it was ready as RGB
    image: np.ndarray  # H×W×3 uint8 RGB at the model's working size
    display: np.ndarray | None = None  # full-size RGB, only for streams with a visual sink
    infer: bool = True  # False: the stream's infer_fps skips this one; the overlay reuses the last result
    rate: float | None = None  # the source's nominal frame rate when it decoded this frame (a recorder needs it)

    @property
    def time_s(self) -> float | None:
        """Presentation time in seconds (stream clock)."""
        if self.pts is None or self.time_base is None:
            return None
        return float(self.pts * self.time_base)


@dataclass(frozen=True, slots=True)
class Timings:
    captured: float
    decoded: float
    batched: float
    inferred: float

    @property
    def latency_s(self) -> float:
        return self.inferred - self.captured


@dataclass(frozen=True, slots=True)
class ModelTag:
    """Which model classified a frame: its id (bundle content hash, short) and its classes. Plain data, so a
    result never keeps a retired model's weights alive."""

    id: str
    class_names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Result:
    """One frame after the model: raw probabilities/top-k, or None when the frame was not classified."""

    frame: Frame
    probs: np.ndarray | None
    top: tuple[Prediction, ...]
    timings: Timings | None
    model: ModelTag | None = None  # None when not classified (or by a worker that serves no ModelHolder)


@dataclass(frozen=True, slots=True)
class Smoothed:
    label: str
    prob: float
    index: int


class FrameDemand:
    """What a stream's consumers ask of its source beyond the model's frames, each for a few seconds after
    they last asked (a consumer that goes away simply stops asking).

    * full-size pictures (``touch``/``wanted``): a preview is watched. Without a visual sink a stream
      converts only the small working-size image; previews ask for more on demand instead of every
      stream paying for full-size conversion all the time.
    * every frame (``need_every_frame``/``every_frame``): a WebRTC viewer, an event clip being written.
      A stream that decodes only keyframes (``decode: auto``) switches to all frames at its next
      keyframe while someone asks, and back when nobody has for ``linger_s``.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, linger_s: float = 3.0) -> None:
        self.clock = clock
        self.linger_s = linger_s
        self._until = -float("inf")
        self._every: dict[str, float] = {}  # who wants every frame -> until when

    def touch(self) -> None:
        self._until = self.clock() + self.linger_s

    def wanted(self) -> bool:
        return self.clock() < self._until

    def need_every_frame(self, who: str) -> None:
        """``who`` (a short phrase: "a WebRTC viewer") wants every frame, full size, for the next seconds."""
        until = self.clock() + self.linger_s
        self._every[who] = until
        self._until = max(self._until, until)

    def every_frame(self) -> str | None:
        """Who wants every frame now, or None."""
        now = self.clock()
        for who, until in list(self._every.items()):
            if now < until:
                return who
        return None
