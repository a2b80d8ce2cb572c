"""One optimizer step: micro-batches, mixed precision, accumulation, clipping, and out-of-memory recovery.

AMP is one code path with ``enabled=`` flags: autocast runs when a dtype is chosen, and the GradScaler
only for fp16 (bf16 and fp32 need no loss scaling). The loss of each micro-batch is weighted by its
share of the step, so any split of the same images gives the same gradient as one big batch.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from sightline.model.bundle import PreprocessSpec
from sightline.training.data import Batch
from sightline.training.errors import TrainingError
from torch import nn

log = logging.getLogger("sightline.training")


def training_memory_format(device: torch.device) -> torch.memory_format:
    """channels_last feeds tensor cores on CUDA; on the CPU it made ResNet18 training 2-10x slower here."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


class Normalizer:
    """uint8 N×3×H×W on the host -> normalized float channels_last batch on the device (as model.preprocess)."""

    def __init__(self, spec: PreprocessSpec, device: torch.device) -> None:
        self.device = device
        self.memory_format = training_memory_format(device)
        self._mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1) * 255.0
        self._inv_std = 1.0 / (torch.tensor(spec.std, device=device).view(1, 3, 1, 1) * 255.0)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, non_blocking=True).float()
        return x.sub_(self._mean).mul_(self._inv_std).contiguous(memory_format=self.memory_format)


@dataclass
class StepTotals:
    """Running sums kept on the device so the hot loop never waits for a ``.item()``."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    count: int = 0

    @classmethod
    def zeros(cls, device: torch.device) -> StepTotals:
        return cls(torch.zeros((), device=device, dtype=torch.float64),
                   torch.zeros((), device=device, dtype=torch.int64))


@dataclass
class OomEvent:
    step: int
    from_micro_batch: int
    to_micro_batch: int


@dataclass
class TrainStep:
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object  # WarmupCosine: .step()
    scaler: torch.amp.GradScaler
    normalizer: Normalizer
    amp_dtype: torch.dtype | None
    micro_batch: int
    class_weights: torch.Tensor | None = None
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    distributed: bool = False
    before_micro_batch: Callable[[int], None] | None = None
    oom_events: list[OomEvent] = field(default_factory=list)
    steps_done: int = 0

    def __call__(self, window: Sequence[Batch], totals: StepTotals) -> None:
        """Forward/backward every image of ``window`` (one or more loader batches), then one optimizer step."""
        labels_all = torch.cat([b.labels for b in window])
        if self.class_weights is not None:
            denom = float(self.class_weights[labels_all].sum())
        else:
            denom = float(labels_all.numel())
        while True:
            try:
                loss_sum, correct = self._accumulate(window, denom)
                break
            except torch.cuda.OutOfMemoryError as exc:
                self._recover(exc)
        if self.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()  # type: ignore[attr-defined]
        self.steps_done += 1
        totals.loss_sum += loss_sum
        totals.correct += correct
        totals.count += int(labels_all.numel())

    def _accumulate(self, window: Sequence[Batch], denom: float) -> tuple[torch.Tensor, torch.Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        device = self.normalizer.device
        chunks = [(b.images[i:i + self.micro_batch], b.labels[i:i + self.micro_batch])
                  for b in window for i in range(0, len(b), self.micro_batch)]
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        weight = self.class_weights.to(device) if self.class_weights is not None else None
        for k, (images, labels) in enumerate(chunks):
            if self.before_micro_batch is not None:
                self.before_micro_batch(int(labels.numel()))
            x = self.normalizer(images)
            y = labels.to(device, non_blocking=True)
            last = k == len(chunks) - 1
            sync = self.net.no_sync() if self.distributed and not last else contextlib.nullcontext()  # type: ignore[operator]
            with sync:
                with torch.autocast(device_type=device.type, dtype=self.amp_dtype or torch.float32,
                                    enabled=self.amp_dtype is not None):
                    logits = self.net(x)
                per_sample = nn.functional.cross_entropy(logits.float(), y, weight=weight, reduction="none",
                                                         label_smoothing=self.label_smoothing)
                self.scaler.scale(per_sample.sum() / denom).backward()
            loss_sum += per_sample.detach().sum().double()
            correct += (logits.detach().argmax(1) == y).sum()
        return loss_sum, correct

    def _recover(self, exc: torch.cuda.OutOfMemoryError) -> None:
        """Halve the micro-batch (doubling the micro-steps, same effective batch) and redo the whole step."""
        self.optimizer.zero_grad(set_to_none=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if self.distributed:
            raise TrainingError("CUDA out of memory under DistributedDataParallel; lower --batch-size and raise "
                                "--accumulate to keep the effective batch") from exc
        if self.micro_batch == 1:
            raise TrainingError("CUDA out of memory even with a micro-batch of 1 image; use a smaller crop, "
                                "mode 'head', or a larger GPU") from exc
        old, self.micro_batch = self.micro_batch, self.micro_batch // 2
        self.oom_events.append(OomEvent(self.steps_done, old, self.micro_batch))
        log.warning("CUDA out of memory at micro-batch %d; continuing with micro-batch %d (twice the "
                    "accumulation steps, same effective batch)", old, self.micro_batch)
