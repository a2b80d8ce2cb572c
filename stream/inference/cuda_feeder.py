"""The GPU inference worker: one feeder thread submits batches, one collector thread publishes results.

The feeder takes a batch from the batcher, stages it and enqueues its upload and model run on the
``BucketedRunner`` (which returns at once on CUDA), then goes straight back for the next batch: that
batch is staged and uploaded while the GPU still computes this one. The collector waits for each
batch's results in submission order and hands them to the streams, so results stay in order and the
feeder never waits on the GPU unless both staging slots are busy.

A model hot-swap (model_swap.py) reaches the feeder through the model holder like the CPU lanes: the swap
thread builds and warms (and captures CUDA graphs for) a runner of the new model beside the serving one
(``prepare``); the feeder switches runners between two batches, and each batch in flight is collected from
the runner that ran it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sightline.model.classifier import Classifier
from sightline.model.staging import BucketedRunner, Pending
from sightline.stream.inference.batcher import Batch, Batcher
from sightline.stream.inference.lanes import Classified, InferenceWorker, Routes
from sightline.stream.stats import StageStats

if TYPE_CHECKING:
    from sightline.stream.inference.model_holder import ServedModel

log = logging.getLogger(__name__)


@dataclass
class InFlight:
    batch: Batch
    batched: float  # clock() when the batch was taken
    pending: Pending | None  # None: nothing to classify in it, or its submission failed
    submitted: float  # perf_counter() after the submission returned
    runner: BucketedRunner  # the model that runs it (after a swap, batches of two runners are in flight)
    served: ServedModel | None  # what the results are tagged with
    preprocess_s: float | None = None  # staging + submission


class FeederWorker(InferenceWorker):
    """Same contract as ``InferenceWorker`` (start/stop, in-order delivery, error counting), two threads."""

    def __init__(self, classifier: Classifier, batcher: Batcher, topk: int, routes: Routes | None = None,
                 stats: StageStats | None = None, clock: Callable[[], float] = time.monotonic,
                 runner: BucketedRunner | None = None, cuda_graphs: bool = False) -> None:
        super().__init__(classifier, batcher, topk, routes, stats, clock, lanes=1)
        self.cuda_graphs = cuda_graphs
        self._prepared: BucketedRunner | None = None  # the next model's runner, warmed by a swap thread
        self._prepared_lock = threading.Lock()
        self.runner = runner or BucketedRunner(classifier, batcher.max_batch, cuda_graphs=cuda_graphs)
        self._inflight: queue.Queue[InFlight | None] = queue.Queue()
        self._threads = [threading.Thread(target=self._feed, name="inference-feeder", daemon=True),
                         threading.Thread(target=self._collect, name="inference-collector", daemon=True)]

    def prepare(self, classifier: Classifier) -> None:
        """In the swap's thread, before the new model is installed: its runner, warmed and captured now, so the
        feeder's switch costs nothing. Raises (RuntimeError, e.g. CUDA OOM) if it cannot be built."""
        super().prepare(classifier)
        runner = self._warm_runner(classifier)
        with self._prepared_lock:
            self._prepared = runner

    def unprepare(self) -> None:
        with self._prepared_lock:
            self._prepared = None

    def _runner_for(self, classifier: Classifier) -> BucketedRunner:
        """The runner for the model in service: the current one, the prepared one, or (unprepared) a new one."""
        if classifier is self.runner.classifier:
            return self.runner
        with self._prepared_lock:
            runner, self._prepared = self._prepared, None
        if runner is None or runner.classifier is not classifier:
            log.warning("inference: model switched without a prepared runner; warming one up in the feeder")
            runner = self._warm_runner(classifier)
        log.info("inference: the feeder switched to the new model (%s)", _described(runner))
        return runner

    def _warm_runner(self, classifier: Classifier) -> BucketedRunner:
        runner = BucketedRunner(classifier, self.batcher.max_batch, cuda_graphs=self.cuda_graphs)
        runner.warmup()
        return runner

    def start(self) -> None:
        if not self.runner.warmed:
            self.runner.warmup()  # every bucket compiled/captured before the first frame (and before /readyz)
        log.info("inference: feeder with copy/compute overlap (%s)", _described(self.runner))
        for thread in self._threads:
            thread.start()

    def _feed(self) -> None:
        try:
            while not self._stop.is_set():
                served = self._served()  # checked every turn: an idle feeder lets a retired model go too
                self.runner = self._runner_for(served.classifier if served is not None else self.classifier)
                batch = self.batcher.next_batch(timeout=0.1)
                if not batch.frames and not batch.ended:
                    continue
                runner = self.runner
                batched = self.clock()
                started = time.perf_counter()
                pending = self._submit(runner, batch)
                now = time.perf_counter()
                self._inflight.put(InFlight(batch, batched, pending, now, runner, served,
                                            None if pending is None else now - started))
                del runner, served  # a retired model is released once its batches are collected
        finally:
            self._inflight.put(None)  # the collector drains what is in flight, then ends

    def _submit(self, runner: BucketedRunner, batch: Batch) -> Pending | None:
        todo = [f.image for f in batch.frames if f.infer]
        if not todo:
            return None
        try:
            pending = runner.submit(todo)
        except (RuntimeError, ValueError) as exc:  # e.g. CUDA OOM: lose this batch, keep serving
            self._count_error()
            log.error("inference failed for a batch of %d frames: %s", len(todo), exc)
            return None
        return pending

    def _collect(self) -> None:
        while True:
            item = self._inflight.get()
            if item is None:
                return
            classified, inf_s = self._results(item)
            with self._turn:
                pre_s = item.preprocess_s if classified is not None else None
                self._hand_over(item.batch, self._outputs(item.batch, classified, item.batched, pre_s, inf_s,
                                                          item.served))
                self._delivered += 1
            del item

    def _results(self, item: InFlight) -> tuple[Classified | None, float | None]:
        if item.pending is None:
            return None, None
        try:
            probs = item.runner.collect(item.pending)
        except RuntimeError as exc:  # an asynchronous CUDA error surfaces here
            self._count_error()
            log.error("inference failed for a batch of %d frames: %s", item.pending.count, exc)
            return None, None
        inf_s = time.perf_counter() - item.submitted
        return (probs.numpy(), item.runner.classifier.top(probs, self.topk)), inf_s


def _described(runner: BucketedRunner) -> str:
    return (f"{runner.device}, batch buckets {','.join(map(str, runner.buckets))}"
            f"{', CUDA graphs' if runner.captured else ''}")
