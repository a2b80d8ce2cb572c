"""Issue 11 row 15: lost frames and corrupt packets are counted in status and metrics, a cut file says so,
and a JSONL log holds whole lines only, also when the disk fills up."""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import generate_latest
from sightline import synthetic_media as media
from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.frames import Frame, Result
from sightline.stream.outputs.prediction_log import JsonlSink
from sightline.stream.outputs.sinks import Labelled
from sightline.stream.service.status import stream_status
from sightline.stream.sources.video_source import GapCounter
from sightline.stream.storage.line_log import LineLog
from sightline.stream.storage.stats import StorageStats

from tests.faults.support import jsonl, run
from tests.support.models import tiny_classifier

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def classifier():
    return tiny_classifier()


@pytest.fixture(scope="module")
def ts_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 frames (12 s at 25 fps) of MPEG-TS, a keyframe every second."""
    return media.make_test_clip(tmp_path_factory.mktemp("ts") / "clip.ts", frames=300, fps=25, size=(160, 120))


def metric(pipeline, name: str, **labels: str) -> float | None:
    return pipeline.metrics.registry.get_sample_value(name, labels)


def test_a_cut_transport_stream_fails_as_truncated_and_keeps_what_came_before(classifier, tmp_path: Path,
                                                                                ts_clip: Path) -> None:
    size = ts_clip.stat().st_size  # a multiple of 188: the encoder's exact size varies by machine
    keep = int(size * 0.6) // 188 * 188 + 94  # about 60% in, half-way through a transport packet
    cut = media.truncate_file(ts_clip, tmp_path / "cut.ts", keep / size)
    assert cut.stat().st_size % 188  # cut inside a transport packet
    p = run(classifier, tmp_path, [{"name": "cut", "url": str(cut), "mode": "fast"}])
    status = stream_status(p.get("cut"))
    assert status["state"] == "failed", status
    assert "cut.ts is truncated" in status["error"] and "transport packet" in status["error"]
    assert 100 < status["frames_decoded"] < 300
    assert status["frames_inferred"] == status["frames_decoded"] == len(jsonl(tmp_path / "out" / "cut.jsonl"))
    assert p.last_exit_code == 1


def test_garbage_over_a_transport_stream_reports_the_frames_it_cost(classifier, tmp_path: Path, ts_clip: Path) -> None:
    noisy = media.corrupt_file(ts_clip, tmp_path / "noisy.ts", at=0.4, length=60_000)
    p = run(classifier, tmp_path, [{"name": "noisy", "url": str(noisy), "mode": "fast"}])
    status = stream_status(p.get("noisy"))
    assert status["state"] == "ended", status
    lost = status["frames_lost"]["source_gap"]
    assert lost > 20 and f"lost {lost} frames" in status["error"]
    assert abs(status["frames_decoded"] + lost - 300) <= 3  # every frame is accounted for, decoded or lost
    assert metric(p, "sightline_frames_lost_total", stream="noisy", reason="source_gap") == lost


def test_garbage_inserted_into_a_transport_stream_is_counted_as_corrupt_packets(classifier, tmp_path: Path,
                                                                                ts_clip: Path) -> None:
    data = ts_clip.read_bytes()
    at = (len(data) // 2 // 188) * 188
    garbage = np.random.default_rng(0).integers(0, 256, 60_000, dtype=np.uint8).tobytes()
    noisy = tmp_path / "spliced.ts"
    noisy.write_bytes(data[:at] + garbage + data[at:])
    p = run(classifier, tmp_path, [{"name": "spliced", "url": str(noisy), "mode": "fast"}])
    status = stream_status(p.get("spliced"))
    assert status["state"] == "ended", status
    assert status["corrupt_packets"] >= 1 and "flagged corrupt" in status["error"]
    assert metric(p, "sightline_corrupt_packets_total", stream="spliced") == status["corrupt_packets"]
    assert status["frames_decoded"] + status["frames_lost"].get("source_gap", 0) >= 297


def test_packets_the_decoder_rejects_are_skipped_and_counted(classifier, tmp_path: Path) -> None:
    whole = media.make_test_clip(tmp_path / "whole.mp4", frames=75, size=(160, 120), gop=10)
    bad = media.corrupt_file(whole, tmp_path / "noisy.mp4", at=0.4, length=1500)
    p = run(classifier, tmp_path, [{"name": "noisy", "url": str(bad), "mode": "fast"}])
    status = stream_status(p.get("noisy"))
    assert status["state"] == "ended"
    assert status["corrupt_packets"] >= 1
    assert f"skipped {status['corrupt_packets']} corrupt packets" in status["error"]
    assert metric(p, "sightline_corrupt_packets_total", stream="noisy") == status["corrupt_packets"]


def test_a_clean_file_reports_no_loss(classifier, tmp_path: Path, ts_clip: Path) -> None:
    p = run(classifier, tmp_path, [{"name": "clean", "url": str(ts_clip), "mode": "fast"}])
    status = stream_status(p.get("clean"))
    assert (status["state"], status["error"], status["corrupt_packets"]) == ("ended", None, 0)
    assert status["frames_lost"] == {} and status["records_lost"] == {}
    assert "sightline_corrupt_packets_total" in generate_latest(p.metrics.registry).decode()


@pytest.mark.parametrize(("times", "lost", "resets"), [
    ([0.0, 0.04, 0.08, 0.12], 0, 0),
    ([0.0, 0.04, 0.2, 0.24], 3, 0),  # 0.04 -> 0.2: three frames missing
    ([0.0, 0.04, 0.0, 0.04], 0, 1),  # a restart is not a loss
    ([0.0, 0.04, 100.0, 100.04], 0, 1),  # neither is a jump of minutes (a spliced clock)
    ([0.0, 0.05, 0.1], 0, 0),  # jitter within 1.5 periods
])
def test_gap_counter(times: list[float], lost: int, resets: int) -> None:
    gaps = GapCounter(0.04)
    for t in times:
        gaps.see(t)
    assert (gaps.lost, gaps.resets) == (lost, resets)


def test_a_gap_counter_without_a_nominal_rate_counts_nothing() -> None:
    gaps = GapCounter(0.0)
    assert [gaps.see(t) for t in (0.0, 1.0, 5.0)] == [0, 0, 0] and gaps.lost == 0


# -- JSONL: whole lines or nothing ------------------------------------------------------------------


class DiskFillsUp(io.FileIO):
    """A real file that accepts ``room`` more bytes, then writes part of a chunk and fails with ENOSPC."""

    def __init__(self, path: Path, room: int) -> None:
        super().__init__(path, "x")
        self.room = room

    def write(self, data) -> int:  # type: ignore[override]
        data = bytes(data)
        if len(data) <= self.room:
            self.room -= len(data)
            return super().write(data)
        if self.room > 0:  # the kernel's short write: what fitted went to the file
            written = super().write(data[: self.room])
            self.room = 0
            return written
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def item(seq: int) -> Labelled:
    from sightline.model.classifier import Prediction

    frame = Frame("cam", seq, seq, None, 0.0, 0.0, np.zeros((4, 4, 3), np.uint8))
    top = (Prediction(0, "class_a", 0.9),)
    return Labelled(Result(frame, np.array([0.9, 0.1]), top, None), top, None, 25.0, None)


def test_a_jsonl_write_that_fails_part_way_is_cut_back_to_the_last_whole_line(tmp_path: Path) -> None:
    files: list[DiskFillsUp] = []
    lost: list[int] = []

    def opener(path: Path) -> DiskFillsUp:
        files.append(DiskFillsUp(path, room=500))
        return files[0]

    storage = StorageStats()
    sink = JsonlSink(LineLog("predictions", lambda _: tmp_path / "cam.jsonl", storage=storage, on_lost=lost.append,
                             opener=opener, flush_s=0.0), "cam")
    written = failures = 0
    for seq in range(12):
        try:
            sink.write(item(seq))
            written += 1
        except OSError as exc:
            failures += 1
            assert "line(s) not written" in str(exc) and "No space left" in str(exc)
        if seq == 7:
            files[0].room = 10**6  # space freed: the log resumes
    sink.close()
    text = (tmp_path / "cam.jsonl").read_text()
    assert text.endswith("\n")
    seqs = [json.loads(line)["seq"] for line in text.splitlines()]  # every line parses: none torn
    assert failures >= 1 and sink.lines.lost_lines == sum(lost) == failures
    assert storage.kinds["predictions"].write_errors == failures
    assert storage.kinds["predictions"].failing is None  # cleared by the writes after the space was freed
    assert len(seqs) + sink.lines.lost_lines == 12
    assert seqs == sorted(seqs) and seqs[-1] == 11


def test_a_many_line_write_that_fails_part_way_keeps_the_lines_that_fitted(tmp_path: Path) -> None:
    files: list[DiskFillsUp] = []
    lost: list[int] = []

    def opener(path: Path) -> DiskFillsUp:
        files.append(DiskFillsUp(path, room=700))
        return files[0]

    sink = JsonlSink(LineLog("predictions", lambda _: tmp_path / "cam.jsonl", on_lost=lost.append, opener=opener,
                             flush_s=3600.0), "cam")
    for seq in range(12):
        sink.write(item(seq))  # all pending: one write at close
    with pytest.raises(OSError, match="line\\(s\\) not written"):
        sink.close()
    text = (tmp_path / "cam.jsonl").read_text()
    seqs = [json.loads(line)["seq"] for line in text.splitlines()]  # none torn
    assert text.endswith("\n") and len(text) <= 700
    assert seqs == list(range(len(seqs))) and len(seqs) >= 1  # the lines that fitted stayed
    assert sink.lines.lost_lines == sum(lost) == 12 - len(seqs)


def test_jsonl_never_overwrites_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "cam.jsonl").write_text("earlier\n")
    config = RunConfig(output_dir=tmp_path, media_root=tmp_path)
    sink = JsonlSink.open(config, StreamConfig(name="cam", url=str(tmp_path / "cam.mp4")), StorageStats())
    sink.write(item(0))
    sink.close()
    assert [p.read_text() for p in tmp_path.glob("cam.*.jsonl")] == ["earlier\n"]
    assert json.loads((tmp_path / "cam.jsonl").read_text())["seq"] == 0


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 64 KiB tmpfs (needs root; skipped elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()[:100]}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_leaves_whole_jsonl_lines_and_counts_the_lost_ones(classifier, tmp_path: Path,
                                                                        tiny_disk: Path) -> None:
    clip = media.make_test_clip(tmp_path / "long.mp4", frames=400, fps=25, size=(64, 48), counter=False)
    p = run(classifier, tmp_path, [{"name": "cam", "url": str(clip), "mode": "fast"}], out=tiny_disk)
    status = stream_status(p.get("cam"))
    assert status["frames_inferred"] == 400
    lines = (tiny_disk / "cam.jsonl").read_bytes()
    assert lines.endswith(b"\n")
    records = [json.loads(line) for line in lines.splitlines()]  # none torn
    lost = status["records_lost"]["jsonl"]
    assert lost > 0 and len(records) + lost == 400
    assert status["sink_errors"]["jsonl"] >= 1
    assert metric(p, "sightline_records_lost_total", stream="cam", sink="jsonl") == lost
