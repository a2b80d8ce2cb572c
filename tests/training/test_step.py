import copy

import pytest
import torch
from sightline.model.bundle import PreprocessSpec
from sightline.training.data import Batch
from sightline.training.errors import TrainingError
from sightline.training.schedule import WarmupCosine
from sightline.training.step import Normalizer, StepTotals, TrainStep
from torch import nn

CPU = torch.device("cpu")


def _tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def _window(sizes=(8, 8)) -> list[Batch]:
    g = torch.Generator().manual_seed(1)
    return [Batch(torch.randint(0, 256, (n, 3, 12, 12), dtype=torch.uint8, generator=g),
                  torch.randint(0, 3, (n,), generator=g)) for n in sizes]


def _step(net: nn.Module, micro_batch: int, **kwargs) -> TrainStep:
    opt = torch.optim.SGD([{"params": list(net.parameters()), "base_lr": 0.1}], lr=0.1, momentum=0.9)
    return TrainStep(net, opt, WarmupCosine(opt, 10, 0), torch.amp.GradScaler("cpu", enabled=False),
                     Normalizer(PreprocessSpec(resize=12, crop=12), CPU), None, micro_batch, **kwargs)


def _params(net: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def test_any_micro_batch_split_gives_the_big_batch_update():
    whole, split = _tiny_net(), _tiny_net()
    _step(whole, 16)(_window(), StepTotals.zeros(CPU))
    _step(split, 3)(_window(), StepTotals.zeros(CPU))
    for a, b in zip(_params(whole), _params(split), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_out_of_memory_halves_the_micro_batch_and_keeps_the_update():
    def oom_above_4(size: int) -> None:
        if size > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")

    reference, recovered = _tiny_net(), _tiny_net()
    _step(reference, 8)(_window(), StepTotals.zeros(CPU))
    step = _step(recovered, 8, before_micro_batch=oom_above_4)
    totals = StepTotals.zeros(CPU)
    step(_window(), totals)
    assert step.micro_batch == 4
    assert [(e.from_micro_batch, e.to_micro_batch) for e in step.oom_events] == [(8, 4)]
    assert step.steps_done == 1 and totals.count == 16
    for a, b in zip(_params(reference), _params(recovered), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_out_of_memory_at_one_image_is_an_error():
    def always(size: int) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")

    with pytest.raises(TrainingError, match="micro-batch of 1"):
        _step(_tiny_net(), 2, before_micro_batch=always)(_window((2,)), StepTotals.zeros(CPU))


def test_gradient_clipping_bounds_the_update():
    net = _tiny_net()
    before = _params(net)
    step = _step(net, 16, grad_clip=1e-3)
    step.optimizer.param_groups[0]["momentum"] = 0.0
    step(_window(), StepTotals.zeros(CPU))
    moved = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(_params(net), before, strict=True)))
    assert float(moved) == pytest.approx(0.1 * 1e-3, rel=1e-3)  # lr 0.1 times the clipped norm


def test_bf16_autocast_runs_on_the_cpu():
    net = _tiny_net()
    before = copy.deepcopy(net)
    step = _step(net, 16)
    step.amp_dtype = torch.bfloat16
    totals = StepTotals.zeros(CPU)
    step(_window(), totals)
    assert totals.count == 16 and torch.isfinite(totals.loss_sum)
    assert not torch.equal(net[0].weight, before[0].weight)


def test_class_weighted_loss_is_split_invariant_too():
    weights = torch.tensor([0.5, 1.0, 3.0])
    whole, split = _tiny_net(), _tiny_net()
    _step(whole, 16, class_weights=weights)(_window(), StepTotals.zeros(CPU))
    _step(split, 5, class_weights=weights)(_window(), StepTotals.zeros(CPU))
    unweighted = _tiny_net()
    _step(unweighted, 16)(_window(), StepTotals.zeros(CPU))
    for a, b in zip(_params(whole), _params(split), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(_params(whole)[-1], _params(unweighted)[-1])
