"""Small ImageFolder datasets made in tmp_path from crops of different scikit-image photos."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

PHOTOS = ("chelsea", "coffee", "rocket", "astronaut")


def _crops(photo: np.ndarray, n: int, rng: np.random.Generator, size: tuple[int, int]) -> list[Image.Image]:
    h, w = photo.shape[:2]
    out = []
    for _ in range(n):
        side = int(rng.uniform(0.45, 0.8) * min(h, w))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        out.append(Image.fromarray(photo[y:y + side, x:x + side]).resize(size, Image.BILINEAR))
    return out


def make_dataset(root: Path, n_train: int | Sequence[int], n_val: int = 0, classes: Sequence[str] = PHOTOS,
                 size: tuple[int, int] = (72, 64), seed: int = 0) -> Path:
    """root/train/<photo>/NNN.jpg (and root/val/... when n_val): crops of one photo per class."""
    rng = np.random.default_rng(seed)
    counts = [n_train] * len(classes) if isinstance(n_train, int) else list(n_train)
    for name, count in zip(classes, counts, strict=True):
        photo = getattr(skimage.data, name)()
        for split, n in (("train", count), ("val", n_val)):
            if not n:
                continue
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i, img in enumerate(_crops(photo, n, rng, size)):
                img.save(folder / f"{i:03d}.{'png' if i % 3 == 0 else 'jpg'}")
    return root


@pytest.fixture
def dataset_factory(tmp_path: Path):
    def factory(name: str = "data", **kwargs) -> Path:
        return make_dataset(tmp_path / name, **kwargs)
    return factory


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """CI has 2 shared cores; with other processes busy, one torch thread trains several times faster there."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
