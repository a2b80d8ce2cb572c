"""The rule engine, the bus and the pre-roll ring on their own: timings, cooldown, rule changes, memory bound."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from sightline.stream.event_config import EventRule, EventsConfig
from sightline.stream.events.bus import EventBus
from sightline.stream.events.clips import ClipFrame, PrerollRing
from sightline.stream.events.engine import RuleEngine

RULE = EventRule(name="r", labels=["cat"], min_prob=0.6, min_duration_s=1.0, end_after_s=2.0, cooldown_s=5.0)


def feed(engine: RuleEngine, rules, frames):
    """frames: (t, label, prob); returns [(t, kind, label, reason)] of starts and ends."""
    out = []
    for t, label, prob in frames:
        for c in engine.observe(t, rules, label, prob):
            if c.kind != "peak":
                out.append((t, c.kind, c.track.label, c.reason, c.track.start, c.track.last_seen))
    return out


def steps(t0: float, t1: float, label: str | None, prob: float, dt: float = 0.5):
    n = round((t1 - t0) / dt)
    return [(t0 + i * dt, label, prob) for i in range(n)]


def test_start_after_min_duration_end_after_gone_time_then_cooldown() -> None:
    engine = RuleEngine("cam")
    frames = (steps(0, 2, "dog", 0.9) + steps(2, 6, "cat", 0.9) + steps(6, 10, "dog", 0.9)
              + steps(10, 12, "cat", 0.9)  # inside the cooldown (5.5 + 5 = 10.5 ... 12): one sighting at 10.5
              + steps(12, 16, "dog", 0.9) + steps(16, 19, "cat", 0.9))
    got = feed(engine, [RULE], frames)
    # first: seen from 2.0, held 1 s -> starts at 3.0 with start 2.0; last seen 5.5, gone 2 s -> ends at 7.5
    assert got[0] == (3.0, "start", "cat", "", 2.0, 3.0)
    assert got[1][:4] == (7.5, "end", "cat", "gone") and got[1][5] == 5.5
    # 10.0-10.5 falls in the cooldown (until 10.5): a candidate from 10.5, confirmed at 11.5
    assert got[2][:2] == (11.5, "start") and got[2][4] == 10.5
    assert got[3][:2] == (13.5, "end")  # last seen 11.5
    # 16.0: cooldown until 16.5, so the next starts at 16.5 and is confirmed at 17.5
    assert got[4][:2] == (17.5, "start") and got[4][4] == 16.5
    assert len(got) == 5


def test_a_gap_or_a_weak_frame_resets_a_candidate_and_short_dips_do_not_end_an_event() -> None:
    engine = RuleEngine("cam")
    frames = [(0.0, "cat", 0.9), (0.5, "cat", 0.5), (1.0, "cat", 0.9), (1.5, "cat", 0.9), (2.0, "cat", 0.9),
              (2.5, None, 0.0), (3.5, "dog", 0.9), (4.0, "cat", 0.7), (7.0, "dog", 0.9)]
    got = feed(engine, [RULE], frames)
    assert got[0][:2] == (2.0, "start") and got[0][4] == 1.0  # 0.5 was too weak: the candidate began again
    assert got[1][:2] == (7.0, "end") and got[1][5] == 4.0  # 2.5-4.0 was a dip of 1.5 s < end_after_s


def test_streams_labels_and_wildcards_select_what_a_rule_watches() -> None:
    anything = EventRule(name="any", labels=["*"], min_prob=0.0, min_duration_s=0.0, end_after_s=0.0)
    gate_only = EventRule(name="gate", streams=["gate"], labels=["cat"], min_duration_s=0.0)
    cam = RuleEngine("cam")
    got = feed(cam, [anything, gate_only], [(0.0, "cat", 0.9), (1.0, "dog", 0.9)])
    assert [(k, lab, r) for _, k, lab, r, *_ in got] == [("start", "cat", ""), ("end", "cat", "gone"),
                                                         ("start", "dog", "")]
    assert set(cam.rules()) == {"any"}
    gate = RuleEngine("gate")
    assert [k for _, k, *_ in feed(gate, [gate_only], [(0.0, "cat", 0.9)])] == ["start"]


def test_removing_a_rule_ends_its_open_event_and_closing_ends_the_rest() -> None:
    other = EventRule(name="other", labels=["cat"], min_duration_s=0.0)
    engine = RuleEngine("cam")
    engine.set_rules([RULE, other])
    feed(engine, [RULE, other], steps(0, 3, "cat", 0.9))
    ended = engine.set_rules([other])
    assert [(c.kind, c.track.rule.name, c.reason) for c in ended] == [("end", "r", "rule_removed")]
    assert [(c.kind, c.track.rule.name, c.reason) for c in engine.close()] == [("end", "other", "stream_ended")]


def test_the_preroll_ring_is_bounded_by_time_and_by_bytes() -> None:
    ring = PrerollRing(seconds=2.0, max_bytes=10_000)
    for i in range(100):
        ring.add(ClipFrame(i * 0.1, b"x" * 100))
    assert len(ring) == 21 and ring.since(9.0)[0].t == pytest.approx(9.0)
    for i in range(100, 200):
        ring.add(ClipFrame(i * 0.1, b"x" * 1000))  # 21 frames of 1000 B would be 21 kB: 10 fit
    assert ring.bytes <= 10_000 and len(ring) == 10 and ring.evicted_for_memory > 0


def test_bus_gives_each_subscriber_its_copy_and_survives_a_failing_one() -> None:
    bus = EventBus()
    got: list[dict] = []
    blocked = threading.Event()

    def broken(msg: dict) -> None:
        raise RuntimeError("subscriber bug")

    def vandal(msg: dict) -> None:
        msg["event"]["label"] = "changed"

    bus.subscribe(broken)
    bus.subscribe(vandal)
    unsubscribe = bus.subscribe(got.append)
    msg = {"type": "start", "event": {"id": "1", "stream": "cam", "rule": "r", "label": "cat", "start": 1.0,
                                      "end": None, "peak": 0.9, "snapshot_url": None, "clip_url": None}}
    bus.publish(msg)
    assert got[0]["event"]["label"] == "cat" and msg["event"]["label"] == "cat"
    assert bus.subscriber_errors == 1 and bus.published == 1
    unsubscribe()
    bus.publish(msg)
    assert len(got) == 1 and not blocked.is_set()
    with pytest.raises(ValueError):
        bus.publish({"type": "begin", "event": msg["event"]})
    with pytest.raises(ValueError):
        bus.publish({"type": "end", "event": {"id": "1"}})


def test_config_checks_rules() -> None:
    with pytest.raises(ValueError, match="duplicate rule"):
        EventsConfig(rules=[RULE, RULE])
    with pytest.raises(ValueError):
        EventRule(name="bad", streams=["no/slash"], labels=["cat"])
    with pytest.raises(ValueError):
        EventRule(name="bad", labels=[])
    assert not EventsConfig().active and EventsConfig(rules=[RULE]).active and EventsConfig(enabled=True).active


def test_history_is_read_back_from_events_jsonl_and_a_torn_line_is_skipped(tmp_path) -> None:
    from sightline.stream.events.store import EventStore

    def msg(kind: str, i: int, end: float | None) -> str:
        return json.dumps({"type": kind, "event": {
            "id": f"20261207T00000{i}Z-0000000{i}", "stream": "cam", "rule": "r", "label": "cat", "start": 100.0 + i,
            "end": end,
            "peak": 0.9, "snapshot_url": None, "clip_url": None}})

    lines = [msg("start", 1, None), msg("end", 1, 105.0), msg("start", 2, None), msg("start", 3, None)]
    (tmp_path / "events.jsonl").write_text("\n".join(lines) + '\n{"type":"start","ev')  # killed mid-line
    store = EventStore(history=2)
    assert store.load([tmp_path / "events.jsonl"]) == (4, 1)
    total, page = store.query()
    assert total == 2 and [e["id"][-1] for e in page] == ["3", "2"]  # the oldest fell out of the history
    assert page[0]["end"] is None and "stopped" in page[0]["end_reason"]
    assert store.query(since=104.0)[0] == 2 and store.query(until=102.5)[0] == 1


def test_malformed_lines_of_events_jsonl_are_skipped_and_counted_never_served(tmp_path) -> None:
    from sightline.stream.events.store import EventStore

    good = {"id": "20261207T000001Z-00000001", "stream": "cam", "rule": "r", "label": "cat", "start": 101.0,
            "end": 102.0, "peak": 0.9, "snapshot_url": None, "clip_url": None}
    bad_events = [{k: v for k, v in good.items() if k != "start"},  # made every GET /api/events a 500
                  {**good, "id": ["a", "list"]},  # stopped the service from starting
                  {**good, "id": good["id"] + "\n"}, {**good, "start": "yesterday"}, {**good, "peak": True},
                  {**good, "end": float("nan")}, {**good, "stream": None}, {**good, "clip_url": 3}]
    lines = [json.dumps({"type": "start", "event": e}) for e in [good, *bad_events]] + ["[1, 2]", "", "null"]
    (tmp_path / "events.jsonl").write_text("\n".join(lines) + "\n")
    store = EventStore(history=100)
    assert store.load([tmp_path / "events.jsonl"]) == (1, len(bad_events) + 2)  # the blank line is not counted
    assert store.query(since=0.0) == (1, [good])


def test_every_config_key_is_documented() -> None:
    docs = (Path(__file__).resolve().parents[3] / "docs" / "events.md").read_text()
    for key in EventsConfig.model_fields:
        assert f"`events.{key}`" in docs, key
    for key in EventRule.model_fields:
        assert f"rule `{key}`" in docs, key


def test_rules_are_capped_by_max_rules() -> None:
    with pytest.raises(ValueError, match=r"3 rules, over max_rules \(2\)"):
        EventsConfig(max_rules=2, rules=[EventRule(name=f"r{i}", labels=["*"]) for i in range(3)])
