"""Calibration and held-out images: an image folder (class subfolders give labels) or frames of a video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sightline.model.backends.base import BackendError
from sightline.model.backends.data import load_images, provenance_folder


def test_class_subfolders_named_like_the_bundle_give_labels(tmp_path: Path):
    for name, value in (("cat", 10), ("cup", 200), ("other", 90)):
        (tmp_path / name).mkdir()
        Image.fromarray(np.full((20, 30, 3), value, np.uint8)).save(tmp_path / name / "a.png")
    (tmp_path / "cup" / "broken.jpg").write_bytes(b"not a jpeg")
    images = load_images(tmp_path, ["cat", "cup"])
    assert [img.shape for img in images.images] == [(20, 30, 3)] * 3  # the corrupt file is skipped
    assert images.labels == [0, 1, None] and not images.labelled


def test_frames_are_spread_over_a_video(tmp_path: Path):
    from sightline import synthetic_media as media

    clip = media.make_test_clip(tmp_path / "clip.mp4", frames=30, fps=10, size=(96, 64), counter=True)
    images = load_images(clip, ["a", "b"], limit=5)
    assert len(images.images) == 5 and images.images[0].shape == (64, 96, 3)
    counters = [media.read_frame_counter(img) for img in images.images]
    assert counters[0] == 0 and counters[-1] == 29 and counters == sorted(counters)


def test_a_missing_source_is_one_clear_error(tmp_path: Path):
    with pytest.raises(BackendError, match="not an image folder or a video file"):
        load_images(tmp_path / "nope", ["a"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackendError, match="no images"):
        load_images(tmp_path / "empty", ["a"])


def test_provenance_names_the_bundles_own_folders(tmp_path: Path):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    prov = {"dataset": str(tmp_path), "val": str(tmp_path / "val")}
    assert provenance_folder(prov, "train") == tmp_path / "train"
    assert provenance_folder(prov, "val") == tmp_path / "val"
    assert provenance_folder({**prov, "val": f"stratified 20% of {tmp_path / 'train'}"}, "val") is None
    assert provenance_folder({"source": "torchvision"}, "train") is None
