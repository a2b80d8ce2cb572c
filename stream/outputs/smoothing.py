"""Temporal smoothing: an EMA of class probabilities plus hysteresis on the shown label.

Raw per-frame predictions flicker between near-tied classes; the EMA averages that out and the
hysteresis keeps the shown label until another class leads it by a clear margin.

The margin is relative to the shown label's own (smoothed) probability: another class replaces it
when it scores more than ``(1 + hysteresis)`` times as much. Softmax noise is multiplicative (a
fixed jitter of the logits), so a relative margin holds as well for a confident model (0.45 against
0.40) as for a 1000-class model whose best classes score 0.02 against 0.015. An absolute margin
(the first version: ``best - shown > 0.05``) never lets go of the first label on such a model: a
correct 0.02 can never lead a stale 0.015 by 0.05. The default 0.1 equals that old absolute 0.05
where the shown label scores 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sightline.stream.frames import Smoothed


class Smoother:
    def __init__(self, class_names: Sequence[str], ema: float = 0.6, hysteresis: float = 0.1) -> None:
        if not 0 <= ema < 1:
            raise ValueError("ema must be in [0, 1)")
        if hysteresis < 0:
            raise ValueError("hysteresis must be >= 0")
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
        if self._shown is None or self._state[best] > (1.0 + self.hysteresis) * self._state[self._shown]:
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
