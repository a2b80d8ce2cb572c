"""The model in service on a cluster: ``GET /api/model`` and ``PUT /api/model`` through the controller.

Each pipeline worker serves its own model (``ModelHolder`` of its ``Pipeline``) and swaps it with the same
``swap_model`` one process uses: loaded and warmed beside the serving model, checked, installed between two
batches. The controller asks every ready worker at once (``PipelineWorker.swap_model``, errors returned as
data) and answers when all have answered:

- all swapped (or already serving it): 200, the one-process answer plus ``workers`` (each worker's old and
  new model id); the controller remembers the model, so a worker started later (failover, growth, a
  restarted controller) loads it instead of the config file's;
- any failed: the first failure's status (by worker id) and ``workers`` saying which failed and why. A
  failure on every worker leaves the old model serving everywhere. A *partial* swap (some workers swapped,
  others did not) is not rolled back: the answer says so plainly (``partial: true``), ``GET /api/model``
  then shows ``mixed: true`` and each worker's id, and the model remembered for new workers stays the old
  one until a PUT succeeds on every worker (asking again for the same model swaps only the ones left).

A worker that finished starting while a swap ran (it loaded the previous model) is brought to the current
model before it takes streams (``PipelineWorker.start_serving``); one that cannot load it is replaced.
No Ray import here: the controller passes its ``ray`` module.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastapi import HTTPException, status
from fastapi.responses import JSONResponse
from sightline.model.echo import bounded, echo
from sightline.model.errors import SightlineError
from sightline.stream.inference.model_holder import ModelSpec
from sightline.stream.pipeline.model_swap import SighupReloader
from sightline.stream.urls import scrub_urls

log = logging.getLogger(__name__)

SWAP_TIMEOUT_S = 300.0  # one worker loading and warming a model
DESCRIBE_TIMEOUT_S = 5.0
DETAIL_LIMIT = 1000


def spec_dict(spec: ModelSpec) -> dict[str, str]:
    return {"source": spec.source, "backend": spec.backend, "precision": spec.precision}


def serves(served: dict[str, Any] | None, spec: ModelSpec) -> bool:
    """Whether a worker's ``served`` model is what ``spec`` asks for (the request as given, not the resolved
    backend: ``auto`` stays ``auto``)."""
    return bool(served) and served.get("source") == spec.source and served.get("requested_backend") == spec.backend \
        and (spec.precision == "auto" or served.get("precision") == spec.precision)


@dataclass
class ClusterSwap:
    """What every worker answered to one ``PUT /api/model``."""

    spec: ModelSpec
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)  # worker id -> its answer

    @property
    def failed(self) -> list[str]:
        return [w for w, a in self.answers.items() if "error" in a]

    @property
    def swapped(self) -> list[str]:
        return [w for w, a in self.answers.items() if a.get("outcome", {}).get("swapped")]

    @property
    def partial(self) -> bool:
        return bool(self.failed) and bool(self.swapped)

    def workers(self) -> dict[str, dict[str, Any]]:
        out = {}
        for worker_id, a in self.answers.items():
            if "error" in a:
                out[worker_id] = {"swapped": False, "model": (a.get("served") or {}).get("id"), "status": a["status"],
                                  "error": echo(a["detail"], 400)}
            else:
                o = a["outcome"]
                out[worker_id] = {"swapped": o["swapped"], "previous": o["previous"]["id"], "model": o["model"]["id"]}
        return out

    def status_code(self) -> int:
        return int(self.answers[self.failed[0]]["status"]) if self.failed else 200

    def detail(self) -> str:
        failed = self.failed
        first = self.answers[failed[0]]
        reasons = f"{failed[0]}: {first['detail']}"
        if self.swapped:
            ids = ", ".join(f"{w}: {v['model']}" for w, v in self.workers().items())
            return (f"model swapped on {', '.join(self.swapped)} but NOT on {', '.join(failed)} (partial swap: the "
                    f"workers now serve different models: {ids}; PUT again, or PUT the previous model back). "
                    f"First failure, {reasons}")
        return (f"model not swapped on {', '.join(failed)}, the old one keeps serving everywhere. "
                f"First failure, {reasons}")

    def body(self) -> dict[str, Any]:
        """The one-process answer (from the first worker that swapped, else the first that answered) plus
        ``workers``; on failure ``detail``, ``partial`` and ``workers``."""
        workers = self.workers()
        if self.failed:
            return {"detail": bounded(scrub_urls(self.detail()), DETAIL_LIMIT), "partial": self.partial,
                    "workers": workers}
        outcomes = [a["outcome"] for a in self.answers.values()]
        lead = next((o for o in outcomes if o["swapped"]), outcomes[0])
        return {"swapped": any(o["swapped"] for o in outcomes),
                "classes_changed": any(o["classes_changed"] for o in outcomes),
                "model": lead["model"], "previous": lead["previous"],
                "load_s": max(o["load_s"] for o in outcomes), "warm_s": max(o["warm_s"] for o in outcomes),
                "workers": workers}


class Workers(Protocol):
    """What the model service needs of the controller (controller.py's ``ClusterPipeline``; typed here without
    importing it, since the controller makes this service)."""

    ray: Any

    def worker_handles(self) -> list[Any]: ...

    def worker_ids(self) -> list[str]: ...

    def use_model(self, model: dict[str, str]) -> None: ...


class ClusterBusyError(SightlineError):
    pass


class ClusterModelService:
    """The controller's side of model swaps (``controller.model_service``)."""

    def __init__(self, controller: Workers, spec: ModelSpec) -> None:
        self.controller = controller
        self.spec = spec  # what every worker should serve; what a new worker loads
        self.swapping = threading.Lock()  # one cluster swap at a time

    # -- the model in service ----------------------------------------------------------------------

    def served(self) -> dict[str, dict[str, Any]]:
        """Each ready worker's model, asked now (``info`` cached at its start otherwise)."""
        c = self.controller
        handles = [h for h in c.worker_handles() if h.ready]
        refs = {h.worker_id: h.actor.served.remote() for h in handles}
        if refs:
            c.ray.wait(list(refs.values()), num_returns=len(refs), timeout=DESCRIBE_TIMEOUT_S)
        out = {}
        for h in handles:
            try:
                h.info["served"] = c.ray.get(refs[h.worker_id], timeout=0)
            except Exception as exc:  # slow or gone: its last known model (the monitor deals with it)
                log.debug("cluster: model of %s: %s", h.worker_id, type(exc).__name__)
            if h.info.get("served"):
                out[h.worker_id] = h.info["served"]
        return out

    def describe(self) -> dict[str, Any]:
        """The one-process ``GET /api/model`` answer for the model most workers serve, plus ``workers`` (each
        worker's model id) and ``mixed`` (not all the same)."""
        served = self.served()
        if not served:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no pipeline worker is ready yet")
        counts = Counter(m["id"] for m in served.values())
        top = counts.most_common(1)[0][0]
        model = next(m for m in served.values() if m["id"] == top)
        return {**model, "workers": {w: m["id"] for w, m in sorted(served.items())}, "mixed": len(counts) > 1}

    # -- swapping ----------------------------------------------------------------------------------

    def swap(self, spec: ModelSpec) -> ClusterSwap:
        """Every ready worker swaps to ``spec`` in parallel. Blocking: call it from a worker thread."""
        if not self.swapping.acquire(blocking=False):
            raise ClusterBusyError("another model swap is in progress; try again when it has finished")
        try:
            c = self.controller
            handles = sorted((h for h in c.worker_handles() if h.ready), key=lambda h: worker_key(h.worker_id))
            if not handles:
                raise ClusterBusyError("no pipeline worker is ready yet; try again")
            refs = [(h, h.actor.swap_model.remote(spec_dict(spec))) for h in handles]
            result = ClusterSwap(spec)
            for h, ref in refs:
                try:
                    answer = c.ray.get(ref, timeout=SWAP_TIMEOUT_S)
                except Exception as exc:  # died or too slow: its streams move as usual, it swapped nothing here
                    answer = {"error": "worker", "status": 503, "detail": f"worker {h.worker_id} did not answer "
                                                                         f"({type(exc).__name__})"}
                if answer.get("served"):
                    h.info["served"] = answer["served"]
                if answer.get("model"):
                    h.info["model"] = answer["model"]
                result.answers[h.worker_id] = answer
            for worker_id in result.failed:  # died meanwhile: its streams move to workers that answered
                if result.answers[worker_id]["error"] == "worker" and worker_id not in c.worker_ids():
                    del result.answers[worker_id]
            if not result.answers:
                raise ClusterBusyError("every pipeline worker went away during the swap; try again")
            if not result.failed:
                self.remember(spec)
            log_swap(result)
            return result
        finally:
            self.swapping.release()

    def remember(self, spec: ModelSpec) -> None:
        """New workers load ``spec``; the stream table keeps it for a restarted controller."""
        self.spec = spec
        self.controller.use_model(spec_dict(spec))

    def start_serving_ref(self, handle: Any) -> Any:
        """A worker that started on another model than the current one: the call that swaps it and then
        answers its ``info`` (None when it already serves the current model)."""
        served = handle.info.get("served")
        if served is None or serves(served, self.spec):
            return None
        log.info("cluster: worker %s started with model %s; bringing it to %s", handle.worker_id, served.get("id"),
                 self.spec.source)
        return handle.actor.start_serving.remote(spec_dict(self.spec))


def worker_key(worker_id: str) -> tuple[int, str]:
    digits = worker_id[1:]
    return (int(digits), worker_id) if digits.isdigit() else (1 << 30, worker_id)


def log_swap(result: ClusterSwap) -> None:
    if result.failed:
        log.error("cluster: %s", scrub_urls(result.detail()))
    else:
        log.info("cluster: model %s serving on %s", result.spec.source,
                 ", ".join(f"{w} ({v['previous']} -> {v['model']})" for w, v in result.workers().items()))


class ClusterModelControl:
    """``app.state.model_control`` with ``--ray`` (deps.py's ``ModelControl``): every worker swaps.

    JSONResponses: the route's response model would drop ``workers``, ``mixed`` and ``partial``."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster  # the controller: its model_service is made with it

    async def describe(self) -> JSONResponse:
        return JSONResponse(await asyncio.to_thread(self.cluster.model_service.describe))

    async def swap(self, source: str, backend: str | None, precision: str | None) -> JSONResponse:
        service = self.cluster.model_service
        spec = ModelSpec(source, backend or service.spec.backend, precision or service.spec.precision)
        try:
            result = await asyncio.to_thread(service.swap, spec)
        except ClusterBusyError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, f"model not swapped, the old one keeps serving: {exc}",
                                headers={"Retry-After": "5"}) from None
        code = result.status_code()
        return JSONResponse(result.body(), status_code=code, headers={"Retry-After": "5"} if code == 409 else None)


class ClusterSighupReloader(SighupReloader):
    """SIGHUP with ``--ray``: the config file's ``model:`` part, swapped on every worker as ``PUT /api/model``."""

    def refused(self, pipeline: Any) -> None:
        pass  # swaps are counted on each worker's own metrics endpoint

    def swap(self, pipeline: Any, spec: ModelSpec) -> Any:
        try:
            return pipeline.model_service.swap(spec)  # logs its outcome
        except ClusterBusyError as exc:
            log.error("SIGHUP: model not swapped: %s", exc)
            return None
