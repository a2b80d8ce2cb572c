"""One bundle in, a backend's compiled form out: cached next to the bundle, checked against torch fp32.

``compiled_backend`` is what ``sightline export`` runs ahead of time and what ``run`` runs on first use.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sightline.model.backends import cache, registry
from sightline.model.backends.agreement import THRESHOLDS, Agreement, compare, probabilities
from sightline.model.backends.base import BackendError
from sightline.model.backends.data import ImageSet, load_images, provenance_folder
from sightline.model.backends.torch_backend import TorchBackend
from sightline.model.bundle import ModelBundle
from sightline.model.device import describe_device
from sightline.model.preprocess import Preprocessor

log = logging.getLogger(__name__)

CALIBRATION_IMAGES = 64
HOLDOUT_IMAGES = 200
CHECK_BATCH = 16


@dataclass
class BuildOptions:
    calibrate: str | Path | None = None  # image folder or video; default: the bundle's own train/ folder
    holdout: str | Path | None = None  # image folder or video; default: the bundle's val/ folder
    force: bool = False  # keep an artefact whose agreement is below the threshold (or was not measured)
    threshold: float | None = None  # default THRESHOLDS[precision]
    rebuild: bool = False
    require_check: bool = True  # export: refuse without held-out images; run's first use only warns


@dataclass
class Compiled:
    backend: Any
    folder: Path
    meta: dict[str, Any]
    cached: bool
    notes: list[str] = field(default_factory=list)

    @property
    def agreement(self) -> dict[str, Any] | None:
        return self.meta.get("agreement")


def compiled_backend(bundle: ModelBundle, bundle_path: Path, backend: str, precision: str, device: torch.device,
                     options: BuildOptions | None = None) -> Compiled:
    options = options or BuildOptions()
    mod = registry.module(backend)
    key = cache.ArtefactKey(cache.file_hash(bundle_path), backend, mod.version(), precision)
    folder = cache.artefact_dir(bundle_path, key)
    meta = None if options.rebuild else cache.read_meta(folder)
    if meta is not None:
        return Compiled(registry.open_compiled(backend, folder, precision, device), folder, meta, cached=True)

    calibration, holdout, notes = _data(bundle, precision, options)
    staging = cache.staging_dir(folder)
    try:
        pre = Preprocessor(bundle.preprocess, torch.device("cpu"))
        cal_tensors = [pre([img]) for img in calibration.images] if calibration else []
        mod.build(bundle, precision, cal_tensors, staging, device)
        agreement = _check(bundle, registry.open_compiled(backend, staging, precision, device), holdout, device) \
            if holdout else None
        threshold = options.threshold if options.threshold is not None else THRESHOLDS[precision]
        passed = agreement is not None and agreement.top1_agreement >= threshold
        if agreement is None:
            notes.append("top-1 agreement NOT measured: no held-out images (pass --holdout DIR_OR_VIDEO)")
            if options.require_check and not options.force:
                raise BackendError(f"{backend} {precision}: no held-out images to check agreement against torch "
                                   f"fp32; pass --holdout DIR_OR_VIDEO (or --calibrate), or --force")
        elif not passed and not options.force:
            raise BackendError(f"{backend} {precision} refused: {agreement.describe()}, below the "
                               f"{100 * threshold:.1f}% threshold (use --force to keep it anyway)")
        meta = {
            "bundle": bundle_path.name, "bundle_sha256": key.bundle_hash, "backend": backend,
            "backend_version": key.backend_version, "precision": precision,
            "built": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": describe_device(device),
            "calibration": {"source": calibration.origin, "images": len(calibration.images)} if calibration else None,
            "holdout": {"source": holdout.origin, "images": len(holdout.images), "labelled": holdout.labelled}
            if holdout else None,
            "agreement": None if agreement is None else {**agreement.to_dict(), "threshold": threshold,
                                                         "passed": passed},
            "forced": bool(options.force and not passed),
            "reference": "torch fp32",
        }
        cache.publish(staging, folder, meta)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return Compiled(registry.open_compiled(backend, folder, precision, device), folder, meta, cached=False,
                    notes=notes)


def _data(bundle: ModelBundle, precision: str, options: BuildOptions) -> tuple[ImageSet | None, ImageSet | None,
                                                                               list[str]]:
    """Calibration images (int8 only) and held-out images, never the same ones."""
    notes: list[str] = []
    names = bundle.class_names
    cal_src = options.calibrate or provenance_folder(bundle.provenance, "train")
    hold_src = options.holdout or provenance_folder(bundle.provenance, "val")
    if precision == "int8" and cal_src is None:
        raise BackendError("int8 needs calibration images: pass --calibrate DIR_OR_VIDEO (the bundle's own "
                           "training folder is used when its provenance names one that still exists)")
    if hold_src is not None and (cal_src is None or Path(hold_src).resolve() != Path(cal_src).resolve()):
        holdout = load_images(hold_src, names, limit=HOLDOUT_IMAGES)
        calibration = load_images(cal_src, names, limit=CALIBRATION_IMAGES) if precision == "int8" else None
        return calibration, holdout, notes
    if cal_src is None:
        return None, None, notes
    # One source for both: split it, so no image is both calibrated on and checked on.
    pool = load_images(cal_src, names, limit=CALIBRATION_IMAGES + HOLDOUT_IMAGES)
    order = np.random.default_rng(0).permutation(len(pool.images)).tolist()
    n_cal = min(CALIBRATION_IMAGES, len(order) // 2) if precision == "int8" else 0
    cal_idx, hold_idx = order[:n_cal], order[n_cal:]
    calibration = ImageSet(pool.origin, [pool.images[i] for i in cal_idx], [pool.labels[i] for i in cal_idx]) \
        if n_cal else None
    holdout = ImageSet(f"{pool.origin} (images not used for calibration)", [pool.images[i] for i in hold_idx],
                       [pool.labels[i] for i in hold_idx])
    notes.append(f"held-out images: {len(hold_idx)} of {pool.origin} not used for calibration")
    return calibration, holdout, notes


def _check(bundle: ModelBundle, backend: Any, holdout: ImageSet, device: torch.device) -> Agreement:
    reference = TorchBackend(bundle, torch.device("cpu"), "fp32")
    pre = Preprocessor(bundle.preprocess, torch.device("cpu"))
    cpu_batches = [pre(holdout.images[i:i + CHECK_BATCH]) for i in range(0, len(holdout.images), CHECK_BATCH)]
    ref = probabilities(reference.forward, cpu_batches)
    cand = probabilities(backend.forward, [b.to(device) for b in cpu_batches])
    return compare(ref, cand, holdout.labels)
