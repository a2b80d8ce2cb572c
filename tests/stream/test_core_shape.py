"""The core's shape (issue #17): one state table, plain stats read by Prometheus at scrape time, an
inference step that returns its results, a recorder that gets its frame rate as data."""

from __future__ import annotations

import logging
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sightline.stream.frames import Frame
from sightline.stream.inference.batcher import Batch, Batcher
from sightline.stream.inference.lanes import InferenceWorker, Routes
from sightline.stream.lifecycle import TERMINAL_STATES, TRANSITIONS, StreamState, allowed
from sightline.stream.metrics import STATES, Metrics
from sightline.stream.outputs.sinks import VideoRecorder
from sightline.stream.stats import StageStats, StreamStats

from tests.support.models import tiny_classifier

pytestmark = pytest.mark.timeout(60)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def frame(stream: str, seq: int, infer: bool = True, rate: float | None = None) -> Frame:
    image = np.full((64, 64, 3), (seq * 37) % 256, np.uint8)
    now = time.monotonic()
    return Frame(stream, seq, seq, Fraction(1, 25), now, now, image, None, infer, rate)


# -- states --------------------------------------------------------------------------------------------

def test_every_state_has_its_transitions_written_down_and_terminal_ones_lead_nowhere() -> None:
    assert set(TRANSITIONS) == set(StreamState)
    assert STATES == ("connecting", "live", "reconnecting", "ended", "failed", "stopped")  # the dashboards' labels
    for state in TERMINAL_STATES:
        assert not TRANSITIONS[state]
    for state in set(StreamState) - TERMINAL_STATES:
        assert TERMINAL_STATES - {StreamState.ENDED} <= TRANSITIONS[state]  # anything running can fail or stop
    assert allowed(StreamState.RECONNECTING, StreamState.LIVE) and not allowed(StreamState.RECONNECTING,
                                                                               StreamState.ENDED)


def test_a_change_the_table_refuses_is_logged_and_leaves_state_and_reason_alone(caplog) -> None:
    stats = StreamStats("cam")
    assert stats.state is StreamState.CONNECTING
    assert stats.set_state("live") and stats.set_state(StreamState.RECONNECTING, "rtsp://u:secret@h/x timed out")
    assert stats.error is not None and "secret" not in stats.error  # reasons are shown to anyone
    assert stats.set_state(StreamState.STOPPED)
    with caplog.at_level(logging.WARNING):
        assert not stats.set_state(StreamState.RECONNECTING, "a late callback")  # cannot revive a stopped stream
    assert stats.state is StreamState.STOPPED and "a late callback" not in (stats.error or "")
    assert "stopped -> reconnecting refused" in caplog.text
    assert stats.snapshot()["state"] == "stopped" and type(stats.snapshot()["state"]) is str


# -- plain stats, Prometheus at scrape time --------------------------------------------------------------

class View:
    def __init__(self, *streams: StreamStats) -> None:
        self.streams = list(streams)
        self.stage_stats = StageStats()
        self.classifier = tiny_classifier()

    def stream_stats(self) -> list[StreamStats]:
        return list(self.streams)


def scrape(metrics: Metrics) -> dict[tuple[str, tuple], float]:
    text = generate_latest(metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_reading_fps_changes_nothing_and_a_scrape_computes_it_from_the_stats() -> None:
    clock = Clock()
    stats = StreamStats("cam", clock=clock)
    for _ in range(11):
        stats.on_inferred(0.04)
        clock.now += 0.1
    internal = list(stats._inferred_at)
    assert stats.fps() == pytest.approx(stats.fps()) == pytest.approx(10 / 1.1, rel=0.01)
    assert list(stats._inferred_at) == internal  # a read trims nothing
    metrics = Metrics()
    view = View(stats)
    metrics.watch(view)
    first = scrape(metrics)
    assert first[("sightline_stream_fps", (("stream", "cam"),))] == pytest.approx(stats.fps())
    assert first[("sightline_frames_inferred_total", (("stream", "cam"),))] == 11
    assert first[("sightline_end_to_end_latency_seconds_bucket", (("le", "0.05"), ("stream", "cam")))] == 11
    assert first[("sightline_end_to_end_latency_seconds_bucket", (("le", "0.035"), ("stream", "cam")))] == 0
    assert first[("sightline_stream_state", (("state", "connecting"), ("stream", "cam")))] == 1
    d = view.classifier.describe()  # read from the classifier in use at scrape time (a swap shows at once)
    info = tuple(sorted({"arch": str(d["arch"]), "classes": str(d["classes"]), "device": str(d["device"]),
                         "precision": str(d["precision"]), "model": ""}.items()))  # no model holder here
    assert first[("sightline_model_info", info)] == 1
    clock.now += 10  # nothing else happens: the next scrape alone sees the window empty
    stats.set_state("live")
    later = scrape(metrics)
    assert later[("sightline_stream_fps", (("stream", "cam"),))] == 0.0
    assert later[("sightline_stream_up", (("stream", "cam"),))] == 1.0
    view.streams.clear()  # a removed stream's series go with it
    assert not any(dict(k[1]).get("stream") == "cam" for k in scrape(metrics))


def test_stage_stats_record_what_a_step_measured() -> None:
    worker = InferenceWorker(tiny_classifier(), Batcher(4, 0.0), topk=2, lanes=1)
    out = worker.step(Batch([frame("a", 0), frame("a", 1, infer=False), frame("b", 0)], ["c"]))
    worker.stats.record(out.stats)
    stages = worker.stats.stages
    assert out.stats.classified == 2 and worker.stats.batch_size.count == 1
    assert stages["queue"].count == 3 and stages["preprocess"].count == 1 and stages["inference"].count == 1


# -- the inference step -----------------------------------------------------------------------------

class Route:
    def __init__(self) -> None:
        self.results: list = []
        self.finished = 0

    def submit(self, result) -> None:
        self.results.append(result)

    def finish(self) -> None:
        self.finished += 1


def test_a_step_returns_its_results_and_routes_hand_them_to_each_stream_in_order() -> None:
    routes = Routes()
    a, b = Route(), Route()
    routes.add("a", a)
    routes.add("b", b)
    with pytest.raises(ValueError):
        routes.add("a", Route())
    worker = InferenceWorker(tiny_classifier(), Batcher(4, 0.0), topk=2, routes=routes, lanes=1)
    out = worker.step(Batch([frame("a", 0), frame("b", 0), frame("a", 1, infer=False)], ["a"]))
    assert not a.results and not b.results  # a step delivers nothing by itself
    assert [(r.frame.stream_id, r.frame.seq) for r in out.results] == [("a", 0), ("b", 0), ("a", 1)]
    assert out.results[2].probs is None and out.ended == ["a"]
    routes.deliver(out)
    assert [r.frame.seq for r in a.results] == [0, 1] and a.finished == 1 and len(b.results) == 1
    assert "a" not in routes and "b" in routes  # a drained stream's route leaves with its last result


def test_swapping_the_model_is_one_assignment_that_the_next_batch_uses() -> None:
    worker = InferenceWorker(tiny_classifier(num_classes=4), Batcher(4, 0.0), topk=2, lanes=1)
    before = worker.step(Batch([frame("a", 0)], []))
    worker.classifier = tiny_classifier(num_classes=6, seed=1)
    after = worker.step(Batch([frame("a", 0)], []))
    assert before.results[0].probs.shape == (4,) and after.results[0].probs.shape == (6,)


# -- the recorder's frame rate ---------------------------------------------------------------------------

def test_the_recorder_takes_its_frame_rate_from_the_frames(tmp_path: Path) -> None:
    declared = {}
    for rate in (12.0, 30.0):
        recorder = VideoRecorder(tmp_path / f"cam{rate:.0f}.mp4", "cam")  # no callback into a source
        for seq in range(12):
            item = frame("cam", seq, rate=rate)
            recorder.record(item.image, item, lambda picture: picture)
        declared[rate] = recorder._video.codec_context.framerate if recorder._video is not None else None
        recorder.close()
        with av.open(str(tmp_path / f"cam{rate:.0f}.mp4")) as container:
            assert sum(1 for _ in container.decode(video=0)) == 12
    assert declared == {12.0: 12, 30.0: 30}
