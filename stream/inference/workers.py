"""Which inference worker a model gets: the CUDA feeder on a GPU, CPU lanes elsewhere (beside both)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sightline.model.classifier import Classifier
from sightline.stream.inference.batcher import Batcher
from sightline.stream.inference.cuda_feeder import FeederWorker
from sightline.stream.inference.lanes import InferenceWorker, Routes
from sightline.stream.stats import StageStats

log = logging.getLogger(__name__)


def create_worker(classifier: Classifier, batcher: Batcher, topk: int, routes: Routes | None = None,
                  stats: StageStats | None = None, clock: Callable[[], float] = time.monotonic,
                  lanes: int | str = "auto", throughput: bool = True, cuda_graphs: bool = False) -> InferenceWorker:
    """On CUDA the feeder (copy/compute overlap, batch buckets, optional CUDA graphs); elsewhere lanes.

    The feeder drives the torch network itself, so a compiled backend (TensorRT) keeps the plain worker.
    """
    if classifier.device.type == "cuda" and getattr(classifier, "network", None) is not None:
        if lanes not in ("auto", 1):
            log.warning("model.workers %s ignored on CUDA: one feeder overlaps copies and compute instead", lanes)

        return FeederWorker(classifier, batcher, topk, routes, stats, clock, cuda_graphs=cuda_graphs)
    return InferenceWorker(classifier, batcher, topk, routes, stats, clock, lanes, throughput)
