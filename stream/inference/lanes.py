"""Inference: lanes (threads) that share the Classifier and turn batches into per-frame results.

On a GPU one lane feeds the device. On a CPU, two lanes that each run the network on half the cores
classify ~1.4× more frames per second than one lane on all of them (measured on 2 cores, ResNet18,
batches of 8: 38-42 vs 26-29 frames/s): a convolution split over every core waits at each layer for
its slowest thread, and any decode thread that preempts one core stalls them all. Two lanes keep the
cores busy independently, at the price of a longer time per batch (see ``plan_lanes``).

Inference is a step that returns results (anchor: vLLM's ``EngineCore.step()``): a batch in, a
``StepOutput`` out (each frame's ``Result``, the streams that ended, the step's ``BatchStats``). The
worker hands the output to ``Routes``, per-stream destinations registered the way the batcher's input
queues are, and records the stats in plain ``StageStats``; it never calls back into the pipeline.
The model is read from ``self.classifier`` once per batch, so swapping it is one assignment.

Batches are numbered as they leave the batcher and delivered strictly in that order, so each stream's
results stay in order whichever lane finishes first. A lane that finishes before an earlier batch does
parks its batch and takes the next one instead of waiting (on 2 cores a waiting lane left ~20% of its
time idle); the lane that finishes the earliest batch delivers every parked one that follows it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from sightline.model.classifier import Classifier, Prediction
from sightline.stream.frames import ModelTag, Result, Timings
from sightline.stream.inference.batcher import Batch, Batcher
from sightline.stream.stats import BatchStats, StageStats

if TYPE_CHECKING:
    from sightline.stream.inference.model_holder import ModelHolder, ServedModel

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


class Route(Protocol):
    """Where one stream's results go (its output thread): in order, then ``finish`` once it ended."""

    def submit(self, result: Result) -> None: ...

    def finish(self) -> None: ...


@dataclass
class StepOutput:
    """What one inference step produced."""

    results: list[Result] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)  # streams whose input drained: their routes finish
    stats: BatchStats = field(default_factory=lambda: BatchStats(0, None, None, ()))


class Routes:
    """Per-stream result routes, registered and forgotten like the batcher's input queues.

    A route is added when its stream is registered and leaves when the step that drained its input says
    so (``StepOutput.ended``), after its last result.
    """

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}
        self._lock = threading.Lock()

    def add(self, name: str, route: Route) -> None:
        with self._lock:
            if name in self._routes:
                raise ValueError(f"stream {name!r} already has a route")
            self._routes[name] = route

    def remove(self, name: str) -> None:
        with self._lock:
            self._routes.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._routes

    def deliver(self, out: StepOutput) -> None:
        routes = self._routes
        for result in out.results:
            route = routes.get(result.frame.stream_id)
            if route is not None:
                route.submit(result)
        for name in out.ended:
            with self._lock:
                route = self._routes.pop(name, None)
            if route is not None:
                route.finish()


class InferenceWorker:
    def __init__(self, classifier: Classifier, batcher: Batcher, topk: int, routes: Routes | None = None,
                 stats: StageStats | None = None, clock: Callable[[], float] = time.monotonic,
                 lanes: int | str = "auto", throughput: bool = True) -> None:
        self.classifier = classifier  # read once per batch: a model swap is one assignment between batches
        self.batcher = batcher
        self.topk = topk
        self.routes = routes if routes is not None else Routes()
        self.stats = stats if stats is not None else StageStats()
        self.clock = clock
        self.lanes, self.threads_per_lane = plan_lanes(classifier, lanes, throughput)
        self.models: ModelHolder | None = None  # set by the pipeline: read once per batch, as the batch is taken
        self._fit(classifier)
        self.batches = 0
        self.errors = 0
        self._stop = threading.Event()
        self._sync = classifier.device.type == "cuda"
        self._take = threading.Lock()  # one lane at a time waits on the batcher and numbers its batch
        self._turn = threading.Condition()  # delivery in batch order
        self._taken = 0
        self._delivered = 0
        self._ready: dict[int, tuple] = {}  # finished batches waiting for an earlier one, by ticket
        self._delivering = False  # a lane is delivering ready batches in order
        self._ahead = 2 * self.lanes  # batches taken but not yet delivered, at most
        self._saved_threads = torch.get_num_threads()
        self._threads = [threading.Thread(target=self._run, name=f"inference-{i}", daemon=True)
                         for i in range(self.lanes)]

    def start(self) -> None:
        threads = f" of {self.threads_per_lane} torch thread(s)" if self.threads_per_lane else ""
        log.info("inference: %d lane(s)%s on %s, batches of up to %d", self.lanes, threads,
                 self.classifier.device, self.batcher.max_batch)
        for thread in self._threads:
            thread.start()

    def prepare(self, classifier: Classifier) -> None:
        """Set up a hot-swapped model beside the serving one, before it is installed (model_swap.py)."""
        self._fit(classifier)

    def _fit(self, classifier: Classifier) -> None:
        getattr(classifier, "serve_lanes", lambda n: None)(self.lanes)  # compiled backends: one stream per lane

    def unprepare(self) -> None:
        """A prepared model was not installed after all (its swap failed): let it go."""

    def stop(self, timeout: float = 10.0) -> bool:
        self._stop.set()
        self.batcher.wake()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self.threads_per_lane is not None:
            torch.set_num_threads(self._saved_threads)  # the lanes lowered the process-wide default
        return not any(thread.is_alive() for thread in self._threads)

    def step(self, batch: Batch) -> StepOutput:
        """One batch through the model, synchronously: its results (nothing delivered, nothing recorded)."""
        batched = self.clock()
        served = self._served()
        classified, pre_s, inf_s = self._classify(batch, served) if batch.frames else (None, None, None)
        return self._outputs(batch, classified, batched, pre_s, inf_s, served)

    def _served(self) -> ServedModel | None:
        return self.models.current if self.models is not None else None

    def _run(self) -> None:
        if self.threads_per_lane is not None:
            torch.set_num_threads(self.threads_per_lane)  # this thread's OpenMP team
        while not self._stop.is_set():
            with self._take:
                with self._turn:  # a lane is never more than a few batches ahead of the oldest undelivered one
                    self._turn.wait_for(lambda: self._taken - self._delivered < self._ahead or self._stop.is_set())
                batch = self.batcher.next_batch(timeout=0.1)
                ticket = self._taken
                self._taken += 1
                served = self._served()  # in batch order: a swap lands between two batches, for every lane
            batched = self.clock()
            classified, pre_s, inf_s = self._classify(batch, served) if batch.frames else (None, None, None)
            self._finished(ticket, (batch, classified, batched, pre_s, inf_s, served))
            served = None  # a retired model is released with the lane's next batch

    def _finished(self, ticket: int, done: tuple) -> None:
        """Deliver in batch order without holding the lane: a batch finished before an earlier one waits in
        ``_ready`` and the lane takes its next batch; the lane that completes the earliest batch delivers it
        and every later one that is ready (one deliverer at a time, hand-overs outside the lock)."""
        with self._turn:
            self._ready[ticket] = done
            if self._delivering:
                return
            self._delivering = True
        while True:
            with self._turn:
                item = self._ready.pop(self._delivered, None)
                if item is None:
                    self._delivering = False
                    self._turn.notify_all()
                    return
            batch, classified, batched, pre_s, inf_s, served = item
            try:
                self._hand_over(batch, self._outputs(batch, classified, batched, pre_s, inf_s, served))
            except Exception:  # a bug in building the results: the later batches are still delivered
                log.exception("handing over a batch of %d frames failed", len(batch.frames))
            with self._turn:
                self._delivered += 1

    def _hand_over(self, batch: Batch, out: StepOutput) -> None:
        """In batch order: results to their routes, the step's figures to the stats."""
        if batch.frames:
            self.batches += 1
        try:
            self.routes.deliver(out)
        except Exception:  # a bug in a hand-off: log it; the next batch is still delivered
            log.exception("delivering a batch of %d frames failed", len(batch.frames))
        self.stats.record(out.stats)

    def _classify(self, batch: Batch, served: ServedModel | None = None
                  ) -> tuple[Classified | None, float | None, float | None]:
        """Run the frames that need it through the model: (classified, preprocess s, inference s), or
        Nones when there are none or the batch failed."""
        todo = [f for f in batch.frames if f.infer]
        if not todo:
            return None, None, None
        classifier = served.classifier if served is not None else self.classifier  # one model per batch
        try:
            probs, pre_s, inf_s = self._run_model(classifier, [f.image for f in todo])
        except (RuntimeError, ValueError) as exc:  # e.g. CUDA OOM: lose this batch, keep serving
            self._count_error()
            log.error("inference failed for a batch of %d frames: %s", len(todo), exc)
            return None, None, None
        except Exception:  # a bug: say where, but the lane and the other streams go on
            self._count_error()
            log.exception("inference failed for a batch of %d frames", len(todo))
            return None, None, None
        return (probs.numpy(), classifier.top(probs, self.topk)), pre_s, inf_s

    def _count_error(self) -> None:
        with self._turn:
            self.errors += 1

    def _outputs(self, batch: Batch, classified: Classified | None, batched: float,
                 pre_s: float | None = None, inf_s: float | None = None,
                 served: ServedModel | None = None) -> StepOutput:
        """Each frame's result, the streams that ended, and what the step measured."""
        tag: ModelTag | None = served.tag if served is not None else None
        now = self.clock()  # the results leave the inference stage now (a lane may have waited for its turn)
        results: list[Result] = []
        i = 0
        for frame in batch.frames:
            if frame.infer and classified is not None:
                probs, tops = classified
                results.append(Result(frame, probs[i], tuple(tops[i]),
                                      Timings(frame.captured_at, frame.decoded_at, batched, now), tag))
                i += 1
            else:  # not classified: skipped by infer_fps, or its batch failed (frame.infer tells which)
                results.append(Result(frame, None, (), None))
        stats = BatchStats(i, pre_s if classified is not None else None, inf_s if classified is not None else None,
                           tuple(batched - f.decoded_at for f in batch.frames))
        return StepOutput(results, list(batch.ended), stats)

    def _run_model(self, classifier: Classifier, images: list) -> tuple[torch.Tensor, float, float]:
        t0 = time.perf_counter()
        with torch.inference_mode():
            batch = classifier.preprocessor(images)
            if self._sync:
                torch.cuda.synchronize(classifier.device)
            t1 = time.perf_counter()
            probs = classifier.forward(batch)
        return probs, t1 - t0, time.perf_counter() - t1
