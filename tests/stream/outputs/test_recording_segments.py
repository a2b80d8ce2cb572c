"""Recordings in segments, both modes (docs/recordings.md): passthrough copies the camera's packets bit for bit
and decodes no more than the stream needs; segments start at keyframes, play from their first frame, last about
segment_s; a file without loop keeps one file; a full disk costs a segment, not the stream."""

from __future__ import annotations

import errno
import itertools
import shutil
import subprocess
import threading
from pathlib import Path

import av
import pytest
from sightline.stream.outputs import passthrough
from sightline.stream.outputs.passthrough import PassthroughWriter
from sightline.stream.outputs.segments import SegmentPlan
from sightline.stream.service.status import stream_status
from sightline.stream.stats import StreamStats
from sightline.stream.storage.layout import parse_stamped
from sightline.stream.storage.stats import StorageStats

from tests.faults.support import run
from tests.support.models import tiny_classifier
from tests.support.recordings import segments

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")]

FPS = 30


@pytest.fixture(scope="module")
def classifier():
    return tiny_classifier()


def clip(folder: Path, seconds: float, gop: int, bframes: int = 2) -> Path:
    """H.264 with B-frames (decode order differs from presentation order) and a fixed GOP."""
    path = folder / f"clip-{seconds}-{gop}.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=160x120:rate={FPS}",
                    "-t", str(seconds), "-c:v", "libx264", "-g", str(gop), "-keyint_min", str(gop),
                    "-sc_threshold", "0", "-bf", str(bframes), "-pix_fmt", "yuv420p", str(path)],
                   check=True, timeout=60)
    return path


def packets(path: Path) -> list[tuple[bytes, bool]]:
    with av.open(str(path)) as container:
        return [(bytes(p), p.is_keyframe) for p in container.demux(video=0) if p.size]


def frame_times(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        return [float(f.time) for f in container.decode(video=0)]


def test_passthrough_copies_every_packet_and_decodes_only_the_keyframes(classifier, tmp_path: Path) -> None:
    source = clip(tmp_path, 6.0, gop=FPS)
    p = run(classifier, tmp_path, [{"name": "cam", "url": str(source), "mode": "fast", "record": True,
                                    "infer_fps": 1}])
    status = stream_status(p.get("cam"))
    assert status["decode"]["mode"] == "keyframes"
    assert status["frames_decoded"] == 6  # one keyframe a second: the 174 frames between were never decoded
    out = tmp_path / "out"
    assert packets(out / "cam.mp4") == packets(source)  # the camera's bytes, every packet
    assert len(frame_times(out / "cam.mp4")) == 6 * FPS
    assert not (out / "recordings").exists()  # a file without loop: one file at the plain name


def test_a_looping_stream_records_segments_cut_at_keyframes(classifier, tmp_path: Path) -> None:
    source = clip(tmp_path, 2.0, gop=FPS // 2)  # a keyframe every 0.5 s
    run(classifier, tmp_path, [{"name": "cam", "url": str(source), "mode": "fast", "loop": True, "record": True,
                                "infer_fps": 1}], duration=2.0, storage={"recordings": {"segment_s": 5}})
    files = segments(tmp_path / "out", "cam")
    assert len(files) >= 3, files
    one_loop = packets(source)
    recorded = [packets(f) for f in files]
    # nothing lost or changed: the segments together are the clip's packets, loop after loop
    joined = [pkt for segment in recorded for pkt in segment]
    assert joined == list(itertools.islice(itertools.cycle(one_loop), len(joined)))
    starts = [parse_stamped(f.name)[1] for f in files]
    for path, segment, start, following in zip(files, recorded, starts, starts[1:], strict=False):
        assert segment[0][1], f"{path.name} does not start at a keyframe"
        times = frame_times(path)  # every frame decodes, from the first one
        assert len(times) == len(segment)
        length = (max(times) - min(times)) + 1 / FPS
        assert 5.0 <= length <= 5.5 + 1e-6, (path.name, length)  # at the first keyframe after 5 s
        assert 4 <= following - start <= 6  # a fast replay is named by the stream time recorded before it


def test_annotated_segments_start_with_a_keyframe_and_last_segment_s(classifier, tmp_path: Path) -> None:
    source = clip(tmp_path, 1.0, gop=FPS)
    run(classifier, tmp_path, [{"name": "cam", "url": str(source), "mode": "fast", "loop": True,
                                "record": "annotated"}], duration=2.0, storage={"recordings": {"segment_s": 1}})
    files = segments(tmp_path / "out", "cam")
    assert len(files) >= 2, files
    for path in files[:-1]:
        with av.open(str(path)) as container:
            frames = list(container.decode(video=0))
        assert frames[0].key_frame
        length = float(frames[-1].time - frames[0].time) + 1 / FPS
        assert 1.0 <= length <= 1.0 + 1.5 / FPS, (path.name, length)
    assert not (tmp_path / "out" / "cam.mp4").exists()


def test_an_annotated_file_without_loop_keeps_one_file(classifier, tmp_path: Path) -> None:
    source = clip(tmp_path, 1.0, gop=FPS)
    for _ in range(2):
        run(classifier, tmp_path, [{"name": "cam", "url": str(source), "mode": "fast", "record": "annotated"}])
    out = tmp_path / "out"
    assert len(frame_times(out / "cam.mp4")) == FPS
    assert len(list(out.glob("cam.*.mp4"))) == 1  # the first run's, moved aside
    assert not (out / "recordings").exists()


class FullDisk:
    """An output container whose writes fail with ENOSPC for the chosen packets (by their bytes: the writer's
    thread meets them in order, whatever the timing)."""

    def __init__(self, real: av.container.OutputContainer, failing: set[bytes]) -> None:
        self.real = real
        self.failing = failing

    def add_stream_from_template(self, template):
        return self.real.add_stream_from_template(template)

    def mux(self, packet: av.Packet) -> None:
        if bytes(packet) in self.failing:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.real.mux(packet)

    def close(self) -> None:
        self.real.close()


def test_a_full_disk_costs_the_segment_and_writing_resumes_at_a_keyframe(tmp_path: Path, monkeypatch) -> None:
    source = clip(tmp_path, 4.0, gop=FPS // 2)
    container = av.open(str(source))
    stream = container.streams.video[0]
    read = [p for p in container.demux(stream) if p.size]
    failing = {bytes(p) for p in read[40:70]}  # between 1.3 and 2.3 s: two keyframes meet a full disk
    real_open = av.open
    monkeypatch.setattr(passthrough.av, "open", lambda *a, **k: FullDisk(real_open(*a, **k), failing))
    storage, stats = StorageStats(), StreamStats("cam")
    ticks = itertools.count(step=2.0)  # every retry is allowed: RETRY_S is checked on its own below
    plan = SegmentPlan(tmp_path / "out", "cam", 60.0, live=False, storage=storage, monotonic=lambda: next(ticks))
    writer = PassthroughWriter(plan, stats, live=False, stop=threading.Event())
    writer.start()
    writer.begin(stream)
    for packet in read:
        writer.submit(packet)
    writer.close()
    assert writer.join(30)
    container.close()
    monkeypatch.undo()
    files = segments(tmp_path / "out", "cam")
    assert len(files) == 2, files  # the segment the disk cut short, and the one after space returned
    first, second = (packets(f) for f in files)
    assert first == [(bytes(p), p.is_keyframe) for p in read[:40]]  # playable up to the failure
    resumed = next(i for i in range(70, len(read)) if read[i].is_keyframe)
    assert second == [(bytes(p), p.is_keyframe) for p in read[resumed:]]
    assert all(len(frame_times(f)) == len(packets(f)) for f in files)
    figures = storage.kinds["recordings"]
    assert figures.write_errors >= 2 and figures.failing is None  # counted, and cleared by the next good write
    assert not any(storage.is_open(f) for f in files)
    assert stats.sink_errors["recorder"] == figures.write_errors


def test_after_a_failed_write_the_next_file_waits_a_second(tmp_path: Path) -> None:
    now = [100.0]
    plan = SegmentPlan(tmp_path, "cam", 60.0, live=True, storage=StorageStats(), monotonic=lambda: now[0])
    plan.failed(OSError(errno.ENOSPC, "No space left on device"))
    assert plan.next_path(0.0, 1_800_000_000.0) is None
    now[0] += 1.0
    path = plan.next_path(0.0, 1_800_000_000.0)
    assert path is not None and path.name == "cam.20270115T080000Z.mp4"  # a live stream: the arrival's wall time
    assert path.parent == tmp_path / "recordings" / "cam" / "2027-01-15"
