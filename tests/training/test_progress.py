import torch
from sightline.training.trainer import RunProgress, determinism


def _row(epoch: int, acc: float, loss: float = 1.0) -> dict:
    return {"epoch": epoch, "val_acc1": acc, "val_loss": loss}


def test_best_epoch_is_top1_with_ties_broken_by_val_loss():
    p = RunProgress()
    assert [p.record(_row(1, 0.5, 1.0), 0.0), p.record(_row(2, 0.5, 0.7), 0.0),
            p.record(_row(3, 0.5, 0.9), 0.0), p.record(_row(4, 0.4, 0.1), 0.0)] == [True, True, False, False]
    assert p.best_epoch == 2


def test_early_stopping_counts_epochs_without_a_big_enough_gain():
    p = RunProgress()
    for epoch, acc in enumerate([0.5, 0.6, 0.605, 0.61, 0.62], start=1):
        p.record(_row(epoch, acc), min_delta=0.02)
    assert p.bad_epochs == 3  # 0.605, 0.61 and 0.62 are all within 0.02 of 0.6
    p.record(_row(6, 0.7), min_delta=0.02)
    assert p.bad_epochs == 0


def test_progress_survives_its_state_round_trip():
    p = RunProgress()
    p.record(_row(1, 0.5), 0.0)
    p.record(_row(2, 0.4), 0.0)
    q = RunProgress.from_state(p.to_state())
    assert (q.history, q.best_epoch, q.bad_epochs, q.epoch) == (p.history, 1, 1, 2)


def test_deterministic_switch_is_restored_afterwards():
    before = torch.are_deterministic_algorithms_enabled()
    with determinism(True, torch.device("cpu")):
        assert torch.are_deterministic_algorithms_enabled()
    assert torch.are_deterministic_algorithms_enabled() == before
