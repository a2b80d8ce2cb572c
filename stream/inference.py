"""The inference worker: one thread owns the Classifier and turns batches into per-frame results."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import torch

from model.classifier import Classifier
from stream.batcher import Batch, Batcher
from stream.frames import Result, Timings
from stream.metrics import Metrics

log = logging.getLogger(__name__)


class InferenceWorker:
    def __init__(self, classifier: Classifier, batcher: Batcher, topk: int,
                 deliver: Callable[[Result], None], end_stream: Callable[[str], None],
                 metrics: Metrics | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.classifier = classifier
        self.batcher = batcher
        self.topk = topk
        self.deliver = deliver
        self.end_stream = end_stream
        self.metrics = metrics
        self.clock = clock
        self.batches = 0
        self.errors = 0
        self._stop = threading.Event()
        self._sync = classifier.device.type == "cuda"
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        self._stop.set()
        self.batcher.wake()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self.batcher.next_batch(timeout=0.1)
            if batch.frames:
                self.process(batch)
            for name in batch.ended:
                self.end_stream(name)

    def process(self, batch: Batch) -> None:
        batched = self.clock()
        todo = [f for f in batch.frames if f.infer]
        probs = None
        if todo:
            try:
                probs, pre_s, inf_s = self._classify([f.image for f in todo])
                if self.metrics:
                    self.metrics.stage["preprocess"].observe(pre_s)
                    self.metrics.stage["inference"].observe(inf_s)
                    self.metrics.batch_size.observe(len(todo))
            except (RuntimeError, ValueError) as exc:  # e.g. CUDA OOM: lose this batch, keep serving
                self.errors += 1
                log.error("inference failed for a batch of %d frames: %s", len(todo), exc)
                probs = None
        inferred = self.clock()
        self.batches += 1
        tops = self.classifier.top(probs, self.topk) if probs is not None else None
        probs_np = probs.numpy() if probs is not None else None
        i = 0
        for frame in batch.frames:
            if self.metrics:
                self.metrics.stage["queue"].observe(batched - frame.decoded_at)
            if frame.infer and probs_np is not None and tops is not None:
                self.deliver(Result(frame, probs_np[i], tuple(tops[i]),
                                    Timings(frame.captured_at, frame.decoded_at, batched, inferred)))
                i += 1
            else:  # not classified: skipped by infer_fps, or its batch failed (frame.infer tells which)
                self.deliver(Result(frame, None, (), None))

    def _classify(self, images: list) -> tuple[torch.Tensor, float, float]:
        t0 = time.perf_counter()
        with torch.inference_mode():
            batch = self.classifier.preprocessor(images)
            if self._sync:
                torch.cuda.synchronize(self.classifier.device)
            t1 = time.perf_counter()
            probs = self.classifier.forward(batch)
        return probs, t1 - t0, time.perf_counter() - t1
