import pytest
import torch
from sightline.cli import main
from sightline.training.config import load_config
from sightline.training.reports import read_metrics_csv
from sightline.training.trainer import Trainer, TrainHooks

TIMING = ("images_per_s", "seconds")


class Interrupted(Exception):
    """Stands in for a crash or Ctrl-C after the first epoch's checkpoint."""


def _stop(row: dict) -> None:
    raise Interrupted


def test_resumed_run_matches_an_uninterrupted_one(dataset_factory, tmp_path):
    root = dataset_factory(n_train=9, classes=("chelsea", "coffee", "rocket"), size=(40, 36))  # split val 20%
    settings = dict(data=root, init="scratch", mode="head-then-full", head_epochs=1, epochs=2, batch_size=8,
                    optimizer="sgd", lr=0.02, resize=36, crop=32, num_workers=0, progress=False, seed=7,
                    warmup_epochs=0.5, augment={"scale": (0.4, 1.0)})
    Trainer(load_config(None, {**settings, "out": tmp_path / "straight"})).run()
    with pytest.raises(Interrupted):
        Trainer(load_config(None, {**settings, "out": tmp_path / "cut"}), hooks=TrainHooks(on_epoch_end=_stop)).run()
    assert len(read_metrics_csv(tmp_path / "cut" / "metrics.csv")) == 1

    assert main(["train", "--resume", str(tmp_path / "cut" / "last.pt")]) == 0

    straight = read_metrics_csv(tmp_path / "straight" / "metrics.csv")
    resumed = read_metrics_csv(tmp_path / "cut" / "metrics.csv")
    assert [r["phase"] for r in resumed] == ["head", "full"]
    for a, b in zip(straight, resumed, strict=True):
        assert {k: v for k, v in a.items() if k not in TIMING} == {k: v for k, v in b.items() if k not in TIMING}
    s = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    r = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert all(torch.equal(s["model"][k], r["model"][k]) for k in s["model"])
    assert s["scheduler"] == r["scheduler"]


def test_resume_refuses_a_bundle(tmp_path, capsys):
    from sightline.model.architectures import build_network
    from sightline.model.bundle import ModelBundle

    ModelBundle("resnet18", ["a", "b"], build_network("resnet18", 2).state_dict()).save(tmp_path / "bundle.pt")
    assert main(["train", "--resume", str(tmp_path / "bundle.pt")]) == 2
    assert "not a Sightline training state" in capsys.readouterr().err
