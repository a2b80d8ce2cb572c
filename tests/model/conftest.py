"""Shared fixtures for model/ tests: real photos, a tiny seeded bundle, image files written to tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from sightline.cli import main
from sightline.model.architectures import build_network
from sightline.model.bundle import ModelBundle, PreprocessSpec

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
# Small working size: these tests are about plumbing, not about what a 224 crop sees.
SMALL = PreprocessSpec(resize=64, crop=56)
TINY_CLASSES = ["cat", "cup", "rocket"]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Run model tests (and their module fixtures) on one intra-op thread, restored afterwards.

    The suite shares two cores with other processes; OpenMP workers then spin-wait for each other and
    a 2-thread forward pass is 5-20x slower than a 1-thread one. Results do not depend on the count.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """Real photos shipped with scikit-image (no download), H×W×3 uint8."""
    return {name: getattr(skimage.data, name)() for name in PHOTOS}


def seeded_resnet18(num_classes: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network("resnet18", num_classes).eval()


@pytest.fixture(scope="session")
def make_resnet18() -> Callable[..., torch.nn.Module]:
    """A random-init resnet18 in eval mode, the same every time for the same seed."""
    return seeded_resnet18


@pytest.fixture(scope="session")
def tiny_bundle() -> ModelBundle:
    return ModelBundle(arch="resnet18", class_names=list(TINY_CLASSES),
                       state_dict=seeded_resnet18(len(TINY_CLASSES)).state_dict(), preprocess=SMALL,
                       provenance={"dataset": "synthetic", "epochs": 0})


@pytest.fixture(scope="session")
def bundle_path(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: ModelBundle) -> Path:
    return tiny_bundle.save(tmp_path_factory.mktemp("bundle") / "tiny.pt")


@pytest.fixture
def write_photo(tmp_path: Path, photos: dict[str, np.ndarray]) -> Callable[..., Path]:
    """Write a photo (optionally converted to a PIL mode) to tmp_path in the format its suffix names."""

    def write(name: str, filename: str | None = None, mode: str | None = None) -> Path:
        image = Image.fromarray(photos[name])
        if mode is not None:
            image = image.convert(mode)
        path = tmp_path / (filename or f"{name}.png")
        image.save(path)
        return path

    return write


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run the real `sightline` root in-process: (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run
