"""The `imagenet` model source: torchvision's weights file in torch's hub cache, never downloaded in tests.

Each test points TORCH_HOME at an empty temporary folder. Where a download would be attempted,
torch.hub's urlopen is replaced by one that fails like an offline machine (and records the call),
so the real torchvision -> torch.hub download code runs up to the network and no further.
"""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import pytest
import torch
import torch.hub
from sightline.model.bundle import PreprocessSpec
from sightline.model.errors import ModelLoadError
from sightline.model.weights import imagenet_cache_path, load_model_source
from torchvision.models import ResNet18_Weights

WEIGHTS_FILE = os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url)  # resnet18-f37072fd.pth


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


@pytest.fixture
def offline(monkeypatch) -> list[str]:
    """Every torch.hub download fails as it does without a network; returns the URLs attempted."""
    attempts: list[str] = []

    def no_network(request, *args, **kwargs):
        attempts.append(request.full_url if hasattr(request, "full_url") else str(request))
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "urlopen", no_network)
    return attempts


@pytest.fixture
def cached_weights(torch_home, make_resnet18) -> dict[str, torch.Tensor]:
    """A random-weight resnet18 written where torchvision keeps IMAGENET1K_V1."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE
    path.parent.mkdir(parents=True)
    state = make_resnet18(1000, seed=1).state_dict()
    torch.save(state, path)
    return state


def test_cache_path_is_torchvisions_file_under_torch_home(torch_home):
    assert imagenet_cache_path() == torch_home / "hub" / "checkpoints" / WEIGHTS_FILE


def test_cached_weights_load_with_imagenet_class_names(cached_weights, offline):
    bundle = load_model_source("imagenet")
    assert bundle.arch == "resnet18"
    assert bundle.class_names == list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    assert len(bundle.class_names) == 1000
    assert bundle.preprocess == PreprocessSpec(resize=256, crop=224)
    assert torch.equal(bundle.state_dict["fc.weight"], cached_weights["fc.weight"])
    assert offline == []  # served from the cache, no download attempted


def test_offline_without_cache_names_the_cache_path_and_the_local_option(torch_home, offline):
    with pytest.raises(ModelLoadError) as info:
        load_model_source("imagenet")
    message = str(info.value)
    assert str(torch_home / "hub" / "checkpoints" / WEIGHTS_FILE) in message
    assert "--model PATH" in message
    assert offline == [ResNet18_Weights.IMAGENET1K_V1.url]  # it really tried, through torchvision
    assert not list((torch_home / "hub" / "checkpoints").glob("*"))  # and left no partial file


def test_downloads_disabled_fails_without_trying_the_network(torch_home, offline):
    with pytest.raises(ModelLoadError, match="downloads are disabled"):
        load_model_source("imagenet", download=False)
    assert offline == []


def test_corrupt_cached_file_is_named_with_advice(torch_home, offline):
    path = imagenet_cache_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"half a download")
    with pytest.raises(ModelLoadError, match=f"{path}: not a readable PyTorch checkpoint.*delete it"):
        load_model_source("imagenet")


def test_info_imagenet_describes_the_cached_model(cached_weights, offline, run_cli):
    code, out, err = run_cli("info", "imagenet")
    assert code == 0, err
    assert "architecture:  resnet18" in out
    assert "classes:       1000: tench, goldfish" in out
    assert "shorter side 256" in out and "centre crop 224" in out
    assert "ResNet18_Weights.IMAGENET1K_V1" in out


def test_predict_offline_is_one_error_line(torch_home, offline, run_cli, write_photo):
    code, out, err = run_cli("predict", write_photo("chelsea"))
    assert code == 2
    assert out == ""
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1  # besides it, stderr only has torch.hub's "Downloading: ..." notice
    assert str(imagenet_cache_path()) in errors[0] and "--model PATH" in errors[0]
    assert "Traceback" not in err


@pytest.mark.parametrize("how", ["root flag", "command flag", "environment"])
@pytest.mark.parametrize("command", ["predict", "info"])
def test_offline_mode_never_tries_the_network_in_any_command(torch_home, offline, run_cli, write_photo, monkeypatch,
                                                            how, command):
    from sightline.model.offline import OFFLINE_ENV

    monkeypatch.setenv(OFFLINE_ENV, "1" if how == "environment" else "0")  # restored after the test either way
    args = [command, "imagenet"] if command == "info" else [command, write_photo("chelsea")]
    argv = {"root flag": ["--offline", *args], "command flag": [*args, "--offline"], "environment": args}[how]
    code, out, err = run_cli(*argv)
    assert code == 2 and out == ""
    assert offline == []  # not one download attempt
    assert err.count("\n") == 1 and err.startswith("error: ") and "offline mode is on" in err, err
