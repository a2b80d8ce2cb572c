"""The part of the ``ray`` module the controller uses, with every actor in this process (a test and benchmark
double): ``ClusterPipeline(config, InProcessRay())`` runs the real controller against workers that cost one
thread pool each instead of one process each.

What crosses is pickled as with Ray (arguments by the caller, results by the actor, results unpickled by the
caller's ``get``), so the controller pays for what it sends and receives. The actors' own CPU time
(their methods and their side of the pickling) is counted in ``actor_cpu_s``: the benchmark subtracts it from
the process's CPU time to give the controller's. Not modelled: Ray's RPC, its GCS and object store, and
process boundaries (real actors, benchmarks/fleet.py ``--ray``, cover those).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import pickle
import threading
import time
from types import SimpleNamespace
from typing import Any


class ActorDiedError(RuntimeError):
    """A call to an actor that was killed (``ray.exceptions.ActorDiedError``)."""


class GetTimeoutError(TimeoutError):
    pass


class ObjectRef:
    """A call's result: a future holding the pickled answer (awaitable, as a Ray ObjectRef is)."""

    def __init__(self, future: cf.Future) -> None:
        self.future = future

    def __await__(self):  # noqa: ANN204
        return asyncio.wrap_future(self.future).__await__()


class _Method:
    def __init__(self, actor: ActorHandle, name: str) -> None:
        self.actor, self.name = actor, name

    def remote(self, *args: Any, **kwargs: Any) -> ObjectRef:
        return self.actor._call(self.name, pickle.dumps((args, kwargs)))


class ActorHandle:
    """One actor: its object, made and called on its own thread pool (``max_concurrency`` threads)."""

    def __init__(self, ray: InProcessRay, cls: type, args: bytes, options: dict[str, Any]) -> None:
        self._ray = ray
        self._options = options
        self._pool = cf.ThreadPoolExecutor(max_workers=int(options.get("max_concurrency", 1)),
                                           thread_name_prefix=f"actor-{options.get('name', cls.__name__)}")
        self._dead = False
        self._made = self._pool.submit(self._run, lambda: cls(*pickle.loads(args)[0]))

    def _run(self, work: Any) -> Any:
        started = time.thread_time()
        try:
            return work()
        finally:
            self._ray._count(time.thread_time() - started)

    def _died(self) -> ActorDiedError:
        return ActorDiedError(f"actor {self._options.get('name')} was killed")

    def _call(self, name: str, args: bytes) -> ObjectRef:
        def work() -> bytes:
            obj = self._made.result()
            a, kw = pickle.loads(args)
            if self._dead:
                raise self._died()
            return pickle.dumps(getattr(obj, name)(*a, **kw))

        if not self._dead:
            try:
                return ObjectRef(self._pool.submit(self._run, work))
            except RuntimeError:  # the pool was shut down: killed meanwhile
                pass
        future: cf.Future = cf.Future()
        future.set_exception(self._died())
        return ObjectRef(future)

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Method(self, name)

    def _kill(self) -> None:
        self._dead = True
        self._pool.shutdown(wait=False, cancel_futures=True)


class _RemoteClass:
    def __init__(self, ray: InProcessRay, cls: type, options: dict[str, Any] | None = None) -> None:
        self._ray, self._cls, self._options = ray, cls, options or {}

    def options(self, **options: Any) -> _RemoteClass:
        return _RemoteClass(self._ray, self._cls, {**self._options, **options})

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle:
        return self._ray._make(self._cls, pickle.dumps((args, kwargs)), self._options)


class InProcessRay:
    """``ray`` for ``ClusterPipeline``: ``remote``, ``get``, ``wait``, ``kill``, ``get_actor``, resources and
    nodes of one simulated node with ``cpus`` CPUs; named detached actors outlive a controller (as in Ray)."""

    def __init__(self, cpus: float = 1000.0) -> None:
        self.cpus = cpus
        self.exceptions = SimpleNamespace(ActorDiedError=ActorDiedError, RayActorError=ActorDiedError,
                                          GetTimeoutError=GetTimeoutError)
        self.util = SimpleNamespace(scheduling_strategies=SimpleNamespace(
            NodeAffinitySchedulingStrategy=lambda node_id, soft: None))
        self._named: dict[tuple[str, str], ActorHandle] = {}
        self._lock = threading.Lock()
        self.actor_cpu_s = 0.0

    def _count(self, seconds: float) -> None:
        with self._lock:
            self.actor_cpu_s += seconds

    def _make(self, cls: type, args: bytes, options: dict[str, Any]) -> ActorHandle:
        key = (str(options.get("namespace")), str(options.get("name")))
        with self._lock:
            if options.get("name") and key in self._named:
                if options.get("get_if_exists"):
                    return self._named[key]
                raise ValueError(f"an actor named {key[1]!r} exists already")
            handle = ActorHandle(self, cls, args, options)
            if options.get("name"):
                self._named[key] = handle
        return handle

    # -- the ray module's functions ----------------------------------------------------------------

    def remote(self, cls: type) -> _RemoteClass:
        return _RemoteClass(self, cls)

    def get(self, ref: ObjectRef | list[ObjectRef], timeout: float | None = None) -> Any:
        if isinstance(ref, list):
            return [self.get(r, timeout) for r in ref]
        try:
            blob = ref.future.result(timeout=timeout)
        except cf.TimeoutError:
            raise GetTimeoutError("get timed out") from None
        except cf.CancelledError:
            raise ActorDiedError("the actor was killed") from None
        return pickle.loads(blob)

    def wait(self, refs: list[ObjectRef], num_returns: int = 1,
             timeout: float | None = None) -> tuple[list[ObjectRef], list[ObjectRef]]:
        by_future = {r.future: r for r in refs}
        deadline = None if timeout is None else time.monotonic() + timeout
        pending = set(by_future)
        while True:
            done = [f for f in by_future if f.done()]
            if len(done) >= num_returns or not pending:
                break
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            _, pending = cf.wait(pending, timeout=left, return_when=cf.FIRST_COMPLETED)
        ready = [by_future[f] for f in by_future if f.done()][:max(num_returns, 0)]
        chosen = set(map(id, ready))
        return ready, [r for r in refs if id(r) not in chosen]

    def kill(self, actor: ActorHandle, no_restart: bool = True) -> None:
        actor._kill()
        with self._lock:
            for key, handle in list(self._named.items()):
                if handle is actor:
                    del self._named[key]

    def get_actor(self, name: str, namespace: str | None = None) -> ActorHandle:
        with self._lock:
            handle = self._named.get((str(namespace), name))
        if handle is None:
            raise ValueError(f"no actor named {name!r}")
        return handle

    def nodes(self) -> list[dict[str, Any]]:
        return [{"NodeID": "simulated", "Alive": True,
                 "Resources": {"CPU": self.cpus, "node:__internal_head__": 1.0}}]

    def get_runtime_context(self) -> SimpleNamespace:
        return SimpleNamespace(get_node_id=lambda: "simulated")

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": self.cpus}

    def available_resources(self) -> dict[str, float]:
        with self._lock:
            used = sum(float(h._options.get("num_cpus", 0) or 0) for h in self._named.values() if not h._dead)
        return {"CPU": self.cpus - used}

    def shutdown(self) -> None:
        with self._lock:
            handles = list(self._named.values())
            self._named.clear()
        for h in handles:
            h._kill()
