"""Event outputs: MQTT and webhooks, each behind its own bounded queue and thread (see worker.py).

``EventOutputs.start(config, bus, registry)`` builds the configured outputs, subscribes each to the
event bus and returns the handle whose ``close()`` drains and stops them (call it at shutdown).
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry
from sightline.stream.event_config import EventOutputsConfig
from sightline.stream.events.bus import EventBus
from sightline.stream.events.notifiers.metrics import OutputMetrics
from sightline.stream.events.notifiers.worker import OutputWorker, close_together

log = logging.getLogger(__name__)


class EventOutputs:
    def __init__(self, workers: list[OutputWorker], unsubscribe: list, metrics: OutputMetrics) -> None:
        self.workers = workers
        self.metrics = metrics  # pass it to the next start() on the same registry (a registry takes it once)
        self._unsubscribe = unsubscribe
        self._closed = False

    @classmethod
    def start(cls, config: EventOutputsConfig, bus: EventBus, registry: CollectorRegistry,
              metrics: OutputMetrics | None = None) -> EventOutputs:
        metrics = metrics if metrics is not None else OutputMetrics(registry)
        workers: list[OutputWorker] = []
        if config.mqtt is not None:
            from sightline.stream.events.notifiers.mqtt import MqttDelivery  # paho only when configured

            mqtt = config.mqtt
            bound = metrics.bind(mqtt.name)
            workers.append(OutputWorker(mqtt.name, MqttDelivery(mqtt, bound), mqtt.queue_size, bound))
        for hook in config.webhooks:
            from sightline.stream.events.notifiers.webhook import WebhookDelivery  # httpx only when configured

            bound = metrics.bind(hook.name)
            types = frozenset(hook.types)
            workers.append(OutputWorker(hook.name, WebhookDelivery(hook, bound), hook.queue_size, bound,
                                        accepts=lambda msg, types=types: msg.get("type") in types))
        unsubscribe = []
        for worker in workers:
            worker.start()
            unsubscribe.append(bus.subscribe(worker.submit))
        if workers:
            log.info("event outputs: %s", ", ".join(w.name for w in workers))
        return cls(workers, unsubscribe, metrics)

    def close(self, drain_s: float = 2.0) -> None:
        """Drain and stop every output (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        close_together(self.workers, drain_s)
