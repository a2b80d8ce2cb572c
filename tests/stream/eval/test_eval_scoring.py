"""stream.eval.scoring and stream.eval.labels: metrics and ground-truth parsing, without video or model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sightline.stream.eval import scoring
from sightline.stream.eval.labels import LabelsError, check_classes, parse_time, read_labels, resolve_videos
from sightline.stream.eval.plots import runs
from sightline.stream.outputs.smoothing import Smoother


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- scoring -----------------------------------------------------------------------------------------

def test_truth_at_uses_half_open_segments_and_background() -> None:
    times = np.array([0.0, 0.9, 1.0, 1.5, 2.0, 2.6, 3.5])
    truth = scoring.truth_at(times, [0.0, 1.0, 2.0], [1.0, 2.0, 2.5], [4, 7, 4])
    assert truth.tolist() == [4, 4, 7, 7, 4, -1, -1]
    with_background = scoring.truth_at(times, [0.0, 1.0, 2.0], [1.0, 2.0, 2.5], [4, 7, 4], background=9)
    assert with_background.tolist() == [4, 4, 7, 7, 4, 9, 9]


def test_confusion_matrix_leaves_out_ignored_frames_and_has_an_other_column() -> None:
    truth = np.array([0, 0, 1, 1, 1, -1])
    pred = np.array([0, 2, 1, 0, 1, 1])  # 2 == "(other)" for two classes
    assert scoring.confusion_matrix(truth, pred, 2).tolist() == [[1, 0, 1], [1, 2, 0]]


def test_accuracy_is_none_without_scored_frames() -> None:
    assert scoring.accuracy(np.array([-1, -1]), np.array([0, 1])) is None
    assert scoring.accuracy(np.array([0, 1, -1, 1]), np.array([0, 0, 1, 1])) == pytest.approx(2 / 3)


def test_topk_accuracy_counts_truth_anywhere_in_the_topk() -> None:
    truth = np.array([3, 1, 2, -1])
    topk = np.array([[3, 0], [0, 1], [0, 1], [9, 9]])
    assert scoring.topk_accuracy(truth, topk) == pytest.approx(2 / 3)


def test_per_class_precision_recall_f1_by_hand() -> None:
    confusion = np.array([[8, 2, 0],   # class 0: 8 right, 2 called class 1
                          [4, 6, 5]])  # class 1: 6 right, 4 called class 0, 5 outside the set
    a, b = scoring.per_class(confusion)
    assert a["precision"] == pytest.approx(8 / 12) and a["recall"] == pytest.approx(8 / 10)
    assert a["f1"] == pytest.approx(2 * (8 / 12) * 0.8 / (8 / 12 + 0.8))
    assert b["precision"] == pytest.approx(6 / 8) and b["recall"] == pytest.approx(6 / 15)
    assert scoring.macro_f1([a, b]) == pytest.approx((a["f1"] + b["f1"]) / 2)


def test_per_class_is_undefined_not_zero_for_a_class_never_predicted() -> None:
    (scores,) = scoring.per_class(np.array([[0, 3]]))
    assert scores["precision"] is None and scores["recall"] == 0.0 and scores["f1"] is None


def test_smoothing_lowers_flicker_on_a_noisy_sequence() -> None:
    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1, 2], 100)
    probs = np.full((len(truth), 3), 0.2)
    probs[np.arange(len(truth)), truth] = 0.45
    probs += rng.uniform(0, 0.5, probs.shape)  # near ties: the raw argmax often jumps to a wrong class
    probs /= probs.sum(axis=1, keepdims=True)
    raw = probs.argmax(axis=1)
    smoother = Smoother(["a", "b", "c"], ema=0.6, hysteresis=0.05)
    smoothed = np.array([smoother.update(p).index for p in probs])
    duration = len(truth) / 25
    raw_rate = scoring.changes_per_minute(scoring.label_changes(raw), duration)
    smoothed_rate = scoring.changes_per_minute(scoring.label_changes(smoothed), duration)
    assert scoring.label_changes(raw) > 50
    assert smoothed_rate < raw_rate / 5


def test_label_changes_and_rate() -> None:
    assert scoring.label_changes([1, 1, 2, 2, 1, 1]) == 2
    assert scoring.label_changes([5]) == 0
    assert scoring.changes_per_minute(3, 30.0) == 6.0


def test_time_to_correct_is_measured_from_the_segment_start_within_the_segment() -> None:
    times = np.arange(10) * 0.1
    pred = np.array([0, 0, 0, 1, 1, 0, 1, 1, 1, 1])
    assert scoring.time_to_correct(times, pred, 0.2, 0.6, 1) == pytest.approx(0.1)
    assert scoring.time_to_correct(times, pred, 0.0, 0.3, 1) is None  # the right label only comes later
    summary = scoring.summarize_delays([0.1, None, 0.3])
    assert summary["median_s"] == pytest.approx(0.2) and summary["never"] == 1 and summary["segments"] == 3


def test_latency_quantiles_in_milliseconds() -> None:
    lat = scoring.latency_ms(np.linspace(0.001, 0.1, 100))
    assert lat["p50"] == pytest.approx(50.5, abs=0.01)
    assert lat["p99"] == pytest.approx(99.01, abs=0.01)


def test_timeline_runs_span_until_the_next_frame() -> None:
    assert runs(np.array([0.0, 0.1, 0.2, 0.3]), np.array([1, 1, 2, 2]), 0.4) == [
        (0.0, pytest.approx(0.2), 1), (0.2, pytest.approx(0.2), 2)]


# -- labels.csv ----------------------------------------------------------------------------------------

def test_read_labels_sorts_segments_per_video_and_skips_comments(tmp_path: Path) -> None:
    path = write(tmp_path / "labels.csv", "video,start_s,end_s,label\n# a comment\n\n"
                                          "a.mp4,2,3,dog\na.mp4,0:00.5,2,cat\nb.mp4,0,1,cat\n")
    segments = read_labels(path)
    assert [(s.start_s, s.label, s.line) for s in segments["a.mp4"]] == [(0.5, "cat", 5), (2.0, "dog", 4)]
    assert list(segments) == ["a.mp4", "b.mp4"]


def test_read_labels_accepts_columns_in_any_order(tmp_path: Path) -> None:
    path = write(tmp_path / "labels.csv", "label,video,end_s,start_s\ncat,a.mp4,2,1\n")
    (seg,) = read_labels(path)["a.mp4"]
    assert (seg.start_s, seg.end_s, seg.label) == (1.0, 2.0, "cat")


def test_read_labels_names_every_malformed_line(tmp_path: Path) -> None:
    path = write(tmp_path / "labels.csv", "video,start_s,end_s,label\na.mp4,0,1,cat\na.mp4,x,2,dog\n"
                                          "a.mp4,3,2,dog\na.mp4,4,5\n")
    with pytest.raises(LabelsError) as err:
        read_labels(path)
    message = str(err.value)
    assert "line 3: start_s 'x' is not a time" in message
    assert "line 4: end_s 2 must be after start_s 3" in message
    assert "line 5: expected 4 fields, found 3" in message
    assert "\n" not in message


def test_read_labels_names_both_overlapping_segments(tmp_path: Path) -> None:
    path = write(tmp_path / "labels.csv", "video,start_s,end_s,label\na.mp4,0,1.5,cat\na.mp4,1.5,2,dog\n"
                                          "a.mp4,1.8,3,cow\nb.mp4,1,2,cow\n")
    with pytest.raises(LabelsError, match=r"overlapping segments in a\.mp4: line 3 .* and line 4 "):
        read_labels(path)


def test_read_labels_needs_the_header(tmp_path: Path) -> None:
    with pytest.raises(LabelsError, match=r"line 1: the header must name .* \(missing: start_s, end_s\)"):
        read_labels(write(tmp_path / "labels.csv", "video,label\na.mp4,cat\n"))


def test_parse_time_rejects_garbage() -> None:
    assert parse_time("1:02.5") == 62.5 and parse_time("1:00:00") == 3600.0
    for bad in ("", "-1", "1e3", "nan", "1:2:3:4"):
        with pytest.raises(ValueError):
            parse_time(bad)


def test_check_classes_lists_unknown_labels_with_hints(tmp_path: Path) -> None:
    segments = read_labels(write(tmp_path / "labels.csv", "video,start_s,end_s,label\na,0,1,tabbycat\n"
                                                          "a,1,2,zebra\na,2,3,purple\n"))
    with pytest.raises(LabelsError) as err:
        check_classes(segments, ["tabby cat", "zebra", "dog"], "m.pt")
    assert "labels not in the model's classes (2): 'purple', 'tabbycat'" in str(err.value)
    assert "'tabbycat' -> 'tabby cat'" in str(err.value)


def test_resolve_videos_relative_to_the_csv_and_by_file_name(tmp_path: Path) -> None:
    (tmp_path / "cams").mkdir()
    (tmp_path / "cams" / "a.mp4").write_bytes(b"x")
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "a.mp4").write_bytes(b"y")
    labels = write(tmp_path / "labels.csv", "video,start_s,end_s,label\ncams/a.mp4,0,1,cat\n")
    segments = read_labels(labels)
    (job,) = resolve_videos(labels, segments)
    assert job.path == tmp_path / "cams" / "a.mp4"
    (given,) = resolve_videos(labels, segments, [other / "a.mp4"])
    assert given.name == "cams/a.mp4" and given.path == other / "a.mp4"
