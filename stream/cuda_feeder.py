"""The GPU inference worker: one feeder thread submits batches, one collector thread publishes results.

The feeder takes a batch from the batcher, stages it and enqueues its upload and model run on the
``BucketedRunner`` (which returns at once on CUDA), then goes straight back for the next batch: that
batch is staged and uploaded while the GPU still computes this one. The collector waits for each
batch's results in submission order and hands them to the streams, so results stay in order and the
feeder never waits on the GPU unless both staging slots are busy.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sightline.model.classifier import Classifier
from sightline.model.staging import BucketedRunner, Pending
from sightline.stream.batcher import Batch, Batcher
from sightline.stream.inference import Classified, InferenceWorker, Routes
from sightline.stream.stats import StageStats

log = logging.getLogger(__name__)


@dataclass
class InFlight:
    batch: Batch
    batched: float  # clock() when the batch was taken
    pending: Pending | None  # None: nothing to classify in it, or its submission failed
    submitted: float  # perf_counter() after the submission returned
    preprocess_s: float | None = None  # staging + submission


class FeederWorker(InferenceWorker):
    """Same contract as ``InferenceWorker`` (start/stop, in-order delivery, error counting), two threads."""

    reads_model_holder = False  # its runner holds staging buffers and CUDA graphs of one model: no hot-swap yet

    def __init__(self, classifier: Classifier, batcher: Batcher, topk: int, routes: Routes | None = None,
                 stats: StageStats | None = None, clock: Callable[[], float] = time.monotonic,
                 runner: BucketedRunner | None = None, cuda_graphs: bool = False) -> None:
        super().__init__(classifier, batcher, topk, routes, stats, clock, lanes=1)
        self.runner = runner or BucketedRunner(classifier, batcher.max_batch, cuda_graphs=cuda_graphs)
        self._inflight: queue.Queue[InFlight | None] = queue.Queue()
        self._threads = [threading.Thread(target=self._feed, name="inference-feeder", daemon=True),
                         threading.Thread(target=self._collect, name="inference-collector", daemon=True)]

    def start(self) -> None:
        if not self.runner.warmed:
            self.runner.warmup()  # every bucket compiled/captured before the first frame (and before /readyz)
        log.info("inference: feeder with copy/compute overlap on %s, batch buckets %s%s",
                 self.classifier.device, ",".join(map(str, self.runner.buckets)),
                 ", CUDA graphs" if self.runner.captured else "")
        for thread in self._threads:
            thread.start()

    def _feed(self) -> None:
        try:
            while not self._stop.is_set():
                batch = self.batcher.next_batch(timeout=0.1)
                if not batch.frames and not batch.ended:
                    continue
                batched = self.clock()
                started = time.perf_counter()
                pending = self._submit(batch)
                now = time.perf_counter()
                self._inflight.put(InFlight(batch, batched, pending, now,
                                            None if pending is None else now - started))
        finally:
            self._inflight.put(None)  # the collector drains what is in flight, then ends

    def _submit(self, batch: Batch) -> Pending | None:
        todo = [f.image for f in batch.frames if f.infer]
        if not todo:
            return None
        try:
            pending = self.runner.submit(todo)
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
                                                          self._served()))  # no swap here: the holder's one model
                self._delivered += 1

    def _results(self, item: InFlight) -> tuple[Classified | None, float | None]:
        if item.pending is None:
            return None, None
        try:
            probs = self.runner.collect(item.pending)
        except RuntimeError as exc:  # an asynchronous CUDA error surfaces here
            self._count_error()
            log.error("inference failed for a batch of %d frames: %s", item.pending.count, exc)
            return None, None
        inf_s = time.perf_counter() - item.submitted
        return (probs.numpy(), self.classifier.top(probs, self.topk)), inf_s
