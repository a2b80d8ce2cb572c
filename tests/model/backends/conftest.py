"""A bundle fine-tuned by the project's own trainer on crops of scikit-image photos (so agreement and accuracy
figures mean something), trained once per session in a few seconds, with its train/ and val/ folders."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from sightline.cli import main
from sightline.model.bundle import ModelBundle

from tests.training.conftest import make_dataset


@dataclass(frozen=True)
class Trained:
    bundle: Path
    data: Path
    val_acc1: float


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Trained:
    base = tmp_path_factory.mktemp("backends")
    data = make_dataset(base / "data", n_train=16, n_val=30, size=(48, 40), seed=3)
    out = base / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # session fixtures start before tests/model's one-thread fixture; 2 busy cores spin
    try:
        code = main(["train", "--data", str(data), "--out", str(out), "--init", "scratch", "--mode", "full",
                     "--epochs", "6", "--batch-size", "8", "--optimizer", "adamw", "--lr", "0.003", "--resize", "40",
                     "--crop", "32", "--num-workers", "0", "--no-progress", "--device", "cpu", "--seed", "0"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    return Trained(out / "bundle.pt", data, float(report["val"]["acc1"]))


@pytest.fixture
def bundle_copy(trained: Trained, tmp_path: Path) -> Path:
    """The trained bundle in a test's own folder, so each test starts with an empty artefact cache.
    Re-saved with the same provenance, which still names the session's train/ and val/ folders."""
    return ModelBundle.load(trained.bundle).save(tmp_path / "model.pt")
