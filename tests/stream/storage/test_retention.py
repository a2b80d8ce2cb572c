"""Retention (stream/storage/retention.py) over files made here, with a fake wall clock and a fake disk."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest
from sightline.stream.config import RetentionConfig
from sightline.stream.storage.layout import stamped_name
from sightline.stream.storage.retention import DAY_S, GB, Retention, RetentionThread
from sightline.stream.storage.stats import StorageStats

T0 = 1_800_000_000.0  # a wall time (2027-01-15): every file is written relative to it
KB = 1000


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def put(root: Path, rel: str, mtime: float, size: int = KB) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (mtime, mtime))
    return path


def segment(root: Path, stream: str, start: float, length_s: float = 60.0, size: int = KB) -> Path:
    day = time.strftime("%Y-%m-%d", time.gmtime(start))
    return put(root, f"recordings/{stream}/{day}/{stamped_name(stream, start, '.mp4')}", start + length_s, size)


def retention(root: Path, clock: Clock, free: int = 100 * GB, footage=tuple, **config: object) -> Retention:
    limits = {"recordings": {"max_age_days": 7}, "events": {"max_age_days": 30},
              "predictions": {"max_age_days": 7}, "event_history": {"max_age_days": 90}, "min_free_gb": 0}
    return Retention(root, RetentionConfig.model_validate({**limits, **config}), StorageStats(clock=clock),
                     footage, clock, disk=lambda _: (free, 200 * GB))


def names(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_each_kind_is_kept_for_its_own_days(tmp_path: Path) -> None:
    clock = Clock()
    old, new = T0 - 10 * DAY_S, T0 - 1 * DAY_S
    files = {"recording": segment(tmp_path, "cam", old), "one_off": put(tmp_path, "cam.mp4", old),
             "moved_aside": put(tmp_path, "cam.20261201T000000Z.mp4", old),
             "clip": put(tmp_path, "events/20270105T000000Z-1a2b3c4d.mp4", old),
             "snapshot": put(tmp_path, "events/20270105T000000Z-1a2b3c4d.jpg", old),
             "log": put(tmp_path, "predictions/cam/cam.20270105T000000Z.jsonl", old),
             "one_off_log": put(tmp_path, "cam.jsonl", old),
             "history": put(tmp_path, "event_history/events.20270105T000000Z.jsonl", old),
             "active_history": put(tmp_path, "events.jsonl", old - 100 * DAY_S),
             "fresh": segment(tmp_path, "cam", new), "other": put(tmp_path, "notes.txt", old)}
    retention(tmp_path, clock).run_pass()
    gone = {name for name, path in files.items() if not path.exists()}
    assert gone == {"recording", "one_off", "moved_aside", "log", "one_off_log"}  # 7 days; clips 30, history 90
    clock.now += 25 * DAY_S
    retention(tmp_path, clock).run_pass()
    assert {name for name, path in files.items() if path.exists()} == {"history", "active_history", "other"}
    clock.now += 60 * DAY_S
    retention(tmp_path, clock).run_pass()
    assert {name for name, path in files.items() if path.exists()} == {"active_history", "other"}  # never events.jsonl


def test_event_footage_outlives_plain_recordings(tmp_path: Path) -> None:
    """Segments of a minute from T0; an event from T0+200 s to T0+230 s with 3 s of pre- and post-roll: the
    segments that hold [197, 233] stay for the events' 30 days, the others go after the recordings' 7."""
    segments = [segment(tmp_path, "cam", T0 + 60 * i) for i in range(6)]
    other = [segment(tmp_path, "yard", T0 + 60 * i) for i in range(6)]
    events = [("cam", T0 + 200 - 3, T0 + 230 + 3)]
    clock = Clock(T0 + 8 * DAY_S)
    retention(tmp_path, clock, footage=lambda: events).run_pass()
    assert [s.exists() for s in segments] == [False, False, False, True, False, False]  # 180-240 s holds it
    assert not any(s.exists() for s in other)  # the event is cam's, not yard's
    clock.now = T0 + 31 * DAY_S
    retention(tmp_path, clock, footage=lambda: events).run_pass()
    assert not any(s.exists() for s in segments)


def test_an_event_across_two_segments_keeps_both(tmp_path: Path) -> None:
    segments = [segment(tmp_path, "cam", T0 + 60 * i) for i in range(4)]
    retention(tmp_path, Clock(T0 + 8 * DAY_S), footage=lambda: [("cam", T0 + 110, T0 + 130)]).run_pass()
    assert [s.exists() for s in segments] == [False, True, True, False]


def test_size_budget_deletes_oldest_first_down_to_within_one_file(tmp_path: Path) -> None:
    logs = [put(tmp_path, f"predictions/cam/cam.{i:02d}.jsonl", T0 - 1000 + i, size=10 * KB) for i in range(20)]
    stats_retention = retention(tmp_path, Clock(), predictions={"max_gb": 55 * KB / GB})
    stats_retention.run_pass()
    assert [p.exists() for p in logs] == [False] * 15 + [True] * 5  # the newest 50 KB of a 55 KB budget
    figures = stats_retention.stats.kinds["predictions"]
    assert (figures.bytes, figures.files, figures.deleted_files, figures.freed_bytes) == (50 * KB, 5, 15, 150 * KB)
    assert stats_retention.stats.last_pass.behind is None


def test_within_recordings_plain_footage_goes_before_event_footage(tmp_path: Path) -> None:
    segments = [segment(tmp_path, "cam", T0 + 60 * i, size=10 * KB) for i in range(5)]
    budget = {"max_gb": 20 * KB / GB}
    retention(tmp_path, Clock(T0 + 3600), footage=lambda: [("cam", T0 + 10, T0 + 20)], recordings=budget).run_pass()
    assert [s.exists() for s in segments] == [True, False, False, False, True]  # the event's, then the newest


def test_free_space_floor_takes_recordings_first_then_predictions(tmp_path: Path) -> None:
    recordings = [segment(tmp_path, "cam", T0 - 3600 + 60 * i, size=100 * KB) for i in range(3)]
    logs = [put(tmp_path, f"predictions/cam/cam.{i}.jsonl", T0 - 7200 + i, size=100 * KB) for i in range(3)]
    clip = put(tmp_path, "events/20270115T000000Z-1a2b3c4d.mp4", T0 - 9000, size=100 * KB)
    run = retention(tmp_path, Clock(), free=1000 * KB, min_free_gb=1400 * KB / GB)  # 400 KB short
    run.run_pass()
    assert not any(r.exists() for r in recordings)  # the recordings first, though the logs are older
    assert [p.exists() for p in logs] == [False, True, True]
    assert clip.exists()
    assert run.stats.last_pass.behind is None
    assert run.stats.min_free_bytes == 1400 * KB


def test_free_space_floor_out_of_reach_is_behind(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    segment(tmp_path, "cam", T0 - 3600, size=100 * KB)
    run = retention(tmp_path, Clock(), free=100 * KB, min_free_gb=1.0)
    with caplog.at_level(logging.INFO, logger="sightline.stream.storage.retention"):
        run.run_pass()
    assert names(tmp_path) == set()
    assert "under the 1 GB floor" in run.stats.last_pass.behind
    assert run.stats.problems() == [f"retention behind: {run.stats.last_pass.behind}"]
    assert [r.levelname for r in caplog.records] == ["INFO", "WARNING"]  # what it deleted; that it is behind
    assert "recordings 1" in caplog.records[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sightline.stream.storage.retention"):
        run.run_pass()
    assert caplog.records == [] and run.stats.last_pass.behind is not None  # said once a spell; status keeps it


def test_open_files_and_the_active_event_log_are_never_deleted(tmp_path: Path) -> None:
    old = T0 - 100 * DAY_S
    writing = segment(tmp_path, "cam", old, size=10 * KB)
    done = segment(tmp_path, "cam", old - 60, size=10 * KB)
    active = put(tmp_path, "events.jsonl", old, size=10 * KB)
    run = retention(tmp_path, Clock(), free=0, min_free_gb=1.0, recordings={"max_gb": 1 * KB / GB})
    run.stats.opened(writing)
    run.run_pass()
    assert writing.exists() and active.exists() and not done.exists()
    behind = run.stats.last_pass.behind
    assert "recordings hold 0.00 GB, over their 1e-06 GB" in behind and "under the 1 GB floor" in behind
    run.stats.closed(writing)
    run.run_pass()
    assert not writing.exists() and active.exists()


def test_a_file_that_vanished_is_counted_not_raised(tmp_path: Path) -> None:
    old = segment(tmp_path, "cam", T0 - 10 * DAY_S)
    kept = segment(tmp_path, "cam", T0 - 9 * DAY_S)

    def footage() -> list:  # called after the scan: someone else deletes the file meanwhile
        old.unlink()
        return []

    run = retention(tmp_path, Clock(), footage=footage)
    run.run_pass()
    assert not kept.exists()
    assert run.stats.last_pass.errors == 1
    assert run.stats.kinds["recordings"].deleted_files == 1


def test_emptied_day_folders_go_but_today_stays(tmp_path: Path) -> None:
    old = segment(tmp_path, "cam", T0 - 10 * DAY_S)
    today = segment(tmp_path, "cam", T0 - 60, size=10 * KB)
    retention(tmp_path, Clock(), recordings={"max_gb": 1 * KB / GB}).run_pass()
    assert not old.parent.exists() and today.parent.exists() and not today.exists()


def test_the_pass_fills_the_figures(tmp_path: Path) -> None:
    segment(tmp_path, "cam", T0 - 60, size=3 * KB)
    put(tmp_path, "events/20270115T000000Z-1a2b3c4d.jpg", T0, size=2 * KB)
    put(tmp_path, "events.jsonl", T0, size=1 * KB)
    run = retention(tmp_path, Clock(), free=7 * GB)
    run.run_pass()
    figures = run.stats.figures()
    assert figures["free_bytes"] == 7 * GB and figures["volume_bytes"] == 200 * GB
    assert {k: (v["bytes"], v["files"]) for k, v in figures["kinds"].items()} == {
        "recordings": (3 * KB, 1), "events": (2 * KB, 1), "predictions": (0, 0), "event_history": (1 * KB, 1)}
    assert figures["retention"]["passes"] == 1 and figures["retention"]["finished_at"] == T0


def test_the_thread_runs_a_pass_at_once_and_stops_in_bounded_time(tmp_path: Path) -> None:
    segment(tmp_path, "cam", T0 - 10 * DAY_S)
    run = retention(tmp_path, Clock())
    thread = RetentionThread(run, interval_s=3600)
    thread.start()
    deadline = time.monotonic() + 10
    while run.stats.last_pass.passes == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert run.stats.last_pass.passes == 1 and names(tmp_path) == set()
    started = time.monotonic()
    thread.stop(timeout=5)
    assert time.monotonic() - started < 1.0
    assert not any(t.name == "retention" for t in threading.enumerate())


def test_a_stopped_pass_ends_without_reporting(tmp_path: Path) -> None:
    segment(tmp_path, "cam", T0 - 10 * DAY_S)
    run = retention(tmp_path, Clock())
    stop = threading.Event()
    stop.set()
    run.run_pass(stop)
    assert run.stats.last_pass.passes == 0 and names(tmp_path) != set()
