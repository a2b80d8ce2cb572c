"""One real `sightline train` run from scratch on crops of four photos, checked from every side."""

import json
import shutil

import pytest
import torch
from PIL import Image
from sightline.cli import main
from sightline.model.bundle import ModelBundle
from sightline.training.reports import METRIC_COLUMNS, read_metrics_csv

from .conftest import make_dataset

EPOCHS = 5


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("train")
    root = make_dataset(base / "data", n_train=12, n_val=4, size=(48, 40))
    (root / "train" / "coffee" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff this is not really a jpeg")
    config = base / "train.yaml"
    config.write_text("warmup_epochs: 0.5\naugment:\n  scale: [0.5, 1.0]\nepochs: 99\n")
    out = base / "run"
    code = main(["train", "--config", str(config), "--data", str(root), "--out", str(out), "--init", "scratch",
                 "--mode", "full", "--epochs", str(EPOCHS), "--batch-size", "8", "--optimizer", "adamw",
                 "--lr", "0.003", "--resize", "40", "--crop", "32", "--num-workers", "0", "--no-progress",
                 "--device", "cpu"])
    assert code == 0
    return root, out, json.loads((out / "report.json").read_text())


def test_validation_accuracy_is_well_above_chance(run):
    _, _, report = run
    assert report["val"]["acc1"] >= 0.7  # chance is 0.25


def test_run_directory_has_every_output(run):
    _, out, _ = run
    for name in ("bundle.pt", "last.pt", "metrics.csv", "report.json", "per_class.csv"):
        assert (out / name).stat().st_size > 0, name
    for name in ("curves.png", "confusion_matrix.png"):
        with Image.open(out / name) as img:
            assert img.format == "PNG" and img.width > 300


def test_metrics_csv_has_one_row_per_epoch(run):
    _, out, _ = run
    rows = read_metrics_csv(out / "metrics.csv")
    assert list(rows[0]) == list(METRIC_COLUMNS)
    assert [int(r["epoch"]) for r in rows] == list(range(1, EPOCHS + 1))  # the flag beat the file's 99
    assert float(rows[-1]["lr"]) < float(rows[0]["lr"])  # cosine decay
    assert all(float(r["images_per_s"]) > 0 and r["effective_batch"] == "8" for r in rows)


def test_corrupt_image_is_skipped_and_counted(run):
    _, out, report = run
    skipped = report["dataset"]["skipped_images"]
    assert skipped["count"] == 1 and list(skipped["files"])[0].endswith("coffee/corrupt.jpg")
    assert read_metrics_csv(out / "metrics.csv")[-1]["skipped_images"] == "1"


def test_report_evaluates_the_bundle_as_served_and_matches_validation(run):
    _, out, report = run
    rows = read_metrics_csv(out / "metrics.csv")
    best = rows[report["training"]["best_epoch"] - 1]
    assert float(best["val_acc1"]) == pytest.approx(report["val"]["acc1"], abs=1e-6)
    assert float(best["val_loss"]) == pytest.approx(report["val"]["loss"], rel=1e-3, abs=1e-5)
    assert [r["support"] for r in report["val"]["per_class"]] == [4, 4, 4, 4]
    assert sum(map(sum, report["val"]["confusion"]["counts"])) == 16
    table = (out / "per_class.csv").read_text().splitlines()
    assert table[0] == "class,precision,recall,f1,support" and len(table) == 5


def test_last_pt_is_the_full_state_and_loads_weights_only(run):
    _, out, _ = run
    state = torch.load(out / "last.pt", weights_only=True)
    assert len(state["progress"]["history"]) == EPOCHS
    assert state["optimizer"]["state"] and state["scheduler"]["step_count"] > 0
    assert {"torch", "numpy", "python", "loader"} <= set(state["rng"][0])
    assert state["config"]["crop"] == 32


def test_bundle_keeps_the_serving_preprocessing_and_provenance(run):
    root, out, report = run
    bundle = ModelBundle.load(out / "bundle.pt")
    assert bundle.class_names == ["astronaut", "chelsea", "coffee", "rocket"]
    assert (bundle.preprocess.resize, bundle.preprocess.crop) == (40, 32)
    assert bundle.provenance["val_acc1"] == pytest.approx(report["val"]["acc1"])
    assert bundle.provenance["dataset"] == str(root)


def test_bundle_predicts_through_sightline_predict(run, capsys):
    root, out, report = run
    images = sorted((root / "val").glob("*/*"))
    capsys.readouterr()
    # fp32 like training's own validation (precision auto is bf16 on CPUs that run it natively)
    assert main(["predict", "--model", str(out / "bundle.pt"), *map(str, images), "--json", "--topk", "2",
                 "--precision", "fp32"]) == 0
    results = json.loads(capsys.readouterr().out)
    right = sum(r["top"][0]["label"] == images[i].parent.name for i, r in enumerate(results))
    assert right / len(images) == pytest.approx(report["val"]["acc1"])


def test_evaluate_images_gives_the_same_numbers(run, tmp_path, capsys):
    root, out, report = run
    capsys.readouterr()
    code = main(["evaluate-images", str(out / "bundle.pt"), str(root / "val"), "--out", str(tmp_path / "ev"),
                 "--json", "--num-workers", "0", "--no-progress", "--precision", "fp32"])  # as training validated
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["acc1"] == pytest.approx(report["val"]["acc1"])
    assert result["confusion"]["counts"] == report["val"]["confusion"]["counts"]
    assert (tmp_path / "ev" / "confusion_matrix.png").exists() and (tmp_path / "ev" / "per_class.csv").exists()


def test_evaluate_images_prints_the_table(run, capsys):
    root, out, _ = run
    capsys.readouterr()
    assert main(["evaluate-images", str(out / "bundle.pt"), str(root / "val"), "--num-workers", "0",
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "precision  recall" in text and "confusion matrix" in text and "rocket" in text


def test_evaluate_images_defaults_fit_the_machine_and_headers_are_whole(run, tmp_path):
    import subprocess
    import sys

    root, out, _ = run
    long_name = tmp_path / "val"
    shutil.copytree(root / "val", long_name)
    proc = subprocess.run([sys.executable, "-m", "sightline", "evaluate-images", str(out / "bundle.pt"),
                           str(long_name), "--no-progress", "--device", "cpu"],
                          capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "worker processes in total" not in proc.stderr  # default workers never exceed the usable cores
    header = proc.stdout.split("confusion matrix (rows true, columns predicted):\n")[1].splitlines()[0]
    assert header.split() == ["astronaut", "chelsea", "coffee", "rocket"]  # whole names, not cut at 8


def test_format_confusion_aligns_whole_names():
    from sightline.training.evaluate import format_confusion

    text = format_confusion(["a", "bb"], ["a", "a_very_long_class"], [[1, 2000], [30, 4]])
    lines = text.splitlines()
    assert lines[0].split() == ["a", "a_very_long_class"]
    assert {len(line) for line in lines} == {len(lines[0])}  # every row as wide as the header
    assert lines[1].split() == ["a", "1", "2000"]


def test_evaluate_images_names_folders_the_model_does_not_know(run, tmp_path, capsys):
    root, out, _ = run
    shutil.copytree(root / "val", tmp_path / "val")
    (tmp_path / "val" / "rocket").rename(tmp_path / "val" / "zebra")
    assert main(["evaluate-images", str(out / "bundle.pt"), str(tmp_path / "val"), "--num-workers", "0"]) == 2
    assert "not among the model's 4 classes: zebra" in capsys.readouterr().err


def test_head_mode_fine_tuning_from_the_bundle_changes_only_fc(run, tmp_path):
    root, out, _ = run
    code = main(["train", "--data", str(root), "--out", str(tmp_path / "ft"), "--init", str(out / "bundle.pt"),
                 "--mode", "head", "--epochs", "1", "--batch-size", "16", "--lr", "0.01", "--num-workers", "0",
                 "--no-progress", "--device", "cpu"])
    assert code == 0
    before = ModelBundle.load(out / "bundle.pt")
    after = ModelBundle.load(tmp_path / "ft" / "bundle.pt")
    assert after.preprocess == before.preprocess  # inherited from the bundle it continued from
    changed = {k for k, v in after.state_dict.items() if not torch.equal(v, before.state_dict[k])}
    assert changed == {"fc.weight", "fc.bias"}


def test_one_epoch_with_the_default_mode_trains_the_head_from_the_bundle(run, tmp_path, caplog):
    root, out, _ = run
    caplog.set_level("INFO")
    code = main(["train", "--data", str(root), "--out", str(tmp_path / "one"), "--init", str(out / "bundle.pt"),
                 "--epochs", "1", "--batch-size", "16", "--num-workers", "0", "--no-progress", "--device", "cpu"])
    assert code == 0
    assert "all in the head phase" in caplog.text
    before = ModelBundle.load(out / "bundle.pt")
    after = ModelBundle.load(tmp_path / "one" / "bundle.pt")
    changed = {k for k, v in after.state_dict.items() if not torch.equal(v, before.state_dict[k])}
    assert changed == {"fc.weight", "fc.bias"}


def test_an_existing_run_is_not_overwritten(run, capsys):
    root, out, _ = run
    assert main(["train", "--data", str(root), "--out", str(out), "--init", "scratch", "--mode", "full"]) == 2
    assert "already holds a run" in capsys.readouterr().err


@pytest.mark.parametrize("topk, classes, expected", [
    (4, 4, ["val top-1", "train top-1"]),  # top-4 of 4 classes is always 1: not drawn
    (5, 10, ["val top-1", "val top-5", "train top-1"]),
    (3, 7, ["val top-1", "val top-3", "train top-1"]),
])
def test_accuracy_curves_name_the_real_k(run, topk, classes, expected):
    from sightline.training.reports import curves_figure

    history = [{k: float(v) if k not in ("phase",) else v for k, v in row.items()}
               for row in read_metrics_csv(run[1] / "metrics.csv")]
    accuracy = curves_figure(history, topk=topk, classes=classes).axes[1]
    assert [t.get_text() for t in accuracy.get_legend().get_texts()] == expected
