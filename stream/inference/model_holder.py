"""The model in service: what every inference worker reads once per batch, and what a swap replaces.

``ModelHolder.current`` is one reference: a lane sees the old model or the new one, never half of each.
Putting another model into service (loading, warming, checking it) is the pipeline's job
(``stream/pipeline/model_swap.py``); this module only holds the model and counts the swaps.
"""

from __future__ import annotations

import gc
import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sightline.model.classifier import Classifier
from sightline.stream.frames import ModelTag

if TYPE_CHECKING:
    from sightline.stream.config import ModelConfig

MODEL_ID_LENGTH = 12  # hex digits of the bundle's content hash shown as the model id


@dataclass(frozen=True)
class ModelSpec:
    """What to serve: a model source and how (the request of ``PUT /api/model`` or the config's model: part)."""

    source: str
    backend: str = "torch"
    precision: str = "auto"

    @classmethod
    def of(cls, model: ModelConfig) -> ModelSpec:
        return cls(model.source, model.backend, model.precision)


@dataclass(frozen=True, eq=False)
class ServedModel:
    classifier: Classifier
    tag: ModelTag
    spec: ModelSpec

    @classmethod
    def of(cls, classifier: Classifier, spec: ModelSpec) -> ServedModel:
        tag = ModelTag(classifier.bundle.content_hash()[:MODEL_ID_LENGTH], tuple(classifier.class_names))
        return cls(classifier, tag, spec)

    @property
    def id(self) -> str:
        return self.tag.id

    def describe(self) -> dict[str, Any]:
        info = self.classifier.describe()
        return {"id": self.id, "source": self.spec.source, "backend": str(info.get("backend", "torch")),
                "requested_backend": self.spec.backend, "precision": info["precision"], "arch": info["arch"],
                "classes": info["classes"], "device": info["device"]}


class ModelHolder:
    """The model in service. The inference worker reads ``current`` once per batch; ``install`` replaces it."""

    def __init__(self, served: ServedModel) -> None:
        self._current = served
        self.swapping = threading.Lock()  # one swap at a time: at most two models resident
        self.closing = threading.Event()  # set at shutdown: a swap waiting on a slow load gives up at once
        self._retired: weakref.ref[Classifier] | None = None
        self.swap_counts: dict[str, int] = {}  # by result: swapped, unchanged, refused, failed
        self.counting = threading.Lock()

    @property
    def current(self) -> ServedModel:
        return self._current

    def install(self, served: ServedModel) -> ServedModel:
        old = self._current
        self._current = served  # one reference assignment: a lane sees the old model or the new one
        self._retired = weakref.ref(old.classifier)
        return old

    def retired_alive(self) -> bool:
        return self._retired is not None and self._retired() is not None

    def wait_retired(self, timeout: float) -> bool:
        """Until the model the last swap retired is released (True), or ``timeout`` (False)."""
        deadline = time.monotonic() + timeout
        while self.retired_alive():
            gc.collect()
            if not self.retired_alive():
                break
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        self._retired = None
        return True


def count_swap(holder: ModelHolder, result: str) -> None:
    """Plain counts; Prometheus reads them at scrape time (``sightline_model_swaps_total``)."""
    with holder.counting:
        holder.swap_counts[result] = holder.swap_counts.get(result, 0) + 1
