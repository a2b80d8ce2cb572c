"""``streams[].decode``: which frames a real VideoSource decodes, checked against ffprobe's keyframe flags.

The clips are real H.264 made by ffmpeg, with B-frames (the decoder reorders, so a keyframe decoded alone
must be drained out of it) and known GOPs. Sources run in fast mode (lossless, no pacing): the frames
that reach the queue are exactly the ones decoded and wanted.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from sightline.stream.buffers import BoundedQueue
from sightline.stream.config import StreamConfig
from sightline.stream.frames import Frame, FrameDemand
from sightline.stream.sources.decode_policy import DecodePolicy
from sightline.stream.sources.video_source import VideoSource
from sightline.stream.stats import StreamStats

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg and ffprobe")]

FPS = 30


def clip(tmp_path: Path, gop: int, seconds: float = 6.0, bframes: int = 2) -> Path:
    path = tmp_path / f"gop{gop}-b{bframes}.mp4"
    if not path.exists():
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi",
                        "-i", f"testsrc2=size=320x240:rate={FPS}", "-t", str(seconds), "-c:v", "libx264",
                        "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0", "-bf", str(bframes),
                        "-pix_fmt", "yuv420p", str(path)], check=True, timeout=60)
    return path


def keyframe_times(path: Path) -> list[float]:
    """What ffprobe says: the presentation times of the key frames."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "frame=pts_time,key_frame", "-of", "json", str(path)],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    return sorted(round(float(f["pts_time"]), 3) for f in json.loads(out)["frames"] if f["key_frame"] == 1)


def run_source(path: Path, demand: FrameDemand | None = None, **config: object) -> tuple[list[Frame], StreamStats]:
    cfg = StreamConfig(name="cam", url=str(path), mode="fast", **config)
    queue: BoundedQueue[Frame] = BoundedQueue(10_000, "block")
    stats = StreamStats("cam")
    source = VideoSource(cfg, queue, stats, lambda h, w: (32, 32), keep_display=False, stop=threading.Event(),
                         preview=demand or FrameDemand())
    source.start()
    assert source.join(30)
    frames = []
    while (frame := queue.get_nowait()) is not None:
        frames.append(frame)
    return frames, stats


def times(frames: list[Frame]) -> list[float]:
    return [round(f.time_s, 3) for f in frames]


def test_keyframes_mode_decodes_exactly_the_keyframes(tmp_path: Path) -> None:
    path = clip(tmp_path, gop=15)
    keys = keyframe_times(path)
    assert len(keys) == 12  # 6 s at a 0.5 s GOP
    frames, stats = run_source(path, decode="keyframes")
    assert times(frames) == keys
    assert stats.frames_decoded == len(keys)  # the 168 frames between them were never decoded
    assert stats.state == "ended" and stats.error is None  # no "truncated": the end is judged by packets
    assert stats.decode is not None and stats.decode.mode == "keyframes"
    assert stats.decode.keyframe_interval_s == pytest.approx(0.5, abs=0.01)


def test_auto_classifies_keyframes_at_infer_fps_and_skips_the_rest(tmp_path: Path) -> None:
    path = clip(tmp_path, gop=15)
    keys = keyframe_times(path)
    frames, stats = run_source(path, infer_fps=1)
    assert stats.frames_decoded == len(keys)
    classified = [t for f, t in zip(frames, times(frames), strict=True) if f.infer]
    assert classified == [t for t in keys if t == int(t)]  # 0, 1, 2, ...: one a second on the stream's clock
    assert [t for f, t in zip(frames, times(frames), strict=True) if not f.infer] == []  # nobody wanted the rest
    assert stats.decode is not None and stats.decode.mode == "keyframes"
    assert "at most the keyframe rate (2.00/s)" in stats.decode.reason
    assert stats.decode.classify_fps_max == pytest.approx(1.0)


def test_auto_decodes_every_frame_when_infer_fps_is_above_the_keyframe_rate(tmp_path: Path) -> None:
    path = clip(tmp_path, gop=60)  # a 2 s GOP
    frames, stats = run_source(path, infer_fps=1)
    assert stats.decode is not None and stats.decode.mode == "all"
    assert stats.decode.reason == "infer_fps 1 is above the keyframe rate (0.50/s)"
    # the first GOP went by keyframes only (its interval was unknown yet); every frame after it
    assert stats.frames_decoded == 1 + (180 - 60)
    assert times(frames) == [0.0, 2.0, 3.0, 4.0, 5.0]


def test_a_long_gop_in_keyframes_mode_says_its_real_classification_rate(tmp_path: Path) -> None:
    path = clip(tmp_path, gop=60)
    frames, stats = run_source(path, decode="keyframes", infer_fps=1)
    assert times(frames) == keyframe_times(path) == [0.0, 2.0, 4.0]
    assert stats.decode is not None
    assert stats.decode.classify_fps_max == pytest.approx(0.5)
    assert "classified at most 0.50/s (one frame per 2.00s GOP), not infer_fps 1" in stats.decode.reason
    assert stats.snapshot()["decode"]["classify_fps_max"] == 0.5


class WindowDemand(FrameDemand):
    """A viewer that watches while the keyframe being decided is within [start, end) on the stream's clock."""

    def __init__(self, start: float, end: float) -> None:
        super().__init__()
        self.start, self.end = start, end
        self.policy: DecodePolicy | None = None

    def every_frame(self) -> str | None:
        last = self.policy.clock.last if self.policy is not None else None
        return "a viewer" if last is not None and self.start <= last < self.end else None


def test_auto_switches_to_every_frame_while_a_viewer_watches_and_back(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    path = clip(tmp_path, gop=30)  # a 1 s GOP, B-frames: the switch back drains the decoder
    demand = WindowDemand(2.0, 4.0)
    cfg = StreamConfig(name="cam", url=str(path), mode="fast", infer_fps=1)
    queue: BoundedQueue[Frame] = BoundedQueue(10_000, "block")
    stats = StreamStats("cam")
    source = VideoSource(cfg, queue, stats, lambda h, w: (32, 32), keep_display=False, stop=threading.Event(),
                         preview=demand)
    demand.policy = source.policy
    with caplog.at_level("INFO", logger="sightline.stream.sources.decode_policy"):
        source.start()
        assert source.join(30)
    frames = []
    while (frame := queue.get_nowait()) is not None:
        frames.append(frame)
    got = times(frames)
    # every frame of the two watched GOPs but the last one or two: the decoder (B-frames: it reorders) gives
    # those back only at the keyframe of 4.0, where this viewer has gone (a real one lingers for seconds)
    watched = [round(2.0 + i / FPS, 3) for i in range(2 * FPS)]
    assert got[:2] == [0.0, 1.0] and got[-2:] == [4.0, 5.0]
    assert got[2:-2] == watched[:len(got) - 4] and len(got) - 4 >= 2 * FPS - 2
    assert [t for f, t in zip(frames, got, strict=True) if f.infer] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert all(f.display is not None for f in frames if 2.0 <= f.time_s < 4.0)  # full size for the viewer
    changes = [r.getMessage() for r in caplog.records]
    assert changes == ["stream cam: decoding keyframes only (infer_fps 1 is at most the keyframe rate (1.00/s))",
                       "stream cam: decoding every frame (a viewer needs every frame)",
                       "stream cam: decoding keyframes only (infer_fps 1 is at most the keyframe rate (1.00/s))"]


def test_a_recording_or_unset_infer_fps_decodes_every_frame(tmp_path: Path) -> None:
    path = clip(tmp_path, gop=30, seconds=2.0)
    frames, stats = run_source(path)
    assert stats.frames_decoded == 60 and stats.decode is not None
    assert stats.decode.reason == "infer_fps is unset: every frame is classified"
    policy = DecodePolicy(StreamConfig(name="r", url=str(path), infer_fps=1, record="annotated"), StreamStats("r"))
    assert policy.decode(True, 0.0) and not policy.keyframes_only
    assert policy.stats.decode is not None and policy.stats.decode.reason == "the recording needs every frame"
    with pytest.raises(ValueError, match="decode: keyframes cannot feed an annotated recording"):
        StreamConfig(name="r", url=str(path), record="annotated", decode="keyframes")


def test_auto_without_keyframes_falls_back_to_every_frame() -> None:
    """An intra-refresh stream flags no keyframe after its first: auto does not wait forever."""
    stats = StreamStats("cam")
    policy = DecodePolicy(StreamConfig(name="cam", url="rtsp://127.0.0.1:8554/cam", infer_fps=1), stats)
    assert policy.decode(True, 0.0) and policy.keyframes_only
    assert not policy.decode(False, 5.0)
    assert policy.decode(False, 10.5) and not policy.keyframes_only
    assert stats.decode is not None and "no keyframe for 10s" in stats.decode.reason


def test_a_paced_file_in_keyframes_mode_plays_to_its_end(tmp_path: Path) -> None:
    """Realtime files play like a camera also when only keyframes are decoded: a 2 s clip with keyframes at
    0 and 1 s takes its 2 s (ending at its last keyframe would loop it every second and classify too often)."""
    import time

    path = clip(tmp_path, gop=30, seconds=2.0)
    cfg = StreamConfig(name="cam", url=str(path), decode="keyframes")  # realtime
    queue: BoundedQueue[Frame] = BoundedQueue(10, "latest")
    source = VideoSource(cfg, queue, StreamStats("cam"), lambda h, w: (32, 32), keep_display=False,
                         stop=threading.Event())
    started = time.monotonic()
    source.start()
    assert source.join(10)
    assert 1.9 <= time.monotonic() - started < 4.0
    assert source.stats.frames_decoded == 2


def test_a_live_keyframe_that_arrives_early_is_still_classified() -> None:
    """A camera's keyframes at its infer_fps arrive with jitter on a busy box: none of them costs a
    classification. A camera with a shorter GOP is still held to infer_fps."""
    source = VideoSource(StreamConfig(name="cam", url="rtsp://127.0.0.1:8554/cam", infer_fps=1),
                         BoundedQueue(2, "latest"), StreamStats("cam"), lambda h, w: (32, 32), keep_display=False,
                         stop=threading.Event())
    for t in (0.0, 1.0, 2.0):
        source.policy.decode(True, t)  # a 1 s GOP, measured
    source.keyframes_only = source.policy.keyframes_only
    assert source.keyframes_only
    arrivals = [10.0, 10.7, 12.2, 12.9, 14.0, 14.6, 16.1]  # one a second on average, +-0.4 s
    assert all(source.throttle.take(t, source._keyframe_slack()) for t in arrivals)
    fast = VideoSource(StreamConfig(name="fast", url="rtsp://127.0.0.1:8554/fast", infer_fps=1, decode="keyframes"),
                       BoundedQueue(2, "latest"), StreamStats("fast"), lambda h, w: (32, 32), keep_display=False,
                       stop=threading.Event())
    for t in (0.0, 0.5, 1.0):
        fast.policy.decode(True, t)  # a 0.5 s GOP
    fast.keyframes_only = True
    taken = [t for t in (10.0, 10.5, 11.0, 11.5, 12.0, 12.5, 13.0) if fast.throttle.take(t, fast._keyframe_slack())]
    assert taken == [10.0, 11.0, 12.0, 13.0]


def test_an_annotated_video_viewer_asks_for_every_frame_while_it_watches() -> None:
    """The encoder behind WebRTC viewers and publishing: a subscriber makes the stream's demand ask for every
    frame (decode: auto switches at the next keyframe); after it leaves, the demand lingers out."""
    from sightline.stream.config import AnnotatedVideoConfig
    from sightline.stream.outputs.annotated_video import AnnotatedEncoder

    now = [0.0]
    demand = FrameDemand(clock=lambda: now[0])
    encoder = AnnotatedEncoder("cam", AnnotatedVideoConfig(), demand)

    class Viewer:
        def deliver(self, packet: object) -> None: ...

        def end(self) -> None: ...

    viewer = Viewer()
    assert demand.every_frame() is None
    encoder.subscribe(viewer)
    try:
        assert demand.every_frame() == "an annotated-video viewer"
        encoder.unsubscribe(viewer)
        now[0] += demand.linger_s + 0.1
        assert demand.every_frame() is None
    finally:
        encoder.close()
