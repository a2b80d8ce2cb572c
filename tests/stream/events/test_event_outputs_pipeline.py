"""A real pipeline publishing an event message for every classified frame (far more than real rules
would) to a real MQTT broker that is killed mid-run: frames/s stay as they were, publish() stays instant,
and the output counts what it could not deliver."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.event_config import EventOutputsConfig
from sightline.stream.events.bus import EventBus
from sightline.stream.events.notifiers import EventOutputs
from sightline.stream.metrics import Metrics
from sightline.stream.outputs.sinks import Labelled
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.synthetic_media import make_test_clip

from tests.support.models import tiny_classifier
from tests.support.mosquitto import Mosquitto

FPS = 20


class BusSink:
    """Our own seam: publishes each labelled frame as an event 'update' and times the publish call."""

    name = "bus"

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.writes: list[float] = []  # monotonic time of each write
        self.publish_s: list[float] = []
        self.lock = threading.Lock()

    def write(self, item: Labelled) -> None:
        label = item.smoothed.label if item.smoothed is not None else "none"
        msg = {"type": "update", "event": {"id": f"f{item.result.frame.seq}", "stream": "cam", "rule": "all",
                                           "label": label, "start": 0.0, "end": None, "peak": 0.5,
                                           "snapshot_url": "/x.jpg", "clip_url": None}}
        started = time.perf_counter()
        self.bus.publish(msg)
        took = time.perf_counter() - started
        with self.lock:
            self.writes.append(time.monotonic())
            self.publish_s.append(took)

    def close(self) -> None:
        pass

    def count(self, start: float, end: float) -> int:
        with self.lock:
            return sum(1 for t in self.writes if start <= t < end)


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_frames_per_second_unchanged_when_the_broker_dies(tmp_path: Path) -> None:
    clip = make_test_clip(tmp_path / "clip.mp4", frames=FPS * 9, fps=FPS, size=(96, 64))
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path, log_predictions=False,
                       streams=[StreamConfig(name="cam", url=str(clip), mode="realtime")])
    bus = EventBus()
    sink = BusSink(bus)
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    broker = Mosquitto(tmp_path).start()
    outputs = EventOutputs.start(EventOutputsConfig.model_validate(
        {"mqtt": {"host": "127.0.0.1", "port": broker.port, "queue_size": 10,
                  "reconnect": {"initial_s": 0.2, "max_s": 0.5}}}), bus, registry)
    pipeline = Pipeline(tiny_classifier(), config, metrics, extra_sinks=lambda stream: [sink])
    pipeline.start()
    try:
        deadline = time.monotonic() + 30
        while not sink.writes:
            assert time.monotonic() < deadline, pipeline.statuses()
            time.sleep(0.02)
        first = time.monotonic()
        up_window = (first + 0.5, first + 3.5)
        time.sleep(up_window[1] - time.monotonic())
        broker.kill()
        down_window = (first + 4.0, first + 7.0)
        time.sleep(max(0.0, down_window[1] - time.monotonic()) + 0.1)
        up_rate = sink.count(*up_window) / (up_window[1] - up_window[0])
        down_rate = sink.count(*down_window) / (down_window[1] - down_window[0])
        dropped = registry.get_sample_value("sightline_event_output_dropped_total",
                                            {"output": "mqtt", "reason": "queue_full"})
        delivered = registry.get_sample_value("sightline_event_output_delivered_total", {"output": "mqtt"})
    finally:
        pipeline.shutdown()
        outputs.close(drain_s=0.2)
        broker.stop()
    # Paced at 20 fps: both windows see about 20 frames/s; a publisher that waited for the dead broker
    # would have stalled the stream's output thread and lost most of the second window.
    assert up_rate > FPS * 0.6, (up_rate, down_rate)
    assert down_rate >= up_rate * 0.8, (up_rate, down_rate)
    assert max(sink.publish_s) < 0.2, max(sink.publish_s)
    assert delivered >= up_rate * 2  # messages went out while the broker was up
    assert dropped >= down_rate * 2  # and were counted as dropped once the queue of 10 was full
