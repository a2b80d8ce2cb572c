"""Events end to end on a real pipeline: a labelled clip (dark, then bright, then dark) and a classifier
that tells bright from dark, so the truth is known frame by frame. Checks the event's start and end
times, the pre-roll and post-roll of its clip (frame counters read back from the MP4, timestamps by
ffprobe), the snapshot, events.jsonl, the metric and the API (list, filter, page, snapshot, clip, rules)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import cv2
import httpx
import numpy as np
import pytest
import torch
from sightline import synthetic_media as media
from sightline.stream.config import RunConfig
from sightline.stream.events.hub import EventHub
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.service.app import create_app
from sightline.stream.service.server import HttpServer
from sightline.stream.storage.stats import StorageStats

from tests.support.models import tiny_classifier

pytestmark = pytest.mark.timeout(120)

FPS = 25
DARK, BRIGHT = 30, 220
BRIGHT_FROM, BRIGHT_UNTIL = 50, 150  # frames [50, 150) are bright: 2.00 s to 5.96 s
FRAMES = 200
PREROLL, POSTROLL = 1.0, 1.0
TOKEN = "events-token-5678"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Brightness(torch.nn.Module):
    """class_b when the picture is bright, class_a when dark (sure of it either way)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([-6 * m, 6 * m, torch.full_like(m, -20), torch.full_like(m, -20)], dim=1)


def brightness_classifier():
    classifier = tiny_classifier()
    classifier.network = Brightness()
    return classifier


def labelled_clip(path: Path) -> Path:
    """Flat frames with their index painted at the *bottom* (flipped counter: the overlay sits top-left)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.time_base = Fraction(1, FPS)
        stream.options = {"preset": "veryfast", "x264-params": f"keyint={FPS}:scenecut=0"}
        for i in range(FRAMES):
            level = BRIGHT if BRIGHT_FROM <= i < BRIGHT_UNTIL else DARK
            image = np.full((240, 320, 3), level, np.uint8)
            image = np.ascontiguousarray(media.draw_frame_counter(image, i)[::-1])
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def counter(image: np.ndarray) -> int:
    return media.read_frame_counter(np.ascontiguousarray(image[::-1]))


def clip_counters(path: Path) -> list[int]:
    with av.open(str(path)) as container:
        return [counter(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]


def ffprobe_frame_times(path: Path) -> list[float]:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=pts_time",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True, timeout=30)
    return [float(f["pts_time"]) for f in json.loads(out.stdout)["frames"]]


def replay_with_events(config: RunConfig, close_outputs: bool = False) -> tuple[Pipeline, list[dict]]:
    """Run ``config`` to its end with the brightness classifier and an event hub wired as `sightline run` does
    (stream/pipeline/build.py); the pipeline and every message its bus carried, in order. ``close_outputs``:
    then close the hub, as `sightline run` does after the pipeline (its MQTT/webhook outputs drain)."""
    metrics = Metrics()
    storage = StorageStats()
    events = EventHub.build(config, metrics, storage)
    pipeline = Pipeline(brightness_classifier(), config, metrics, extra_sinks=events.sinks_for, storage=storage)
    pipeline.events = events
    seen: list[dict] = []
    events.bus.subscribe(seen.append)
    try:
        assert asyncio.run(pipeline.run(duration=60)) == 0
    finally:
        if close_outputs:
            events.close()
    return pipeline, seen


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One fast replay of the labelled clip with three rules; what the bus saw, in order."""
    tmp = tmp_path_factory.mktemp("events")
    clip = labelled_clip(tmp / "clip.mp4")
    config = RunConfig.model_validate({
        "output_dir": tmp / "out", "media_root": tmp, "model": {"topk": 2}, "server": {"token": TOKEN},
        "events": {"preroll_s": PREROLL, "postroll_s": POSTROLL, "rules": [
            {"name": "bright", "streams": ["cam"], "labels": ["class_b"], "min_prob": 0.8, "min_duration_s": 0.5,
             "end_after_s": 0.5, "cooldown_s": 0},
            {"name": "patient", "labels": ["class_b"], "min_prob": 0.8, "min_duration_s": 5.0},
            {"name": "elsewhere", "streams": ["other"], "labels": ["*"], "min_prob": 0.0, "min_duration_s": 0},
        ]},
        "streams": [{"name": "cam", "url": str(clip), "mode": "fast"}]})
    pipeline, seen = replay_with_events(config)
    return tmp, pipeline, seen


def test_event_starts_and_ends_when_the_label_held_and_went(run) -> None:
    tmp, pipeline, seen = run
    assert [m["type"] for m in seen if m["type"] != "update"] == ["start", "end"]
    start, end = seen[0]["event"], seen[-1]["event"]
    assert start["id"] == end["id"] and start["rule"] == "bright" and start["label"] == "class_b"
    assert start["stream"] == "cam" and start["end"] is None and end["end_reason"] == "gone"
    # smoothing (EMA 0.6) needs 3 bright frames to pass 0.8; the label falls below it on the first dark frame
    assert BRIGHT_FROM / FPS <= start["stream_time_start"] <= (BRIGHT_FROM + 4) / FPS
    assert end["stream_time_end"] == pytest.approx((BRIGHT_UNTIL - 1) / FPS, abs=0.5 / FPS)
    assert end["peak"] > 0.99 and end["end"] >= start["start"]
    assert start["snapshot_url"] == f"/api/events/{start['id']}/snapshot.jpg"
    assert start["clip_url"] == f"/api/events/{start['id']}/clip.mp4"
    # the log has every message, in order, one JSON object a line
    lines = [json.loads(x) for x in (tmp / "out" / "events.jsonl").read_text().splitlines()]
    assert [(m["type"], m["event"]["id"]) for m in lines] == [(m["type"], m["event"]["id"]) for m in seen]
    metric = pipeline.metrics.registry.get_sample_value(
        "sightline_events_total", {"stream": "cam", "rule": "bright", "label": "class_b"})
    assert metric == 1.0
    # a rule that never fired: its counter is there at 0 from the start (rate() sees its first event)
    assert pipeline.metrics.registry.get_sample_value(
        "sightline_events_total", {"stream": "cam", "rule": "patient", "label": "class_b"}) == 0.0
    # and only where the rule applies: "elsewhere" is for another stream ("*" labels are known when they happen)
    assert pipeline.metrics.registry.get_sample_value(
        "sightline_events_total", {"stream": "cam", "rule": "elsewhere", "label": "class_b"}) is None


def test_clip_starts_a_preroll_before_the_event_and_ends_a_postroll_after(run) -> None:
    tmp, _, seen = run
    event = seen[-1]["event"]
    clip = tmp / "out" / "events" / f"{event['id']}.mp4"
    counters = clip_counters(clip)
    start_frame = round(event["stream_time_start"] * FPS)
    end_frame = round(event["stream_time_end"] * FPS)
    assert counters == list(range(counters[0], counters[-1] + 1)), "a clip of a replay loses no frame"
    assert counters[0] == start_frame - round(PREROLL * FPS)
    assert counters[-1] == end_frame + round(POSTROLL * FPS)
    times = ffprobe_frame_times(clip)  # the first is the encoder's B-frame delay (a few frames) in, not 0
    assert len(times) == len(counters) and times == sorted(times) and times[0] < 0.2
    # the frame that started the event comes one pre-roll after the clip's first, on the clip's own clock
    assert times[counters.index(start_frame)] - times[0] == pytest.approx(PREROLL, abs=0.5 / FPS)
    assert times[-1] - times[counters.index(end_frame)] == pytest.approx(POSTROLL, abs=0.5 / FPS)
    snapshot = cv2.imdecode(np.frombuffer((tmp / "out" / "events" / f"{event['id']}.jpg").read_bytes(), np.uint8),
                            cv2.IMREAD_COLOR)
    assert snapshot.shape == (240, 320, 3)
    panel, plain = snapshot[5:40, 5:60].astype(int), snapshot[120:200, 100:200].astype(int)
    assert plain.std() < 3 < panel.std(), "the snapshot is annotated (label panel top-left)"


async def test_a_slow_event_query_never_holds_the_event_loop(run, monkeypatch) -> None:
    """GET /api/events over a long history takes a while: it runs in a worker thread, so /healthz still answers."""
    import threading

    _, pipeline, _ = run
    entered, release = threading.Event(), threading.Event()
    real_query = pipeline.events.store.query

    def slow_query(*args, **kwargs):
        entered.set()
        release.wait(10)
        return real_query(*args, **kwargs)

    monkeypatch.setattr(pipeline.events.store, "query", slow_query)
    app = create_app(pipeline, pipeline.config, pipeline.metrics)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        query = asyncio.create_task(client.get("/api/events"))
        await asyncio.to_thread(entered.wait, 10)
        try:
            health = await asyncio.wait_for(client.get("/healthz"), 2.0)
            assert health.status_code == 200 and not query.done()
        finally:
            release.set()
        assert (await query).status_code == 200


async def test_api_lists_filters_pages_and_serves_snapshot_and_clip(run) -> None:
    tmp, pipeline, seen = run
    event_id = seen[0]["event"]["id"]
    # more history: events of other streams and labels, as an earlier run would have left them
    for i in range(5):
        pipeline.events.bus.publish({"type": "start", "event": {
            "id": f"20200101T00000{i}Z-0000000{i}", "stream": "gate", "rule": "r", "label": "class_a",
            "start": 1577836800.0 + i, "end": None, "peak": 0.9, "snapshot_url": None, "clip_url": None}})
    app = create_app(pipeline, pipeline.config, pipeline.metrics)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        r = await client.get("/api/events", params={"stream": "cam"})
        assert r.status_code == 200 and [e["id"] for e in r.json()["events"]] == [event_id]
        assert r.json()["events"][0]["clip_ready"] is True and r.json()["events"][0]["end"] is not None
        assert [e["id"] for e in (await client.get("/api/events?label=class_b")).json()["events"]] == [event_id]
        page = (await client.get("/api/events", params={"stream": "gate", "limit": 2})).json()
        assert page["total"] == 5 and [e["start"] for e in page["events"]] == [1577836804.0, 1577836803.0]
        following = (await client.get(page["next"])).json()
        assert following["offset"] == 2 and [e["start"] for e in following["events"]] == [1577836802.0, 1577836801.0]
        assert (await client.get("/api/events", params={"until": "2020-01-01T00:00:02Z"})).json()["total"] == 3
        assert (await client.get("/api/events", params={"since": "yesterday"})).status_code == 422
        assert (await client.get(f"/api/events/{event_id}")).json()["rule"] == "bright"
        snap = await client.get(f"/api/events/{event_id}/snapshot.jpg")
        assert snap.status_code == 200 and snap.headers["content-type"] == "image/jpeg"
        assert snap.content[:2] == b"\xff\xd8"
        clip = await client.get(f"/api/events/{event_id}/clip.mp4", headers={"Range": "bytes=0-99"})
        assert clip.status_code == 206 and len(clip.content) == 100 and clip.content[4:8] == b"ftyp"
        assert (await client.get("/api/events/20200101T000000Z-00000000/clip.mp4")).status_code == 404
        assert (await client.get(f"/api/events/{event_id}%0A")).status_code == 404  # the id is matched whole
        assert (await client.get("/api/events/..%2F..%2Fclip/snapshot.jpg")).status_code == 404
        # rules: listed openly, changed only with the token
        assert [r["name"] for r in (await client.get("/api/events/rules")).json()["rules"]] == [
            "bright", "patient", "elsewhere"]
        rule = {"name": "cats", "labels": ["class_c"], "min_prob": 0.7}
        assert (await client.post("/api/events/rules", json=rule)).status_code == 401
        assert (await client.post("/api/events/rules", json=rule, headers=AUTH)).status_code == 201
        assert (await client.post("/api/events/rules", json=rule, headers=AUTH)).status_code == 409
        bad = await client.post("/api/events/rules", json={**rule, "name": "x", "typo": 1}, headers=AUTH)
        assert bad.status_code == 422
        unknown = await client.post("/api/events/rules", json={**rule, "name": "y", "labels": ["clas_b", "*"]},
                                    headers=AUTH)
        assert unknown.status_code == 422, unknown.text  # a typo: the rule would never fire
        assert "'clas_b' (closest: 'class_b')" in unknown.json()["detail"]
        assert "y" not in [r["name"] for r in (await client.get("/api/events/rules")).json()["rules"]]
        assert (await client.delete("/api/events/rules/cats")).status_code == 401
        assert (await client.delete("/api/events/rules/cats", headers=AUTH)).status_code == 200
        assert (await client.delete("/api/events/rules/cats", headers=AUTH)).status_code == 404
        metrics = (await client.get("/metrics")).text
        assert 'sightline_events_total{label="class_b",rule="bright",stream="cam"} 1.0' in metrics
        rules = pipeline.events.rules
        rules.max_rules = len(rules.list())  # events.max_rules reached
        full = await client.post("/api/events/rules", json=rule, headers=AUTH)
        assert full.status_code == 429 and "events.max_rules" in full.json()["detail"]
        bright = rules.list()[0]
        assert (await client.delete("/api/events/rules/bright", headers=AUTH)).status_code == 200
        assert 'rule="bright"' not in (await client.get("/metrics")).text  # no series of a removed rule stays
        patient = next(r for r in rules.list() if r.name == "patient")
        assert 'rule="patient"' in (await client.get("/metrics")).text  # never fired: there at 0
        assert (await client.delete("/api/events/rules/patient", headers=AUTH)).status_code == 200
        assert 'rule="patient"' not in (await client.get("/metrics")).text  # and gone with its rule
        rules.add(patient)
        rules.max_rules = 256
        rules.add(bright)


CHROMIUM = shutil.which("chromium")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium (Debian package) is not installed")
async def test_page_lists_events_with_thumbnails_and_plays_a_clip(run, tmp_path: Path) -> None:
    _, pipeline, seen = run
    event_id = seen[0]["event"]["id"]
    server = HttpServer("127.0.0.1", 0)
    await server.start(create_app(pipeline, pipeline.config, pipeline.metrics))
    try:
        args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--no-pings",
                "--dns-prefetch-disable", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--autoplay-policy=no-user-gesture-required", f"--user-data-dir={tmp_path / 'profile'}",
                "--virtual-time-budget=8000", "--dump-dom", f"{server.url}/#event={event_id}"]
        proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.DEVNULL)
        dom, _ = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await server.stop()
    dom = dom.decode()
    card = re.search(r'<li class="event"[^>]*data-id="([^"]+)"[^>]*>.*?</li>', dom, re.S)
    assert card and card.group(1) == event_id, dom[-3000:]
    assert f'src="/api/events/{event_id}/snapshot.jpg"' in card.group(0)
    assert "class_b · cam · 100%" in card.group(0) or "class_b · cam · 99%" in card.group(0)
    assert re.search(r'<div id="player" data-state="playing"', dom), re.search(r'<div id="player".*?</div>', dom,
                                                                                re.S)


def test_a_keyframes_stream_clip_holds_its_keyframes_then_every_frame(tmp_path: Path) -> None:
    """``decode: auto`` at infer_fps 1 (a 1 s GOP): the stream decodes only keyframes, so the pre-roll holds
    the keyframes it classified; the open clip asks for every frame, and from the next keyframe the source
    decodes all of them until the clip is done (docs/density.md says what a clip holds)."""
    clip = labelled_clip(tmp_path / "clip.mp4")
    config = RunConfig.model_validate({
        "output_dir": tmp_path / "out", "media_root": tmp_path,
        "events": {"preroll_s": 2.0, "postroll_s": POSTROLL, "rules": [
            {"name": "bright", "labels": ["class_b"], "min_prob": 0.7, "min_duration_s": 0,
             "end_after_s": 0.5, "cooldown_s": 0}]},  # smoothed at 1/s: class_b passes 0.7 at 4.0 s
        "streams": [{"name": "cam", "url": str(clip), "infer_fps": 1}]})  # realtime: paced like a camera
    pipeline, seen = replay_with_events(config)
    starts = [m["event"] for m in seen if m["type"] == "start"]
    assert len(starts) == 1, (seen, pipeline.statuses())
    counters = clip_counters(tmp_path / "out" / "events" / f"{starts[0]['id']}.mp4")
    # keyframes only (frames 0, 25, 50, ...) up to a keyframe, then every frame from there to the clip's end
    switch = next(i for i, c in enumerate(counters) if i + 1 < len(counters) and counters[i + 1] == c + 1)
    assert counters[:switch + 1] == list(range(counters[0], counters[switch] + 1, FPS)) and counters[0] % FPS == 0
    assert counters[switch:] == list(range(counters[switch], counters[-1] + 1))
    assert len(counters) - switch >= FPS, "at least a second of every frame"
    assert switch >= 2, "the pre-roll is the keyframes classified before the event"
    (status,) = pipeline.statuses()  # (the file ends before the clip's demand lingers out: still all frames)
    assert status["decode"]["reason"] == "an event clip needs every frame"
