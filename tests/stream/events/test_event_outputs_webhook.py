"""Webhook output against a real local HTTP receiver (http.server on 127.0.0.1)."""

from __future__ import annotations

import contextlib
import json
import logging
import time

import pytest
from prometheus_client import CollectorRegistry
from sightline.stream.event_config import EventOutputsConfig
from sightline.stream.events.bus import EventBus
from sightline.stream.events.notifiers import EventOutputs

from tests.support.mosquitto import free_port
from tests.support.webhook_receiver import WebhookReceiver, signature_ok

pytestmark = pytest.mark.timeout(60)
SECRET = "a-webhook-secret-of-some-length"


def message(kind: str, event_id: str) -> dict:
    return {"type": kind, "event": {"id": event_id, "stream": "door", "rule": "dogs", "label": "beagle",
                                    "start": 1000.0, "end": None if kind != "end" else 1010.0, "peak": 0.8,
                                    "snapshot_url": f"/api/events/{event_id}/snapshot.jpg", "clip_url": None}}


def start(url: str, registry: CollectorRegistry, **options) -> tuple[EventBus, EventOutputs]:
    hook = {"name": "ops", "url": url, "secret": SECRET, "timeout_s": 2, "backoff": {"initial_s": 0.05, "max_s": 0.2},
            **options}
    bus = EventBus()
    return bus, EventOutputs.start(EventOutputsConfig.model_validate({"webhooks": [hook]}), bus, registry)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, {"output": "ops", **labels}) or 0.0


def wait_until(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_signed_post_retried_after_server_errors() -> None:
    registry = CollectorRegistry()
    with WebhookReceiver(secret=SECRET.encode(), statuses=[503, 500]) as receiver:
        bus, outputs = start(f"http://127.0.0.1:{receiver.port}/hook?x=1", registry)
        try:
            bus.publish(message("start", "ev1"))
            wait_until(lambda: value(registry, "sightline_event_output_delivered_total") == 1)
        finally:
            outputs.close()
    attempts = receiver.requests()
    assert len(attempts) == 3 and all(a.path == "/hook?x=1" for a in attempts)
    assert all(a.signature_ok for a in attempts)  # each attempt signed afresh, each checks out
    assert json.loads(attempts[0].body) == message("start", "ev1")
    assert {a.headers["x-sightline-delivery"] for a in attempts} == {attempts[0].headers["x-sightline-delivery"]}
    assert [a.headers["x-sightline-attempt"] for a in attempts] == ["1", "2", "3"]
    assert attempts[0].headers["content-type"] == "application/json"
    assert attempts[0].headers["x-sightline-event-type"] == "start"
    assert value(registry, "sightline_event_output_failures_total", reason="rejected") == 2
    assert value(registry, "sightline_event_output_up") == 1
    # A body changed on the way, or the wrong key, does not verify.
    headers, body = attempts[0].headers, attempts[0].body
    assert not signature_ok(SECRET.encode(), headers, body.replace(b"beagle", b"poodle"))
    assert not signature_ok(b"another-secret-of-some-length", headers, body)


def test_receiver_down_then_up_gets_every_message_in_order(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    registry = CollectorRegistry()
    port = free_port()  # nothing listens there yet
    bus, outputs = start(f"http://127.0.0.1:{port}/in?token=hunter2", registry, retries=20)
    try:
        durations = []
        for kind, event_id in (("start", "ev1"), ("update", "ev1"), ("end", "ev1")):
            started = time.perf_counter()
            bus.publish(message(kind, event_id))
            durations.append(time.perf_counter() - started)
        assert max(durations) < 0.2, durations
        wait_until(lambda: value(registry, "sightline_event_output_failures_total", reason="connect") >= 2)
        assert value(registry, "sightline_event_output_up") == 0
        with WebhookReceiver(port=port, secret=SECRET.encode()) as receiver:
            wait_until(lambda: value(registry, "sightline_event_output_delivered_total") == 3)
            got = [json.loads(r.body) for r in receiver.requests()]
    finally:
        outputs.close()
    assert [(m["type"], m["event"]["id"]) for m in got] == [("start", "ev1"), ("update", "ev1"), ("end", "ev1")]
    assert value(registry, "sightline_event_output_up") == 1
    assert "POST to http://127.0.0.1" in caplog.text and "token=***" in caplog.text
    assert "hunter2" not in caplog.text and SECRET not in caplog.text


def test_refusals_timeouts_and_exhausted_retries_are_counted_as_drops() -> None:
    registry = CollectorRegistry()
    # ev1: 400 -> refused for good at once. ev2: answers after the 0.3 s timeout, then 503 -> retries run out.
    with WebhookReceiver(secret=SECRET.encode(), statuses=[400, 200, 503], delays_s=[0, 1.0, 0]) as receiver:
        bus, outputs = start(f"http://127.0.0.1:{receiver.port}/", registry, retries=1, timeout_s=0.3,
                             types=["start", "end"])
        try:
            bus.publish(message("start", "ev1"))
            bus.publish(message("update", "ev1"))  # not a type this hook takes
            bus.publish(message("start", "ev2"))
            wait_until(lambda: value(registry, "sightline_event_output_dropped_total", reason="retries_exhausted") == 1)
        finally:
            outputs.close()
    assert value(registry, "sightline_event_output_dropped_total", reason="rejected") == 1
    assert value(registry, "sightline_event_output_failures_total", reason="timeout") == 1
    assert value(registry, "sightline_event_output_failures_total", reason="rejected") == 2
    assert value(registry, "sightline_event_output_delivered_total") == 0
    assert [json.loads(r.body)["type"] for r in receiver.requests()] == ["start", "start", "start"]


def test_a_full_queue_drops_and_counts_without_blocking() -> None:
    registry = CollectorRegistry()
    bus, outputs = start(f"http://127.0.0.1:{free_port()}/", registry, queue_size=3, retries=20)
    try:
        started = time.perf_counter()
        for i in range(50):
            bus.publish(message("start", f"ev{i}"))
        elapsed = time.perf_counter() - started
        assert elapsed < 0.5, elapsed
        full = value(registry, "sightline_event_output_dropped_total", reason="queue_full")
        assert full in (46, 47)
        assert value(registry, "sightline_event_output_queue_depth") == 3
    finally:
        outputs.close(drain_s=0.2)
    # Shutdown: the queued messages and the one in hand are counted too.
    dropped = sum(value(registry, "sightline_event_output_dropped_total", reason=r)
                  for r in ("queue_full", "shutdown", "retries_exhausted"))
    assert dropped == 50


def test_the_answer_body_is_never_read_only_its_status() -> None:
    """A receiver answering 200 with a 400 MB body it trickles: before, the output read it whole (RSS grew by
    GBs, and the per-read timeout never fired); now the delivery counts at the status line."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 400000000\r\nContent-Type: text/plain\r\n\r\n")
            while not done.wait(0.5):  # one byte a while: never finishes within the test
                with contextlib.suppress(OSError):
                    conn.sendall(b"x")

    threading.Thread(target=answer, daemon=True).start()
    registry = CollectorRegistry()
    bus, outputs = start(f"http://127.0.0.1:{server.getsockname()[1]}/hook", registry, timeout_s=5, retries=0)
    try:
        started = time.monotonic()
        bus.publish(message("start", "ev1"))
        wait_until(lambda: value(registry, "sightline_event_output_delivered_total") == 1, timeout=4)
        assert time.monotonic() - started < 4
    finally:
        done.set()
        outputs.close()
        server.close()


def test_shutdown_closes_stalled_webhooks_together_under_one_budget() -> None:
    """Eight receivers that accept and never answer: closing costs one drain and one abort budget, not eight
    (each used to add drain + up to its timeout, one after another)."""
    import socket

    servers = [socket.create_server(("127.0.0.1", 0)) for _ in range(8)]
    hooks = [{"name": f"stall{i}", "url": f"http://127.0.0.1:{s.getsockname()[1]}/", "timeout_s": 30, "retries": 0}
             for i, s in enumerate(servers)]
    bus = EventBus()
    outputs = EventOutputs.start(EventOutputsConfig.model_validate({"webhooks": hooks}), bus, CollectorRegistry())
    try:
        bus.publish(message("start", "ev1"))
        time.sleep(0.5)  # every output is now waiting on its receiver
        started = time.monotonic()
        outputs.close(drain_s=1.0)
        took = time.monotonic() - started
    finally:
        for s in servers:
            s.close()
    assert took < 8.0, took  # 1 s drain + 3 s abort budget, with room; one by one it was 8 x (1 s + 30 s)
