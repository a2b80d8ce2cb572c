"""ImageFolder datasets for training and evaluation.

Layout: ``ROOT/train/<class>/*`` and ``ROOT/val/<class>/*`` (or only ``train/`` plus a stratified split).
Images are decoded in DataLoader workers; a file that fails to decode is dropped from its batch and
reported back to the main process, so one corrupt JPEG never stops an epoch.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from sightline.model.errors import ImageLoadError
from sightline.model.images import load_image
from sightline.training.config import AugmentConfig
from sightline.training.errors import DatasetError
from torch.utils.data import Dataset
from torchvision.transforms import v2

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


FileId = tuple[int, int]  # (st_dev, st_ino): one real file or folder, whatever links lead to it


class Sample(NamedTuple):
    path: str
    label: int


@dataclass(frozen=True)
class ImageFolder:
    """Class folders directly under ``root``; class index = position in sorted folder names."""

    root: Path
    class_names: list[str]
    samples: list[Sample]
    ids: dict[str, FileId] = field(default_factory=dict)  # path -> the real file (for the leakage check)

    def counts(self) -> list[int]:
        return class_counts(self.samples, len(self.class_names))


@dataclass(frozen=True)
class DatasetSplit:
    class_names: list[str]
    train: list[Sample]
    val: list[Sample]
    val_source: str  # "ROOT/val" or "stratified 20% of ROOT/train"

    def train_counts(self) -> list[int]:
        return class_counts(self.train, len(self.class_names))

    def val_counts(self) -> list[int]:
        return class_counts(self.val, len(self.class_names))


def class_counts(samples: Sequence[Sample], num_classes: int) -> list[int]:
    counts = [0] * num_classes
    for s in samples:
        counts[s.label] += 1
    return counts


def _file_id(path: str) -> FileId | None:
    try:
        st = os.stat(path)  # follows links: the file a link points to
    except OSError:
        return None  # a dangling link or a link loop: listed, then skipped as unreadable when loaded
    return (st.st_dev, st.st_ino)


def _image_files(folder: Path) -> list[tuple[str, FileId | None]]:
    """Images under ``folder``, each real file once: ``(path, id)`` in sorted walk order.

    Directory links are followed (linking folders of images kept elsewhere is a usual way to assemble a
    dataset), but a link to the folder it is in or to one above it (a loop) is not: it is skipped with a
    warning instead of listing the same images again and again, or walking forever. Each real folder is
    walked once, and a real file reached by several paths (symlinks, hard links) is listed once, by the
    first path in sorted order.
    """
    found: list[tuple[str, FileId | None]] = []
    seen_files: set[FileId] = set()
    top = _file_id(str(folder))
    seen_dirs: set[FileId] = {top} if top is not None else set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        keep = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            path = os.path.join(dirpath, d)
            if os.path.islink(path):
                target, here = os.path.realpath(path), os.path.realpath(dirpath)
                if here == target or here.startswith(target.rstrip(os.sep) + os.sep):
                    log.warning("dataset: not following %s -> %s: a link to a folder above it (a loop)",
                                path, os.readlink(path))
                    continue
            ident = _file_id(path)
            if ident is None or ident in seen_dirs:
                continue  # already walked (through another link), or unreadable
            seen_dirs.add(ident)
            keep.append(d)
        dirnames[:] = keep
        for f in sorted(filenames):
            if f.startswith(".") or not f.lower().endswith(IMAGE_EXTENSIONS):
                continue
            path = os.path.join(dirpath, f)
            ident = _file_id(path)
            if ident is not None:
                if ident in seen_files:
                    continue
                seen_files.add(ident)
            found.append((path, ident))
    return found


def _same_files(pairs: Sequence[tuple[str, str]], shown: int = 3) -> str:
    listed = ", ".join(f"{a} = {b}" for a, b in pairs[:shown])
    more = f" and {len(pairs) - shown} more" if len(pairs) > shown else ""
    return f"{listed}{more}"


def read_image_folder(folder: str | os.PathLike[str], min_classes: int = 1) -> ImageFolder:
    """List ``folder/<class>/**/<image>``; every empty class folder is named in one error. Each real image
    counts once; one that two classes share (through links) is refused: it has no single label."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder")
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(names) < min_classes:
        found = f" ({', '.join(names)})" if names else ""
        raise DatasetError(f"{folder}: found {len(names)} class folder(s){found}; need at least {min_classes} "
                           f"(one sub-folder of images per class)")
    samples: list[Sample] = []
    ids: dict[str, FileId] = {}
    first: dict[FileId, str] = {}
    shared: list[tuple[str, str]] = []
    empty = []
    for label, name in enumerate(names):
        files = _image_files(folder / name)
        if not files:
            empty.append(name)
        for path, ident in files:
            if ident is not None:
                if ident in first:
                    shared.append((first[ident], path))
                    continue
                first[ident] = path
                ids[path] = ident
            samples.append(Sample(path, label))
    if empty:
        raise DatasetError(f"{folder}: class folder(s) with no images ({', '.join(IMAGE_EXTENSIONS)}): "
                           f"{', '.join(empty)}")
    if shared:
        raise DatasetError(f"{folder}: {len(shared)} image(s) are in two classes (the same file through a link): "
                           f"{_same_files(shared)}; keep each image in one class folder")
    return ImageFolder(folder, names, samples, ids)


def scan_dataset(root: str | os.PathLike[str], val_split: float, seed: int) -> DatasetSplit:
    """The training layout; ``val/`` when present, else a stratified, seeded split of ``train/``."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset folder")
    if not (root / "train").is_dir():
        raise DatasetError(f"{root}: no train/ folder; expected {root}/train/<class>/<images> "
                           f"and optionally {root}/val/<class>/<images>")
    train = read_image_folder(root / "train", min_classes=2)
    if (root / "val").is_dir():
        val = read_image_folder(root / "val")
        if val.class_names != train.class_names:
            only_train = sorted(set(train.class_names) - set(val.class_names))
            only_val = sorted(set(val.class_names) - set(train.class_names))
            raise DatasetError(
                f"{root}: train/ and val/ have different classes: only in train/: "
                f"{', '.join(only_train) or '(none)'}; only in val/: {', '.join(only_val) or '(none)'}"
            )
        in_train = {ident: path for path, ident in train.ids.items()}
        leaked = [(in_train[ident], path) for path, ident in val.ids.items() if ident in in_train]
        if leaked:
            raise DatasetError(f"{root}: {len(leaked)} image(s) are in both train/ and val/ (the same file through "
                               f"a link), validation would score training data: {_same_files(leaked)}")
        return DatasetSplit(train.class_names, train.samples, val.samples, str(root / "val"))
    tr, va = stratified_split(train, val_split, seed)
    return DatasetSplit(train.class_names, tr, va, f"stratified {val_split:.0%} of {root / 'train'}")


def stratified_split(folder: ImageFolder, fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Each class keeps its share in val (at least one image) and at least one image in train."""
    by_class: list[list[Sample]] = [[] for _ in folder.class_names]
    for s in folder.samples:
        by_class[s.label].append(s)
    small = [f"{folder.class_names[i]} ({len(c)})" for i, c in enumerate(by_class) if len(c) < 2]
    if small:
        raise DatasetError(f"{folder.root}: cannot split off a validation set, these classes have fewer than "
                           f"2 images: {', '.join(small)}; add images or provide a val/ folder")
    rng = random.Random(seed)
    train, val = [], []
    for samples in by_class:
        order = samples[:]
        rng.shuffle(order)
        n_val = min(len(order) - 1, max(1, round(len(order) * fraction)))
        val.extend(order[:n_val])
        train.extend(order[n_val:])
    return sorted(train), sorted(val)


def imbalance(counts: Sequence[int]) -> float:
    """Largest class over smallest class (1.0 is balanced)."""
    return max(counts) / max(1, min(counts))


def imbalance_warning(class_names: Sequence[str], counts: Sequence[int], weighting: str,
                      threshold: float = 1.5) -> str | None:
    """A one-line note when the largest class has ``threshold`` times the images of the smallest."""
    ratio = imbalance(counts)
    if ratio < threshold:
        return None
    lo, hi = counts.index(min(counts)), counts.index(max(counts))
    advice = ("the loss is weighted by class (class_weighting: balanced)" if weighting == "balanced"
              else "consider class_weighting: balanced")
    return (f"class imbalance: {class_names[hi]} has {counts[hi]} training images, {class_names[lo]} has "
            f"{counts[lo]} ({ratio:.1f}x); {advice}")


def balanced_class_weights(counts: Sequence[int]) -> torch.Tensor:
    """sklearn's 'balanced' weights: n_samples / (n_classes * count), so a balanced set gets all ones."""
    c = torch.tensor(counts, dtype=torch.float32).clamp(min=1)
    return c.sum() / (len(counts) * c)


def train_transform(crop: int, aug: AugmentConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 C×H×W in, uint8 3×crop×crop out; normalization happens batched on the device."""
    steps: list[Any] = [v2.RandomResizedCrop(crop, scale=aug.scale, ratio=aug.ratio, antialias=True)]
    if aug.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if aug.trivial_augment:
        steps.append(v2.TrivialAugmentWide())
    return v2.Compose(steps)


class Loaded(NamedTuple):
    """One item: the decoded image, or None with the reason it could not be read."""

    image: Any
    label: int
    path: str
    error: str | None


class TrainImages(Dataset):
    """Decoded and augmented uint8 crops."""

    def __init__(self, samples: Sequence[Sample], transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Loaded:
        path, label = self.samples[index]
        try:
            array = load_image(path)
        except ImageLoadError as exc:
            return Loaded(None, label, path, str(exc))
        if not array.flags.writeable:  # PIL hands out read-only views; torch wants to own writable memory
            array = array.copy()
        return Loaded(self.transform(torch.from_numpy(array).permute(2, 0, 1)), label, path, None)


class EvalImages(Dataset):
    """Decoded full-size H×W×3 uint8 arrays: the serving Preprocessor does the rest, on the device."""

    def __init__(self, samples: Sequence[Sample]) -> None:
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Loaded:
        path, label = self.samples[index]
        try:
            return Loaded(load_image(path), label, path, None)
        except ImageLoadError as exc:
            return Loaded(None, label, path, str(exc))


@dataclass
class Batch:
    """Images (a uint8 N×3×H×W tensor for training, a list of arrays for evaluation), labels, and skips."""

    images: Any
    labels: torch.Tensor
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def pin_memory(self) -> Batch:
        """DataLoader calls this with pin_memory=True (CUDA), so host->device copies can overlap compute."""
        images = self.images.pin_memory() if isinstance(self.images, torch.Tensor) else self.images
        return Batch(images, self.labels.pin_memory(), self.skipped)


def collate_train(items: Sequence[Loaded]) -> Batch:
    good = [it for it in items if it.error is None]
    images = torch.stack([it.image for it in good]) if good else torch.empty(0, dtype=torch.uint8)
    labels = torch.tensor([it.label for it in good], dtype=torch.long)
    return Batch(images, labels, [(it.path, it.error or "") for it in items if it.error is not None])


def collate_eval(items: Sequence[Loaded]) -> Batch:
    good = [it for it in items if it.error is None]
    arrays: list[np.ndarray] = [it.image for it in good]
    labels = torch.tensor([it.label for it in good], dtype=torch.long)
    return Batch(arrays, labels, [(it.path, it.error or "") for it in items if it.error is not None])


class SkipLog:
    """Unique unreadable files seen so far; each is warned about once."""

    def __init__(self, warn: Callable[[str], None]) -> None:
        self._warn = warn
        self.files: dict[str, str] = {}

    def record(self, skipped: Sequence[tuple[str, str]]) -> None:
        for path, reason in skipped:
            if path not in self.files:
                self.files[path] = reason
                self._warn(f"skipping unreadable image: {reason}")

    @property
    def count(self) -> int:
        return len(self.files)
