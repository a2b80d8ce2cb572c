"""A first run without help: offline starts, the from-scratch recipe, near-chance runs, Ctrl-C, the flags' help."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest
import torch
from sightline.cli import main
from sightline.model.offline import OFFLINE_ENV
from sightline.model.weights import imagenet_cache_path
from sightline.training.cli import train_main
from sightline.training.config import load_config

from .conftest import make_dataset

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_imagenet(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty torch cache
    monkeypatch.delenv(OFFLINE_ENV, raising=False)
    assert not imagenet_cache_path().exists()


def _one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if not line[:4].isdigit()]  # not log lines
    assert len(err) == 1, err
    return err[0]


def test_offline_default_init_is_one_line_naming_the_offline_starts(dataset_factory, tmp_path, no_imagenet,
                                                                     monkeypatch, capsys):
    root = dataset_factory(n_train=2, classes=("chelsea", "coffee"), size=(40, 36))
    monkeypatch.setenv(OFFLINE_ENV, "1")  # what --offline sets; restored after the test
    assert main(["train", "--data", str(root), "--out", str(tmp_path / "run"), "--offline"]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("error: --init imagenet needs the ImageNet ResNet18 weights")
    assert "offline" in line and str(imagenet_cache_path()) in line
    assert "--init scratch" in line and "--init PATH" in line and "sightline demo" in line
    assert "--model" not in line  # that is predict's and run's flag, not train's


def test_failed_download_is_one_line_naming_the_offline_starts(dataset_factory, tmp_path, no_imagenet,
                                                               monkeypatch, capsys):
    import torchvision.models._api

    def unreachable(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", unreachable)
    root = dataset_factory(n_train=2, classes=("chelsea", "coffee"), size=(40, 36))
    assert main(["train", "--data", str(root), "--out", str(tmp_path / "run")]) == 2
    line = _one_error_line(capsys)
    assert "the download failed" in line and "no route to host" in line
    assert "--init scratch" in line and "--init PATH" in line and "--model" not in line


def test_scratch_fills_only_the_settings_not_given():
    from sightline.training.config import with_scratch_recipe

    cfg, note = with_scratch_recipe(load_config(None, {"init": "scratch"}))
    assert (cfg.mode, cfg.optimizer, cfg.lr, cfg.resize, cfg.crop) == ("full", "adamw", 0.003, 64, 56)
    assert note.startswith("init scratch: chose --mode full, --optimizer adamw, --lr 0.003")
    cfg, note = with_scratch_recipe(load_config(None, {"init": "scratch", "mode": "head-then-full", "resize": 96,
                                                       "optimizer": "sgd"}))
    assert (cfg.mode, cfg.optimizer, cfg.lr, cfg.resize, cfg.crop) == ("head-then-full", "sgd", 0.001, 96, None)
    assert "kept your --mode head-then-full, --optimizer sgd" in note and "--lr" not in note.split("kept")[0]
    assert with_scratch_recipe(load_config(None, {"init": "imagenet"})) == (load_config(None, {}), None)


def test_scratch_recipe_from_a_config_file_keeps_the_files_keys(tmp_path):
    from sightline.training.config import with_scratch_recipe

    path = tmp_path / "train.yaml"
    path.write_text("init: scratch\nlr: 0.01\naugment:\n  hflip: false\n")
    cfg, note = with_scratch_recipe(load_config(path))
    assert cfg.lr == 0.01 and cfg.mode == "full"
    assert cfg.augment.scale == (0.3, 1.0) and cfg.augment.hflip is False  # the file's other augment key stays
    assert note.endswith("; kept your --lr 0.01; set any of them to override")
    path.write_text("init: scratch\naugment:\n  scale: [0.08, 1.0]\n")
    cfg, note = with_scratch_recipe(load_config(path))
    assert cfg.augment.scale == (0.08, 1.0) and "kept your augment.scale [0.08, 1.0]" in note


def test_the_example_config_from_scratch_gets_the_whole_recipe():
    from sightline.training.config import SCRATCH_RECIPE, with_scratch_recipe

    cfg, note = with_scratch_recipe(load_config(REPO / "configs" / "train.yaml", {"init": "scratch"}))
    assert "kept your" not in note  # its resize: null and crop: null ask for the recipe's sizes too
    assert {k: getattr(cfg, k) for k in SCRATCH_RECIPE if k != "augment"} == {
        k: v for k, v in SCRATCH_RECIPE.items() if k != "augment"}
    assert cfg.augment.scale == (0.3, 1.0) and cfg.augment.hflip is True


@pytest.mark.slow  # ~20 s on 2 shared cores
def test_training_from_scratch_with_the_defaults_learns(tmp_path, caplog):
    """The acceptance run in small: `sightline train --data ROOT --out RUN --init scratch`, nothing else
    that changes the training (no workers and no bars only keep the test light)."""
    root = make_dataset(tmp_path / "data", n_train=16, n_val=6, size=(72, 64))
    caplog.set_level("INFO")
    started = time.perf_counter()
    assert main(["train", "--data", str(root), "--out", str(tmp_path / "run"), "--init", "scratch",
                 "--num-workers", "0", "--no-progress"]) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert "init scratch: chose --mode full" in caplog.text
    assert report["config"]["mode"] == "full" and report["model"]["preprocess"]["crop"] == 56
    assert report["val"]["acc1"] >= 0.75, report["val"]["acc1"]  # chance is 0.25
    assert report["warnings"] == []
    assert time.perf_counter() - started < 240


def _same_photo_classes(root, classes=("a", "b", "c", "d")):
    """Four classes that are all crops of one photo: nothing to learn, so val top-1 stays at chance."""
    make_dataset(root, n_train=4, n_val=2, classes=("chelsea",), size=(40, 36))
    for split in ("train", "val"):
        for name in classes:
            shutil.copytree(root / split / "chelsea", root / split / name)
        shutil.rmtree(root / split / "chelsea")
    return root


def test_a_run_near_chance_says_so_and_what_to_try(tmp_path, caplog):
    root = _same_photo_classes(tmp_path / "data")
    caplog.set_level("INFO")
    assert main(["train", "--data", str(root), "--out", str(tmp_path / "run"), "--init", "scratch", "--epochs", "1",
                 "--lr", "1e-9", "--resize", "36", "--crop", "32", "--num-workers", "0", "--no-progress"]) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["val"]["acc1"] < 1.5 / 4
    [warning] = report["warnings"]
    assert warning.startswith("near chance: best val top-1") and "(0.250 for 4 classes)" in warning
    assert "--epochs 2" in warning and "--init PATH" in warning and "check the data" in warning
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [warning]


def test_ctrl_c_says_where_last_pt_is_and_how_to_resume(tmp_path):
    root = make_dataset(tmp_path / "data", n_train=4, n_val=2, size=(40, 36))
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(OFFLINE_ENV, None)
    proc = subprocess.Popen([sys.executable, "-m", "sightline", "train", "--data", str(root), "--out", str(out),
                             "--init", "scratch", "--epochs", "1000", "--resize", "36", "--crop", "32",
                             "--num-workers", "0", "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (out / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (out / "last.pt").exists(), "no epoch finished in time"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert "Traceback" not in err
    saved = len(torch.load(out / "last.pt", weights_only=True)["progress"]["history"])
    assert f"interrupted: {out / 'last.pt'} holds the run after epoch {saved} of 1000" in err
    line = err.splitlines()[-1]
    assert line == f"continue it with: sightline train --resume {shlex.quote(str(out / 'last.pt'))}"
    command = shlex.split(line.split(": ", 1)[1])
    assert command[:2] == ["sightline", "train"]
    assert main([*command[1:], "--epochs", str(saved + 1)]) == 0  # the printed line continues the run
    assert len(json.loads((out / "report.json").read_text())["val"]["per_class"]) == 4


def test_ctrl_c_in_the_first_epoch_says_there_is_nothing_to_resume(tmp_path, monkeypatch, capsys):
    from sightline.training.trainer import Trainer

    def interrupted(self, *args):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_train_epoch", interrupted)
    root = make_dataset(tmp_path / "data", n_train=2, n_val=1, size=(40, 36))
    assert train_main(["--data", str(root), "--out", str(tmp_path / "run"), "--init", "scratch",
                       "--num-workers", "0", "--no-progress"]) == 130
    assert "interrupted before the first epoch finished: no last.pt" in capsys.readouterr().err


def test_every_train_flag_has_help():
    import argparse

    from sightline.training.cli import add_train_arguments

    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    missing = [a.option_strings[0] for a in parser._actions if not a.help]
    assert missing == []


def test_ctrl_c_during_the_save_of_last_pt_reads_the_epoch_from_the_file(tmp_path):
    """A Ctrl-C between last.pt's rename and the trainer noting it (a busy machine widens that window) must not say
    there is nothing to resume: the message reads the epoch from the file itself."""
    from sightline.training.config import TrainConfig
    from sightline.training.state import save_state
    from sightline.training.trainer import Trainer

    trainer = Trainer(TrainConfig(data=str(tmp_path / "data"), out=str(tmp_path / "run"), epochs=10))
    (tmp_path / "run").mkdir()
    save_state(tmp_path / "run" / "last.pt", {"progress": {"history": [{}, {}, {}]}})
    trainer._saving = 3  # interrupted after save_state's rename, before saved_epochs was set
    assert trainer.saved_epochs is None
    assert "holds the run after epoch 3 of 10" in trainer.interrupted_message()
    trainer._saving = None
    assert "interrupted before the first epoch finished" in trainer.interrupted_message()
