"""Inference: lanes (threads) that share the Classifier and turn batches into per-frame results.

On a GPU one lane feeds the device. On a CPU, two lanes that each run the network on half the cores
classify ~1.4× more frames per second than one lane on all of them (measured on 2 cores, ResNet18,
batches of 8: 38-42 vs 26-29 frames/s): a convolution split over every core waits at each layer for
its slowest thread, and any decode thread that preempts one core stalls them all. Two lanes keep the
cores busy independently, at the price of a longer time per batch (see ``plan_lanes``).

Batches are numbered as they leave the batcher and delivered strictly in that order, so each stream's
results stay in order whichever lane finishes first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import numpy as np
import torch
from sightline.model.classifier import Classifier, Prediction
from sightline.stream.batcher import Batch, Batcher
from sightline.stream.frames import Result, Timings
from sightline.stream.metrics import Metrics

log = logging.getLogger(__name__)

Classified = tuple[np.ndarray, list[list[Prediction]]]  # probabilities and top-k of the frames classified


def plan_lanes(classifier: Classifier, lanes: int | str = "auto", throughput: bool = True) -> tuple[int, int | None]:
    """(lanes, torch threads per lane or None to leave torch's setting alone).

    auto: one lane on a GPU or for a torch.compile'd network. On a CPU with two or more torch threads,
    two lanes sharing the threads when ``throughput`` matters (a fast replay stream is configured), one
    lane otherwise: a lane on half the cores takes longer per batch, which live streams feel as latency
    (measured on 2 cores, 1-4 live 30 fps streams: about the same frames classified, p50 +10-25%).
    """
    cores = torch.get_num_threads()
    if lanes == "auto":
        cpu = classifier.device.type == "cpu" and not classifier.compiled
        lanes = 2 if cpu and throughput and cores >= 2 else 1
    lanes = int(lanes)
    if classifier.device.type != "cpu" or lanes == 1:
        return lanes, None
    return lanes, max(1, cores // lanes)


class InferenceWorker:
    def __init__(self, classifier: Classifier, batcher: Batcher, topk: int,
                 deliver: Callable[[Result], None], end_stream: Callable[[str], None],
                 metrics: Metrics | None = None, clock: Callable[[], float] = time.monotonic,
                 lanes: int | str = "auto", throughput: bool = True) -> None:
        self.classifier = classifier
        self.batcher = batcher
        self.topk = topk
        self.deliver = deliver
        self.end_stream = end_stream
        self.metrics = metrics
        self.clock = clock
        self.lanes, self.threads_per_lane = plan_lanes(classifier, lanes, throughput)
        getattr(classifier, "serve_lanes", lambda n: None)(self.lanes)  # compiled backends: one stream per lane
        self.batches = 0
        self.errors = 0
        self._stop = threading.Event()
        self._sync = classifier.device.type == "cuda"
        self._take = threading.Lock()  # one lane at a time waits on the batcher and numbers its batch
        self._turn = threading.Condition()  # delivery in batch order
        self._taken = 0
        self._delivered = 0
        self._saved_threads = torch.get_num_threads()
        self._threads = [threading.Thread(target=self._run, name=f"inference-{i}", daemon=True)
                         for i in range(self.lanes)]

    def start(self) -> None:
        threads = f" of {self.threads_per_lane} torch thread(s)" if self.threads_per_lane else ""
        log.info("inference: %d lane(s)%s on %s, batches of up to %d", self.lanes, threads,
                 self.classifier.device, self.batcher.max_batch)
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        self._stop.set()
        self.batcher.wake()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self.threads_per_lane is not None:
            torch.set_num_threads(self._saved_threads)  # the lanes lowered the process-wide default
        return not any(thread.is_alive() for thread in self._threads)

    def _run(self) -> None:
        if self.threads_per_lane is not None:
            torch.set_num_threads(self.threads_per_lane)  # this thread's OpenMP team
        while not self._stop.is_set():
            with self._take:
                batch = self.batcher.next_batch(timeout=0.1)
                ticket = self._taken
                self._taken += 1
            batched = self.clock()
            classified = self._classify(batch) if batch.frames else None
            with self._turn:
                self._turn.wait_for(lambda t=ticket: self._delivered == t)
                try:
                    self._publish(batch, classified, batched)
                except Exception:  # a bug in a sink hand-off: log it; the next lane waits for this turn
                    log.exception("delivering a batch of %d frames failed", len(batch.frames))
                self._delivered += 1
                self._turn.notify_all()

    def _classify(self, batch: Batch) -> Classified | None:
        """Run the frames that need it through the model; None when there are none or the batch failed."""
        todo = [f for f in batch.frames if f.infer]
        if not todo:
            return None
        try:
            probs, pre_s, inf_s = self._run_model([f.image for f in todo])
        except (RuntimeError, ValueError) as exc:  # e.g. CUDA OOM: lose this batch, keep serving
            self._count_error()
            log.error("inference failed for a batch of %d frames: %s", len(todo), exc)
            return None
        except Exception:  # a bug: say where, but the lane and the other streams go on
            self._count_error()
            log.exception("inference failed for a batch of %d frames", len(todo))
            return None
        if self.metrics:
            self.metrics.stage["preprocess"].observe(pre_s)
            self.metrics.stage["inference"].observe(inf_s)
            self.metrics.batch_size.observe(len(todo))
        return probs.numpy(), self.classifier.top(probs, self.topk)

    def _count_error(self) -> None:
        with self._turn:
            self.errors += 1

    def _publish(self, batch: Batch, classified: Classified | None, batched: float) -> None:
        """Hand each frame's result to its stream, then close the streams that ended."""
        if batch.frames:
            self.batches += 1
        now = self.clock()  # the results leave the inference stage now (a lane may have waited for its turn)
        i = 0
        for frame in batch.frames:
            if self.metrics:
                self.metrics.stage["queue"].observe(batched - frame.decoded_at)
            if frame.infer and classified is not None:
                probs, tops = classified
                self.deliver(Result(frame, probs[i], tuple(tops[i]),
                                    Timings(frame.captured_at, frame.decoded_at, batched, now)))
                i += 1
            else:  # not classified: skipped by infer_fps, or its batch failed (frame.infer tells which)
                self.deliver(Result(frame, None, (), None))
        for name in batch.ended:
            self.end_stream(name)

    def _run_model(self, images: list) -> tuple[torch.Tensor, float, float]:
        t0 = time.perf_counter()
        with torch.inference_mode():
            batch = self.classifier.preprocessor(images)
            if self._sync:
                torch.cuda.synchronize(self.classifier.device)
            t1 = time.perf_counter()
            probs = self.classifier.forward(batch)
        return probs, t1 - t0, time.perf_counter() - t1


def create_worker(classifier: Classifier, batcher: Batcher, topk: int, deliver: Callable[[Result], None],
                  end_stream: Callable[[str], None], metrics: Metrics | None = None,
                  clock: Callable[[], float] = time.monotonic, lanes: int | str = "auto", throughput: bool = True,
                  cuda_graphs: bool = False) -> InferenceWorker:
    """On CUDA the feeder (copy/compute overlap, batch buckets, optional CUDA graphs); elsewhere lanes.

    The feeder drives the torch network itself, so a compiled backend (TensorRT) keeps the plain worker.
    """
    if classifier.device.type == "cuda" and getattr(classifier, "network", None) is not None:
        from sightline.stream.cuda_feeder import FeederWorker

        if lanes not in ("auto", 1):
            log.warning("model.workers %s ignored on CUDA: one feeder overlaps copies and compute instead", lanes)

        return FeederWorker(classifier, batcher, topk, deliver, end_stream, metrics, clock, cuda_graphs=cuda_graphs)
    return InferenceWorker(classifier, batcher, topk, deliver, end_stream, metrics, clock, lanes, throughput)
