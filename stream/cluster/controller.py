"""The controller: the HTTP API's process, placing streams on pipeline workers (Ray actors) and moving them when
a worker dies or is drained.

``ClusterPipeline`` offers the surface the HTTP API uses of a ``Pipeline`` (``add_stream``, ``remove_stream``,
``get``, ``names``, ``statuses``, ``snapshot``, ``webrtc_offer``, ``start``, ``run``, ``shutdown``,
``classifier.describe()``, ``metrics``, and of a stream: ``config``, ``status()``, ``removing``, ``finished``,
``watch_preview()``, ``output.latest``), so the same app serves one process or a cluster.

A monitor thread checks every worker each ``cluster.heartbeat_s``: its answer refreshes the status cache the
API reads (the event loop never waits on a worker for a list); a worker that died (its node was removed, its
process killed) or answered nothing for ``cluster.worker_timeout_s`` is dropped and its streams are placed on
the others at once (state ``moving`` meanwhile, ``unplaced`` when no worker has room). Streams on other
workers are not touched. Workers and the stream table are detached named actors: a controller that restarts
finds them and carries on.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from sightline.model.errors import ConfigError
from sightline.stream.cluster.answers import raise_for
from sightline.stream.cluster.model_control import ClusterModelService
from sightline.stream.cluster.placement import WorkerLoad, asked_fps, choose_worker, file_rate
from sightline.stream.cluster.table import TABLE_NAME, StreamTable, worker_actor_name
from sightline.stream.cluster.worker import PipelineWorker
from sightline.stream.config import RunConfig, StreamConfig, check_source, redact_url
from sightline.stream.errors import (
    StreamError,
    UnknownStreamError,
)
from sightline.stream.inference.model_holder import ModelSpec
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import exit_code_for, wait_until_done
from sightline.stream.pipeline.registry import check_admission, claim_removal
from sightline.stream.service.status import links

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 30.0  # one add/remove on a worker
START_TIMEOUT_S = 300.0  # a worker loading its model
PREVIEW_TIMEOUT_S = 2.0
PLACED = "placed"
MOVING = "moving"
UNPLACED = "unplaced"
NOT_RUNNING = ("ended", "stopped", "failed")


class UnknownWorkerError(StreamError, LookupError):
    pass


@dataclass
class WorkerHandle:
    worker_id: str
    actor: Any
    info: dict[str, Any] = field(default_factory=dict)
    draining: bool = False
    last_ok: float = field(default_factory=time.monotonic)
    ready_ref: Any = None  # the info() call of a worker still starting
    statuses_ref: Any = None  # the heartbeat's statuses() call, until it answers
    streams: dict[str, Placement] = field(default_factory=dict)  # placed here (ClusterPipeline._assign keeps it)
    asked_fps: float = 0.0  # what they ask for, summed as they come and go (placement reads it per stream)

    @property
    def ready(self) -> bool:
        return self.ready_ref is None


@dataclass
class Placement:
    config: StreamConfig
    worker: str | None = None
    state: str = MOVING
    moves: int = 0
    asked_fps: float = 0.0
    removing: bool = False
    status: dict[str, Any] = field(default_factory=dict)
    finished: bool = False

    def record(self) -> dict[str, Any]:
        return {"config": self.config.model_dump(mode="json"), "worker": self.worker, "state": self.state,
                "moves": self.moves}


def blank_status(config: StreamConfig) -> dict[str, Any]:
    return {"name": config.name, "url": redact_url(config.source_url), "mode": config.mode, "state": "connecting",
            "error": None, "fps": 0.0, "p50_ms": None, "p99_ms": None, "frames_decoded": 0, "frames_inferred": 0,
            "active_s": 0.0,
            "dropped": {}, "reconnects": 0, "sink_errors": {}, "corrupt_packets": 0, "frames_lost": {},
            "records_lost": {}, "prediction": None, "smoothed": None, "smoothing": None, "model": None,
            "inputs": [{"name": i.label, "roles": list(i.roles), "url": redact_url(i.url), "state": "connecting"}
                       for i in config.input_list],
            "inputs_down": [i.label for i in config.input_list], **links(config.name)}


class RemoteOutput:
    """``runtime.output.latest`` for previews: the owning worker's latest frame, fetched through Ray (each new
    frame moves once; an unchanged one is the same object, so the preview renderer draws it once)."""

    def __init__(self, controller: ClusterPipeline, name: str) -> None:
        self.controller = controller
        self.name = name
        self._token: tuple[int, int] | None = None
        self._item: Any = None

    @property
    def latest(self) -> Any:
        got = self.controller.fetch_latest(self.name, self._token)
        if got is not None:
            self._token, self._item = got
        return self._item


class RemoteStream:
    """One stream as the API sees it (same attributes as a StreamRuntime)."""

    def __init__(self, controller: ClusterPipeline, placement: Placement) -> None:
        self.controller = controller
        self.placement = placement
        self.config = placement.config
        self.output = RemoteOutput(controller, placement.config.name)

    @property
    def removing(self) -> bool:
        return self.placement.removing

    @property
    def finished(self) -> bool:
        return self.placement.finished

    def watch_preview(self) -> None:
        """The worker marks the preview as watched when its frame is fetched."""

    def status(self) -> dict[str, Any]:
        """The API's JSON of the stream (``service.status.stream_status`` asks the stream for it)."""
        return self.controller.status_of(self.placement)

    @property
    def stats(self) -> SimpleNamespace:
        """What readiness reads of a stream: its state."""
        return SimpleNamespace(state=self.status()["state"])

    @property
    def source(self) -> RemoteWebRtc:
        """WebRTC offers go to the owning worker's source."""
        return RemoteWebRtc(self.controller, self.config.name)


class RemoteWebRtc:
    def __init__(self, controller: ClusterPipeline, name: str) -> None:
        self.controller = controller
        self.name = name

    async def accept(self, sdp: str, kind: str) -> SimpleNamespace:
        answer, answer_kind = await self.controller.webrtc_offer(self.name, sdp, kind)
        return SimpleNamespace(sdp=answer, type=answer_kind)


class ClusterModel:
    """``pipeline.classifier`` for readiness: the model as the workers describe it."""

    def __init__(self, controller: ClusterPipeline) -> None:
        self.controller = controller

    def describe(self) -> dict[str, object]:
        for handle in self.controller.worker_handles():
            if handle.info.get("model"):
                return dict(handle.info["model"])
        return {"arch": None, "classes": None, "device": None, "precision": None, "compiled": False}


class ClusterCollector:
    """The controller's own gauges: workers and streams by placement state."""

    def __init__(self, controller: ClusterPipeline) -> None:
        self.controller = controller

    def collect(self):  # noqa: ANN201 (prometheus_client's Collector protocol)
        workers = GaugeMetricFamily("sightline_cluster_workers", "Pipeline workers answering the controller")
        workers.add_metric([], float(sum(h.ready for h in self.controller.worker_handles())))
        yield workers
        states = GaugeMetricFamily("sightline_cluster_streams", "Streams by placement state", labels=["placement"])
        counts = {PLACED: 0, MOVING: 0, UNPLACED: 0}
        for p in self.controller.placements():
            counts[p.state] = counts.get(p.state, 0) + 1
        for state, n in counts.items():
            states.add_metric([state], float(n))
        yield states


class ClusterPipeline:
    def __init__(self, config: RunConfig, ray: Any, metrics: Metrics | None = None,
                 worker_class: type = PipelineWorker) -> None:
        """``ray`` is the ray module (or inprocess_ray.py's double); ``worker_class`` what each worker actor runs
        (simulated_worker.py's for fleet measurements)."""
        self.config = config
        self.cluster = config.cluster
        self.streams_changed_by_api = False  # as Pipeline's: then the service runs until it is told to stop
        self.ray = ray
        self.metrics = metrics if metrics is not None else Metrics()
        self.metrics.registry.register(ClusterCollector(self))
        self.classifier = ClusterModel(self)
        self._worker_class = ray.remote(worker_class)
        self._table_class = ray.remote(StreamTable)
        self._workers: dict[str, WorkerHandle] = {}
        self._streams: dict[str, Placement] = {}
        self._runtimes: dict[str, RemoteStream] = {}
        self._state = threading.RLock()  # the dicts above
        self._placing = threading.RLock()  # one change of placement at a time (API, monitor, drain)
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self._started = False
        self._table: Any = None
        self._worker_config = config.model_copy(update={"streams": []}).model_dump(mode="json")
        self._next_worker = 0
        self.model_service = ClusterModelService(self, ModelSpec.of(config.model))  # GET/PUT /api/model

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Find or create the stream table, adopt live workers, start the missing ones, place the streams."""
        if self._started:
            return
        self._started = True
        self._table = self._make_table()
        saved = self.ray.get(self._table.snapshot.remote(), timeout=CALL_TIMEOUT_S)
        self._next_worker = int(saved["next_worker"])
        if saved.get("model"):  # swapped by an earlier controller: new workers load that one
            self.model_service.spec = ModelSpec(**saved["model"])
            self.use_model(saved["model"])
        self._adopt(saved)
        for _ in range(len(self._workers), self.target_workers()):
            self._spawn_worker(check_room=False)  # Ray schedules them as its resource view fills in
        self._wait_ready(START_TIMEOUT_S)
        if not any(h.ready for h in self._workers.values()):
            raise ConfigError("no pipeline worker could start on the Ray cluster (room for cluster.cpus_per_worker / "
                              "cluster.gpus_per_worker, model loading: see the log)")
        known = set(self._streams)
        for stream in self.config.streams:
            if stream.name not in known:
                self._register(stream)
        self.place_pending()
        self.refresh()
        self._monitor = threading.Thread(target=self._watch, name="cluster-monitor", daemon=True)
        self._monitor.start()

    def _make_table(self) -> Any:
        """The detached table actor (found, or created on the head node: it must outlive worker nodes)."""
        heads = [n["NodeID"] for n in self.ray.nodes() if n.get("Alive") and "node:__internal_head__" in
                 n.get("Resources", {})]
        where = heads[0] if heads else self.ray.get_runtime_context().get_node_id()
        return self._table_class.options(
            name=TABLE_NAME, namespace=self.cluster.ray.namespace, lifetime="detached", get_if_exists=True,
            num_cpus=0,
            scheduling_strategy=self.ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(where, soft=True),
        ).remote()

    def _check_table(self) -> None:
        """A table that died (its node went) is created again and written from this controller's copy."""
        try:
            self.ray.get(self._table.alive.remote(), timeout=max(self.cluster.heartbeat_s, 1.0))
            return
        except self.ray.exceptions.ActorDiedError:
            pass
        except Exception as exc:  # unavailable for now, or slow: next heartbeat
            log.debug("cluster: stream table check: %s", type(exc).__name__)
            return
        log.warning("cluster: the stream table was lost with its node: writing it again")
        self._table = self._make_table()
        with self._state:
            saved = {"streams": {n: p.record() for n, p in self._streams.items()},
                     "workers": {w: {"draining": h.draining} for w, h in self._workers.items()},
                     "next_worker": self._next_worker,
                     "model": {k: self._worker_config["model"][k] for k in ("source", "backend", "precision")}}
        self._table.restore.remote(saved)

    def _adopt(self, saved: dict[str, Any]) -> None:
        ns = self.cluster.ray.namespace
        for worker_id, record in saved["workers"].items():
            try:
                actor = self.ray.get_actor(worker_actor_name(worker_id), namespace=ns)
                info = self.ray.get(actor.info.remote(), timeout=10)
            except Exception as exc:  # gone with its node, or not answering: its streams move
                log.warning("cluster: worker %s from the stream table is gone (%s)", worker_id, type(exc).__name__)
                self._table.drop_worker.remote(worker_id)
                continue
            self._workers[worker_id] = WorkerHandle(worker_id, actor, info, bool(record.get("draining")))
            log.info("cluster: adopted worker %s on node %s", worker_id, info.get("node_ip"))
        for name, record in saved["streams"].items():
            config = StreamConfig.model_validate(record["config"])
            p = Placement(config, None, record.get("state", MOVING), int(record.get("moves", 0)), self._asked(config))
            if record.get("worker") in self._workers:
                self._assign(p, record["worker"])
            else:
                p.state = MOVING
            p.status = blank_status(config)
            self._streams[name] = p
            self._runtimes[name] = RemoteStream(self, p)

    def target_workers(self) -> int:
        if self.cluster.workers != "auto":
            return int(self.cluster.workers)
        total = self.ray.cluster_resources()
        if total.get("GPU", 0) > 0 and self.cluster.gpus_per_worker > 0:
            return int(math.floor(total["GPU"] / self.cluster.gpus_per_worker + 1e-9))
        return int(math.floor(total.get("CPU", 0) / self.cluster.cpus_per_worker + 1e-9))

    def _resources(self) -> dict[str, float]:
        total = self.ray.cluster_resources()
        if total.get("GPU", 0) > 0 and self.cluster.gpus_per_worker > 0:
            return {"num_gpus": self.cluster.gpus_per_worker, "num_cpus": 0}
        return {"num_cpus": self.cluster.cpus_per_worker}

    def _room_for_worker(self) -> bool:
        need = self._resources()
        free = self.ray.available_resources()
        if need.get("num_gpus"):
            return free.get("GPU", 0) + 1e-9 >= need["num_gpus"]
        return free.get("CPU", 0) + 1e-9 >= need["num_cpus"]

    def _spawn_worker(self, check_room: bool = True) -> bool:
        """Start one more worker when the cluster has room for it (its model loads in the background)."""
        if check_room and not self._room_for_worker():
            return False
        worker_id = self._new_worker_id()
        actor = self._worker_class.options(name=worker_actor_name(worker_id), namespace=self.cluster.ray.namespace,
                                           lifetime="detached", max_concurrency=16, max_restarts=0,
                                           **self._resources()).remote(self._worker_config, worker_id)
        handle = WorkerHandle(worker_id, actor, ready_ref=actor.info.remote())
        with self._state:
            self._workers[worker_id] = handle
        self._table.put_worker.remote(worker_id, {"draining": False})
        log.info("cluster: starting worker %s", worker_id)
        if check_room:
            time.sleep(0.2)  # let Ray account for its resources before the next check (not at start: 100 workers)
        return True

    def _new_worker_id(self) -> str:
        """w1, w2, ...: counted in the table (so a restarted controller goes on), never a name still in use."""
        try:
            worker_id = self.ray.get(self._table.new_worker_id.remote(), timeout=CALL_TIMEOUT_S)
        except Exception:  # the table is being replaced: count on from this controller's copy
            worker_id = f"w{self._next_worker + 1}"
        while True:
            n = int(worker_id[1:])
            self._next_worker = max(self._next_worker, n)
            if worker_id not in self._workers:
                try:
                    self.ray.get_actor(worker_actor_name(worker_id), namespace=self.cluster.ray.namespace)
                except ValueError:  # the name is free
                    return worker_id
            worker_id = f"w{self._next_worker + 1}"

    def _wait_ready(self, timeout: float) -> None:
        """Until every worker started (or failed), or ``timeout``; those still waiting for room stay pending."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pending = [h for h in list(self._workers.values()) if h.ready_ref is not None]
            if not pending:
                return
            self.ray.wait([h.ready_ref for h in pending], num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            for handle in pending:
                self._check_ready(handle, 0)

    def _check_ready(self, handle: WorkerHandle, timeout: float) -> None:
        if self.model_service.swapping.locked():
            return  # ready after the swap, on the model it leaves in service
        ready, _ = self.ray.wait([handle.ready_ref], timeout=timeout)
        if not ready:
            return
        try:
            handle.info = self.ray.get(handle.ready_ref)
        except Exception as exc:  # its model failed to load, or its node went away while it started
            log.error("cluster: worker %s failed to start: %s", handle.worker_id, exc)
            self._drop_worker(handle.worker_id, kill=True)
            return
        serving = self.model_service.start_serving_ref(handle)  # started on a model swapped out since
        if serving is not None:
            handle.ready_ref = serving
            return
        handle.ready_ref = None
        handle.last_ok = time.monotonic()
        log.info("cluster: worker %s ready on node %s (%.0f frames/s)", handle.worker_id, handle.info["node_ip"],
                 handle.info["capacity_fps"])

    def _drop_worker(self, worker_id: str, kill: bool) -> list[str]:
        """Forget a worker; its streams become ``moving``. Returns their names."""
        with self._state:
            handle = self._workers.get(worker_id)
            moved = []
            for p in list(handle.streams.values()) if handle is not None else []:
                self._assign(p, None)
                p.state, p.moves = MOVING, p.moves + 1
                p.status = {**p.status, "state": MOVING}
                moved.append(p.config.name)
            self._workers.pop(worker_id, None)
        if handle is not None and kill:
            try:
                self.ray.kill(handle.actor, no_restart=True)
            except Exception as exc:  # already gone
                log.debug("cluster: kill %s: %s", worker_id, exc)
        self._table.drop_worker.remote(worker_id)
        self._save(moved)
        return moved

    def use_model(self, spec: dict[str, str]) -> None:
        """The model a worker started from now on loads (after a swap), kept in the stream table too."""
        self._worker_config = {**self._worker_config, "model": {**self._worker_config["model"], **spec}}
        if self._table is not None:
            self._table.put_model.remote(spec)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the monitor, let every worker drain and finalize its streams, then remove workers and table."""
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(timeout)
        handles = self.worker_handles()
        refs = [h.actor.shutdown.remote() for h in handles if h.ready]
        if refs:
            self.ray.wait(refs, num_returns=len(refs), timeout=timeout + 5)
        self.refresh_from_final()
        for h in handles:
            try:
                self.ray.kill(h.actor, no_restart=True)
            except Exception as exc:
                log.debug("cluster: kill %s: %s", h.worker_id, exc)
        if self._table is not None:
            try:
                self.ray.kill(self._table, no_restart=True)
            except Exception as exc:
                log.debug("cluster: kill table: %s", exc)
        with self._state:
            self._workers.clear()

    def detach(self) -> None:
        """Stop controlling without stopping anything (what a crashed controller leaves behind)."""
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(10)

    def refresh_from_final(self) -> None:
        with self._state:
            for p in self._streams.values():
                if p.status.get("state") not in NOT_RUNNING:
                    p.status = {**p.status, "state": "stopped"}

    # -- the monitor -------------------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stop.wait(self.cluster.heartbeat_s * 0.2):
            try:
                self.refresh()
                self.place_pending()
                self._check_table()
                self._grow()
            except Exception:  # the monitor never dies: the next heartbeat tries again
                log.exception("cluster: monitor pass failed")
            self._stop.wait(self.cluster.heartbeat_s * 0.8)

    def _grow(self) -> None:
        for handle in self.worker_handles():
            if not handle.ready:
                self._check_ready(handle, 0)
        starting = any(not h.ready for h in self.worker_handles())
        if not starting and len(self._workers) < self.target_workers():
            self._spawn_worker()

    def refresh(self) -> None:
        """One heartbeat: every ready worker's stream statuses; dead or silent workers are replaced."""
        handles = [h for h in self.worker_handles() if h.ready]
        if not handles:
            return
        for h in handles:  # a worker still busy with the last heartbeat's call is not asked again (no pile-up)
            if h.statuses_ref is None:
                h.statuses_ref = h.actor.statuses.remote()
        refs = {h.worker_id: h.statuses_ref for h in handles}
        ready, _ = self.ray.wait(list(refs.values()), num_returns=len(refs), timeout=self.cluster.heartbeat_s)
        now = time.monotonic()
        dead = []
        for h in handles:
            ref = refs[h.worker_id]
            if ref not in ready:  # its answer is waited for again next heartbeat
                if now - h.last_ok > self.cluster.worker_timeout_s:
                    log.error("cluster: worker %s answered nothing for %.0f s: replacing it", h.worker_id,
                              now - h.last_ok)
                    dead.append((h.worker_id, True))
                continue
            h.statuses_ref = None
            try:
                statuses = self.ray.get(ref)
            except Exception as exc:  # RayActorError and kin: the worker or its node is gone
                log.error("cluster: worker %s is gone (%s): moving its streams", h.worker_id, type(exc).__name__)
                dead.append((h.worker_id, False))
                continue
            h.last_ok = now
            self._take_statuses(h, statuses)
        for worker_id, kill in dead:
            moved = self._drop_worker(worker_id, kill)
            if moved:
                log.warning("cluster: streams %s are moving off worker %s", ", ".join(moved), worker_id)
        if dead:
            self.place_pending()

    def _take_statuses(self, handle: WorkerHandle, statuses: list[dict[str, Any]]) -> None:
        with self._state:
            for s in statuses:
                p = self._streams.get(str(s["name"]))
                if p is None or p.worker != handle.worker_id:
                    continue
                p.finished = bool(s.pop("finished"))
                s.pop("removing", None)
                p.status = s

    # -- placement ---------------------------------------------------------------------------------

    def _asked(self, config: StreamConfig) -> float:
        rate = file_rate(config.file_path()) if config.is_file else None
        return asked_fps(config, self.cluster.default_stream_fps, rate)

    def loads(self) -> list[WorkerLoad]:
        with self._state:
            return [WorkerLoad(h.worker_id, float(h.info.get("capacity_fps", 0.0)), h.asked_fps, len(h.streams),
                               self.config.server.max_streams, not h.draining)
                    for h in self._workers.values() if h.ready]

    def _assign(self, p: Placement, worker_id: str | None) -> None:
        """The one place a stream's worker changes, keeping each worker's streams and asked frames/s in step
        (so placing a stream costs O(workers), not O(streams)). The caller holds ``_state``."""
        old = self._workers.get(p.worker) if p.worker else None
        if old is not None and old.streams.pop(p.config.name, None) is not None:
            old.asked_fps = old.asked_fps - p.asked_fps if old.streams else 0.0
        p.worker = worker_id
        new = self._workers.get(worker_id) if worker_id else None
        if new is not None and p.config.name not in new.streams:
            new.streams[p.config.name] = p
            new.asked_fps += p.asked_fps

    def place_pending(self) -> None:
        """Place every ``moving``/``unplaced`` stream (all at once: the calls to the workers run in parallel)."""
        with self._placing:
            with self._state:
                pending = sorted((p for p in self._streams.values() if p.worker is None and not p.removing),
                                 key=lambda p: p.config.name)
            if not pending:
                return
            loads = {w.worker: w for w in self.loads()}
            calls = []
            for p in pending:
                target = choose_worker(list(loads.values()), p.asked_fps)
                if target is None:
                    if p.state != UNPLACED:
                        log.error("cluster: no worker has room for stream %s (%.1f frames/s): unplaced",
                                  p.config.name, p.asked_fps)
                    p.state = UNPLACED
                    p.status = {**p.status, "state": UNPLACED}
                    continue
                w = loads[target]
                loads[target] = WorkerLoad(w.worker, w.capacity_fps, w.asked_fps + p.asked_fps, w.streams + 1,
                                           w.max_streams, w.accepting)
                handle = self._workers[target]
                calls.append((p, handle, handle.actor.add_stream.remote(p.config.model_dump(mode="json"))))
            for p, handle, ref in calls:
                self._settle(p, handle, ref)
            self._save([p.config.name for p in pending])

    def _settle(self, p: Placement, handle: WorkerHandle, ref: Any) -> dict[str, Any]:
        try:
            answer = self.ray.get(ref, timeout=CALL_TIMEOUT_S)
        except Exception as exc:  # the worker died meanwhile: the next heartbeat moves the stream again
            log.error("cluster: placing %s on %s failed: %s", p.config.name, handle.worker_id, type(exc).__name__)
            answer = {"error": "worker", "detail": f"worker {handle.worker_id} did not answer"}
        with self._state:
            if "status" in answer:
                self._assign(p, handle.worker_id)
                p.state, p.finished = PLACED, False
                p.status = answer["status"]
                log.info("cluster: stream %s placed on worker %s", p.config.name, handle.worker_id)
            elif p.moves or answer["error"] == "worker":
                p.state = UNPLACED  # a moved stream that a worker refused stays listed, and is retried
                p.status = {**p.status, "state": UNPLACED, "error": answer["detail"]}
        return answer

    def _save(self, names: list[str]) -> None:
        with self._state:
            records = {n: self._streams[n].record() for n in names if n in self._streams}
        if records and self._table is not None:
            self._table.put_streams.remote(records)

    def _register(self, config: StreamConfig) -> Placement:
        p = Placement(config, asked_fps=self._asked(config), status=blank_status(config))
        with self._state:
            self._streams[config.name] = p
            self._runtimes[config.name] = RemoteStream(self, p)
        return p

    def _forget(self, name: str) -> None:
        with self._state:
            p = self._streams.pop(name, None)
            if p is not None:
                self._assign(p, None)
            self._runtimes.pop(name, None)
        self._table.drop_stream.remote(name)

    # -- what the API uses (the Pipeline surface) --------------------------------------------------

    def add_stream(self, config: StreamConfig, check: bool = True) -> RemoteStream:
        if check:
            problem = check_source(config, self.config.media_root)
            if problem:
                raise ConfigError(f"streams.{config.name}.url: {problem}")
        with self._placing:
            with self._state:
                check_admission(self._streams, config.name, self.config.server.max_streams)
            p = self._register(config)
            target = choose_worker(self.loads(), p.asked_fps)
            if target is None:
                p.state = UNPLACED
                p.status = {**p.status, "state": UNPLACED}
                log.error("cluster: no worker has room for stream %s: unplaced", config.name)
                self._save([config.name])
                return self._runtimes[config.name]
            handle = self._workers[target]
            answer = self._settle(p, handle, handle.actor.add_stream.remote(config.model_dump(mode="json")))
            if "error" in answer and answer["error"] != "worker":
                self._forget(config.name)
                raise_for(answer, default=ConfigError)
            self._save([config.name])
            return self._runtimes[config.name]

    def remove_stream(self, name: str, timeout: float = 10.0) -> RemoteStream:
        with self._state:
            p = claim_removal(self._streams, name)
            runtime = self._runtimes[name]
        with self._placing:
            handle = self._workers.get(p.worker) if p.worker else None
            if handle is not None:
                try:
                    answer = self.ray.get(handle.actor.remove_stream.remote(name), timeout=timeout + CALL_TIMEOUT_S)
                except Exception as exc:  # the worker is gone: so is the stream
                    answer = {"error": "worker", "detail": str(type(exc).__name__)}
                if "status" in answer:
                    p.status = answer["status"]
            if p.status.get("state") not in NOT_RUNNING:
                p.status = {**p.status, "state": "stopped"}
            p.finished = True
            self._forget(name)
        return runtime

    def drain(self, worker_id: str) -> list[str]:
        """Move every stream off a worker and place no new one there (until ``resume``)."""
        with self._placing:
            with self._state:
                handle = self._workers.get(worker_id)
                if handle is None:
                    raise UnknownWorkerError(f"no worker named {worker_id!r}")
                handle.draining = True
                moving = [p for p in handle.streams.values() if not p.removing]
            self._table.put_worker.remote(worker_id, {"draining": True})
            refs = [(p, handle.actor.remove_stream.remote(p.config.name)) for p in moving]
            for p, ref in refs:  # stopped first (outputs finalized), then started elsewhere
                try:
                    self.ray.get(ref, timeout=CALL_TIMEOUT_S)
                except Exception as exc:
                    log.error("cluster: draining %s from %s: %s", p.config.name, worker_id, type(exc).__name__)
                with self._state:
                    self._assign(p, None)
                    p.state, p.moves = MOVING, p.moves + 1
                    p.status = {**p.status, "state": MOVING}
            self.place_pending()
        log.info("cluster: drained worker %s (%d streams moved)", worker_id, len(moving))
        return [p.config.name for p in moving]

    def resume(self, worker_id: str) -> None:
        with self._state:
            handle = self._workers.get(worker_id)
            if handle is None:
                raise UnknownWorkerError(f"no worker named {worker_id!r}")
            handle.draining = False
        self._table.put_worker.remote(worker_id, {"draining": False})

    def names(self) -> list[str]:
        with self._state:
            return list(self._streams)

    def runtimes(self) -> list[RemoteStream]:
        return [self.get(name) for name in self.names()]

    def get(self, name: str) -> RemoteStream:
        try:
            return self._runtimes[name]
        except KeyError:
            raise UnknownStreamError(f"no stream named {name!r}") from None

    def placements(self) -> list[Placement]:
        with self._state:
            return list(self._streams.values())

    def worker_ids(self) -> set[str]:
        with self._state:
            return set(self._workers)

    def worker_handles(self) -> list[WorkerHandle]:
        with self._state:
            return list(self._workers.values())

    def owner(self, p: Placement) -> WorkerHandle | None:
        """The worker that runs the stream now (None while it is moving or unplaced)."""
        with self._state:
            return self._workers.get(p.worker) if p.worker else None

    def status_of(self, p: Placement) -> dict[str, Any]:
        with self._state:
            handle = self._workers.get(p.worker) if p.worker else None
            status = dict(p.status)
            if p.state != PLACED:
                status["state"] = p.state
            return {**status, "worker": p.worker, "node": handle.info.get("node_ip") if handle else None,
                    "node_id": handle.info.get("node_id") if handle else None, "moves": p.moves}

    def statuses(self) -> list[dict[str, Any]]:
        return [self.status_of(p) for p in self.placements()]

    def workers(self) -> list[dict[str, Any]]:
        with self._state:
            return [{"id": h.worker_id, "ready": h.ready, "draining": h.draining,
                     "node": h.info.get("node_ip"), "node_id": h.info.get("node_id"),
                     "metrics": h.info.get("metrics"), "capacity_fps": h.info.get("capacity_fps"),
                     "model": (h.info.get("served") or {}).get("id"),
                     "asked_fps": round(h.asked_fps, 2) if h.ready else 0.0, "streams": sorted(h.streams)}
                    for h in self._workers.values()]

    def targets(self) -> list[dict[str, Any]]:
        """Prometheus HTTP service discovery: one target group per ready worker."""
        return [{"targets": [h.info["metrics"]],
                 "labels": {"worker": h.worker_id, "node": str(h.info.get("node_ip")),
                            "node_id": str(h.info.get("node_id"))}}
                for h in self.worker_handles() if h.ready and h.info.get("metrics")]

    def fetch_latest(self, name: str, token: tuple[int, int] | None) -> tuple[tuple[int, int], Any] | None:
        with self._state:
            p = self._streams.get(name)
            handle = self._workers.get(p.worker) if p is not None and p.worker else None
        if handle is None:
            return None
        try:
            return self.ray.get(handle.actor.latest.remote(name, token), timeout=PREVIEW_TIMEOUT_S)
        except Exception as exc:  # moving, or the worker is slow: no new frame this time
            log.debug("cluster: preview of %s: %s", name, type(exc).__name__)
            return None

    def snapshot(self, name: str) -> Any:
        item = self.get(name).output.latest
        return None if item is None else item.annotated(name)

    async def webrtc_offer(self, name: str, sdp: str, kind: str = "offer") -> tuple[str, str]:
        p = self.get(name).placement
        handle = self._workers.get(p.worker) if p.worker else None
        if handle is None:
            raise StreamError(f"stream {name!r} is {p.state}: no worker runs it now")
        answer = await handle.actor.webrtc_offer.remote(name, sdp, kind)
        raise_for(answer)
        return answer["sdp"], answer["type"]

    @property
    def finished(self) -> bool:
        ps = self.placements()
        return bool(ps) and all(p.finished for p in ps)

    def exit_code(self) -> int:
        states = [self.status_of(p)["state"] for p in self.placements()]
        return exit_code_for(sum(s in ("failed", UNPLACED) for s in states), len(states))

    async def run(self, duration: float | None = None, stop: asyncio.Event | None = None) -> int:
        await asyncio.to_thread(self.start)
        try:
            await wait_until_done(lambda: self.finished and not self.streams_changed_by_api, not self.config.streams,
                                  asyncio.get_running_loop().time, duration, stop, poll_s=0.1)
        finally:
            code = self.exit_code()
            await asyncio.to_thread(self.shutdown)
        return code
