"""The CUDA hot path's host half, run on the CPU: buckets, reused staging buffers, slots, parity."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from sightline.model.classifier import Classifier
from sightline.model.staging import BucketedRunner, StagingPool, bucket_for, bucket_sizes, crop_anchor

from tests.support.models import tiny_bundle

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier(tiny_bundle(num_classes=4), device="cpu", precision="fp32")


def frames(n: int, size: tuple[int, int] = (64, 85), seed: int = 0) -> list[np.ndarray]:
    """Working-size frames for the tiny spec (shorter side 64)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]


def test_buckets_are_powers_of_two_up_to_max_batch() -> None:
    assert bucket_sizes(32) == (1, 2, 4, 8, 16, 32)
    assert bucket_sizes(12) == (1, 2, 4, 8, 12)
    assert bucket_sizes(1) == (1,)
    with pytest.raises(ValueError):
        bucket_sizes(0)


def test_a_batch_goes_to_the_smallest_bucket_that_holds_it() -> None:
    buckets = bucket_sizes(32)
    assert [bucket_for(n, buckets) for n in (1, 2, 3, 5, 8, 9, 17, 32)] == [1, 2, 4, 8, 8, 16, 32, 32]
    with pytest.raises(ValueError, match="larger than the largest bucket"):
        bucket_for(33, buckets)


def test_crop_anchor_is_torchvisions() -> None:
    import torchvision.transforms.v2.functional as TF

    x = torch.arange(65 * 87).view(1, 65, 87)
    top, left = crop_anchor(65, 87, 56)
    assert torch.equal(TF.center_crop(x, [56, 56]), x[:, top:top + 56, left:left + 56])


def test_runner_matches_the_classifiers_own_preprocessing_and_forward(classifier) -> None:
    runner = BucketedRunner(classifier, max_batch=8)
    batch = frames(5) + frames(2, size=(85, 64), seed=1)  # landscape and portrait working sizes
    expected = classifier.probabilities(batch)
    got = runner.run(batch)
    assert got.shape == (7, 4)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_padding_rows_do_not_change_the_real_rows(classifier) -> None:
    """3 frames ride in bucket 4 behind a stale row left by an earlier batch: same results as one by one."""
    runner = BucketedRunner(classifier, max_batch=4, slots=1)
    runner.run(frames(4, seed=7))  # leaves other pictures in the bucket-4 buffer
    batch = frames(3, seed=2)
    together = runner.run(batch)
    alone = torch.cat([runner.run([f]) for f in batch])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)


def test_staging_buffers_are_allocated_once_per_bucket_and_slot_and_reused(classifier) -> None:
    runner = BucketedRunner(classifier, max_batch=8, slots=2)
    seen: dict[tuple[int, int], int] = {}
    for n in (8, 8, 3, 8, 3, 1, 3, 8, 1):
        pending = runner.submit(frames(n))
        key = (pending.slot.host_in.shape[0], pending.slot_index)
        seen.setdefault(key, pending.slot.host_in.data_ptr())
        assert pending.slot.host_in.data_ptr() == seen[key]  # the same buffer each time this pair comes back
        runner.collect(pending)
    assert runner.pool.allocations == len(runner.pool) == len(seen)
    assert {bucket for bucket, _ in seen} == {1, 4, 8}
    assert runner.pool.allocations <= len(runner.buckets) * runner.slots


def test_warmup_runs_every_bucket_and_allocates_all_buffers_up_front(classifier) -> None:
    runner = BucketedRunner(classifier, max_batch=8)
    runner.warmup(iterations=2)
    assert runner.warmed
    allocated = runner.pool.allocations
    assert allocated == len(runner.buckets) * runner.slots
    for n in (1, 2, 3, 5, 8, 7):
        runner.run(frames(n))
    assert runner.pool.allocations == allocated  # serving allocates nothing new
    assert runner.captured == ()  # CUDA graphs are CUDA only


def test_a_third_batch_waits_until_one_of_two_in_flight_is_collected(classifier) -> None:
    runner = BucketedRunner(classifier, max_batch=4, slots=2)
    first, second = runner.submit(frames(2)), runner.submit(frames(2, seed=1))
    with pytest.raises(TimeoutError, match="slot 0 still in use"):
        runner.submit(frames(2, seed=3), timeout=0.05)
    got: list[torch.Tensor] = []
    third = threading.Thread(target=lambda: got.append(runner.run(frames(1, seed=4))))
    third.start()
    runner.collect(first)
    third.join(10)
    assert not third.is_alive() and got[0].shape == (1, 4)
    runner.collect(second)


def test_frames_not_at_the_working_size_take_the_general_path(classifier) -> None:
    runner = BucketedRunner(classifier, max_batch=4)
    big = frames(2, size=(120, 160), seed=5)  # not yet scaled by the decoder
    pending = runner.submit(big)
    assert pending.probs is not None
    torch.testing.assert_close(runner.collect(pending), classifier.probabilities(big), rtol=0, atol=1e-5)


def test_pool_pins_only_on_cuda() -> None:
    pool = StagingPool(torch.device("cpu"), crop=8, classes=3)
    slot = pool.get(2, 0)
    assert slot.device_in is slot.host_in and not slot.host_in.is_pinned()
    assert slot.host_in.shape == (2, 8, 8, 3) and slot.host_out.shape == (2, 3)
    assert pool.get(2, 0) is slot and pool.allocations == 1


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("graphs", [False, True])
def test_cuda_runner_overlaps_batches_and_agrees_with_the_classifier(graphs: bool) -> None:
    clf = Classifier(tiny_bundle(num_classes=4), device="cuda", precision="fp32")
    runner = BucketedRunner(clf, max_batch=8, cuda_graphs=graphs)
    runner.warmup()
    assert runner.pool.allocations == len(runner.buckets) * 2
    assert all(s.host_in.is_pinned() and s.host_out.is_pinned() for s in runner.pool._slots.values())
    if graphs:
        assert runner.captured == runner.buckets
    batches = [frames(n, seed=n) for n in (8, 3, 5, 1, 8)]
    pendings = []
    results = []
    for batch in batches:  # two in flight at a time, as the feeder runs them
        pendings.append(runner.submit(batch))
        if len(pendings) == 2:
            results.append(runner.collect(pendings.pop(0)))
    results.extend(runner.collect(p) for p in pendings)
    for batch, got in zip(batches, results, strict=True):
        # other batch sizes may pick other cuDNN (TF32) kernels: equal within their rounding
        torch.testing.assert_close(got, clf.probabilities(batch), rtol=0, atol=2e-3)
    assert runner.pool.allocations == len(runner.buckets) * 2
