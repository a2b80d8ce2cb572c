"""The outputs wired into the event service (events.outputs in the run config): a labelled clip through
a real pipeline; a real broker (mosquitto) and a real HTTP receiver get the event's start and end, the
same messages the bus carried, at the times the rules say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sightline.stream.config import RunConfig

from tests.stream.events.test_event_outputs_mqtt import Subscriber
from tests.stream.events.test_events_pipeline import (
    BRIGHT_FROM,
    BRIGHT_UNTIL,
    FPS,
    labelled_clip,
    replay_with_events,
)
from tests.support.mosquitto import Mosquitto
from tests.support.webhook_receiver import WebhookReceiver

SECRET = "service-webhook-secret-0123"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_start_and_end_reach_the_broker_and_the_webhook(tmp_path: Path) -> None:
    clip = labelled_clip(tmp_path / "clip.mp4")
    with Mosquitto(tmp_path) as broker, WebhookReceiver(secret=SECRET.encode()) as receiver:
        watcher = Subscriber(broker.port, "cams", "watcher")
        config = RunConfig.model_validate({
            "output_dir": tmp_path / "out", "media_root": tmp_path,
            "events": {"rules": [{"name": "bright", "labels": ["class_b"], "min_prob": 0.8, "min_duration_s": 0.5,
                                  "end_after_s": 0.5, "cooldown_s": 0}],
                       "outputs": {"mqtt": {"host": "127.0.0.1", "port": broker.port, "topic_prefix": "cams"},
                                   "webhooks": [{"name": "ops", "url": f"http://127.0.0.1:{receiver.port}/hook",
                                                 "secret": SECRET, "types": ["start", "end"]}]}},
            "streams": [{"name": "cam", "url": str(clip), "mode": "fast"}]})
        pipeline, seen = replay_with_events(config, close_outputs=True)
        watcher.wait_for(lambda: watcher.on("cams/cam/class_b") and
                         watcher.on("cams/cam/class_b")[-1][0]["state"] == "off")
        watcher.close()
    on_bus = [m for m in seen if m["type"] in ("start", "end")]
    assert [m["type"] for m in on_bus] == ["start", "end"]
    start = on_bus[0]["event"]
    assert BRIGHT_FROM / FPS <= start["stream_time_start"] <= (BRIGHT_FROM + 4) / FPS
    assert on_bus[1]["event"]["stream_time_end"] == pytest.approx((BRIGHT_UNTIL - 1) / FPS, abs=0.5 / FPS)
    via_mqtt = [p for p, _ in watcher.on("cams/events")]
    assert [m for m in via_mqtt if m["type"] in ("start", "end")] == on_bus
    assert [p["state"] for p, _ in watcher.on("cams/cam/class_b")][-1] == "off"
    hooks = receiver.requests()
    assert [json.loads(r.body) for r in hooks] == on_bus and all(r.signature_ok for r in hooks)
    registry = pipeline.metrics.registry
    assert registry.get_sample_value("sightline_event_output_delivered_total", {"output": "ops"}) == 2
    assert registry.get_sample_value("sightline_event_output_delivered_total", {"output": "mqtt"}) == len(seen)
