"""Event clips from a record input's packets (issue #29): ``PacketClips`` keeps whole GOPs of copied packets, a clip
is the camera's own bytes remuxed from the last keyframe at or before its start until the first packet past its
end, written on its own thread; a full queue drops up to the next keyframe; a full disk makes it incomplete; and
an ``EventSink`` with ``packet_clips`` makes its clips there, encoding no frames.

The video: H.264, 320x240 at 30 fps, a keyframe every second, each frame's index painted as a bar code; its packets
are fed as an input's thread would, with a clock that reads the packet's own time (100 s + its dts)."""

from __future__ import annotations

import errno
import threading
from pathlib import Path

import av
import numpy as np
import pytest
from sightline.model.classifier import Prediction
from sightline.stream.config import RunConfig
from sightline.stream.event_config import EventsConfig
from sightline.stream.events import hub as hub_module
from sightline.stream.events import packet_clips
from sightline.stream.events.hub import EventHub
from sightline.stream.events.packet_clips import PacketClip, PacketClips
from sightline.stream.frames import Frame, Result, Smoothed
from sightline.stream.outputs.sinks import Labelled

pytestmark = pytest.mark.timeout(60)

FPS = 30
T0 = 100.0
BITS = 9  # frame indices up to 511, one 32-pixel column a bit


def paint(index: int, width: int, height: int) -> np.ndarray:
    image = np.full((height, width, 3), 16, np.uint8)
    column = width // (BITS + 1)
    for bit in range(BITS):
        if index >> bit & 1:
            image[:, bit * column:(bit + 1) * column] = 235
    image[:, BITS * column:] = 235  # a reference column: the picture is there
    return image


def read_index(image: np.ndarray) -> int:
    column = image.shape[1] // (BITS + 1)
    return sum(1 << bit for bit in range(BITS) if image[:, bit * column:(bit + 1) * column].mean() > 128)


def h264(path: Path, seconds: float, size: tuple[int, int] = (320, 240), bframes: int = 0) -> Path:
    width, height = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.options = {"preset": "ultrafast", "x264-params":
                                        f"keyint={FPS}:min-keyint={FPS}:scenecut=0:bframes={bframes}"}
        for i in range(round(seconds * FPS)):
            frame = av.VideoFrame.from_ndarray(paint(i, width, height), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    return {"plain": h264(folder / "plain.mp4", 10), "bframes": h264(folder / "bframes.mp4", 10, bframes=2),
            "small": h264(folder / "small.mp4", 2, size=(160, 120))}


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def packets(path: Path, clock: Clock, tap=None, t0: float = T0):  # noqa: ANN001, ANN201
    """The file's packets as an input's thread reads them: ``tap.begin`` first, the clock at each one's time."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        if tap is not None:
            tap.begin(video)
        for packet in container.demux(video):
            if not packet.size:
                continue
            clock.t = t0 + float(packet.dts * video.time_base)
            yield packet


def source_packets(path: Path) -> list[tuple[bytes, bool]]:
    with av.open(str(path)) as container:
        return [(bytes(p), p.is_keyframe) for p in container.demux(container.streams.video[0]) if p.size]


def decoded(path: Path) -> list[tuple[int, float]]:
    """(frame index painted, pts seconds) of every frame of ``path``; a decoding error fails the test."""
    with av.open(str(path)) as container:
        return [(read_index(f.to_ndarray(format="rgb24")), float(f.pts * f.time_base))
                for f in container.decode(video=0)]


def config(**events) -> EventsConfig:
    return EventsConfig.model_validate({"preroll_s": 2.0, "postroll_s": 1.0, **events})


class Calls:
    def __init__(self) -> None:
        self.done: list[PacketClip] = []
        self.failed: list[tuple[PacketClip, str | None]] = []

    def on_done(self, clip: PacketClip) -> None:
        self.done.append(clip)

    def on_failed(self, clip: PacketClip) -> None:
        self.failed.append((clip, clip.error))


def run_clip(path: Path, out: Path, tap: PacketClips, clock: Clock, open_at: float, since: float,
             stop_after: float | None, calls: Calls, on_packet=None) -> PacketClip:  # noqa: ANN001
    clip = None
    for packet in packets(path, clock, tap):
        tap.submit(packet)
        if clip is None and clock.t >= open_at:
            clip = tap.open("e1", out, since, calls.on_done, calls.on_failed)
            assert clip is not None
            clip.start()
            clip.stop_after = stop_after
        if on_packet is not None and clip is not None:
            on_packet(clip, clock.t)
    tap.close()
    assert clip is not None and clip.join(10)
    return clip


def test_a_clip_is_the_cameras_packets_from_the_keyframe_before_its_start_to_just_past_its_end(media, tmp_path):
    clock = Clock()
    tap = PacketClips(config(), "cam", clock)
    tap.seconds = 3.0  # pre-roll 2 s + a rule's min_duration_s 1 s (the event sink sets it)
    calls = Calls()
    ring_sizes: list[int] = []
    # the event is known at 105.0; its clip starts at 102.5 (the keyframe before: frame 60, 102.0), ends at 107.0
    clip = run_clip(media["plain"], tmp_path / "e1.mp4", tap, clock, open_at=T0 + 5.0, since=T0 + 2.5,
                    stop_after=T0 + 7.0, calls=calls, on_packet=lambda c, t: ring_sizes.append(len(tap)))
    assert clip.done.is_set() and clip.error is None and clip.dropped == 0 and calls.failed == []
    assert calls.done == [clip]
    assert clip.first_t == pytest.approx(T0 + 2.0) and clip.last_t == pytest.approx(T0 + 7.0)
    frames = decoded(clip.path)
    assert [i for i, _ in frames] == list(range(60, 211))  # frame 211 (107.033) was the first past the end
    times = [t for _, t in frames]
    assert times[0] == pytest.approx(0.0, abs=0.05) and all(b > a for a, b in zip(times, times[1:], strict=False))
    assert times[-1] == pytest.approx(150 / FPS, abs=0.05)
    # remuxed, not re-encoded: the file's packets are the camera's bytes
    assert source_packets(clip.path) == source_packets(media["plain"])[60:211]
    # the ring: whole GOPs reaching back 3 s, no more than one GOP beyond (4 s at most), empty once closed
    assert max(ring_sizes) <= 4 * FPS + 1 and len(tap) == 0 and tap.open_clips == 0


def test_b_frames_are_remuxed_in_order_and_the_clip_decodes(media, tmp_path):
    clock = Clock()
    tap = PacketClips(config(), "cam", clock)
    tap.seconds = 3.0
    clip = run_clip(media["bframes"], tmp_path / "e1.mp4", tap, clock, open_at=T0 + 5.0, since=T0 + 2.5,
                    stop_after=T0 + 7.0, calls=Calls())
    assert clip.error is None and clip.dropped == 0
    frames = decoded(clip.path)
    indices, times = [i for i, _ in frames], [t for _, t in frames]
    # decode order cut at 107.0: the last frames shown may lack a B-frame or two that came after the cut
    assert indices[0] == 60 and indices == sorted(set(indices)) and indices[-1] >= 205
    assert set(range(60, 200)) <= set(indices)
    assert all(b > a for a, b in zip(times, times[1:], strict=False))


def test_a_clip_ends_after_max_clip_s_and_a_stale_ring_is_not_its_pre_roll(media, tmp_path):
    clock = Clock()
    tap = PacketClips(config(max_clip_s=2.0), "cam", clock)
    clip = run_clip(media["plain"], tmp_path / "e1.mp4", tap, clock, open_at=T0 + 3.5, since=T0 + 3.2,
                    stop_after=None, calls=Calls())
    indices = [i for i, _ in decoded(clip.path)]
    assert indices == list(range(90, 151))  # from 103.0, 2 s long: the packet at 105.033 ended it
    # an input that has sent nothing for a while: its ring is old footage, the clip waits for the next keyframe
    clock = Clock()
    tap = PacketClips(config(), "cam", clock)
    for packet in packets(media["plain"], clock, tap):
        tap.submit(packet)
        if clock.t >= T0 + 3.0:
            break
    late = tap.open("e2", tmp_path / "e2.mp4", T0 + 10.0, None, None)
    assert late is not None and late.queue.peek() is None  # nothing from the ring
    late.start()
    late.stop_after = T0 + 20.5
    for packet in packets(media["plain"], clock, tap, t0=T0 + 20.0):  # the input is back 20 s later
        tap.submit(packet)
    tap.close()
    assert late.join(10) and late.first_t == pytest.approx(T0 + 20.0)
    assert [i for i, _ in decoded(late.path)] == list(range(0, 16))


def test_other_codec_parameters_empty_the_ring_and_end_an_open_clip(media, tmp_path):
    clock = Clock()
    tap = PacketClips(config(), "cam", clock)
    for packet in packets(media["plain"], clock, tap):
        tap.submit(packet)
        if clock.t >= T0 + 3.0:
            break
    clip = tap.open("e1", tmp_path / "e1.mp4", T0 + 2.5, None, None)
    assert clip is not None
    clip.start()
    for packet in packets(media["small"], clock, tap, t0=T0 + 4.0):  # the camera came back at 160x120
        tap.submit(packet)
    assert clip.join(10) and clip.error is None
    assert [i for i, _ in decoded(clip.path)] == list(range(60, 91))  # 102.0 to 103.0, nothing of the new size
    assert len(tap) == len(source_packets(media["small"]))  # the new size only (its 2 s: whole GOPs reaching 2 s back)
    tap.close()


def test_a_full_queue_drops_up_to_the_next_keyframe_and_the_clip_still_decodes(media, tmp_path, monkeypatch):
    gate, writing = threading.Event(), threading.Event()
    write = PacketClip._write

    def stuck_at_first(self, item):  # noqa: ANN001
        writing.set()
        gate.wait(10)
        write(self, item)

    monkeypatch.setattr(PacketClip, "_write", stuck_at_first)
    clock = Clock()
    capacity = 10
    tap = PacketClips(config(), "cam", clock, capacity=capacity)

    def release(clip: PacketClip, t: float) -> None:
        assert writing.wait(5)  # the writer took the clip's first packet and hangs there
        if t >= T0 + 3.3 and not gate.is_set():  # the writer is back: let it catch up before the next packet
            gate.set()
            while len(clip.queue):
                threading.Event().wait(0.005)

    # opened at 102.3 from the keyframe of 102.0: 10 packets queued, the writer takes one and hangs; the queue is
    # full at 81 (the keyframe of 103.0 finds it full too) and the writer is back at 103.3
    clip = run_clip(media["plain"], tmp_path / "e1.mp4", tap, clock, open_at=T0 + 2.3, since=T0 + 2.1,
                    stop_after=T0 + 4.5, calls=Calls(), on_packet=release)
    assert writing.is_set() and clip.error is None
    taken = 1 + 10 + capacity  # the one being written, the pre-roll's 10 (queued in the room made for them), 10 more
    indices = [i for i, _ in decoded(clip.path)]
    assert indices == list(range(60, 60 + taken)) + list(range(120, 136))  # on again at the keyframe of 104.0
    assert clip.dropped == 120 - (60 + taken)


class FullDisk:
    """A clip file whose disk fills after ``packets`` packets: every later write fails, and closing it too."""

    def __init__(self, path: Path, packets: int) -> None:
        self.out = packet_clips.av.open(str(path), "w", format="mp4", options=packet_clips.MP4_OPTIONS)
        self.left = packets

    def add_stream_from_template(self, stream):  # noqa: ANN001, ANN201
        return self.out.add_stream_from_template(stream)

    def mux(self, packet) -> None:  # noqa: ANN001
        if self.left <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.left -= 1
        self.out.mux(packet)

    def close(self) -> None:
        self.out.close()
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_write_error_makes_the_clip_incomplete_and_is_reported_once(media, tmp_path, monkeypatch):
    monkeypatch.setattr(packet_clips, "open_mp4", lambda path: FullDisk(path, 45))
    clock = Clock()
    tap = PacketClips(config(), "cam", clock)
    calls = Calls()
    clip = run_clip(media["plain"], tmp_path / "e1.mp4", tap, clock, open_at=T0 + 2.0, since=T0 + 2.0,
                    stop_after=T0 + 6.0, calls=calls)
    assert clip.error == "writing failed: No space left on device"
    assert calls.failed == [(clip, clip.error)] and calls.done == [clip] and clip.done.is_set()
    assert [i for i, _ in decoded(clip.path)] == list(range(60, 105))  # what was written before still plays


# -- the event sink ----------------------------------------------------------------------------------------------


def labelled(t: float, seq: int, label: str) -> Labelled:
    frame = Frame("cam", seq, None, None, t, t, np.zeros((120, 160, 3), np.uint8))
    top = (Prediction(0, label, 0.95),)
    return Labelled(Result(frame, np.array([0.95, 0.05]), top, None), top, Smoothed(label, 0.95, 0), 10.0, None)


class Demand:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def need_every_frame(self, why: str) -> None:
        self.asked.append(why)


def event_sink(tmp_path: Path, clock: Clock):  # noqa: ANN201
    """A hub with one rule ("b" held 0.5 s), its sink for a live stream, and the bus's messages."""
    run = RunConfig.model_validate({
        "output_dir": tmp_path / "out",
        "events": {"preroll_s": 1.0, "postroll_s": 1.0, "rules": [
            {"name": "bright", "labels": ["b"], "min_prob": 0.8, "min_duration_s": 0.5, "end_after_s": 0.5,
             "cooldown_s": 0}]},
        "streams": [{"name": "cam", "url": "rtsp://127.0.0.1:8554/cam"}]})
    hub = EventHub(run, clock=clock, wall=lambda: 1_800_000_000.0 + clock())
    seen: list[dict] = []
    hub.bus.subscribe(seen.append)
    sink = hub.sinks_for(run.streams[0])[0]
    assert sink.live
    return hub, sink, seen


def bright(t: float) -> str:
    return "b" if T0 + 3.0 <= t < T0 + 5.0 else "a"


def test_an_event_sink_with_packet_clips_clips_the_packets_and_encodes_no_frames(media, tmp_path, monkeypatch):
    encoded: list[tuple[int, ...]] = []
    real_encode = hub_module.encode_jpeg

    def encode_jpeg(image, quality=80):  # noqa: ANN001, ANN202
        encoded.append(image.shape)
        return real_encode(image, quality)

    monkeypatch.setattr(hub_module, "encode_jpeg", encode_jpeg)
    clock = Clock()
    hub, sink, seen = event_sink(tmp_path, clock)
    assert sink.needs_display is True
    sink.demand = Demand()  # type: ignore[assignment]
    tap = PacketClips(hub.config, "cam", clock)
    sink.packet_clips = tap
    assert sink.needs_display is False
    # the record input's packets at 30 fps; the classified frames at 10 fps, "b" from 103.0 to 105.0
    for n, packet in enumerate(packets(media["plain"], clock, tap)):
        tap.submit(packet)
        if n % 3 == 0:
            sink.write(labelled(clock.t, n // 3, bright(clock.t)))
    sink.close()
    tap.close()
    hub.close()
    assert [m["type"] for m in seen] == ["start", "end"]
    event = seen[1]["event"]
    assert event["clip_url"] is not None and "clip_error" not in event
    assert tap.seconds == pytest.approx(1.5)  # pre-roll + the rule's min_duration_s
    # start 103.0 - pre-roll 1 s = 102.0, a keyframe; last seen 104.9 + post-roll 1 s = 105.9 (frame 177)
    assert [i for i, _ in decoded(hub.clip_path(event["id"]))] == list(range(60, 178))
    assert not hub.clip_writing(event["id"]) and hub.clip_error(event["id"]) is None
    assert encoded == [(120, 160, 3)]  # the snapshot only, at the classified frame's size: no clip frames
    assert len(sink.ring) == 0 and sink.demand.asked == []  # type: ignore[union-attr]


def test_a_packet_clip_whose_input_stalled_is_closed_by_the_sink_and_says_it_has_no_video(media, tmp_path):
    clock = Clock()
    hub, sink, seen = event_sink(tmp_path, clock)
    tap = PacketClips(hub.config, "cam", clock)
    sink.packet_clips = tap
    for packet in packets(media["plain"], clock, tap):  # the record input stops at 100.9
        tap.submit(packet)
        if clock.t >= T0 + 0.9:
            break
    closed_at = None
    for n in range(100):  # the classified frames go on, at 10 fps, to 110.0
        clock.t = T0 + n / 10
        sink.write(labelled(clock.t, n, bright(clock.t)))
        if closed_at is None and seen and seen[-1]["type"] == "end" and not sink._clips:
            closed_at = clock.t
    # the clip's end is 105.9; no packet came past it, so the sink closed it 3 s (PACKETS_STALLED_S) later
    assert closed_at == pytest.approx(T0 + 9.0)
    sink.close()
    tap.close()
    hub.close()
    assert [m["type"] for m in seen] == ["start", "end", "update"]
    event_id = seen[0]["event"]["id"]
    # from 102.0 on, and the ring's newest packet is older than 101.0: old footage, and nothing came after it
    assert seen[2]["event"]["clip_error"] == packet_clips.NO_VIDEO
    assert not hub.clip_path(event_id).exists() and not hub.clip_writing(event_id)
    assert hub.clip_error(event_id) is None  # not a write failure: not counted as one
