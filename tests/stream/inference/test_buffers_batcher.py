"""Bounded queues keep their named policy; the batcher closes batches on size or age and is fair."""

from __future__ import annotations

import threading
from fractions import Fraction

import numpy as np
from sightline.stream.buffers import BoundedQueue
from sightline.stream.frames import Frame
from sightline.stream.inference.batcher import Batcher
from sightline.stream.sources.video_source import Throttle, backoff_delay

IMG = np.zeros((8, 8, 3), np.uint8)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def frame(stream: str, seq: int, at: float, infer: bool = True) -> Frame:
    return Frame(stream, seq, seq, Fraction(1, 25), at, at, IMG, None, infer)


def test_latest_policy_keeps_newest_and_counts_drops() -> None:
    dropped: list[int] = []
    q: BoundedQueue[int] = BoundedQueue(3, "latest", on_drop=dropped.append)
    for i in range(10):
        assert q.put(i)
    assert [q.get_nowait() for _ in range(3)] == [7, 8, 9]
    assert dropped == [0, 1, 2, 3, 4, 5, 6]
    assert q.dropped == 7


def test_block_policy_loses_nothing_and_waits_for_space() -> None:
    q: BoundedQueue[int] = BoundedQueue(2, "block")
    assert q.put(0) and q.put(1)
    assert not q.put(2, timeout=0.05)  # full: the producer waits instead of dropping
    got: list[int] = []

    def consume() -> None:
        for _ in range(12):
            item = q.get(timeout=2)
            if item is not None:
                got.append(item)

    t = threading.Thread(target=consume)
    t.start()
    for i in range(2, 12):
        assert q.put(i, timeout=2)
    t.join(5)
    assert got == list(range(12))
    assert q.dropped == 0


def test_closed_queue_drains_then_reports_exhausted() -> None:
    q: BoundedQueue[int] = BoundedQueue(4, "block")
    q.put(1)
    q.close()
    assert not q.put(2)
    assert not q.exhausted
    assert q.get(timeout=0) == 1
    assert q.exhausted


def test_batch_closes_when_full_without_waiting() -> None:
    clock = FakeClock()
    b = Batcher(max_batch=4, max_wait_s=10.0, clock=clock)
    q = b.add_stream("a", 10, "block")
    for i in range(6):
        q.put(frame("a", i, clock.now))
    batch = b.next_batch(timeout=0)
    assert [f.seq for f in batch.frames] == [0, 1, 2, 3]


def test_batch_closes_when_oldest_frame_is_older_than_max_wait() -> None:
    clock = FakeClock()
    b = Batcher(max_batch=32, max_wait_s=0.010, clock=clock)
    q = b.add_stream("a", 10, "block")
    q.put(frame("a", 0, clock.now - 0.011))  # decoded 11 ms ago: already due
    q.put(frame("a", 1, clock.now))
    batch = b.next_batch(timeout=0)
    assert [f.seq for f in batch.frames] == [0, 1]


def test_batch_waits_for_company_until_max_wait() -> None:
    clock = FakeClock()
    b = Batcher(max_batch=8, max_wait_s=0.5, clock=clock)
    q = b.add_stream("a", 10, "block")
    q.put(frame("a", 0, clock.now))

    def later() -> None:
        q.put(frame("a", 1, clock.now))
        clock.now += 0.6  # time passes: the batch is due
        b.wake()

    timer = threading.Timer(0.05, later)
    timer.start()
    batch = b.next_batch(timeout=1)
    timer.join()
    assert [f.seq for f in batch.frames] == [0, 1]


def test_batcher_is_fair_when_one_stream_floods() -> None:
    clock = FakeClock()
    b = Batcher(max_batch=8, max_wait_s=0.0, clock=clock)
    flood = b.add_stream("flood", 1000, "block")
    quiet = [b.add_stream(f"q{i}", 10, "block") for i in range(3)]
    for i in range(500):
        flood.put(frame("flood", i, clock.now))
    for n, q in enumerate(quiet):
        for i in range(2):
            q.put(frame(f"q{n}", i, clock.now))
    first = b.next_batch(timeout=0).frames
    second = b.next_batch(timeout=0).frames
    served = [f.stream_id for f in first + second]
    for n in range(3):
        assert served.count(f"q{n}") == 2  # every quiet frame within two batches
    assert served.count("flood") == 16 - 6
    assert len(first) == len(second) == 8


def test_frames_skipped_by_infer_fps_ride_along_without_taking_slots() -> None:
    clock = FakeClock()
    b = Batcher(max_batch=2, max_wait_s=0.0, clock=clock)
    q = b.add_stream("a", 20, "block")
    for i in range(6):
        q.put(frame("a", i, clock.now, infer=i % 3 == 0))
    frames = b.next_batch(timeout=0).frames
    assert [f.seq for f in frames] == [0, 1, 2, 3]
    assert sum(f.infer for f in frames) == 2


def test_ended_stream_is_reported_once_after_its_frames() -> None:
    clock = FakeClock()
    b = Batcher(max_batch=8, max_wait_s=5.0, clock=clock)
    q = b.add_stream("a", 10, "block")
    q.put(frame("a", 0, clock.now))
    q.close()
    batch = b.next_batch(timeout=0)
    assert [f.seq for f in batch.frames] == [0]
    assert batch.ended == ["a"]
    assert b.next_batch(timeout=0).ended == []


def test_throttle_limits_classified_frames_per_second() -> None:
    t = Throttle(10.0)
    taken = [t.take(i / 30) for i in range(90)]  # 3 s of 30 fps video
    assert sum(taken) == 30
    assert Throttle(None).take(0.0)


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    import random

    rng = random.Random(1)
    delays = [backoff_delay(a, 0.5, 8.0, 0.25, rng) for a in range(8)]
    for attempt, d in enumerate(delays):
        base = min(8.0, 0.5 * 2**attempt)
        assert 0.75 * base <= d <= base
    assert max(delays) <= 8.0
