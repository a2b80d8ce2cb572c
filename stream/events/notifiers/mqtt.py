"""MQTT output (paho-mqtt): every message on ``<prefix>/events``, the retained state on
``<prefix>/<stream>/<label>``, ``<prefix>/status`` online/offline (retained; offline is the last will).

paho's network thread connects, and reconnects with doubling waits (``reconnect.initial_s`` up to
``reconnect.max_s``). The output's worker hands paho one message at a time, only while connected,
and waits for the broker's acknowledgement (QoS 1 by default), so paho's own queue never grows: the
bounded queue in front of it is the only buffer. A message in flight when the connection drops is
re-sent by paho after the reconnect (QoS >= 1). The password is never logged or shown.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from sightline.stream.event_config import MqttOutputConfig, ip_literal, resolved_target_problem
from sightline.stream.events.notifiers.metrics import BoundOutputMetrics
from sightline.stream.events.notifiers.worker import RateLimitedLog, Stopped

log = logging.getLogger(__name__)

TopicUnsafe = re.compile(r"[^A-Za-z0-9_.-]")
POLL_S = 0.02


def topic_part(text: object) -> str:
    """A stream name or label as one topic level: anything but letters, digits, '_', '.', '-' becomes '_'."""
    part = TopicUnsafe.sub("_", str(text))[:128]
    return part or "_"


def state_payload(msg: dict[str, Any]) -> dict[str, Any]:
    event = msg["event"]
    return {"state": "off" if msg["type"] == "end" else "on", "event_id": event.get("id"), "rule": event.get("rule"),
            "start": event.get("start"), "end": event.get("end"), "peak": event.get("peak"),
            "snapshot_url": event.get("snapshot_url"), "clip_url": event.get("clip_url")}


class MqttDelivery:
    def __init__(self, config: MqttOutputConfig, metrics: BoundOutputMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.prefix = config.topic_prefix
        self.status_topic = f"{self.prefix}/status"
        self._connected = threading.Event()
        self._closing = False
        self._log = RateLimitedLog()
        host = config.host
        address = ip_literal(host)
        self.host = str(address) if address is not None else host  # paho takes IPv6 without brackets
        self.shown = f"{host}:{config.effective_port}"
        client_id = config.client_id or f"sightline-{uuid.uuid4().hex[:12]}"
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True,
                             protocol=mqtt.MQTTv311, reconnect_on_failure=True)
        if config.username is not None:
            password = config.password.get_secret_value() if config.password is not None else None
            client.username_pw_set(config.username, password)
        if config.tls is not None:
            tls = config.tls
            client.tls_set(ca_certs=str(tls.ca_file) if tls.ca_file else None,
                           certfile=str(tls.cert_file) if tls.cert_file else None,
                           keyfile=str(tls.key_file) if tls.key_file else None,
                           cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.reconnect_delay_set(min_delay=config.reconnect.initial_s, max_delay=config.reconnect.max_s)  # type: ignore[arg-type]
        client.max_inflight_messages_set(2)  # a message and its state update
        client.will_set(self.status_topic, "offline", qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        self.client = client

    # -- paho's network thread ------------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: Any,
                    properties: object) -> None:
        if getattr(reason, "is_failure", False):
            self.metrics.failures["connect"].inc()
            self.metrics.up.set(0)
            self._log.warning("refused", "event output %s: the broker %s refused the connection: %s",
                              self.config.name, self.shown, reason)
            return
        client.publish(self.status_topic, "online", qos=1, retain=True)
        self._connected.set()
        self.metrics.up.set(1)
        log.info("event output %s: connected to the MQTT broker %s", self.config.name, self.shown)

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason: Any,
                       properties: object) -> None:
        self._connected.clear()
        self.metrics.up.set(0)
        if not self._closing:
            self.metrics.failures["connect"].inc()
            self._log.warning("lost", "event output %s: lost the MQTT broker %s (%s); reconnecting",
                              self.config.name, self.shown, reason)

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        self.metrics.failures["connect"].inc()
        self.metrics.up.set(0)
        self._log.warning("connect", "event output %s: cannot connect to the MQTT broker %s; retrying",
                          self.config.name, self.shown)

    # -- the output's worker thread -------------------------------------------------------------------

    def start(self) -> None:
        self.metrics.up.set(0)
        problem = resolved_target_problem(self.host, self.config.effective_port)
        if problem is not None:  # the name resolves to an address no event may go to: never connect
            self.metrics.failures["connect"].inc()
            log.error("event output %s: not connecting to the MQTT broker: %s", self.config.name, problem)
            return
        self.client.connect_async(self.host, self.config.effective_port, keepalive=self.config.keepalive_s)
        self.client.loop_start()

    def messages(self, msg: dict[str, Any]) -> list[tuple[str, bytes, bool]]:
        """(topic, payload, retain) for one event message."""
        event = msg["event"]
        out = []
        if msg["type"] in self.config.types:
            out.append((f"{self.prefix}/events", json.dumps(msg, separators=(",", ":")).encode(), False))
        if self.config.retain_state and not (msg["type"] == "update" and event.get("end") is not None):
            # an update after the end (its clip failed late) must not turn a state back on, nor off over a newer event
            topic = f"{self.prefix}/{topic_part(event.get('stream'))}/{topic_part(event.get('label'))}"
            out.append((topic, json.dumps(state_payload(msg), separators=(",", ":")).encode(), True))
        return out

    def deliver(self, msg: dict[str, Any], abort: threading.Event) -> None:
        for topic, payload, retain in self.messages(msg):
            while not self._connected.wait(0.2):
                if abort.is_set():
                    raise Stopped
            info = self.client.publish(topic, payload, qos=self.config.qos, retain=retain)
            if self.config.qos == 0 and info.rc == mqtt.MQTT_ERR_SUCCESS:
                continue
            started = time.monotonic()
            late = False
            while not info.is_published():
                if not late and time.monotonic() - started > self.config.publish_timeout_s:
                    late = True  # paho keeps it and re-sends it after a reconnect
                    self.metrics.failures["timeout"].inc()
                    self._log.warning("timeout", "event output %s: no acknowledgement from %s within %g s; "
                                      "still trying", self.config.name, self.shown, self.config.publish_timeout_s)
                if abort.wait(POLL_S):
                    raise Stopped

    def close(self) -> None:
        self._closing = True
        if self._connected.is_set():
            info = self.client.publish(self.status_topic, "offline", qos=1, retain=True)
            deadline = time.monotonic() + 2.0
            while not info.is_published() and time.monotonic() < deadline and self._connected.is_set():
                time.sleep(POLL_S)
        self.client.disconnect()
        self.client.loop_stop()
        self.metrics.up.set(0)
