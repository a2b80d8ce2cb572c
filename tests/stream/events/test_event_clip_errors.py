"""Event clips on a full disk (issue #23 item 6): a clip that a write error cut short is not reported ready, the
event says why (``clip_error``: in the API at once, on the bus and in events.jsonl), and
``sightline_event_clip_errors_total{stream}`` counts it (there at 0 from the start).

The disk is "full" by a VideoRecorder whose writes fail with ENOSPC after a number of frames, as PyAV's muxer
does on a real full disk (``av.error.OSError``, errno 28; a file size limit gives the same with EFBIG): once
the file cannot be written to, every later frame fails and so does finalizing it."""

from __future__ import annotations

import asyncio
import errno
import json

import httpx
import pytest
from sightline.stream.config import RunConfig
from sightline.stream.events import clips
from sightline.stream.events.hub import EventHub
from sightline.stream.metrics import Metrics
from sightline.stream.outputs.sinks import VideoRecorder
from sightline.stream.service.app import create_app

from tests.stream.events.test_events_pipeline import labelled_clip, replay_with_events

pytestmark = pytest.mark.timeout(120)


def full_disk(write_frames: int | None):
    """A VideoRecorder whose disk fills after ``write_frames`` frames (None: only finalizing the file fails)."""

    class FullDisk(VideoRecorder):
        def _full(self) -> OSError:
            return OSError(errno.ENOSPC, "No space left on device", str(self.path))

        def record(self, image, src, annotate) -> None:  # noqa: ANN001
            if write_frames is not None and self.frames >= write_frames:
                raise self._full()
            super().record(image, src, annotate)

        def close(self) -> None:
            super().close()  # frees the encoder; the file is then as a full disk leaves it
            raise self._full()

    return FullDisk


def replay(tmp, monkeypatch, write_frames: int | None):
    """The labelled replay (one event, 2 s to 6 s) with the clip's disk filling up; the pipeline and the bus."""
    monkeypatch.setattr(clips, "VideoRecorder", full_disk(write_frames))
    config = RunConfig.model_validate({
        "output_dir": tmp / "out", "media_root": tmp, "model": {"topk": 2},
        "events": {"preroll_s": 1.0, "postroll_s": 1.0, "rules": [
            {"name": "bright", "streams": ["cam"], "labels": ["class_b"], "min_prob": 0.8, "min_duration_s": 0.5,
             "end_after_s": 0.5, "cooldown_s": 0}]},
        "streams": [{"name": "cam", "url": str(labelled_clip(tmp / "clip.mp4")), "mode": "fast"}]})
    return replay_with_events(config)


async def api_event(pipeline, event_id: str) -> tuple[dict, dict, str]:
    app = create_app(pipeline, pipeline.config, pipeline.metrics)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        one = (await client.get(f"/api/events/{event_id}")).json()
        listed = (await client.get("/api/events")).json()["events"][0]
        metrics = (await client.get("/metrics")).text
    return one, listed, metrics


def clip_errors(pipeline, stream: str = "cam") -> float | None:
    return pipeline.metrics.registry.get_sample_value("sightline_event_clip_errors_total", {"stream": stream})


def test_a_clip_cut_short_by_a_full_disk_is_not_ready_says_why_and_is_counted(tmp_path, monkeypatch) -> None:
    pipeline, seen = replay(tmp_path, monkeypatch, write_frames=25)  # the disk fills 1 s into a ~6 s clip
    event_id = seen[0]["event"]["id"]
    assert [m["type"] for m in seen if m["type"] != "update"] == ["start", "end"]
    assert seen[0]["event"]["clip_url"] is not None  # the clip was begun
    one, listed, metrics = asyncio.run(api_event(pipeline, event_id))
    for event in (one, listed):
        assert event["id"] == event_id and event["clip_ready"] is False
        assert event["clip_error"] == "writing failed: No space left on device"
    assert clip_errors(pipeline) == 1.0  # one clip, however many of its frames failed
    assert 'sightline_event_clip_errors_total{stream="cam"} 1.0' in metrics
    # the disk's view (status, /readyz, metrics): the events' writes are failing; the clip is no longer held open
    events = pipeline.storage.kinds["events"]
    assert events.write_errors == 1 and events.failing == one["clip_error"]
    assert not pipeline.storage.is_open(tmp_path / "out" / "events" / f"{event_id}.mp4")
    # the bus and events.jsonl have it too (with the end message, or an update after it): it outlives a restart
    assert seen[-1]["event"]["id"] == event_id and seen[-1]["event"]["clip_error"] == one["clip_error"]
    lines = [json.loads(x) for x in (tmp_path / "out" / "events.jsonl").read_text().splitlines()]
    assert lines[-1]["event"]["clip_error"] == one["clip_error"]
    reread = EventHub(pipeline.config)
    assert reread.store.get(event_id)["clip_error"] == one["clip_error"]


def test_a_clip_that_fails_after_its_event_ended_gets_an_update(tmp_path, monkeypatch) -> None:
    pipeline, seen = replay(tmp_path, monkeypatch, write_frames=None)  # every frame written, finalizing fails
    ours = [m for m in seen if m["type"] != "update" or m["event"]["end"] is not None]
    assert [m["type"] for m in ours] == ["start", "end", "update"]
    end, late = ours[1]["event"], ours[2]["event"]
    assert "clip_error" not in end  # the clip was still being written (post-roll) when the event ended
    assert late == {**end, "clip_error": "finalizing failed: No space left on device"}
    one, _, _ = asyncio.run(api_event(pipeline, end["id"]))
    assert one["clip_ready"] is False and one["clip_error"] == late["clip_error"]
    assert clip_errors(pipeline) == 1.0


def test_the_clip_error_counter_is_there_at_zero_for_each_stream(tmp_path) -> None:
    config = RunConfig.model_validate({
        "output_dir": tmp_path / "out", "events": {"rules": [{"name": "r", "labels": ["*"]}]},
        "streams": [{"name": "door", "url": "rtsp://127.0.0.1:8554/door"},
                    {"name": "yard", "url": "rtsp://127.0.0.1:8554/yard"}]})
    metrics = Metrics()
    hub = EventHub(config, metrics)
    try:
        for stream in config.streams:
            hub.sinks_for(stream)
        for name in ("door", "yard"):
            assert metrics.registry.get_sample_value("sightline_event_clip_errors_total", {"stream": name}) == 0.0
    finally:
        hub.close()
