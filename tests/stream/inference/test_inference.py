"""Inference lanes: several threads share the classifier, yet every stream gets its results in order."""

from __future__ import annotations

import threading
import time
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.frames import Frame, Result
from sightline.stream.inference.batcher import Batcher
from sightline.stream.inference.lanes import InferenceWorker, Routes, plan_lanes
from sightline.stream.pipeline.pipeline import Pipeline

from tests.support.models import tiny_classifier

pytestmark = pytest.mark.timeout(60)


def frame(stream: str, seq: int) -> Frame:
    image = np.full((64, 64, 3), seq % 256, np.uint8)
    return Frame(stream, seq, seq, Fraction(1, 25), time.monotonic(), time.monotonic(), image, None, True)


class Collector:
    def __init__(self) -> None:
        self.results: list[Result] = []
        self.ended: list[str] = []
        self.lock = threading.Lock()

    def deliver(self, result: Result) -> None:
        with self.lock:
            self.results.append(result)

    def end(self, name: str) -> None:
        with self.lock:
            self.ended.append(name)

    def routes(self, streams: list[str]) -> Routes:
        """One route per stream, registered like the batcher's queues: results and ends land here."""
        routes = Routes()
        for name in streams:
            routes.add(name, StreamRoute(self, name))
        return routes


class StreamRoute:
    def __init__(self, out: Collector, name: str) -> None:
        self.out, self.name = out, name

    def submit(self, result: Result) -> None:
        self.out.deliver(result)

    def finish(self) -> None:
        self.out.end(self.name)


def run_worker(classifier, frames_per_stream: int, streams: list[str], lanes: int, max_batch: int = 2):
    batcher = Batcher(max_batch=max_batch, max_wait_s=0.0)
    queues = {name: batcher.add_stream(name, capacity=1000, policy="block") for name in streams}
    out = Collector()
    worker = InferenceWorker(classifier, batcher, topk=2, routes=out.routes(streams), lanes=lanes)
    for seq in range(frames_per_stream):
        for name in streams:
            queues[name].put(frame(name, seq))
    for q in queues.values():
        q.close()
    worker.start()
    deadline = time.monotonic() + 30
    while len(out.ended) < len(streams) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.stop()
    return worker, out


def test_lanes_deliver_in_batch_order_even_when_a_later_batch_finishes_first() -> None:
    classifier = tiny_classifier()
    forward = classifier.forward
    calls = []

    def uneven_forward(batch: torch.Tensor) -> torch.Tensor:
        calls.append(threading.current_thread().name)
        if len(calls) == 1:  # the first batch is slow: the other lane finishes later batches meanwhile
            time.sleep(0.5)
        return forward(batch)

    classifier.forward = uneven_forward  # type: ignore[method-assign]
    worker, out = run_worker(classifier, frames_per_stream=12, streams=["a", "b"], lanes=2)
    assert worker.lanes == 2 and len(set(calls)) == 2  # both lanes really worked
    for name in ("a", "b"):
        mine = [r for r in out.results if r.frame.stream_id == name]
        assert [r.frame.seq for r in mine] == list(range(12))
        assert all(r.probs is not None and r.timings is not None for r in mine)
    # the slow first batch held back the rest: nothing was delivered before it
    assert {r.frame.seq for r in out.results[:2]} == {0}
    assert sorted(out.ended) == ["a", "b"] and worker.errors == 0


def test_a_lane_goes_on_while_an_earlier_batch_is_still_running_but_only_a_few_batches_ahead() -> None:
    classifier = tiny_classifier()
    forward = classifier.forward
    calls = []
    during_slow: list[int] = []

    def uneven_forward(batch: torch.Tensor) -> torch.Tensor:
        calls.append(threading.current_thread().name)
        if len(calls) == 1:  # the first batch to reach the model (0 or 1) is slow
            time.sleep(0.5)
            during_slow.append(len(calls) - 1)  # batches the other lane ran meanwhile
        return forward(batch)

    classifier.forward = uneven_forward  # type: ignore[method-assign]
    worker, out = run_worker(classifier, frames_per_stream=20, streams=["a", "b"], lanes=2)
    # the other lane did not wait for the slow batch after finishing the next one: it ran 3 more batches
    # (4 when the slow one was batch 1: it delivered batch 0 first), then stopped at the limit of 4 batches
    # taken and not delivered instead of running ahead without bound (waiting, it ran 1 or 2)
    assert during_slow in ([3], [4])
    for name in ("a", "b"):
        assert [r.frame.seq for r in out.results if r.frame.stream_id == name] == list(range(20))
    assert {r.frame.seq for r in out.results[:2]} == {0}
    assert sorted(out.ended) == ["a", "b"] and worker.errors == 0


def test_lanes_give_the_same_probabilities_as_one_lane() -> None:
    classifier = tiny_classifier()
    _, one = run_worker(classifier, frames_per_stream=8, streams=["a", "b", "c"], lanes=1, max_batch=3)
    _, two = run_worker(classifier, frames_per_stream=8, streams=["a", "b", "c"], lanes=2, max_batch=3)
    key = lambda r: (r.frame.stream_id, r.frame.seq)  # noqa: E731
    for x, y in zip(sorted(one.results, key=key), sorted(two.results, key=key), strict=True):
        assert key(x) == key(y)
        np.testing.assert_allclose(x.probs, y.probs, atol=1e-5)


def test_a_batch_that_crashes_loses_only_its_frames_and_both_lanes_go_on(caplog) -> None:
    classifier = tiny_classifier()
    forward = classifier.forward
    calls = []

    def flaky_forward(batch: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 2:
            raise KeyError("a bug in the model code")
        return forward(batch)

    classifier.forward = flaky_forward  # type: ignore[method-assign]
    worker, out = run_worker(classifier, frames_per_stream=10, streams=["a"], lanes=2)
    assert [r.frame.seq for r in out.results] == list(range(10))
    lost = [r.frame.seq for r in out.results if r.probs is None]
    assert len(lost) == 2 and worker.errors == 1  # one batch of two frames
    assert "inference failed for a batch of 2 frames" in caplog.text
    assert out.ended == ["a"]


def test_lane_plan_splits_cpu_threads_and_keeps_one_lane_on_a_gpu_or_when_compiled() -> None:
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        cpu = SimpleNamespace(device=torch.device("cpu"), compiled=False)
        assert plan_lanes(cpu, "auto") == (2, 2)
        assert plan_lanes(cpu, 1) == (1, None)  # one lane keeps torch's own setting
        assert plan_lanes(cpu, 3) == (3, 1)
        assert plan_lanes(cpu, 8) == (8, 1)
        assert plan_lanes(cpu, "auto", throughput=False) == (1, None)  # live streams only: latency first
        assert plan_lanes(cpu, 2, throughput=False) == (2, 2)  # an explicit count is taken as it is
        assert plan_lanes(SimpleNamespace(device=torch.device("cpu"), compiled=True), "auto") == (1, None)
        assert plan_lanes(SimpleNamespace(device=torch.device("cuda", 0), compiled=False), "auto") == (1, None)
        torch.set_num_threads(1)
        assert plan_lanes(cpu, "auto") == (1, None)
    finally:
        torch.set_num_threads(saved)


@pytest.mark.parametrize(("modes", "lanes"), [(["realtime"], 1), (["realtime", "fast"], 2), (["fast"], 2)])
def test_the_pipeline_takes_two_cpu_lanes_only_when_a_fast_stream_is_configured(modes, lanes, tmp_path) -> None:
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        streams = [StreamConfig(name=f"s{i}", url=str(tmp_path / "x.mp4"), mode=m) for i, m in enumerate(modes)]
        pipeline = Pipeline(tiny_classifier(), RunConfig(media_root=tmp_path, streams=streams))
        assert pipeline.worker.lanes == lanes
    finally:
        torch.set_num_threads(saved)


def test_stopping_the_lanes_restores_the_process_thread_count() -> None:
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        worker, _ = run_worker(tiny_classifier(), frames_per_stream=2, streams=["a"], lanes=2)
        assert worker.threads_per_lane == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(saved)
