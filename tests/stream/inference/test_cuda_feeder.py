"""The feeder worker (the GPU inference path), run on the CPU: order, results, failures, and on CUDA end to end."""

from __future__ import annotations

import asyncio
import logging
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from sightline.model.classifier import Classifier
from sightline.model.staging import BucketedRunner
from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.frames import Frame
from sightline.stream.inference.batcher import Batcher
from sightline.stream.inference.cuda_feeder import FeederWorker
from sightline.stream.inference.lanes import InferenceWorker
from sightline.stream.inference.workers import create_worker
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline

from tests.stream.inference.test_inference import Collector
from tests.support.models import tiny_bundle, tiny_classifier
from tests.support.predictions import predictions

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """2 shared cores: one intra-op thread is several times faster for these tiny batches."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def frame(stream: str, seq: int, infer: bool = True) -> Frame:
    rng = np.random.default_rng(seq)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    return Frame(stream, seq, seq, Fraction(1, 25), time.monotonic(), time.monotonic(), image, None, infer)


def run_feeder(classifier: Classifier, frames_per_stream: int, streams: list[str], max_batch: int = 4,
               runner: BucketedRunner | None = None, skip_every: int = 0) -> tuple[FeederWorker, Collector]:
    batcher = Batcher(max_batch=max_batch, max_wait_s=0.0)
    queues = {name: batcher.add_stream(name, capacity=1000, policy="block") for name in streams}
    out = Collector()
    worker = FeederWorker(classifier, batcher, topk=2, routes=out.routes(streams), runner=runner)
    for seq in range(frames_per_stream):
        for name in streams:
            queues[name].put(frame(name, seq, infer=not (skip_every and seq % skip_every == 1)))
    for q in queues.values():
        q.close()
    worker.start()
    deadline = time.monotonic() + 30
    while len(out.ended) < len(streams) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.stop()
    return worker, out


def test_feeder_delivers_every_stream_in_order_with_the_models_probabilities() -> None:
    clf = tiny_classifier()
    worker, out = run_feeder(clf, frames_per_stream=9, streams=["a", "b", "c"])
    assert sorted(out.ended) == ["a", "b", "c"]
    for name in ("a", "b", "c"):
        seqs = [r.frame.seq for r in out.results if r.frame.stream_id == name]
        assert seqs == list(range(9))
    images = [r.frame.image for r in out.results]
    expected = clf.probabilities(images).numpy()
    got = np.stack([r.probs for r in out.results])
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert all(r.top[0].index == int(np.argmax(r.probs)) for r in out.results)
    assert worker.runner.warmed and worker.errors == 0 and worker.batches >= 27 / 4


def test_feeder_passes_skipped_frames_through_unclassified() -> None:
    _, out = run_feeder(tiny_classifier(), frames_per_stream=6, streams=["a"], skip_every=2)
    assert [r.frame.seq for r in out.results] == list(range(6))
    for r in out.results:
        assert (r.probs is None) == (not r.frame.infer)


class FailingRunner(BucketedRunner):
    """Fails the second submission the way a CUDA out-of-memory error does."""

    def __init__(self, classifier: Classifier, max_batch: int) -> None:
        super().__init__(classifier, max_batch)
        self.submissions = 0

    def submit(self, images, timeout=None):
        self.submissions += self.warmed  # warm-up batches do not count
        if self.submissions == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return super().submit(images, timeout)


def test_a_failed_batch_is_counted_and_logged_and_the_next_ones_are_served(caplog) -> None:
    clf = tiny_classifier()
    runner = FailingRunner(clf, max_batch=2)
    with caplog.at_level(logging.ERROR, logger="sightline.stream.inference.cuda_feeder"):
        worker, out = run_feeder(clf, frames_per_stream=6, streams=["a"], max_batch=2, runner=runner)
    assert worker.errors == 1
    assert [r.frame.seq for r in out.results] == list(range(6))
    unclassified = [r.frame.seq for r in out.results if r.probs is None]
    assert len(unclassified) == 2  # one batch of two lost, everything else classified
    assert "inference failed for a batch of 2 frames: CUDA out of memory" in caplog.text


def test_create_worker_keeps_lanes_on_the_cpu() -> None:
    worker = create_worker(tiny_classifier(), Batcher(4, 0.0), 2)
    assert type(worker) is InferenceWorker


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@cuda
@pytest.mark.timeout(180)
def test_pipeline_on_cuda_end_to_end_through_the_feeder(tmp_path: Path) -> None:
    from sightline.synthetic_media import make_test_clip

    clip = make_test_clip(tmp_path / "clip.mp4", frames=60, fps=30, size=(640, 360), pattern="photos",
                          counter=False)
    clf = Classifier(tiny_bundle(num_classes=4), device="cuda", precision="auto")
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path, model={"cuda_graphs": True},
                       batching={"max_batch": 8, "max_wait_ms": 5},
                       streams=[StreamConfig(name=f"s{i}", url=str(clip), mode="fast") for i in range(3)])
    pipeline = Pipeline(clf, config, Metrics())
    assert isinstance(pipeline.worker, FeederWorker)
    asyncio.run(asyncio.wait_for(pipeline.run(), 150))
    assert pipeline.worker.runner.captured == pipeline.worker.runner.buckets
    for i in range(3):
        stats = pipeline.get(f"s{i}").stats
        assert stats.state == "ended"
        assert stats.frames_inferred == stats.frames_decoded == 60
    assert pipeline.worker.errors == 0
    lines = (tmp_path / "out" / "s0.jsonl").read_text().splitlines()
    assert len(lines) == 60


@pytest.mark.gpu
@cuda
@pytest.mark.timeout(180)
def test_a_hot_swap_on_cuda_captures_the_new_models_graphs_beside_the_live_feeder(tmp_path: Path) -> None:
    """Issue #15 on a GPU: the swap thread warms and captures the new model's runner while the feeder serves."""

    from sightline.model.bundle import PreprocessSpec
    from sightline.stream.inference.model_holder import MODEL_ID_LENGTH, ModelSpec
    from sightline.stream.pipeline.model_swap import swap_model
    from sightline.synthetic_media import make_test_clip

    clip = make_test_clip(tmp_path / "clip.mp4", frames=60, fps=30, size=(320, 240), pattern="photos",
                          counter=False)
    a, big = tiny_bundle(num_classes=4), tiny_bundle(num_classes=3, seed=1, spec=PreprocessSpec(resize=96, crop=80))
    a.save(tmp_path / "a.pt")
    big.save(tmp_path / "big.pt")
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path,
                       model={"source": str(tmp_path / "a.pt"), "cuda_graphs": True},
                       batching={"max_batch": 8, "max_wait_ms": 5},
                       streams=[StreamConfig(name="cam", url=str(clip), mode="fast", loop=True)])
    pipeline = Pipeline(Classifier(a, device="cuda", precision="auto"), config, Metrics())
    assert isinstance(pipeline.worker, FeederWorker)
    pipeline.start()
    try:
        deadline = time.monotonic() + 60
        while pipeline.get("cam").stats.frames_inferred < 30:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        outcome = swap_model(pipeline, ModelSpec(str(tmp_path / "big.pt"), precision="auto"))
        assert outcome.swapped and outcome.classes_changed
        at = pipeline.get("cam").stats.frames_inferred
        while pipeline.get("cam").stats.frames_inferred < at + 60:
            assert time.monotonic() < deadline + 60
            time.sleep(0.05)
        assert pipeline.worker.runner.classifier is pipeline.models.current.classifier
        assert pipeline.worker.runner.captured == pipeline.worker.runner.buckets
        assert pipeline.worker.errors == 0
    finally:
        pipeline.shutdown(10.0)
    lines = predictions(tmp_path / "out", "cam")
    assert [r["seq"] for r in lines] == list(range(len(lines)))
    ids = [r["model"] for r in lines]
    first = ids.index(big.content_hash()[:MODEL_ID_LENGTH])
    assert set(ids[:first]) == {a.content_hash()[:MODEL_ID_LENGTH]} and len(set(ids[first:])) == 1
