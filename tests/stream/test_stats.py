"""A stream's own time at work (``StreamStats.active_s``): what its rate in the run's summary is over."""

from __future__ import annotations

import pytest
from sightline.stream.lifecycle import StreamState
from sightline.stream.stats import StreamStats

pytestmark = pytest.mark.timeout(30)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def replay(stats: StreamStats, clock: Clock, frames: int, fps: float) -> None:
    for _ in range(frames):
        stats.on_decoded()
        stats.on_inferred(0.01)
        clock.now += 1 / fps


def test_a_finished_replay_is_active_from_its_first_to_its_last_frame() -> None:
    clock = Clock()
    stats = StreamStats("replay", clock=clock)
    assert stats.active_s() == 0.0 and stats.snapshot()["active_s"] == 0.0  # nothing decoded yet
    clock.now += 5.0  # connecting: not at work yet
    replay(stats, clock, 81, 10.0)  # 8 s of frames
    stats.set_state(StreamState.LIVE)
    stats.set_state(StreamState.ENDED)
    clock.now += 52.0  # the rest of the run
    assert stats.active_s() == pytest.approx(8.0, abs=0.11)
    assert stats.snapshot()["active_s"] == pytest.approx(8.0, abs=0.11)


def test_a_running_stream_is_active_until_now() -> None:
    clock = Clock()
    stats = StreamStats("camera", clock=clock)
    replay(stats, clock, 20, 10.0)
    stats.set_state(StreamState.LIVE)
    clock.now += 10.0  # no frame for a while, still running: the time counts
    assert stats.active_s() == pytest.approx(12.0, abs=0.11)
