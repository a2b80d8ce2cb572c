"""Shared by the benchmarks' ``--backend``: a compiled-backend Classifier for a benchmark bundle.

Benchmark bundles are random-init (speed does not depend on the weights), so top-1 agreement would mean
nothing there: the artefact is built with the check off (``force``) and int8 is calibrated on scikit-image
photos. Accuracy is what ``sightline export`` and tests/model/backends prove on a trained bundle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import skimage.data
import torch
from PIL import Image
from sightline.model.backends.build import BuildOptions
from sightline.model.backends.serving import open_classifier
from sightline.model.bundle import ModelBundle
from sightline.model.classifier import Classifier

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera", "cat", "hubble_deep_field", "immunohistochemistry")


def photo_folder(folder: Path, count: int = 128) -> Path:
    """``count`` random crops of scikit-image photos (calibration images that look like camera frames)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    photos = []
    for name in PHOTOS:
        img = getattr(skimage.data, name)()
        photos.append(np.stack([img] * 3, axis=-1) if img.ndim == 2 else img[..., :3])
    for i in range(count):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        side = int(rng.uniform(0.5, 1.0) * min(h, w))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        Image.fromarray(photo[y:y + side, x:x + side]).resize((320, 320)).save(folder / f"{i:03d}.png")
    return folder


def backend_classifier(bundle: ModelBundle, backend: str, precision: str, device: str, workdir: Path,
                       calibrate: str | None = None) -> Classifier:
    """The Classifier a ``run`` with ``model.backend: backend`` would serve, built in ``workdir``."""
    if backend == "torch":
        return Classifier(bundle, device=device, precision=precision)
    path = bundle.save(workdir / "bench-bundle.pt")
    if precision == "int8" and calibrate is None:
        calibrate = str(photo_folder(workdir / "calibration"))
    with torch.inference_mode(False):
        return open_classifier(path, device=device, precision=precision, backend=backend,
                               options=BuildOptions(calibrate=calibrate, force=True, require_check=False))


def compare_backends(bundle: ModelBundle, specs: str, batches: list[int], seconds: float, warmup: int, device: str,
                     workdir: Path) -> list[dict[str, object]]:
    """Model-only images/s (forward of a preprocessed batch) and with preprocessing (working-size uint8 frames
    -> the project's Preprocessor -> forward), for each BACKEND:PRECISION in ``specs``, batch sizes ``batches``."""
    import time

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (256, 455, 3), dtype=np.uint8) for _ in range(8)]
    rows: list[dict[str, object]] = []
    for spec in specs.split(","):
        backend, _, precision = spec.partition(":")
        clf = backend_classifier(bundle, backend, precision or "fp32", device, workdir)
        for batch in batches:
            images = [frames[i % len(frames)] for i in range(batch)]
            with torch.inference_mode():
                x = clf.preprocessor(images)
            figures = {}
            for kind, step in (("model", lambda x=x, clf=clf: clf.forward(x)),
                               ("with_preprocess", lambda images=images, clf=clf: clf.probabilities(images))):
                for _ in range(warmup):
                    step()
                done, start = 0, time.perf_counter()
                while time.perf_counter() - start < seconds or done == 0:
                    step()
                    done += 1
                figures[kind] = done * batch / (time.perf_counter() - start)
            row = {"backend": backend, "precision": clf.precision, "batch": batch, **figures}
            rows.append(row)
            print(f"  {backend:12} {clf.precision:5} batch {batch:3}: model {figures['model']:8.1f} images/s, "
                  f"with preprocessing {figures['with_preprocess']:8.1f}", flush=True)
    base = {r["batch"]: r["model"] for r in rows if r["backend"] == "torch" and r["precision"] == "fp32"}
    print("\n| backend | precision | " + " | ".join(f"batch {b} model-only" for b in batches) + " | "
          + " | ".join(f"batch {b} with preprocessing" for b in batches) + " |")
    print("|" + "---|" * (2 + 2 * len(batches)))
    for key in dict.fromkeys((r["backend"], r["precision"]) for r in rows):
        mine = [r for r in rows if (r["backend"], r["precision"]) == key]
        model = [f"{r['model']:.1f}" + (f" ({r['model'] / base[r['batch']]:.1f}×)" if r["batch"] in base else "")
                 for r in mine]
        pre = [f"{r['with_preprocess']:.1f}" for r in mine]
        print(f"| {key[0]} | {key[1]} | " + " | ".join(model) + " | " + " | ".join(pre) + " |")
    return rows
