"""Images for calibration and for the agreement check: an image folder, frames of a video, or the
bundle's own training data (its provenance names the dataset). model/ reads video with OpenCV, not PyAV."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sightline.model.backends.base import BackendError
from sightline.model.errors import ImageLoadError
from sightline.model.images import load_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".ts", ".m4v")


@dataclass
class ImageSet:
    """Decoded H×W×3 uint8 images; ``labels[i]`` is a class index, or None when the folder has no class layout."""

    origin: str
    images: list[np.ndarray]
    labels: list[int | None]

    @property
    def labelled(self) -> bool:
        return bool(self.labels) and all(label is not None for label in self.labels)


def load_images(source: str | Path, class_names: list[str], limit: int | None = None, seed: int = 0) -> ImageSet:
    """A folder (class subfolders named like the bundle's classes give labels) or a video file's frames."""
    path = Path(source)
    if path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS:
        return video_frames(path, limit or 64)
    if not path.is_dir():
        raise BackendError(f"{path}: not an image folder or a video file ({', '.join(VIDEO_EXTENSIONS)})")
    index = {name: i for i, name in enumerate(class_names)}
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
    if not files:
        raise BackendError(f"{path}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    if limit is not None and len(files) > limit:
        picks = np.random.default_rng(seed).choice(len(files), size=limit, replace=False)
        files = [files[i] for i in sorted(picks)]
    images, labels = [], []
    for file in files:
        try:
            images.append(load_image(file))
        except ImageLoadError:
            continue  # a corrupt file in a dataset is skipped, as training skips it
        folder = file.parent.name if file.parent != path else None
        labels.append(index.get(folder) if folder is not None else None)
    if not images:
        raise BackendError(f"{path}: none of the images could be read")
    return ImageSet(str(path), images, labels)


def video_frames(path: Path, count: int) -> ImageSet:
    """``count`` frames spread evenly over the video (RGB)."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise BackendError(f"{path}: cannot open the video")
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        wanted = set(np.linspace(0, max(total - 1, 0), num=min(count, max(total, 1))).astype(int).tolist())
        images: list[np.ndarray] = []
        i = 0
        while len(images) < len(wanted):
            ok, frame = capture.read()
            if not ok:
                break
            if i in wanted:
                images.append(np.ascontiguousarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
            i += 1
    finally:
        capture.release()
    if not images:
        raise BackendError(f"{path}: no frames could be decoded")
    return ImageSet(str(path), images, [None] * len(images))


def provenance_folder(provenance: dict[str, Any], split: str) -> Path | None:
    """The bundle's own ``train`` or ``val`` folder, when its training data is still where it was."""
    dataset = provenance.get("dataset")
    if not dataset:
        return None
    root = Path(str(dataset))
    if split == "val":
        val = provenance.get("val")
        folder = root / "val"
        return folder if isinstance(val, str) and val.endswith("/val") and folder.is_dir() else None
    folder = root / "train"
    return folder if folder.is_dir() else (root if root.is_dir() else None)
