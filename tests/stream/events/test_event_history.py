"""The event history (issue 25): events.jsonl rotates into event_history/events.<start>.jsonl, and the events of
every file come back after a restart, each whole even when its start and end lie in different files."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import httpx
import pytest
from sightline.stream.config import RotationConfig, RunConfig
from sightline.stream.events.store import EventLog, EventStore, history_files
from sightline.stream.pipeline.build import build_pipeline
from sightline.stream.service.app import create_app
from sightline.stream.storage.layout import event_history_dir, events_log, parse_stamped
from sightline.stream.storage.stats import StorageStats

from tests.stream.storage.test_line_log import T0, Clock
from tests.support.api_client import BASE_URL
from tests.support.models import tiny_bundle

pytestmark = pytest.mark.timeout(120)


def event(n: int, end: float | None = None) -> dict:
    return {"id": f"20261130T00532{n}Z-0000000{n}", "stream": "cam", "rule": "r", "label": "cat",
            "start": T0 + n, "end": end, "peak": 0.9, "snapshot_url": None, "clip_url": None, "end_reason": None}


def write_history(out: Path, clock: Clock, rotate: RotationConfig, messages: list[dict],
                  storage: StorageStats | None = None) -> EventLog:
    log = EventLog(out, rotate, storage, clock=clock.monotonic, wall=clock.wall)
    for msg in messages:  # a message a minute
        clock.now += 60
        log.on_message(msg)
        assert log.flush(10)
    log.close()
    return log


# start 1, end 1, start 2 | end 2, start 3  (rotated by size after three lines: event 2 spans two files)
MESSAGES = [{"type": "start", "event": event(1)}, {"type": "end", "event": event(1, T0 + 30)},
            {"type": "start", "event": event(2)}, {"type": "end", "event": event(2, T0 + 200)},
            {"type": "start", "event": event(3)}]
BY_SIZE = RotationConfig(max_mb=650 / 2**20)  # a line is about 200 bytes


def test_events_jsonl_rotates_by_size_into_the_history_and_loads_back_whole(tmp_path: Path) -> None:
    clock = Clock()
    write_history(tmp_path, clock, BY_SIZE, MESSAGES)
    files = history_files(tmp_path)
    assert [p.parent for p in files] == [event_history_dir(tmp_path), events_log(tmp_path).parent]
    assert files[-1] == events_log(tmp_path)
    rotated = parse_stamped(files[0].name)
    assert rotated is not None and rotated[:2] == ("events", T0 + 60)  # named by the time of its first line
    assert [len(p.read_text().splitlines()) for p in files] == [3, 2]
    store = EventStore(history=10)
    assert store.load(files) == (5, 0)
    total, events = store.query()
    assert total == 3 and [e["id"][-1] for e in events] == ["3", "2", "1"]
    assert events[1]["end"] == T0 + 200  # its start line in the rotated file, its end in events.jsonl: whole
    assert events[0]["end"] is None and "stopped" in events[0]["end_reason"]


def test_events_jsonl_rotates_by_age_and_a_file_left_by_an_earlier_run_moves_into_the_history(
        tmp_path: Path) -> None:
    clock = Clock()
    write_history(tmp_path, clock, RotationConfig(max_s=90), MESSAGES[:3])  # a line a minute: two lines a file
    assert [len(p.read_text().splitlines()) for p in history_files(tmp_path)] == [2, 1]
    os.utime(events_log(tmp_path), (T0 + 500, T0 + 500))
    write_history(tmp_path, clock, RotationConfig(max_s=90), MESSAGES[3:])  # a restart: events.jsonl is moved
    files = history_files(tmp_path)
    assert [len(p.read_text().splitlines()) for p in files] == [2, 1, 2]
    assert [parse_stamped(p.name)[1] for p in files[:2]] == [T0 + 60, T0 + 500]  # the moved one: by its last write
    store = EventStore(history=10)
    store.load(files)
    assert store.get(event(2)["id"])["end"] == T0 + 200 and store.query()[0] == 3


def test_the_newest_files_alone_are_read_when_they_hold_the_history(tmp_path: Path) -> None:
    clock = Clock()
    write_history(tmp_path, clock, BY_SIZE, MESSAGES)
    store = EventStore(history=1)
    loaded, _ = store.load(history_files(tmp_path))
    assert loaded == 2  # events.jsonl named event 3 (and 2): the rotated file was not needed
    assert [e["id"][-1] for e in store.query()[1]] == ["3"]


def test_a_failed_write_of_the_history_is_counted_and_reported_never_silent(tmp_path: Path) -> None:
    storage = StorageStats()
    log = EventLog(tmp_path, BY_SIZE, storage)
    events_log(tmp_path).mkdir()  # events.jsonl cannot be created: every line fails until it can
    log.on_message(MESSAGES[0])
    assert log.flush(10)
    figures = storage.kinds["event_history"]
    assert log.lost == 1 and figures.write_errors == 1 and figures.failing is not None
    events_log(tmp_path).rmdir()
    log.on_message(MESSAGES[1])
    assert log.flush(10)
    log.close()
    assert figures.failing is None and log.lost == 1
    assert [json.loads(x)["type"] for x in events_log(tmp_path).read_text().splitlines()] == ["end"]


async def test_get_api_events_after_a_restart_returns_the_events_of_the_rotated_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_history(out, Clock(), BY_SIZE, MESSAGES)  # the earlier run
    config = RunConfig.model_validate({
        "output_dir": out, "media_root": tmp_path, "model": {"source": str(tiny_bundle().save(tmp_path / "m.pt")),
                                                             "device": "cpu"},
        "events": {"enabled": True}, "storage": {"rotate": {"max_mb": BY_SIZE.max_mb}}})
    pipeline = await asyncio.to_thread(build_pipeline, config)  # the service as `sightline run` builds it
    assert pipeline.events.storage is pipeline.storage  # history write failures show with the others
    app = create_app(pipeline, config, pipeline.metrics)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as client:
        listed = (await client.get("/api/events")).json()
        two = (await client.get(f"/api/events/{event(2)['id']}")).json()
    assert listed["total"] == 3 and [e["id"] for e in listed["events"]] == [event(n)["id"] for n in (3, 2, 1)]
    assert two["end"] == T0 + 200
