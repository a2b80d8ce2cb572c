"""`sightline eval` end to end: a clip of solid colours, a model that classifies colours, hand-computed scores.

The clip shows red, green and blue for one second each (10 fps, 30 frames). The model is a random-init
ResNet18 whose last layer is a nearest-centroid classifier over the network's own features of the three
colours, scaled so its probabilities are one-hot: its predictions are known exactly. labels.csv says
red 0-1 s, green 1-2 s and (wrongly) red 2-2.5 s, and nothing for 2.5-3 s, so:

- raw: frames 0-19 right, 20-24 wrong (blue shown, red labelled), 25-29 not scored -> 20/25;
- smoothed (EMA 0.6, relative hysteresis 0.1): on one-hot input the shown label switches on the second
  frame of a new colour (0.64 > 1.1 x 0.36), so frames 10 and 20 lag as well -> 19/25.
"""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from sightline.cli import main
from sightline.model.architectures import build_network
from sightline.model.bundle import ModelBundle, PreprocessSpec
from sightline.model.preprocess import Preprocessor

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
FPS = 10
LABELS = "video,start_s,end_s,label\nclip.mp4,0,1,red\nclip.mp4,1,2,green\nclip.mp4,2,2.5,red\n"


def write_colour_clip(path: Path, colours: list[str], per_colour: int = 10, size: tuple[int, int] = (160, 120),
                      fps: int = FPS) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(len(colours) * per_colour):
            image = np.empty((size[1], size[0], 3), np.uint8)
            image[:] = COLOURS[colours[i // per_colour]]
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def colour_bundle(path: Path) -> Path:
    """ResNet18 (random init) + a last layer that picks the colour whose feature centroid is nearest."""
    torch.manual_seed(0)
    net = build_network("resnet18", len(COLOURS)).eval()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    spec = PreprocessSpec(64, 56)
    net.fc = torch.nn.Identity()
    images = [np.full((64, 85, 3), rgb, np.uint8) for rgb in COLOURS.values()]
    with torch.inference_mode():
        feats = net(Preprocessor(spec, torch.device("cpu"))(images)).double()
    # argmin |x - mu_c|^2 == argmax 2 mu_c.x - |mu_c|^2; the scale makes the closest wrong centroid 60 nats behind.
    dist = torch.cdist(feats, feats) ** 2
    scale = 60.0 / float(dist[dist > 0].min())
    state["fc.weight"] = (2 * feats * scale).float()
    state["fc.bias"] = (-(feats**2).sum(dim=1) * scale).float()
    return ModelBundle("resnet18", list(COLOURS), state, spec).save(path)


def constant_bundle(path: Path, label: str, spec: PreprocessSpec = PreprocessSpec(64, 56)) -> Path:
    """A model that always answers ``label`` (zero last-layer weights, a bias for that class)."""
    torch.manual_seed(1)
    state = build_network("resnet18", len(COLOURS)).state_dict()
    state["fc.weight"] = torch.zeros_like(state["fc.weight"])
    state["fc.bias"] = torch.tensor([20.0 if name == label else 0.0 for name in COLOURS])
    return ModelBundle("resnet18", list(COLOURS), state, spec).save(path)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("eval")
    write_colour_clip(root / "clip.mp4", ["red", "green", "blue"])
    colour_bundle(root / "colours.pt")
    constant_bundle(root / "always_red.pt", "red")
    (root / "labels.csv").write_text(LABELS, encoding="utf-8")
    return root


def run_eval(media: Path, out: Path, *extra: str, labels: Path | None = None, model: str = "colours.pt") -> int:
    return main(["eval", "--model", str(media / model), "--labels", str(labels or media / "labels.csv"),
                 "--device", "cpu", "--out", str(out), *extra])


def load_report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def fast_report(media: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("fast")
    assert run_eval(media, out) == 0
    return out, load_report(out)


def test_exact_accuracy_and_confusion_against_hand_numbers(fast_report: tuple[Path, dict]) -> None:
    _, report = fast_report
    assert report["frames"] == {"decoded": 30, "classified": 30, "scored": 25, "ignored": 5, "dropped": 0}
    assert report["accuracy"]["raw"] == 0.8
    assert report["accuracy"]["smoothed"] == 0.76
    assert report["confusion"]["rows"] == ["green", "red"]
    assert report["confusion"]["columns"] == ["green", "red", "(other)"]
    assert report["confusion"]["raw"] == [[10, 0, 0], [0, 10, 5]]
    assert report["confusion"]["smoothed"] == [[9, 1, 0], [1, 10, 4]]
    assert report["other_predictions"] == {"blue": 5}


def test_per_class_scores_against_hand_numbers(fast_report: tuple[Path, dict]) -> None:
    _, report = fast_report
    red = next(c for c in report["per_class"] if c["class"] == "red")
    assert red["support"] == 15
    assert red["raw"] == {"precision": 1.0, "recall": 0.6667, "f1": 0.8}
    assert report["macro_f1"]["raw"] == 0.9


def test_time_to_correct_and_flicker_against_hand_numbers(fast_report: tuple[Path, dict]) -> None:
    _, report = fast_report
    ttc = report["time_to_correct"]
    by_line = {s["line"]: (s["raw_s"], s["smoothed_s"]) for s in ttc["segments"]}
    assert by_line == {2: (0.0, 0.0), 3: (0.0, 0.1), 4: (None, None)}
    assert ttc["smoothed"]["never"] == 1 and ttc["smoothed"]["median_s"] == 0.05
    # 2 label changes (raw and smoothed), 3 in the truth, over a 3 s clip.
    assert report["changes_per_min"] == {"raw": 40.0, "smoothed": 40.0, "truth": 60.0}


def test_writes_predictions_report_and_pictures(fast_report: tuple[Path, dict]) -> None:
    out, report = fast_report
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 30
    frame = lines[22]
    assert (frame["time"], frame["truth"], frame["top"][0]["label"]) == (2.2, "red", "blue")
    assert frame["correct_raw"] is False and lines[27]["truth"] is None
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "| frame accuracy | 80.0% | 76.0% |" in markdown
    # the smoothed column says what it is: the shown label, and the settings that make it lag
    assert "*Smoothed* is the label the service shows" in markdown
    assert "more than 1.1 x its averaged probability (relative hysteresis 0.1)" in markdown
    for png in ("confusion.png", report["videos"][0]["timeline"]):
        with Image.open(out / png) as image:
            assert image.format == "PNG" and image.size[0] > 300


def test_background_class_scores_frames_outside_segments(media: Path, tmp_path: Path) -> None:
    assert run_eval(media, tmp_path, "--background", "blue") == 0
    report = load_report(tmp_path)
    assert report["frames"]["scored"] == 30
    assert report["accuracy"]["raw"] == pytest.approx(25 / 30, abs=1e-4)
    assert report["confusion"]["raw"] == [[10, 0, 0, 0], [0, 10, 5, 0], [0, 0, 5, 0]]


def test_realtime_classifies_frames_as_fast_does_and_accounts_for_drops(
        media: Path, tmp_path: Path, fast_report: tuple[Path, dict]) -> None:
    """Load-proof: a busy machine may make the live policy drop a frame, so compare frame by frame (every
    frame realtime classified got fast mode's answer) and check the drop accounting, not the totals."""
    assert run_eval(media, tmp_path, "--realtime") == 0
    report = load_report(tmp_path)
    assert report["mode"] == "realtime"
    frames = report["frames"]
    assert frames["classified"] + frames["dropped"] == frames["decoded"] == 30
    assert frames["classified"] >= 15  # a tiny model at 10 fps keeps up with most frames even under load
    assert report["wall_s"] >= 2.5  # paced at 10 fps: the 3 s clip takes about 3 s, never less

    def raw_labels(out: Path) -> dict[tuple[str, int], str]:
        lines = (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
        return {(r["video"], r["seq"]): r["top"][0]["label"] for r in map(json.loads, lines)}

    fast, realtime = raw_labels(fast_report[0]), raw_labels(tmp_path)
    assert len(realtime) == frames["classified"]
    assert realtime == {key: fast[key] for key in realtime}
    if frames["dropped"] == 0:  # the README's example numbers hold when nothing dropped
        assert report["accuracy"] == fast_report[1]["accuracy"]


def test_realtime_reports_the_frames_it_had_to_drop(tmp_path: Path) -> None:
    # 1000 fps for 0.1 s against a model at 224 px on the CPU: it cannot keep up, the live queue drops.
    write_colour_clip(tmp_path / "fast.mp4", ["red"], per_colour=100, fps=1000)
    constant_bundle(tmp_path / "big.pt", "red", PreprocessSpec(256, 224))
    labels = tmp_path / "labels.csv"
    labels.write_text("video,start_s,end_s,label\nfast.mp4,0,0.1,red\n", encoding="utf-8")
    assert run_eval(tmp_path, tmp_path / "out", "--realtime", "--batch-size", "4", labels=labels, model="big.pt") == 0
    frames = load_report(tmp_path / "out")["frames"]
    assert frames["decoded"] == 100
    assert frames["dropped"] > 0
    assert frames["classified"] + frames["dropped"] == frames["decoded"]


def test_several_videos_are_scored_each_and_together(media: Path, tmp_path: Path) -> None:
    for name in ("one.mp4", "two.mp4"):
        shutil.copyfile(media / "clip.mp4", tmp_path / name)
    labels = tmp_path / "labels.csv"
    labels.write_text("video,start_s,end_s,label\none.mp4,0,3,red\ntwo.mp4,0,1,red\ntwo.mp4,1,2,green\n",
                      encoding="utf-8")
    assert run_eval(media, tmp_path / "out", "--parallel", "1", labels=labels) == 0
    report = load_report(tmp_path / "out")
    assert [(v["video"], v["accuracy_raw"]) for v in report["videos"]] == [("one.mp4", 0.3333), ("two.mp4", 1.0)]
    assert report["accuracy"]["raw"] == 0.6  # (10 + 20) of (30 + 20)
    assert len({v["timeline"] for v in report["videos"]}) == 2


def test_given_video_is_the_only_one_replayed(media: Path, tmp_path: Path) -> None:
    shutil.copyfile(media / "clip.mp4", tmp_path / "one.mp4")
    labels = tmp_path / "labels.csv"
    labels.write_text("video,start_s,end_s,label\nold/one.mp4,0,1,red\nmissing.mp4,0,1,red\n", encoding="utf-8")
    assert run_eval(media, tmp_path / "out", "--video", str(tmp_path / "one.mp4"), labels=labels) == 0
    report = load_report(tmp_path / "out")
    assert [v["video"] for v in report["videos"]] == ["old/one.mp4"]
    assert report["frames"]["scored"] == 10


def test_compare_runs_both_models_and_prints_one_table(media: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert run_eval(media, tmp_path, "--compare", str(media / "always_red.pt")) == 0
    printed = capsys.readouterr().out
    row = next(line for line in printed.splitlines() if line.startswith("| frame accuracy, raw"))
    assert row == "| frame accuracy, raw | 80.0% | 60.0% |"  # always red: the 15 red frames of 25
    assert load_report(tmp_path / "model_b")["confusion"]["raw"] == [[0, 10, 0], [0, 15, 0]]
    assert row in (tmp_path / "compare.md").read_text(encoding="utf-8")
    rows = json.loads((tmp_path / "compare.json").read_text(encoding="utf-8"))["rows"]
    assert rows["frame accuracy, raw"] == ["80.0%", "60.0%"]


def test_segment_past_the_end_is_a_warning(media: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("video,start_s,end_s,label\nclip.mp4,0,1,red\nclip.mp4,2.5,9,blue\n", encoding="utf-8")
    (tmp_path / "clip.mp4").symlink_to(media / "clip.mp4")
    assert run_eval(media, tmp_path / "out", labels=labels) == 0
    report = load_report(tmp_path / "out")
    assert report["warnings"] == ["clip.mp4: segment line 3 (2.5-9 s blue) ends after the video (3.000 s)"]
    assert report["accuracy"]["raw"] == 1.0


# -- errors: exit code 2 and one line ------------------------------------------------------------------

def fails(capsys: pytest.CaptureFixture[str], code: int) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def labels_file(tmp_path: Path, media: Path, body: str) -> Path:
    if not (tmp_path / "clip.mp4").exists():
        (tmp_path / "clip.mp4").symlink_to(media / "clip.mp4")
    path = tmp_path / "labels.csv"
    path.write_text("video,start_s,end_s,label\n" + body, encoding="utf-8")
    return path


def test_error_labels_not_in_the_model(media: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = labels_file(tmp_path, media, "clip.mp4,0,1,red\nclip.mp4,1,2,purple\nclip.mp4,2,3,Blue\n")
    line = fails(capsys, run_eval(media, tmp_path / "out", labels=labels))
    assert "labels not in the model's classes (2): 'Blue', 'purple'" in line
    assert not (tmp_path / "out").exists()


def test_error_background_not_in_the_model(media: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = fails(capsys, run_eval(media, tmp_path, "--background", "Green"))
    assert "--background not in the model's classes: 'Green' is not one of them" in line
    assert "did you mean 'Green' -> 'green'" in line


def test_error_overlapping_segments(media: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = labels_file(tmp_path, media, "clip.mp4,0,1.5,red\nclip.mp4,1,2,green\n")
    line = fails(capsys, run_eval(media, tmp_path / "out", labels=labels))
    assert "overlapping segments in clip.mp4: line 2 (0-1.5 s red) and line 3 (1-2 s green)" in line


def test_error_malformed_rows(media: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = labels_file(tmp_path, media, "clip.mp4,0,1,red\nclip.mp4,one,2,green\nclip.mp4,2,3\n")
    line = fails(capsys, run_eval(media, tmp_path / "out", labels=labels))
    assert "line 3: start_s 'one' is not a time in seconds" in line
    assert "line 4: expected 4 fields, found 3" in line


def test_error_missing_video(media: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = labels_file(tmp_path, media, "clip.mp4,0,1,red\ngone.mp4,0,1,red\n")
    line = fails(capsys, run_eval(media, tmp_path / "out", labels=labels))
    assert f"videos not found: gone.mp4 (looked for {tmp_path / 'gone.mp4'})" in line


def test_error_given_video_not_in_labels(media: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.mp4"
    other.symlink_to(media / "clip.mp4")
    line = fails(capsys, run_eval(media, tmp_path / "out", "--video", str(other)))
    assert "--video" in line and "no segments for it in labels.csv (its videos: clip.mp4)" in line



def test_every_kind_of_problem_is_reported_at_once_with_counts(media: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.mp4").write_text("not a video at all", encoding="utf-8")
    labels = labels_file(tmp_path, media, "clip.mp4,0,1,red\nclip.mp4,1,2,purple\nclip.mp4,2,3,Blue\n"
                                          "gone.mp4,0,1,red\nlost.mp4,0,1,red\nnotes.mp4,0,1,teal\n")
    line = fails(capsys, run_eval(media, tmp_path / "out", labels=labels))
    assert "6 problems of 3 kinds, nothing was replayed: " in line, line
    assert f"videos not found (2): gone.mp4 (looked for {tmp_path / 'gone.mp4'}); lost.mp4 (looked for" in line
    assert f"unreadable videos: {tmp_path / 'notes.mp4'}: not a readable video (" in line
    # the labels of every video are checked, also those that cannot be replayed
    assert "labels not in the model's classes (3): 'Blue', 'purple', 'teal'" in line
    assert not (tmp_path / "out").exists()  # stopped before any video was decoded


def test_error_unreadable_video(media: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.mp4").write_text("not a video at all", encoding="utf-8")
    labels = labels_file(tmp_path, media, "clip.mp4,0,1,red\nnotes.mp4,0,1,red\n")
    line = fails(capsys, run_eval(media, tmp_path / "out", labels=labels))
    assert f"{tmp_path / 'notes.mp4'}: not a readable video (" in line
    assert not (tmp_path / "out").exists()  # stopped before any video was decoded


def test_video_failing_mid_replay_is_a_warning_and_exit_1(media: Path, tmp_path: Path) -> None:
    from sightline.synthetic_media import truncate_file

    whole = write_colour_clip(tmp_path / "whole.mkv", ["red", "green", "blue"])
    truncate_file(whole, tmp_path / "cut.mkv", 0.5)  # opens (the header says 3 s), ends early
    labels = labels_file(tmp_path, media, "clip.mp4,0,1,red\nclip.mp4,1,2,green\ncut.mkv,0,1,red\n")
    assert run_eval(media, tmp_path / "out", labels=labels) == 1
    report = load_report(tmp_path / "out")
    failures = [w for w in report["warnings"] if w.startswith("cut.mkv: replay failed")]
    assert len(failures) == 1 and "truncated" in failures[0], report["warnings"]
    videos = {v["video"]: v for v in report["videos"]}
    assert videos["cut.mkv"]["state"] == "failed"
    assert videos["clip.mp4"]["accuracy_raw"] == 1.0  # the other video was scored in full


@pytest.mark.parametrize("options, smoothed, changes", [
    # EMA off: the shown label follows the one-hot raw label at once -> smoothed == raw (20/25)
    (["--smoothing-ema", "0"], 0.8, "raw"),
    # the widest margin: a new colour must score 1.99 x the shown one. Its EMA after k frames is 1 - 0.6^k against
    # 0.6^k, past 1.99 x only at k = 3 (0.784 > 0.43), so frames 10 and 11 show red (wrong) as well as 20 -> 18/25;
    # the shown label still changes twice (at frames 12 and 22), as the raw one does
    (["--hysteresis", "0.99"], 0.72, "raw"),
])
def test_smoothing_options_change_the_smoothed_scores(media: Path, tmp_path: Path, fast_report: tuple[Path, dict],
                                                      options: list[str], smoothed: float, changes) -> None:
    assert run_eval(media, tmp_path, *options) == 0
    report = load_report(tmp_path)
    assert report["accuracy"]["raw"] == fast_report[1]["accuracy"]["raw"] == 0.8
    assert fast_report[1]["accuracy"]["smoothed"] == 0.76  # the defaults (0.6, 0.1): 19/25
    assert report["accuracy"]["smoothed"] == pytest.approx(smoothed, abs=1e-4)
    assert report["settings"]["ema"] == (0.0 if "--smoothing-ema" in options else 0.6)
    assert report["settings"]["hysteresis"] == (0.99 if "--hysteresis" in options else 0.1)
    flips = report["changes_per_min"]
    assert flips["smoothed"] == (flips["raw"] if changes == "raw" else changes), flips
