"""Model hot-swap: put another model into service between two batches, without stopping a stream.

The pipeline serves whatever ``ModelHolder.current`` holds; the inference worker reads it once per batch,
while it takes the batch (under the lock that numbers batches), so batches are classified by the old
model up to one batch and by the new one from the next, in delivery order, and no frame is skipped or
classified twice. ``swap_model`` runs in a caller's thread (an API worker thread, the SIGHUP task), never
on an inference lane: it loads and warms the new model beside the old one, checks that it fits the
running streams (same device), lets the inference worker set it up beside the old one, and only then installs
it. A model with another resize is fine: the decoders ask the serving model for their working size frame by
frame, and the few frames already in flight at the old size are resized by the new model's preprocessing. Anything
that fails before the install leaves the old model serving and raises a ``SwapError`` that says why.

At most two models are resident: one swap at a time, and a swap waits until the model retired by the
previous swap has been released (the lanes drop it with their next batch) before it loads another.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from sightline.model.classifier import Classifier
from sightline.model.errors import SightlineError
from sightline.model.weights import IMAGENET, imagenet_cache_path
from sightline.stream.event_config import label_problem
from sightline.stream.inference.model_holder import ModelHolder, ModelSpec, ServedModel, count_swap

if TYPE_CHECKING:
    from sightline.stream.config import ModelConfig, RunConfig
    from sightline.stream.inference.lanes import InferenceWorker
    from sightline.stream.pipeline.pipeline import Pipeline

log = logging.getLogger(__name__)

RETIRE_TIMEOUT_S = 10.0  # how long a swap waits for the previous swap's model to be released
WARMUP_BATCH = 8


class SwapError(SightlineError):
    """The swap did not happen; the old model keeps serving. ``status``: the HTTP status that fits;
    ``result``: the ``sightline_model_swaps_total`` label, and the word the log uses (``SWAP_RESULTS``)."""

    status = 500
    result = "failed"


class SwapBusyError(SwapError):
    status = 409
    result = "refused"


class SwapIncompatibleError(SwapError):
    status = 409
    result = "refused"


class SwapLoadError(SwapError):
    status = 422


class SwapWarmupError(SwapError):
    status = 500


@dataclass(frozen=True)
class SwapOutcome:
    previous: dict[str, Any]
    current: dict[str, Any]
    swapped: bool  # False: the requested model is the one serving (same id, backend and precision)
    classes_changed: bool
    load_s: float
    warm_s: float
    rules_unmatched: tuple[str, ...] = ()  # event rules with labels the new model lacks (they stay, silent)

    def to_dict(self) -> dict[str, Any]:
        return {"swapped": self.swapped, "classes_changed": self.classes_changed, "model": self.current,
                "previous": self.previous, "load_s": round(self.load_s, 3), "warm_s": round(self.warm_s, 3),
                "rules_unmatched": list(self.rules_unmatched)}


Loader = Callable[[ModelSpec, "torch.device"], Classifier]


def load_classifier(spec: ModelSpec, device: torch.device, compile: bool = False,
                    calibrate: str | None = None) -> Classifier:
    """The new model on the serving model's device, as ``sightline run`` would open it, except that a running
    service never downloads: the swap lock would be held for the whole download."""
    from sightline.model.backends.build import BuildOptions
    from sightline.model.backends.serving import open_classifier

    return open_classifier(spec.source, device=str(device), precision=spec.precision, backend=spec.backend,
                           compile=compile, options=BuildOptions(calibrate=calibrate, require_check=False),
                           download=False)


def swap_model(pipeline: Pipeline, spec: ModelSpec, loader: Loader | None = None) -> SwapOutcome:
    """Load, warm and check ``spec`` beside the serving model, then install it between two batches.

    Blocking (seconds): call it from a worker thread. Raises ``SwapError`` (old model still serving).
    """
    error: SwapError | None = None
    try:
        outcome = _swap(pipeline, spec, loader)
    except SwapError as exc:
        # the log says what the counter counts: "refused" (busy, does not fit) or "failed" (did not load or warm up)
        count_swap(pipeline.models, exc.result)
        log.error("model swap to %s %s, the old model keeps serving: %s", spec.source, exc.result, exc)
        error = type(exc)(str(exc))
    if error is not None:  # raised afresh, out here: the first one's traceback holds the serving model
        raise error
    count_swap(pipeline.models, "swapped" if outcome.swapped else "unchanged")
    return outcome


def _swap(pipeline: Pipeline, spec: ModelSpec, loader: Loader | None) -> SwapOutcome:
    """No local here or in what it calls holds a model when an error is raised: a traceback kept by a caller
    (a log handler, a framework) would keep the model alive with it."""
    holder: ModelHolder = pipeline.models
    worker = pipeline.worker
    if spec.source == IMAGENET and not imagenet_cache_path().exists():
        raise SwapLoadError(f"'imagenet': ResNet18's ImageNet weights are not in torch's cache "
                            f"({imagenet_cache_path()}) and a running service never downloads; put the file there "
                            f"(`sightline info imagenet` downloads it where the network allows) or swap to a local "
                            f"bundle")
    if worker.models is not holder:
        raise SwapIncompatibleError(f"this inference worker ({type(worker).__name__}) does not serve the model "
                                    f"holder; restart the service with the new model")
    if not holder.swapping.acquire(blocking=False):
        raise SwapBusyError("another model swap is in progress; try again when it has finished")
    try:
        if not holder.wait_retired(RETIRE_TIMEOUT_S):
            raise SwapBusyError("the model retired by the previous swap is still in use; try again")
        serving = _Serving.of(holder.current)
        started = time.perf_counter()
        error: SwapError | None = None
        try:
            new = _load_within(loader or _default_loader(pipeline.config.model), spec, serving.device,
                               pipeline.config.model.load_timeout_s, holder.closing)
        except (SightlineError, OSError, RuntimeError, ValueError, KeyError, MemoryError) as exc:
            new = None
            error = SwapLoadError(f"cannot load {spec.source!r} ({spec.backend}, {spec.precision}): "
                                  f"{exc or type(exc).__name__}")
        else:
            loaded = time.perf_counter()
            if (misfit := _misfit(new, serving, pipeline.config.model.max_resize)) is not None:
                error = SwapIncompatibleError(misfit)
            elif (problem := _prepare(worker, new) or _warm(new, min(pipeline.batcher.max_batch, WARMUP_BATCH))):
                error = SwapWarmupError(problem)
        if error is not None:
            worker.unprepare()
            del new
            gc.collect()
            raise error
        warm_s = time.perf_counter() - loaded
        served = ServedModel.of(new, spec)
        del new
        if served.id == serving.id and _engine(served) == serving.engine:
            log.info("model swap: %s is already serving (model %s); nothing to do", spec.source, served.id)
            return SwapOutcome(serving.info, serving.info, False, False, loaded - started, warm_s)
        classes_changed = served.tag.class_names != serving.class_names
        holder.install(served)
        pipeline.classifier = served.classifier  # what new streams, decoders and status read; lanes read the holder
        log.info("model swap: model %s -> %s (%s, %s%s); loaded in %.2f s, warmed in %.2f s", serving.id,
                 served.id, spec.source, served.describe()["backend"],
                 f", classes changed: {len(served.tag.class_names)} now" if classes_changed else "",
                 loaded - started, warm_s)
        unmatched = _rules_unmatched(pipeline, list(served.tag.class_names)) if classes_changed else ()
        for problem in unmatched:
            log.warning("model swap: event %s; that rule will not fire until a model with that class serves", problem)
        return SwapOutcome(serving.info, served.describe(), True, classes_changed, loaded - started, warm_s,
                           unmatched)
    finally:
        holder.swapping.release()


@dataclass(frozen=True)
class _Serving:
    """What a swap needs to know of the serving model, without a reference to it."""

    id: str
    class_names: tuple[str, ...]
    device: torch.device
    engine: tuple[str, str]
    info: dict[str, Any]

    @classmethod
    def of(cls, served: ServedModel) -> _Serving:
        c = served.classifier
        return cls(served.id, served.tag.class_names, c.device, _engine(served),
                   served.describe())


class _LoadTimeout(SightlineError):
    pass


def _load_within(loader: Loader, spec: ModelSpec, device: torch.device, timeout_s: float,
                 closing: threading.Event) -> Classifier:
    """``loader`` on a daemon thread, waited for at most ``timeout_s`` (or until shutdown): a file that blocks on
    read (a stalled network mount) must not hold the swap lock, nor the process at exit. A load given up on
    finishes (or not) on its own thread, and its model is dropped."""
    if closing.is_set():
        raise _LoadTimeout("the service is shutting down")
    result: dict[str, Any] = {}
    done = threading.Event()

    def load() -> None:
        try:
            result["model"] = loader(spec, device)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting swap, which sorts it
            result["error"] = exc
        finally:
            done.set()

    threading.Thread(target=load, name="model-load", daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while not done.wait(0.1):
        if closing.is_set():
            raise _LoadTimeout("the service is shutting down")
        if time.monotonic() >= deadline:
            raise _LoadTimeout(f"not loaded within model.load_timeout_s ({timeout_s:g} s); is the file on a "
                               f"stalled mount?")
    if "error" in result:
        raise result.pop("error")
    return result.pop("model")


def _rules_unmatched(pipeline: Pipeline, class_names: list[str]) -> tuple[str, ...]:
    """The event rules whose labels the new model lacks: said on the swap, since they no longer fire."""
    events = getattr(pipeline, "events", None)
    if events is None:
        return ()
    return tuple(p for rule in events.rules.list() if (p := label_problem(rule, class_names)) is not None)


def _default_loader(config: ModelConfig) -> Loader:
    return lambda spec, device: load_classifier(spec, device, compile=config.compile, calibrate=config.calibrate)


def _misfit(new: Classifier, serving: _Serving, max_resize: int) -> str | None:
    if new.device != serving.device:
        return (f"the new model would run on {new.device}, the service runs on {serving.device}; changing the device "
                f"needs a restart")
    if new.bundle.preprocess.resize > max_resize:
        return (f"the new model resizes frames to {new.bundle.preprocess.resize} px, over model.max_resize "
                f"({max_resize}): every stream would slow down; raise model.max_resize (a restart) if intended")
    return None  # another resize is fine: the decoders follow the serving model, frames in flight are resized


def _prepare(worker: InferenceWorker, new: Classifier) -> str | None:
    """The worker fits the new model beside the serving one (OpenVINO: streams per lane; CUDA feeder: staging
    buffers, warm-up and CUDA graphs of its own)."""
    try:
        worker.prepare(new)
    except (SightlineError, RuntimeError, ValueError, MemoryError) as exc:
        return f"the inference worker cannot set up the new model: {exc or type(exc).__name__}"
    return None


def _warm(classifier: Classifier, batch: int) -> str | None:
    """Run dummy batches (compilation, allocator) and check the output: N×classes finite probabilities."""
    try:
        classifier.warmup(batch_size=batch)
        size = classifier.bundle.preprocess.resize
        probs = classifier.probabilities([np.zeros((size, size, 3), dtype=np.uint8)])
    except (SightlineError, RuntimeError, ValueError, TypeError, MemoryError) as exc:
        return f"the new model failed its warm-up run: {exc or type(exc).__name__}"
    expected = (1, len(classifier.class_names))
    if tuple(probs.shape) != expected:
        return f"the new model returns {tuple(probs.shape)} probabilities for one image, expected {expected}"
    if not bool(probs.isfinite().all()) or not math.isclose(float(probs.sum()), 1.0, abs_tol=1e-2):
        return "the new model's warm-up output is not a probability distribution (NaN/inf weights?)"
    return None


def _engine(served: ServedModel) -> tuple[str, str]:
    info = served.classifier.describe()
    return str(info.get("backend", "torch")), str(info["precision"])


class SighupReloader:
    """`sightline run`: SIGHUP re-reads the config file in a worker thread. ``on_config`` takes what it needs (the
    service: the credentials); the model is swapped only when the ``model:`` section changed since the last one
    that served, so rotating a password never reloads a model.

    Installed before the model loads (a SIGHUP then is ignored with a log line, rather than ending the
    process as SIGHUP's default would); ``attach`` hands it the pipeline once there is one.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, read_config: Callable[[], RunConfig], model: ModelConfig
                 ) -> None:
        self.loop = loop
        self.read_config = read_config
        self.model = model  # the section that serves (as started, or as the last SIGHUP swapped)
        self.on_config: Callable[[RunConfig], None] | None = None
        self.pipeline: Pipeline | None = None
        self.tasks: set[asyncio.Future[None]] = set()

    def install(self) -> None:
        self.loop.add_signal_handler(signal.SIGHUP, self._on_signal)

    def attach(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def remove(self) -> None:
        self.loop.remove_signal_handler(signal.SIGHUP)

    def _on_signal(self) -> None:
        pipeline = self.pipeline
        if pipeline is None:
            log.warning("SIGHUP ignored: the service is still starting (send it again once it serves)")
            return
        log.info("SIGHUP: reloading the config file")
        task = asyncio.ensure_future(asyncio.to_thread(self.reload, pipeline))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def reload(self, pipeline: Pipeline) -> Any:
        """Blocking: read the file, hand it on, swap if the model changed; every failure is logged and leaves what
        serves (credentials, model) as it was. The swap's outcome, or None when none happened."""
        try:
            config = self.read_config()
        except SightlineError as exc:
            self.refused(pipeline)
            log.error("SIGHUP: the config file cannot be read; the credentials and the old model keep serving: %s",
                      exc)
            return None
        if self.on_config is not None:
            try:
                self.on_config(config)
            except SightlineError as exc:
                log.error("SIGHUP: credentials not changed: %s", exc)
            else:
                log.info("SIGHUP: credentials reloaded")
        if config.model == self.model:
            log.info("SIGHUP: the model section is unchanged: no swap")
            return None
        if config.model.device != pipeline.config.model.device:
            log.warning("SIGHUP: model.device changed to %s; the device changes only with a restart",
                        config.model.device)
        outcome = self.swap(pipeline, ModelSpec.of(config.model))
        if outcome is not None:
            self.model = config.model
        return outcome

    def refused(self, pipeline: Pipeline) -> None:
        count_swap(pipeline.models, "refused")

    def swap(self, pipeline: Pipeline, spec: ModelSpec) -> Any:
        """The swap itself (a cluster controller swaps every worker instead); None when it did not happen."""
        try:
            return swap_model(pipeline, spec)
        except SwapError:
            return None  # swap_model logged why
