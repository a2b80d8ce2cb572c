"""A Classifier whose network call is a compiled backend: same preprocessing, same API, other engine.

``open_classifier`` is what every command calls: ``torch`` gives the plain reference ``Classifier``;
``auto`` or a compiled backend resolves the choice, builds (or reuses) the artefact next to the bundle
and logs which backend and precision serve, and why.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from sightline.model.backends import registry
from sightline.model.backends.build import BuildOptions, Compiled, compiled_backend
from sightline.model.bundle import ModelBundle
from sightline.model.classifier import Classifier
from sightline.model.device import resolve_device
from sightline.model.preprocess import Preprocessor
from sightline.model.weights import IMAGENET, imagenet_cache_path, load_model_source

log = logging.getLogger("sightline.backend")


class BackendClassifier(Classifier):
    """The Classifier API (probabilities, predict, top, warmup, describe) over a compiled backend."""

    def __init__(self, bundle: ModelBundle, compiled: Compiled, device: torch.device) -> None:
        # Deliberately not Classifier.__init__: no torch network is built for a compiled backend.
        self.bundle = bundle
        self.device = device
        self.amp_dtype = None
        self.backend = compiled.backend
        self.compiled_artefact = compiled
        self.precision = compiled.backend.precision
        self.preprocessor = Preprocessor(bundle.preprocess, device)
        self.compiled = False  # torch.compile: not used by compiled backends

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.ndim != 4 or batch.shape[1] != 3:
            return super().forward(batch)  # the same one-line error as the torch path
        with self._out_of_memory_advice(batch.shape[0]):
            return self.backend.forward(batch)

    def serve_lanes(self, lanes: int) -> None:
        """Told by the inference worker how many lanes call ``forward`` at once (OpenVINO: one stream each)."""
        plan = getattr(self.backend, "serve_lanes", None)
        if plan is not None:
            log.info("%s", plan(lanes))

    def describe(self) -> dict[str, object]:
        agreement = self.compiled_artefact.agreement
        return {**super().describe(), "backend": self.backend.name, "backend_version": self.backend.version,
                "artefact": str(self.compiled_artefact.folder),
                "top1_agreement": None if agreement is None else agreement["top1_agreement"]}


def bundle_path(source: str | os.PathLike[str]) -> Path:
    return imagenet_cache_path() if str(source) == IMAGENET else Path(source)


def open_classifier(source: str | os.PathLike[str], *, device: str = "auto", precision: str = "auto",
                    backend: str = "torch", compile: bool = False,
                    options: BuildOptions | None = None, download: bool | None = None) -> Classifier:
    """``download``: may 'imagenet' be downloaded when absent (None: unless offline mode is on)."""
    resolved = resolve_device(device)
    choice = registry.choose(backend, precision, resolved)
    if choice.backend == "torch":
        classifier = Classifier.from_source(source, device=str(resolved), precision=choice.precision,
                                            compile=compile, download=download)
        if backend != "torch" or precision == "auto":
            log.info("serving with torch %s on %s: %s", classifier.precision, resolved, choice.reason)
        return classifier
    bundle = load_model_source(source, download=download)
    built = compiled_backend(bundle, bundle_path(source), choice.backend, choice.precision, resolved,
                             options or BuildOptions(require_check=False))
    log.info("serving with %s %s %s on %s: %s; artefact %s (%s)%s", choice.backend, built.backend.version,
             choice.precision, resolved, choice.reason, built.folder, "cached" if built.cached else "built now",
             agreement_note(built.meta))
    for note in built.notes:
        log.warning("%s", note)
    return BackendClassifier(bundle, built, resolved)


def agreement_note(meta: dict[str, Any]) -> str:
    agreement = meta.get("agreement")
    if not agreement:
        return "; top-1 agreement with torch fp32 not measured"
    return f"; top-1 agreement with torch fp32 {100 * agreement['top1_agreement']:.2f}% on {agreement['images']} images"
