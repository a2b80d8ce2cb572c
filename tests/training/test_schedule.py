import math

import pytest
import torch
from sightline.training.schedule import WarmupCosine


def _optimizer() -> torch.optim.Optimizer:
    p = torch.nn.Parameter(torch.zeros(1))
    q = torch.nn.Parameter(torch.zeros(1))
    return torch.optim.SGD([{"params": [p], "base_lr": 0.1, "lr": 0.1},
                            {"params": [q], "base_lr": 0.01, "lr": 0.01}], lr=0.1)


def test_linear_warmup_then_cosine_to_the_floor():
    opt = _optimizer()
    sched = WarmupCosine(opt, total_steps=10, warmup_steps=3, min_ratio=0.1)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    assert lrs[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert all(a > b for a, b in zip(lrs[3:], lrs[4:], strict=False))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)  # 0.1 * min_ratio at the end
    halfway = 0.1 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 3 / 7)))
    assert lrs[6] == pytest.approx(halfway)


def test_every_group_follows_its_own_base_lr():
    opt = _optimizer()
    sched = WarmupCosine(opt, total_steps=4, warmup_steps=0)
    sched.step()
    assert opt.param_groups[1]["lr"] == pytest.approx(opt.param_groups[0]["lr"] / 10)


def test_state_round_trip_resumes_at_the_same_lr():
    opt, opt2 = _optimizer(), _optimizer()
    sched = WarmupCosine(opt, total_steps=20, warmup_steps=2)
    for _ in range(7):
        sched.step()
    WarmupCosine(opt2, total_steps=20, warmup_steps=2).load_state_dict(sched.state_dict())
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
