"""The run's summary (``serve.summary``): each stream's rate is over its own time at work, not the run's."""

from __future__ import annotations

from pathlib import Path

import pytest
from sightline.stream.service.serve import summary

pytestmark = pytest.mark.timeout(30)


def status(name: str, state: str, classified: int, active_s: float) -> dict[str, object]:
    return {"name": name, "state": state, "frames_decoded": classified, "frames_inferred": classified,
            "active_s": active_s, "dropped": {}, "p50_ms": 20.0, "p99_ms": 40.0, "error": None}


def test_a_replay_that_finished_early_shows_its_own_rate() -> None:
    # a 10 fps file done after 8 s of a 60 s run, beside a camera classified at 5/s for the whole run
    text = summary([status("replay", "ended", 80, 8.0), status("camera", "stopped", 300, 60.0)], 60.0, Path("runs"))
    lines = {line.split()[0]: line for line in text.splitlines()[1:-1]}
    assert "80 classified (10.0/s over 8.0 s)" in lines["replay"], text  # not 1.3/s (80 over the run's 60 s)
    assert "300 classified (5.0/s over 60.0 s)" in lines["camera"], text


def test_a_stream_with_no_classified_frames_has_no_rate() -> None:
    text = summary([status("cam", "failed", 0, 0.0)], 60.0, Path("runs"))
    assert "0 classified (rate n/a)" in text
