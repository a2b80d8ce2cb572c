"""The capture watchdog: a source thread that stalls where no read timeout can see it is caught and replaced,
and one that dies without a word is marked failed. Real pipeline, registry, runner, worker and outputs;
only the decoding is a small FrameSource that draws its own pictures (and stalls on purpose)."""

from __future__ import annotations

import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.lifecycle import StreamState
from sightline.stream.pipeline.capture_watchdog import stall_limit
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.sources.video_source import FrameSource

from tests.support.models import tiny_classifier

pytestmark = pytest.mark.timeout(60)


def wait_for(check, timeout: float, what: str, pipeline: Pipeline) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {pipeline.statuses()}"
        time.sleep(0.02)


class DrawnSource(FrameSource):
    """Frames at ~50 fps; ``stall_after`` frames, then a read that never returns (ignores ``stop``, as a read
    blocked inside FFmpeg would), or ``exit_after`` frames, then a death ``_run`` cannot catch."""

    release = threading.Event()  # set by the test at the end: the stalled "read" returns

    def __init__(self, *args, stall_after: int | None = None, exit_after: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.stall_after = stall_after
        self.exit_after = exit_after
        self.sent = 0

    def _produce(self) -> None:
        picture = np.zeros((48, 64, 3), np.uint8)
        while not self.stop.is_set():
            if self.stall_after is not None and self.sent >= self.stall_after:
                self.release.wait(30)  # stuck; when it wakes it carries on as if nothing happened
                self.stall_after = None
            if self.exit_after is not None and self.sent >= self.exit_after:
                raise SystemExit  # not an Exception: FrameSource._run cannot report it
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = self.sent, Fraction(1, 50)
            now = self.clock()
            self._emit(frame, now, now)
            self.sent += 1
            self.stop.wait(0.02)
        self.stats.set_state(StreamState.STOPPED)


def drawn_pipeline(tmp_path: Path, **behaviour) -> tuple[Pipeline, list[DrawnSource]]:
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path, log_predictions=False)
    pipeline = Pipeline(tiny_classifier(), config)
    pipeline.watchdog.interval_s = 0.1
    made: list[DrawnSource] = []

    def source(cfg, queue, stats, stop, preview, keep_display=None):  # the factory's source builder, every (re)start
        first = not made
        made.append(DrawnSource(cfg, queue, stats, pipeline.factory.classifier.preprocessor.working_size, False,
                                stop, pipeline.clock, preview, **(behaviour if first else {})))
        return made[-1]

    pipeline.factory.source = source  # type: ignore[method-assign]
    return pipeline, made


def test_a_stalled_source_is_caught_and_replaced_and_the_stalled_thread_is_cut_loose(tmp_path: Path) -> None:
    cam = StreamConfig(name="cam", url="rtsp://127.0.0.1:8554/cam", stall_timeout_s=1.0)
    assert stall_limit(cam) == 3.0  # a starved but healthy thread on a busy machine stays under it
    pipeline, made = drawn_pipeline(tmp_path, stall_after=10)
    DrawnSource.release.clear()
    pipeline.start()
    try:
        runtime = pipeline.add_stream(cam)
        stats = runtime.stats
        wait_for(lambda: stats.frames_decoded >= 10, 20, "the first frames", pipeline)
        changes: list[tuple[str, str | None]] = []
        change = stats.set_state
        stats.set_state = lambda state, error=None: (changes.append((str(state), error)), change(state, error))[1]
        wait_for(lambda: stats.reconnects >= 1, 10, "the watchdog to notice the stall", pipeline)
        assert changes[0][0] == "reconnecting" and "capture watchdog" in (changes[0][1] or ""), changes
        wait_for(lambda: stats.state == "live" and stats.frames_inferred >= 15, 20, "the fresh source", pipeline)
        assert len(made) == 2 and runtime.source is made[1] and pipeline.watchdog.restarts == 1
        stalled = made[0]
        assert stalled.alive  # still stuck in its "read": cut loose, not waited for
        DrawnSource.release.set()  # the stuck read returns: whatever it does now must not touch the stream
        assert stalled.join(5)
        decoded = stats.frames_decoded
        time.sleep(0.3)
        assert stats.state == "live" and stats.reconnects == 1 and stats.frames_decoded > decoded
        assert not runtime.source.queue.closed
    finally:
        DrawnSource.release.set()
        pipeline.shutdown()
    assert runtime.stats.state == "stopped" and runtime.finished


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the death itself
def test_a_source_thread_that_dies_without_a_word_is_marked_failed(tmp_path: Path) -> None:
    pipeline, made = drawn_pipeline(tmp_path, exit_after=5)
    pipeline.start()
    try:
        runtime = pipeline.add_stream(StreamConfig(name="cam", url="rtsp://127.0.0.1:8554/cam"))
        wait_for(lambda: runtime.stats.state == "failed", 10, "the watchdog to mark the dead stream", pipeline)
        assert "capture thread stopped unexpectedly" in (runtime.stats.error or "")
        assert len(made) == 1  # a dead thread closed its queue: nothing to restart into
        wait_for(lambda: runtime.finished, 10, "the output to drain", pipeline)
    finally:
        pipeline.shutdown()
    assert pipeline.exit_code() == 1


def test_files_and_webrtc_are_not_watched(tmp_path: Path) -> None:
    assert stall_limit(StreamConfig(name="f", url=str(tmp_path / "x.mp4"))) is None
    assert stall_limit(StreamConfig(name="w", url="webrtc://w")) is None
    assert stall_limit(StreamConfig(name="n", url="rtsp://127.0.0.1/x", stall_timeout_s=10)) == 30.0


def test_liveness_counts_packets_not_frames() -> None:
    """A keyframes-only camera with a long GOP decodes a frame every few seconds but reads packets all the
    time: it is not stalled. One that reads no packet is."""
    from types import SimpleNamespace

    from sightline.stream.pipeline.capture_watchdog import CaptureWatchdog
    from sightline.stream.stats import StreamStats

    now = [100.0]
    stats = StreamStats("cam", clock=lambda: now[0])
    stats.set_state(StreamState.LIVE)
    runtime = SimpleNamespace(stats=stats, source=SimpleNamespace(alive=True), removing=False,
                              stop=threading.Event(),
                              config=StreamConfig(name="cam", url="rtsp://127.0.0.1:8554/cam", stall_timeout_s=1.0))
    restarted: list[str] = []
    watchdog = CaptureWatchdog(lambda: [runtime], lambda rt, why: restarted.append(why), clock=lambda: now[0])
    stats.on_decoded()  # one keyframe at t=100
    for _ in range(20):  # 10 s of packets, no picture
        now[0] += 0.5
        stats.on_packet()
        assert watchdog.check() == []
    now[0] += 3.5  # then nothing at all for longer than 3 x stall_timeout_s
    assert watchdog.check() == ["cam: stalled source restarted"]
    assert restarted == ["no packet for 4s (capture watchdog); restarting the source"]
