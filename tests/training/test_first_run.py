"""A first run without help: offline starts, the from-scratch recipe, near-chance runs, Ctrl-C, the flags' help."""

from __future__ import annotations

import urllib.error

import pytest
from sightline.cli import main
from sightline.model.offline import OFFLINE_ENV
from sightline.model.weights import imagenet_cache_path


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
