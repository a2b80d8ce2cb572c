"""A pipeline worker: today's ``Pipeline`` inside a Ray actor, for the streams the controller places on it.

The actor is threaded (several calls at once), so a status check never waits behind a stream being opened.
Each worker serves its own Prometheus endpoint (its pipeline's metrics plus its load) on its node.
Nothing in the pipeline knows Ray: this class is plain Python and the controller wraps it with
``ray.remote`` (so importing this module needs no Ray either).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import numpy as np
from prometheus_client import make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from sightline.model.echo import bounded
from sightline.model.errors import ConfigError
from sightline.stream.cluster.answers import error_answer
from sightline.stream.cluster.placement import asked_fps, file_rate
from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.errors import (
    DuplicateStreamError,
    StreamBusyError,
    StreamError,
    StreamOutputError,
    TooManyStreamsError,
    UnknownStreamError,
)
from sightline.stream.outputs.viewers import TooManyViewersError, WatchHub, WatchOfferError
from sightline.stream.pipeline.build import build_pipeline
from sightline.stream.service.auth import scrape_allowed
from sightline.stream.service.status import stream_status
from sightline.stream.service.viewing import video_status_of, watch_hub

log = logging.getLogger(__name__)

CAPACITY_BATCHES = 3
OFFER_TIMEOUT_S = 30.0


def _unknown(name: str) -> dict[str, Any]:
    return {"error": "unknown", "status": 404, "detail": f"no stream named {bounded(name, 80)!r}"}


class WorkerLoadCollector:
    """``sightline_worker_*`` gauges: what this worker can do and what its streams ask (per-worker load panel)."""

    def __init__(self, worker: PipelineWorker) -> None:
        self.worker = worker

    def collect(self):  # noqa: ANN201 (prometheus_client's Collector protocol)
        w = self.worker
        for name, doc, value in (
                ("sightline_worker_capacity_fps", "Frames/s this worker can classify (measured or configured)",
                 w.capacity_fps),
                ("sightline_worker_asked_fps", "Frames/s the streams placed on this worker ask for", w.asked_fps()),
                ("sightline_worker_measured_fps", "Frames/s this worker classified over the last seconds",
                 w.measured_fps()),
                ("sightline_worker_streams", "Streams placed on this worker", float(len(w.pipeline.names())))):
            family = GaugeMetricFamily(name, doc, labels=["worker"])
            family.add_metric([w.worker_id], value)
            yield family


def measure_capacity(classifier: Any, batch_size: int) -> float:
    """Frames/s of full batches through the model (after its warm-up): what placement counts as capacity."""
    size = classifier.bundle.preprocess.resize
    dummy = [np.zeros((size, size, 3), dtype=np.uint8)] * batch_size
    started = time.perf_counter()
    for _ in range(CAPACITY_BATCHES):
        classifier.probabilities(dummy)
    return batch_size * CAPACITY_BATCHES / max(time.perf_counter() - started, 1e-6)


def serve_scrape(registry: Any, host: str, port: int, metrics_token: str | None) -> WSGIServer:
    """prometheus_client's WSGI app on a daemon thread, behind the scrape token (``server.metrics_token``, the same
    rule as the service's /metrics: auth.py). No access log: nothing a request carries is written anywhere."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if not scrape_allowed(environ.get("HTTP_AUTHORIZATION"), metrics_token):
            start_response("401 Unauthorized", [("Content-Type", "text/plain"),
                                                ("WWW-Authenticate", 'Bearer realm="sightline-metrics"')])
            return [b"missing or wrong bearer token (server.metrics_token)\n"]
        return metrics(environ, start_response)

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
            pass

    server = make_server(host, port, app, Server, handler_class=Quiet)
    threading.Thread(target=server.serve_forever, name="worker-metrics", daemon=True).start()
    return server


class PipelineWorker:
    """One worker. ``config`` is the service's RunConfig as a dict (its ``streams`` are ignored: the controller
    places them one by one)."""

    def __init__(self, config: dict[str, Any], worker_id: str) -> None:
        self.worker_id = worker_id
        self.config = RunConfig.model_validate({**config, "streams": []})
        self.pipeline = build_pipeline(self.config)
        self.pipeline.start()
        cluster = self.config.cluster
        self.capacity_fps = cluster.worker_fps or measure_capacity(
            self.pipeline.classifier, self.config.batching.batch_size(self.pipeline.classifier.device.type))
        self._asked: dict[str, float] = {}
        self._loop = asyncio.new_event_loop()  # WebRTC peer connections live on it
        self.watch_hub: WatchHub | None = None  # made by the first viewer
        self._hub_lock = threading.Lock()
        threading.Thread(target=self._loop.run_forever, name="worker-loop", daemon=True).start()
        self.node_id, self.node_ip = self._node()
        host = cluster.metrics_host or self.node_ip
        self.metrics_address = self._serve_metrics(host, cluster.metrics_port)
        log.info("worker %s on node %s: %.0f frames/s capacity, metrics at %s", worker_id, self.node_ip,
                 self.capacity_fps, self.metrics_address)

    @staticmethod
    def _node() -> tuple[str, str]:
        try:
            import ray

            return ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address()
        except Exception:  # outside Ray (unit use): this machine
            return "local", "127.0.0.1"

    def _serve_metrics(self, host: str, port: int) -> str:
        registry = self.pipeline.metrics.registry
        registry.register(WorkerLoadCollector(self))
        server = serve_scrape(registry, host, port, self.config.server.metrics_token)
        self._metrics_server = server
        bound_host, bound_port = server.server_address[:2]
        return f"{bound_host}:{bound_port}" if ":" not in bound_host else f"[{bound_host}]:{bound_port}"

    # -- what the controller asks -----------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return {"worker": self.worker_id, "node_id": self.node_id, "node_ip": self.node_ip,
                "metrics": self.metrics_address, "capacity_fps": round(self.capacity_fps, 2),
                "asked_fps": round(self.asked_fps(), 2), "measured_fps": round(self.measured_fps(), 2),
                "streams": sorted(self.pipeline.names()), "model": self.pipeline.classifier.describe(),
                "served": self.served()}

    def served(self) -> dict[str, Any]:
        """The model in service as ``GET /api/model`` shows it in one process (id, source, backend...)."""
        return self.pipeline.models.current.describe()

    def swap_model(self, spec: dict[str, str]) -> dict[str, Any]:
        """``swap_model`` on this worker's pipeline (blocking: loads and warms beside the serving model).
        {"outcome": SwapOutcome dict, "served": ...} or {"error": kind, "status": HTTP status, "detail", "served"}."""
        from sightline.stream.inference.model_holder import ModelSpec
        from sightline.stream.pipeline.model_swap import SwapError, swap_model

        try:
            outcome = swap_model(self.pipeline, ModelSpec(**spec))
        except SwapError as exc:
            return {"error": exc.result, "status": exc.status, "detail": str(exc), "served": self.served()}
        return {"outcome": outcome.to_dict(), "served": self.served(), "model": self.pipeline.classifier.describe()}

    def ping(self) -> bool:
        return True

    def asked_fps(self) -> float:
        names = set(self.pipeline.names())
        return sum(v for k, v in list(self._asked.items()) if k in names)

    def measured_fps(self) -> float:
        return float(sum(float(s["fps"]) for s in self.pipeline.statuses()))  # type: ignore[arg-type]

    def add_stream(self, stream: dict[str, Any]) -> dict[str, Any]:
        """{"status": ...} or {"error": kind, "detail": message}: errors travel as data, not as pickled classes."""
        config = StreamConfig.model_validate(stream)
        try:
            runtime = self.pipeline.add_stream(config)
        except (DuplicateStreamError, TooManyStreamsError, StreamOutputError, ConfigError) as exc:
            return error_answer(exc)
        rate = file_rate(config.file_path()) if config.is_file else None
        self._asked[config.name] = asked_fps(config, self.config.cluster.default_stream_fps, rate)
        return {"status": stream_status(runtime)}

    def remove_stream(self, name: str) -> dict[str, Any]:
        try:
            runtime = self.pipeline.remove_stream(name)
        except (UnknownStreamError, StreamBusyError) as exc:
            return error_answer(exc)
        self._asked.pop(name, None)
        return {"status": stream_status(runtime)}

    def statuses(self) -> list[dict[str, Any]]:
        """Each stream's status, with ``finished`` (its outputs are closed) for the controller."""
        out = []
        for name in self.pipeline.names():
            try:
                runtime = self.pipeline.get(name)
            except UnknownStreamError:
                continue
            out.append({**stream_status(runtime), "finished": runtime.finished, "removing": runtime.removing})
        return out

    def latest(self, name: str, known: tuple[int, int] | None) -> tuple[tuple[int, int], Any] | None:
        """The stream's latest ``Labelled`` frame and a token for it; None when it is still ``known`` or there is
        none (a preview through the controller moves each new frame once)."""
        try:
            runtime = self.pipeline.get(name)
        except UnknownStreamError:
            return None
        runtime.watch_preview()
        item = runtime.output.latest
        if item is None:
            return None
        token = (id(runtime), item.result.frame.seq)
        return None if token == tuple(known or ()) else (token, item)

    def webrtc_offer(self, name: str, sdp: str, kind: str) -> dict[str, Any]:
        try:
            source = self.pipeline.get(name).source
        except UnknownStreamError as exc:
            return error_answer(exc)
        if not hasattr(source, "accept"):
            return {"error": "offer", "detail": f"stream {name!r} is not a webrtc:// stream"}
        future = asyncio.run_coroutine_threadsafe(source.accept(sdp, kind), self._loop)
        try:
            answer = future.result(timeout=30)
        except StreamError as exc:  # PublisherConnectedError among them
            return error_answer(exc)
        return {"sdp": answer.sdp, "type": answer.type}

    def start_serving(self, spec: dict[str, str]) -> dict[str, Any]:
        """A worker that started on another model than the cluster's current one swaps to it, then answers
        ``info``; raises when it cannot (the controller replaces it)."""
        answer = self.swap_model(spec)
        if "error" in answer:
            raise RuntimeError(f"worker {self.worker_id} cannot serve {spec['source']}: {answer['detail']}")
        return self.info()

    # -- viewing (stream/cluster/viewing.py is the controller's side) -------------------------------------

    def _hub(self) -> WatchHub:
        with self._hub_lock:
            if self.watch_hub is None:
                self.watch_hub = watch_hub(self.pipeline)
            return self.watch_hub

    def watch_offer(self, name: str, sdp: str) -> dict[str, Any]:
        """A viewer's offer for the stream's annotated video (a ``WatchHub`` on this worker's loop): the media
        then flows from this worker's aiortc to the viewer. {"sdp", "type"} or {"error", "status", "detail"}."""
        future = asyncio.run_coroutine_threadsafe(self._hub().watch(name, sdp), self._loop)
        try:
            answer = future.result(timeout=OFFER_TIMEOUT_S)
        except UnknownStreamError:
            return _unknown(name)
        except TooManyViewersError as exc:
            return {"error": "viewers", "status": 429, "detail": str(exc)}
        except WatchOfferError as exc:
            return {"error": "offer", "status": 422, "detail": str(exc)}
        return {"sdp": answer.sdp, "type": answer.type}

    def video_status(self, name: str) -> dict[str, Any]:
        found = video_status_of(self.pipeline, self.watch_hub, name)
        return _unknown(name) if found is None else {"video": {**found, "worker": self.worker_id}}

    def shutdown(self) -> bool:
        if self.watch_hub is not None:
            asyncio.run_coroutine_threadsafe(self.watch_hub.close(), self._loop).result(timeout=OFFER_TIMEOUT_S)
        self.pipeline.shutdown()
        self._metrics_server.shutdown()
        self._loop.call_soon_threadsafe(self._loop.stop)
        return True
