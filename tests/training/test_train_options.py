"""Training promises from the README not covered elsewhere: what the dataset scan reads and ignores, --resize
alone sets the crop, early stopping ends a run, --deterministic is on while training (and off after)."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from sightline.cli import main
from sightline.model.bundle import ModelBundle, PreprocessSpec
from sightline.training import trainer as trainer_module
from sightline.training.config import load_config
from sightline.training.data import scan_dataset
from sightline.training.reports import read_metrics_csv
from sightline.training.trainer import TrainHooks, preprocess_spec

from .conftest import make_dataset

PATIENCE = 2


def test_nested_folders_are_read_and_hidden_files_and_other_extensions_ignored(dataset_factory):
    root = dataset_factory(n_train=2, classes=("rocket", "coffee"))
    sample = Image.open(next((root / "train" / "coffee").glob("*.jpg")))
    nested = root / "train" / "coffee" / "2024" / "june"
    nested.mkdir(parents=True)
    sample.save(nested / "deep.jpg")
    sample.save(root / "train" / "coffee" / "upper.JPEG")
    sample.save(root / "train" / "coffee" / ".hidden.jpg")  # hidden file
    (root / "train" / "coffee" / ".thumbnails").mkdir()
    sample.save(root / "train" / "coffee" / ".thumbnails" / "t.jpg")  # inside a hidden folder
    (root / "train" / "coffee" / "notes.txt").write_text("not an image")
    (root / "train" / "coffee" / "clip.mp4").write_bytes(b"\x00" * 64)
    (root / "train" / ".cache").mkdir()
    sample.save(root / "train" / ".cache" / "x.jpg")  # a hidden folder is not a class
    split = scan_dataset(root, val_split=0.5, seed=0)
    assert split.class_names == ["coffee", "rocket"]
    files = sorted(Path(p).relative_to(root / "train").as_posix() for p, _ in split.train + split.val)
    assert [f for f in files if f.startswith("coffee/")] == [
        "coffee/000.png", "coffee/001.jpg", "coffee/2024/june/deep.jpg", "coffee/upper.JPEG"]


@pytest.mark.parametrize("resize, crop", [(128, 112), (256, 224), (64, 56), (40, 35)])
def test_resize_alone_keeps_the_224_of_256_crop_ratio(tmp_path, resize, crop):
    cfg = load_config(None, dict(data=tmp_path, out=tmp_path / "run", resize=resize))
    inherited = PreprocessSpec(resize=256, crop=224)
    assert (preprocess_spec(cfg, inherited).resize, preprocess_spec(cfg, inherited).crop) == (resize, crop)
    explicit = load_config(None, dict(data=tmp_path, out=tmp_path / "run", resize=resize, crop=32))
    assert preprocess_spec(explicit, inherited).crop == 32


@pytest.fixture(scope="module")
def early_stopped_run(tmp_path_factory):
    """`sightline train --resize 128 --deterministic` with early stopping that no epoch after the first can
    satisfy (a gain of more than 0.999 in top-1), so the run must stop PATIENCE epochs after the first."""
    base = tmp_path_factory.mktemp("options")
    root = make_dataset(base / "data", n_train=4, n_val=3, classes=("chelsea", "coffee"), size=(48, 40))
    config = base / "train.yaml"
    config.write_text(f"warmup_epochs: 0\nearly_stopping:\n  patience: {PATIENCE}\n  min_delta: 0.999\n")
    out = base / "run"
    during: list[tuple[bool, bool]] = []

    def record(size: int) -> None:
        during.append((torch.are_deterministic_algorithms_enabled(),
                       torch.is_deterministic_algorithms_warn_only_enabled()))

    mp = pytest.MonkeyPatch()
    mp.setattr(trainer_module, "TrainHooks", lambda: TrainHooks(before_micro_batch=record))
    before = torch.are_deterministic_algorithms_enabled()
    try:
        code = main(["train", "--config", str(config), "--data", str(root), "--out", str(out), "--init", "scratch",
                     "--mode", "full", "--epochs", "8", "--batch-size", "4", "--lr", "1e-6", "--resize", "128",
                     "--deterministic", "--num-workers", "0", "--no-progress", "--device", "cpu"])
    finally:
        mp.undo()
    assert code == 0
    return out, during, before


def test_early_stopping_ends_the_run(early_stopped_run):
    out, _, _ = early_stopped_run
    rows = read_metrics_csv(out / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(1, PATIENCE + 2))  # not the 8 asked for
    report = json.loads((out / "report.json").read_text())
    assert report["training"]["stopped_early"] is True
    assert torch.load(out / "last.pt", weights_only=True)["progress"]["bad_epochs"] == PATIENCE


def test_resize_128_alone_gives_a_bundle_with_crop_112(early_stopped_run):
    out, _, _ = early_stopped_run
    bundle = ModelBundle.load(out / "bundle.pt")
    assert (bundle.preprocess.resize, bundle.preprocess.crop) == (128, 112)


def test_deterministic_is_on_while_training_and_restored_after(early_stopped_run):
    _, during, before = early_stopped_run
    assert during and set(during) == {(True, True)}  # deterministic kernels, warn-only
    assert torch.are_deterministic_algorithms_enabled() == before
