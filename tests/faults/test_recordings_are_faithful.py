"""Issue 11 row 14: a recording keeps every decoded frame, follows resolution changes, and a file whose
timestamps restart is not reported as truncated."""

from __future__ import annotations

import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from sightline import synthetic_media as media
from sightline.model.classifier import Prediction
from sightline.stream.frames import Frame
from sightline.stream.outputs.recording import RecordingWriter
from sightline.stream.outputs.sinks import fit
from sightline.stream.service.status import stream_status
from sightline.stream.stats import StreamStats

from tests.faults.support import SlowClassifier, concatenate, counters, jsonl, recorded, run, write_ts_segment
from tests.support.models import tiny_classifier

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def classifier():
    return tiny_classifier()


def test_a_live_stream_whose_model_falls_behind_still_records_every_frame(tmp_path: Path) -> None:
    # 2 s at 25 fps, paced like a camera; the model takes >= 0.12 s per batch of one: it classifies < 9 fps
    clip = write_ts_segment(tmp_path / "cam.ts", (320, 240), 0, 50, fps=25)
    p = run(SlowClassifier(0.12), tmp_path,
            [{"name": "cam", "url": str(clip), "mode": "realtime", "record": "annotated"}],
            batching={"max_batch": 1, "max_wait_ms": 0})
    status = stream_status(p.get("cam"))
    assert status["state"] == "ended", status
    assert status["frames_decoded"] == 50
    assert status["frames_inferred"] < 40 and status["dropped"].get("stale", 0) > 10  # the live policy dropped
    assert status["frames_lost"] == {}
    pictures = recorded(tmp_path / "out" / "cam.mp4")
    assert counters(pictures) == list(range(50))  # ... but the recording has every frame, in order


def test_the_recording_keeps_the_source_frame_rate(classifier, tmp_path: Path) -> None:
    clip = media.make_test_clip(tmp_path / "cam.mp4", frames=30, fps=15, size=(160, 120))
    run(classifier, tmp_path, [{"name": "cam", "url": str(clip), "mode": "realtime", "record": "annotated",
                                "infer_fps": 3}])
    import av

    with av.open(str(tmp_path / "out" / "cam.mp4")) as container:
        times = [float(f.time) for f in container.decode(video=0)]
    assert len(times) == 30
    steps = np.diff(times)
    assert np.allclose(steps, 1 / 15, atol=0.002), steps


def test_resolution_changes_are_fitted_to_the_first_size_and_no_false_truncation(classifier, tmp_path: Path) -> None:
    parts = [write_ts_segment(tmp_path / "a.ts", (640, 360), 0, 25),
             write_ts_segment(tmp_path / "b.ts", (1280, 720), 25, 25),
             write_ts_segment(tmp_path / "c.ts", (320, 180), 50, 25)]
    clip = concatenate(tmp_path / "changes.ts", parts)  # timestamps restart at each join, too
    p = run(classifier, tmp_path, [{"name": "cam", "url": str(clip), "mode": "fast", "record": "annotated"}])
    status = stream_status(p.get("cam"))
    assert status["state"] == "ended", status
    assert "truncated" not in (status["error"] or "")
    assert status["frames_decoded"] == status["frames_inferred"] == 75
    assert status["frames_lost"] == {}
    assert p.last_exit_code == 0
    assert [r["seq"] for r in jsonl(tmp_path / "out" / "cam.jsonl")] == list(range(75))
    pictures = recorded(tmp_path / "out" / "cam.mp4")
    assert {pic.shape for pic in pictures} == {(360, 640, 3)}  # one size: the first
    assert counters(pictures) == list(range(75))  # every frame, whole (a crop would lose the counter)


def test_a_realtime_file_with_restarting_timestamps_is_paced_and_complete(classifier, tmp_path: Path) -> None:
    parts = [write_ts_segment(tmp_path / f"{i}.ts", (320, 240), 10 * i, 10, fps=20) for i in range(3)]
    clip = concatenate(tmp_path / "joined.ts", parts)
    p = run(classifier, tmp_path, [{"name": "cam", "url": str(clip), "mode": "realtime", "record": "annotated",
                                    "infer_fps": 5}])
    status = stream_status(p.get("cam"))
    assert status["state"] == "ended" and "truncated" not in (status["error"] or ""), status
    assert status["frames_decoded"] == 30
    assert status["frames_inferred"] >= 6  # infer_fps keeps working after each restart (its grid is reset)
    assert counters(recorded(tmp_path / "out" / "cam.mp4")) == list(range(30))


@pytest.mark.parametrize(("size", "box"), [((720, 1280), (360, 640)), ((180, 320), (360, 640)),
                                           ((480, 480), (360, 640))])
def test_fit_keeps_the_aspect_ratio_on_black(size: tuple[int, int], box: tuple[int, int]) -> None:
    image = np.full((*size, 3), 200, np.uint8)
    out = fit(image, box[1], box[0])
    assert out.shape == (*box, 3)
    if size[0] * box[1] == size[1] * box[0]:
        assert out.min() >= 190  # same aspect: fills the frame
    else:
        assert out[:, 0].max() == 0 and out[:, -1].max() == 0  # pillarboxed
        assert out[box[0] // 2, box[1] // 2].min() >= 190


class FakeLabels:
    """A stream output that has handled frames up to ``handled`` and labels each state by that number."""

    def __init__(self) -> None:
        self.handled = -1
        self.cond = threading.Condition()

    def advance(self, seq: int) -> None:
        with self.cond:
            self.handled = seq
            self.cond.notify_all()

    def wait_handled(self, seq: int, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.handled >= seq, timeout)

    def current_labels(self):
        return (Prediction(0, f"after-{self.handled}", 1.0),), None, None


class FakeRecorder:
    name = "recorder"
    stream = "cam"

    def __init__(self) -> None:
        self.labels: list[tuple[int, str]] = []
        self.closed = False

    def record(self, image, src: Frame, annotate) -> None:
        self.labels.append((src.seq, self.current))

    def close(self) -> None:
        self.closed = True


def frame(seq: int, decoded_at: float) -> Frame:
    return Frame("cam", seq, seq, Fraction(1, 25), decoded_at, decoded_at, np.zeros((8, 8, 3), np.uint8))


def labels_seen_by_recorder() -> tuple[FakeLabels, FakeRecorder]:
    """Labels whose every read tells the recorder which label the frame being written got."""
    labels, recorder = FakeLabels(), FakeRecorder()
    original = labels.current_labels

    def current():
        result = original()
        recorder.current = result[0][0].label
        return result

    labels.current_labels = current  # type: ignore[method-assign]
    return labels, recorder


def test_each_recorded_frame_waits_briefly_for_its_own_labels() -> None:
    labels, recorder = labels_seen_by_recorder()
    stats = StreamStats("cam")
    writer = RecordingWriter(recorder, labels, stats, live=True, stop=threading.Event(), label_wait_s=2.0)
    writer.start()
    now = time.monotonic()
    for seq in range(5):
        writer.submit(frame(seq, now))
    for seq in range(5):  # the model catches up a little later, frame by frame
        time.sleep(0.02)
        labels.advance(seq)
    writer.close()
    assert writer.join(5) and recorder.closed
    assert recorder.labels == [(seq, f"after-{seq}") for seq in range(5)]


def test_a_stalled_model_delays_the_recording_by_at_most_the_label_wait() -> None:
    labels, recorder = FakeLabels(), FakeRecorder()
    recorder.current = ""
    stats = StreamStats("cam")
    writer = RecordingWriter(recorder, labels, stats, live=True, stop=threading.Event(), label_wait_s=0.3)
    writer.start()
    started = time.monotonic()
    for seq in range(20):
        writer.submit(frame(seq, started))
    writer.close()
    assert writer.join(5)
    assert [seq for seq, _ in recorder.labels] == list(range(20))
    assert time.monotonic() - started < 0.3 + 2.0  # one shared deadline, not 0.3 s per frame
    assert stats.frames_lost == {}


def test_a_live_recorder_that_cannot_keep_up_counts_the_frames_it_lost() -> None:
    labels, stats = FakeLabels(), StreamStats("cam")
    writer = RecordingWriter(FakeRecorder(), labels, stats, live=True, stop=threading.Event(), capacity=3,
                             put_timeout_s=0.01)  # never started: nothing drains the queue
    for seq in range(10):
        writer.submit(frame(seq, time.monotonic()))
    assert stats.frames_lost == {"recorder_behind": 7}
    assert stats.snapshot()["frames_lost"] == {"recorder_behind": 7}


def test_a_replay_recorder_waits_for_each_frames_own_labels_however_late() -> None:
    labels, recorder = labels_seen_by_recorder()
    writer = RecordingWriter(recorder, labels, StreamStats("cam"), live=False, stop=threading.Event(),
                             label_wait_s=0.01)
    writer.start()
    long_ago = time.monotonic() - 60  # decoded long before the model gets to it (a deep replay queue)
    for seq in range(4):
        writer.submit(frame(seq, long_ago))
    for seq in range(4):
        time.sleep(0.05)
        labels.advance(seq)
    writer.close()
    assert writer.join(5)
    assert recorder.labels == [(seq, f"after-{seq}") for seq in range(4)]
