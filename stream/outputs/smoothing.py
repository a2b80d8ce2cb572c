"""Temporal smoothing: an EMA of class probabilities plus hysteresis on the shown label.

Raw per-frame predictions flicker between near-tied classes; the EMA averages that out and the
hysteresis keeps the shown label until another class leads it by a clear margin.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sightline.stream.frames import Smoothed


class Smoother:
    def __init__(self, class_names: Sequence[str], ema: float = 0.6, hysteresis: float = 0.05) -> None:
        if not 0 <= ema < 1:
            raise ValueError("ema must be in [0, 1)")
        self.class_names = list(class_names)
        self.ema = ema
        self.hysteresis = hysteresis
        self._state: np.ndarray | None = None
        self._shown: int | None = None

    def update(self, probs: np.ndarray) -> Smoothed:
        probs = np.asarray(probs, dtype=np.float32)
        if self._state is None:
            self._state = probs.copy()
        else:
            self._state *= self.ema
            self._state += (1.0 - self.ema) * probs
        best = int(self._state.argmax())
        if self._shown is None or self._state[best] - self._state[self._shown] > self.hysteresis:
            self._shown = best
        return Smoothed(self.class_names[self._shown], float(self._state[self._shown]), self._shown)

    def retarget(self, class_names: Sequence[str]) -> bool:
        """Follow a model swap: other classes (names or order) start the average afresh; True when they did."""
        if list(class_names) == self.class_names:
            return False
        self.class_names = list(class_names)
        self.reset()
        return True

    def reset(self) -> None:
        self._state = None
        self._shown = None
