"""The pipeline end to end on real generated video files with a fixed random-init model."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from pathlib import Path

import av
import pytest
from sightline import synthetic_media as media
from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.service.status import stream_status

from tests.support.models import tiny_classifier
from tests.support.predictions import predictions

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def classifier():
    return tiny_classifier()


def run(classifier, tmp_path: Path, streams: list[dict], duration: float | None = 30.0, **extra) -> Pipeline:
    extra.setdefault("media_root", tmp_path)
    config = RunConfig(output_dir=tmp_path / "out", streams=[StreamConfig(**s) for s in streams], **extra)
    pipeline = Pipeline(classifier, config, Metrics())
    pipeline.last_exit_code = asyncio.run(pipeline.run(duration=duration))  # type: ignore[attr-defined]
    return pipeline


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def count_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_fast_streams_account_for_every_frame_and_recordings_match(classifier, tmp_path: Path) -> None:
    clips = {
        "one": media.make_test_clip(tmp_path / "one.mp4", frames=40, fps=25, size=(160, 120)),
        "two": media.make_test_clip(tmp_path / "two.mp4", frames=25, fps=10, size=(320, 180)),
        "three": media.make_test_clip(tmp_path / "three.mkv", frames=31, fps=30, size=(200, 150)),
    }
    p = run(classifier, tmp_path, [{"name": n, "url": str(c), "mode": "fast", "record": n != "three"}
                                   for n, c in clips.items()])
    assert p.last_exit_code == 0
    for name, clip in clips.items():
        expected = count_frames(clip)
        lines = jsonl(tmp_path / "out" / f"{name}.jsonl")
        assert [r["seq"] for r in lines] == list(range(expected)), name
        assert all(r["stream"] == name and len(r["top"]) == 4 and r["smoothed"]["label"] for r in lines)
        assert all(r["latency_ms"] >= 0 and r["time"] is not None for r in lines)
        status = stream_status(p.get(name))
        assert status["state"] == "ended"
        assert status["frames_decoded"] == status["frames_inferred"] == expected
        assert status["dropped"] == {}
        if name != "three":
            assert count_frames(tmp_path / "out" / f"{name}.mp4") == expected


def test_same_frames_give_same_predictions_regardless_of_batching(classifier, tmp_path: Path) -> None:
    clip = media.make_test_clip(tmp_path / "c.mp4", frames=20, fps=25, size=(160, 120), pattern="photos")
    a = run(classifier, tmp_path / "a", [{"name": "c", "url": str(clip), "mode": "fast"}],
            media_root=tmp_path, batching={"max_batch": 1, "max_wait_ms": 0})
    b = run(classifier, tmp_path / "b", [{"name": "c", "url": str(clip), "mode": "fast"}],
            media_root=tmp_path, batching={"max_batch": 16, "max_wait_ms": 50})
    assert a.last_exit_code == b.last_exit_code == 0
    ra, rb = jsonl(tmp_path / "a" / "out" / "c.jsonl"), jsonl(tmp_path / "b" / "out" / "c.jsonl")
    assert [r["top"][0]["label"] for r in ra] == [r["top"][0]["label"] for r in rb]
    for x, y in zip(ra, rb, strict=True):
        assert x["top"][0]["prob"] == pytest.approx(y["top"][0]["prob"], abs=1e-4)


def test_truncated_file_fails_clearly_while_the_good_stream_completes(classifier, tmp_path: Path) -> None:
    good = media.make_test_clip(tmp_path / "good.mp4", frames=30, size=(160, 120))
    whole = media.make_test_clip(tmp_path / "whole.mkv", frames=60, size=(160, 120))
    bad = media.truncate_file(whole, tmp_path / "bad.mkv", 0.5)
    p = run(classifier, tmp_path, [{"name": "good", "url": str(good), "mode": "fast"},
                                   {"name": "bad", "url": str(bad), "mode": "fast"}])
    assert stream_status(p.get("good"))["state"] == "ended"
    assert len(jsonl(tmp_path / "out" / "good.jsonl")) == 30
    bad_status = stream_status(p.get("bad"))
    assert bad_status["state"] == "failed"
    assert "bad.mkv is truncated" in bad_status["error"]
    assert 0 < bad_status["frames_decoded"] < 60
    # the frames before the cut are kept
    assert len(jsonl(tmp_path / "out" / "bad.jsonl")) == bad_status["frames_decoded"]


def test_corrupt_packets_are_skipped_and_counted(classifier, tmp_path: Path) -> None:
    whole = media.make_test_clip(tmp_path / "whole.mp4", frames=75, size=(160, 120), gop=10)
    bad = media.corrupt_file(whole, tmp_path / "noisy.mp4", at=0.4, length=1500)
    p = run(classifier, tmp_path, [{"name": "noisy", "url": str(bad), "mode": "fast"}])
    status = stream_status(p.get("noisy"))
    assert status["state"] == "ended"
    assert "corrupt packets" in status["error"]
    assert 50 <= status["frames_decoded"] < 75


def test_unopenable_file_fails_with_reason_and_exit_code_says_some_failed(classifier, tmp_path: Path) -> None:
    good = media.make_test_clip(tmp_path / "good.mp4", frames=10, size=(160, 120))
    whole = media.make_test_clip(tmp_path / "whole.mp4", frames=30, size=(160, 120))
    bad = media.truncate_file(whole, tmp_path / "cut.mp4", 0.3)  # MP4 index (moov) is at the end: unopenable
    p = run(classifier, tmp_path, [{"name": "good", "url": str(good), "mode": "fast"},
                                   {"name": "cut", "url": str(bad), "mode": "fast"}])
    status = stream_status(p.get("cut"))
    assert status["state"] == "failed"
    assert "cut.mp4" in status["error"] and "Invalid data" in status["error"]
    assert stream_status(p.get("good"))["frames_inferred"] == 10
    assert p.last_exit_code == 3


def test_unreachable_url_reconnects_with_backoff_beside_a_good_stream(classifier, tmp_path: Path, caplog) -> None:
    """Load-proof: the run lasts until the good file ended and the camera retried 4 times (not a fixed
    window), and each logged delay is checked against its own attempt's backoff bounds."""
    good = media.make_test_clip(tmp_path / "good.mp4", frames=50, fps=25, size=(160, 120))
    caplog.set_level(logging.INFO)
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path, streams=[
        StreamConfig(name="good", url=str(good), mode="realtime"),
        StreamConfig(name="cam", url="rtsp://admin:hunter2@127.0.0.1:9/stream", open_timeout_s=1,
                     reconnect={"initial_s": 0.1, "max_s": 0.4, "jitter": 0.25})])
    p = Pipeline(classifier, config, Metrics())
    p.start()
    try:
        deadline = time.monotonic() + 60
        while not (p.get("good").stats.state == "ended" and p.get("cam").stats.reconnects >= 4):
            assert time.monotonic() < deadline, p.statuses()
            time.sleep(0.05)
    finally:
        p.shutdown()
    cam = stream_status(p.get("cam"))
    assert cam["frames_decoded"] == 0
    assert "refused" in cam["error"].lower() or "timed out" in cam["error"].lower()
    delays = [float(d) for d in re.findall(r"stream cam .*; reconnecting in (\d+\.\d)s", caplog.text)]
    assert len(delays) >= 4
    for attempt, delay in enumerate(delays):  # initial * 2^attempt capped at max_s, minus up to 25% jitter
        base = min(0.4, 0.1 * 2 ** attempt)
        assert base * 0.75 - 0.05 <= delay <= base + 0.05, (attempt, delays)  # logged with one decimal
    good_status = stream_status(p.get("good"))  # the live file is unaffected: every frame decoded, none lost uncounted
    assert good_status["frames_decoded"] == 50
    assert good_status["frames_inferred"] + sum(good_status["dropped"].values()) == 50
    assert good_status["frames_inferred"] >= 10
    everything = caplog.text + json.dumps(p.statuses())
    assert "hunter2" not in everything and "admin" not in everything
    assert "rtsp://***@127.0.0.1:9/stream" in everything


def test_realtime_file_is_paced_at_native_rate(classifier, tmp_path: Path) -> None:
    clip = media.make_test_clip(tmp_path / "rt.mp4", frames=30, fps=15, size=(160, 120))  # 2 s of video
    loop = asyncio.new_event_loop()
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path,
                       streams=[StreamConfig(name="rt", url=str(clip), mode="realtime")])
    pipeline = Pipeline(classifier, config, Metrics())
    started = loop.time()
    loop.run_until_complete(pipeline.run(duration=60))
    elapsed = loop.time() - started
    loop.close()
    # Never faster than the clip (load only slows a run down); the upper bound only catches a hang.
    assert elapsed >= 1.8
    assert pipeline.get("rt").stats.state == "ended"
    status = stream_status(pipeline.get("rt"))
    # Live policy: every frame is decoded; what the model could not take is dropped and counted, never lost.
    assert status["frames_decoded"] == 30
    assert status["frames_inferred"] + sum(status["dropped"].values()) == 30
    assert set(status["dropped"]) <= {"stale"}
    records = jsonl(tmp_path / "out" / "rt.jsonl")
    times = [r["time"] for r in records]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert len(times) >= 10  # a tiny model at 15 fps: most frames even on a busy machine
    # Pacing itself: a frame's latency is measured from when it was due, so a run paced ahead of the clip
    # would show negative latencies; and the frames span the clip's 2 s.
    assert all(r["latency_ms"] >= 0 for r in records)
    assert times[-1] - times[0] >= 1.5


def test_infer_fps_classifies_fewer_frames_but_records_all(classifier, tmp_path: Path) -> None:
    clip = media.make_test_clip(tmp_path / "c.mp4", frames=50, fps=25, size=(160, 120))  # 2 s
    p = run(classifier, tmp_path,
            [{"name": "c", "url": str(clip), "mode": "fast", "infer_fps": 5, "record": "annotated"}])
    status = stream_status(p.get("c"))
    assert status["frames_decoded"] == 50
    assert status["frames_inferred"] == 10
    assert len(jsonl(tmp_path / "out" / "c.jsonl")) == 10
    assert count_frames(tmp_path / "out" / "c.mp4") == 50


def test_loop_stream_runs_until_duration_then_stops(classifier, tmp_path: Path) -> None:
    clip = media.make_test_clip(tmp_path / "c.mp4", frames=10, fps=25, size=(160, 120))
    p = run(classifier, tmp_path, [{"name": "c", "url": str(clip), "mode": "fast", "loop": True}], duration=2.0)
    status = stream_status(p.get("c"))
    assert status["frames_decoded"] > 10
    assert status["state"] == "stopped"
    seqs = [r["seq"] for r in predictions(tmp_path / "out", "c")]  # under predictions/c/: it runs until stopped
    assert seqs == list(range(len(seqs)))


def test_prometheus_counters_follow_the_stream(classifier, tmp_path: Path) -> None:
    clip = media.make_test_clip(tmp_path / "c.mp4", frames=12, size=(160, 120))
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path,
                       streams=[StreamConfig(name="c", url=str(clip), mode="fast")])
    metrics = Metrics()
    asyncio.run(Pipeline(classifier, config, metrics).run(duration=30))
    reg = metrics.registry
    assert reg.get_sample_value("sightline_frames_decoded_total", {"stream": "c"}) == 12
    assert reg.get_sample_value("sightline_frames_inferred_total", {"stream": "c"}) == 12
    assert reg.get_sample_value("sightline_end_to_end_latency_seconds_count", {"stream": "c"}) == 12
    assert reg.get_sample_value("sightline_stream_state", {"stream": "c", "state": "ended"}) == 1
    assert reg.get_sample_value("sightline_batch_size_sum") == 12


def test_stream_removed_mid_file_is_stopped_and_decode_stage_is_timed(classifier, tmp_path: Path) -> None:
    clip = media.make_test_clip(tmp_path / "c.mp4", frames=250, fps=25, size=(160, 120))  # 10 s, realtime
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path,
                       streams=[StreamConfig(name="c", url=str(clip))])
    metrics = Metrics()
    pipeline = Pipeline(classifier, config, metrics)
    pipeline.start()
    try:
        runtime = pipeline.get("c")
        deadline = time.monotonic() + 20
        while runtime.stats.frames_inferred < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        pipeline.remove_stream("c")
    finally:
        pipeline.shutdown()
    assert runtime.stats.state == "stopped"
    assert metrics.registry.get_sample_value("sightline_stage_latency_seconds_count", {"stage": "decode"}) >= 5


def test_previews_get_full_size_pictures_only_while_watched(classifier, tmp_path: Path) -> None:
    clip = media.make_test_clip(tmp_path / "c.mp4", frames=250, fps=25, size=(320, 240))
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path,
                       streams=[StreamConfig(name="c", url=str(clip))])
    pipeline = Pipeline(classifier, config, Metrics())
    pipeline.start()

    def latest_shape() -> tuple[int, ...]:
        deadline = time.monotonic() + 20
        first = pipeline.get("c").output.latest
        while time.monotonic() < deadline:
            item = pipeline.get("c").output.latest
            if item is not None and item is not first:
                return pipeline.snapshot("c").shape
            time.sleep(0.05)
        raise AssertionError("no new frame")

    try:
        assert latest_shape() == (64, 85, 3)  # nobody watches: the working-size picture only
        pipeline.get("c").watch_preview()
        time.sleep(0.3)
        assert latest_shape() == (240, 320, 3)
    finally:
        pipeline.shutdown()


class BrokenSink:
    """A sink whose disk is full: every write fails."""

    name = "broken"

    def __init__(self) -> None:
        self.closed = False

    def write(self, item) -> None:
        raise OSError(28, "No space left on device")

    def close(self) -> None:
        self.closed = True


def test_a_failing_sink_is_counted_and_never_stops_inference(classifier, tmp_path: Path) -> None:
    clip = media.make_test_clip(tmp_path / "c.mp4", frames=20, size=(160, 120))
    broken = BrokenSink()
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path,
                       streams=[StreamConfig(name="c", url=str(clip), mode="fast")])
    metrics = Metrics()
    pipeline = Pipeline(classifier, config, metrics, extra_sinks=lambda _: [broken])
    assert asyncio.run(pipeline.run(duration=30)) == 0
    status = stream_status(pipeline.get("c"))
    assert status["frames_inferred"] == 20
    assert status["sink_errors"] == {"broken": 20}
    assert metrics.registry.get_sample_value("sightline_sink_errors_total", {"stream": "c", "sink": "broken"}) == 20
    assert len(jsonl(tmp_path / "out" / "c.jsonl")) == 20  # the other sink still wrote every line
    assert broken.closed


def test_a_file_stream_that_ends_is_logged_when_it_ends_not_at_exit(classifier, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="sightline")
    short = media.make_test_clip(tmp_path / "short.mp4", frames=5, fps=25)
    loop = media.make_test_clip(tmp_path / "loop.mp4", frames=25, fps=25)
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path, streams=[
        StreamConfig(name="short", url=str(short), mode="fast"),
        StreamConfig(name="loop", url=str(loop), mode="realtime", loop=True)])
    pipeline = Pipeline(classifier, config, Metrics())
    seen: list[tuple[str, str]] = []  # (message, the looping stream's state when it was logged)

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "short: ended" in record.getMessage():
                seen.append((record.getMessage(), pipeline.get("loop").stats.state))

    spy = Spy()
    logging.getLogger("sightline").addHandler(spy)
    try:
        asyncio.run(pipeline.run(duration=8.0))
    finally:
        logging.getLogger("sightline").removeHandler(spy)
    assert len(seen) == 1
    message, loop_state = seen[0]
    assert "5 frames decoded, 5 classified" in message
    assert loop_state == "live"  # the run was still going: the end was reported as it happened
