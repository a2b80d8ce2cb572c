"""The stream table: which stream runs on which worker, kept in a detached named Ray actor.

It outlives the controller, so a restarted controller (same ``cluster.ray.namespace``) finds the workers it
started (detached named actors too) and the streams on them, and carries on without restarting them.
Plain Python: the controller wraps it with ``ray.remote``.
"""

from __future__ import annotations

from typing import Any

TABLE_NAME = "sightline-stream-table"


def worker_actor_name(worker_id: str) -> str:
    return f"sightline-worker-{worker_id}"


class StreamTable:
    """streams: name -> {"config": StreamConfig dict, "worker": id | None, "state", "moves"};
    workers: id -> {"draining": bool}."""

    def __init__(self) -> None:
        self.streams: dict[str, dict[str, Any]] = {}
        self.workers: dict[str, dict[str, Any]] = {}
        self.next_worker = 0
        self.model: dict[str, str] | None = None  # the model swapped in through the API (None: the config's)

    def alive(self) -> bool:
        return True

    def snapshot(self) -> dict[str, Any]:
        return {"streams": self.streams, "workers": self.workers, "next_worker": self.next_worker, "model": self.model}

    def restore(self, saved: dict[str, Any]) -> None:
        """A table lost with its node is written again from the controller's copy."""
        self.streams = dict(saved["streams"])
        self.workers = dict(saved["workers"])
        self.next_worker = max(self.next_worker, int(saved["next_worker"]))
        self.model = saved.get("model", self.model)

    def new_worker_id(self) -> str:
        self.next_worker += 1
        return f"w{self.next_worker}"

    def put_worker(self, worker_id: str, record: dict[str, Any]) -> None:
        self.workers[worker_id] = record

    def put_model(self, spec: dict[str, str]) -> None:
        self.model = dict(spec)

    def drop_worker(self, worker_id: str) -> None:
        self.workers.pop(worker_id, None)

    def put_stream(self, name: str, record: dict[str, Any]) -> None:
        self.streams[name] = record

    def put_streams(self, records: dict[str, dict[str, Any]]) -> None:
        self.streams.update(records)

    def drop_stream(self, name: str) -> None:
        self.streams.pop(name, None)
