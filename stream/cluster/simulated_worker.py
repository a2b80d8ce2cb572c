"""A pipeline worker without video or a model: what the controller sees of a fleet, at a fraction of its cost.

``SimulatedWorker`` has the public methods of ``PipelineWorker``, with the same signatures (a test checks), so
the controller drives it as it drives a real worker, as Ray actors or in one process (inprocess_ray.py), and
``benchmarks/fleet.py`` measures the controller at 100 workers and thousands of cameras on one machine.
Each stream is synthetic: nothing is opened, decoded or classified. Its status has every field a real
stream's has, at a similar size, and its counters advance with the clock at the frames/s it asks for. A model
load or swap takes ``load_s`` (a sleep, set with ``SimulatedWorker.with_load_time``). The worker's metrics
address is listed (for the service-discovery answer) but nothing listens there.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

from sightline.stream.cluster.answers import error_answer
from sightline.stream.cluster.placement import asked_fps
from sightline.stream.config import RunConfig, StreamConfig, redact_url
from sightline.stream.errors import StreamError
from sightline.stream.pipeline.registry import check_admission, claim_removal
from sightline.stream.service.status import links

LABELS = ("tabby, tabby cat", "Egyptian cat", "tiger cat", "lynx, catamount", "sports car, sport car",
          "police van, police wagon, paddy wagon, patrol wagon, wagon, black Maria", "streetcar, tram, tramcar")
METRICS_PORT_BASE = 20000  # listed per worker, never served: nothing scrapes a simulated fleet


def model_of(spec: dict[str, str]) -> dict[str, Any]:
    """What ``GET /api/model`` shows of the model a simulated worker serves (its id from the spec)."""
    digest = hashlib.sha256(f"{spec['source']}|{spec['backend']}|{spec['precision']}".encode()).hexdigest()
    return {"id": digest[:12], "source": spec["source"], "backend": "torch", "requested_backend": spec["backend"],
            "precision": "fp16" if spec["precision"] == "auto" else spec["precision"], "arch": "resnet18",
            "classes": 1000, "device": "cuda:0"}


class SimulatedStream:
    """One synthetic stream: a status like a real one's, computed from the clock when asked."""

    removing = False  # the registry's rules read it (a simulated removal is instant)

    def __init__(self, config: StreamConfig, fps: float, model_id: str) -> None:
        self.config = config
        self.fps = fps
        self.model_id = model_id
        self.started = time.monotonic()
        self.url = redact_url(config.source_url)
        self.seed = int(hashlib.sha256(config.name.encode()).hexdigest()[:8], 16)

    def status(self, now: float) -> dict[str, Any]:
        c = self.config
        active = now - self.started
        inferred = int(active * self.fps)
        top = [{"index": (self.seed + k) % 1000, "label": LABELS[(self.seed + k) % len(LABELS)],
                "prob": round(0.6 / (k + 1), 5)} for k in range(5)]
        inputs = [{"name": i.label, "roles": list(i.roles), "url": redact_url(i.url), "state": "running",
                   "error": None, "packets": inferred * 2, "bytes": inferred * 9000, "reconnects": 0,
                   "frames_decoded": inferred if "classify" in i.roles else 0, "last_packet_age_s": 0.04}
                  for i in c.input_list]
        return {"name": c.name, "url": self.url, "mode": c.mode, "state": "running", "error": None,
                "fps": round(self.fps, 2), "p50_ms": 41.0 + self.seed % 9, "p99_ms": 88.0 + self.seed % 17,
                "frames_decoded": inferred, "frames_inferred": inferred, "active_s": round(active, 3),
                "dropped": {"stale": inferred // 50}, "reconnects": 0, "sink_errors": {}, "corrupt_packets": 0,
                "frames_lost": {"source_gap": 0, "recorder_behind": 0}, "records_lost": {},
                "decode": {"setting": "auto", "mode": "keyframes", "reason": "infer_fps 2 is under the keyframe rate",
                           "keyframe_interval_s": 0.5, "classify_fps_max": 2.0},
                "inputs": inputs, "inputs_down": [], "prediction": top,
                "smoothed": {"label": top[0]["label"], "prob": 0.58123},
                "smoothing": {"ema": 0.6, "hysteresis": 0.1}, "model": self.model_id,
                "capacity": {"demand_per_s": self.fps, "served_per_s": self.fps, "shed_per_s": 0.0,
                             "served_share": 1.0},
                **links(c.name)}


class SimulatedWorker:
    """``config`` is the service's RunConfig as a dict (its ``streams`` are ignored, as PipelineWorker's);
    capacity is ``cluster.worker_fps`` (default 1000 frames/s)."""

    load_s = 0.0  # seconds one model load takes (start and swap)

    @classmethod
    def with_load_time(cls, load_s: float) -> type[SimulatedWorker]:
        """A subclass whose model loads take ``load_s`` (made here, so Ray pickles it whole with its value)."""
        return type("SimulatedWorker", (cls,), {"load_s": load_s, "__module__": cls.__module__})

    def __init__(self, config: dict[str, Any], worker_id: str) -> None:
        self.worker_id = worker_id
        self.config = RunConfig.model_validate({**config, "streams": []})
        self.capacity_fps = self.config.cluster.worker_fps or 1000.0
        m = self.config.model
        self._spec = {"source": m.source, "backend": m.backend, "precision": m.precision}
        self._model = model_of(self._spec)
        self._streams: dict[str, SimulatedStream] = {}
        self._lock = threading.Lock()
        self.node_id, self.node_ip = "simulated", "127.0.0.1"
        digits = worker_id[1:]
        self.metrics_address = f"127.0.0.1:{METRICS_PORT_BASE + int(digits) if digits.isdigit() else 0}"
        time.sleep(self.load_s)

    def info(self) -> dict[str, Any]:
        return {"worker": self.worker_id, "node_id": self.node_id, "node_ip": self.node_ip,
                "metrics": self.metrics_address, "capacity_fps": round(self.capacity_fps, 2),
                "asked_fps": round(self.asked_fps(), 2), "measured_fps": round(self.measured_fps(), 2),
                "streams": sorted(self._streams), "model": self._describe(), "served": self.served()}

    def _describe(self) -> dict[str, Any]:
        return {k: self._model[k] for k in ("arch", "classes", "device", "precision")} | {"compiled": False}

    def served(self) -> dict[str, Any]:
        return dict(self._model)

    def swap_model(self, spec: dict[str, str]) -> dict[str, Any]:
        previous = self.served()
        wanted = model_of(spec)
        swapped = wanted["id"] != previous["id"]
        if swapped:
            time.sleep(self.load_s)
            with self._lock:
                self._spec, self._model = dict(spec), wanted
                for s in self._streams.values():
                    s.model_id = wanted["id"]
        outcome = {"swapped": swapped, "classes_changed": False, "model": self.served(), "previous": previous,
                   "load_s": self.load_s if swapped else 0.0, "warm_s": 0.0, "rules_unmatched": []}
        return {"outcome": outcome, "served": self.served(), "model": self._describe()}

    def ping(self) -> bool:
        return True

    def asked_fps(self) -> float:
        with self._lock:
            return sum(s.fps for s in self._streams.values())

    def measured_fps(self) -> float:
        return self.asked_fps()

    def add_stream(self, stream: dict[str, Any]) -> dict[str, Any]:
        config = StreamConfig.model_validate(stream)
        with self._lock:  # the pipeline registry's rules and answers, as a real worker's
            try:
                check_admission(self._streams, config.name, self.config.server.max_streams)
            except StreamError as exc:
                return error_answer(exc)
            s = SimulatedStream(config, asked_fps(config, self.config.cluster.default_stream_fps),
                                self._model["id"])
            self._streams[config.name] = s
        return {"status": s.status(time.monotonic())}

    def remove_stream(self, name: str) -> dict[str, Any]:
        with self._lock:
            try:
                s = claim_removal(self._streams, name)
            except StreamError as exc:
                return error_answer(exc)
            del self._streams[name]
        return {"status": {**s.status(time.monotonic()), "state": "stopped"}}

    def statuses(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        with self._lock:
            streams = list(self._streams.values())
        return [{**s.status(now), "finished": False, "removing": False} for s in streams]

    def latest(self, name: str, known: tuple[int, int] | None) -> tuple[tuple[int, int], Any] | None:
        return None  # no frames: previews of a simulated stream stay empty

    def webrtc_offer(self, name: str, sdp: str, kind: str) -> dict[str, Any]:
        return {"error": "offer", "detail": f"stream {name!r} is simulated: no WebRTC"}

    def start_serving(self, spec: dict[str, str]) -> dict[str, Any]:
        self.swap_model(spec)
        return self.info()

    def watch_offer(self, name: str, sdp: str) -> dict[str, Any]:
        return {"error": "offer", "status": 422, "detail": f"stream {name!r} is simulated: no video"}

    def video_status(self, name: str) -> dict[str, Any]:
        return {"error": "offer", "status": 422, "detail": f"stream {name!r} is simulated: no video"}

    def shutdown(self) -> bool:
        with self._lock:
            self._streams.clear()
        return True
