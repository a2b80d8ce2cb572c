"""The network to fine-tune: where its weights start, which parts train in each phase, parameter groups."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from sightline.model.architectures import build_network
from sightline.model.bundle import PreprocessSpec
from sightline.model.errors import ConfigError, ModelLoadError
from sightline.model.offline import offline
from sightline.model.weights import IMAGENET, imagenet_cache_path, load_model_source
from torch import nn

Phase = Literal["head", "full"]
HEAD_PREFIX = "fc."


@dataclass
class InitialModel:
    net: nn.Module
    arch: str
    preprocess: PreprocessSpec
    description: str


def initial_model(init: str, class_names: list[str], arch: str | None = None) -> InitialModel:
    """``scratch``, ``imagenet`` or a bundle/state-dict path; ``fc`` is replaced unless the classes already match."""
    if init == "scratch":
        arch = arch or "resnet18"
        return InitialModel(build_network(arch, len(class_names)), arch, PreprocessSpec(), "scratch (random init)")
    try:
        source = load_model_source(init)
    except ModelLoadError as exc:
        if init == IMAGENET:
            raise ModelLoadError(imagenet_unavailable(exc)) from exc
        raise ModelLoadError(f"{exc} [for sightline train: --init PATH, or --init scratch]") from exc
    if arch is not None and arch != source.arch:
        raise ConfigError(f"arch: {arch!r} does not match init {init!r}, which is a {source.arch}")
    net = source.build()
    if source.class_names == class_names:
        how = "classifier kept (same classes)"
    else:
        fc = net.fc
        net.fc = nn.Linear(fc.in_features, len(class_names))  # type: ignore[union-attr]
        how = f"new {len(class_names)}-class fc replaces its {source.num_classes}-class one"
    return InitialModel(net, source.arch, source.preprocess, f"{init}: {how}")


OFFLINE_STARTS = ("start without them: --init scratch (a from-scratch recipe is chosen), or --init PATH to "
                  "fine-tune any local Sightline bundle or .pth, e.g. the demo classifier that `sightline demo` "
                  "trains offline into ~/.cache/sightline/")


def imagenet_unavailable(exc: ModelLoadError) -> str:
    """One line for the default ``--init imagenet`` when its weights cannot be had: why, and the offline starts."""
    path = imagenet_cache_path()
    if path.exists():  # cached but unreadable: the loader's message names the file
        why = str(exc).splitlines()[0]
    elif offline():
        why = f"they are not in torch's cache ({path}) and offline mode forbids the download"
    else:
        cause = exc.__cause__
        detail = (str(cause).splitlines() or [""])[0] if cause is not None else ""
        why = (f"they are not in torch's cache ({path}) and the download failed"
               f"{f' ({detail})' if detail else ''}")
    return f"--init imagenet needs the ImageNet ResNet18 weights, but {why}; {OFFLINE_STARTS}"


def phase_of_epoch(mode: str, head_epochs: int, epoch: int) -> Phase:
    if mode == "head" or (mode == "head-then-full" and epoch < head_epochs):
        return "head"
    return "full"


def set_phase(net: nn.Module, phase: Phase) -> None:
    """Head phase: only ``fc`` gets gradients; frozen parameters keep ``grad=None`` so optimizers skip them."""
    for name, p in net.named_parameters():
        p.requires_grad_(phase == "full" or name.startswith(HEAD_PREFIX))


def train_mode(net: nn.Module, phase: Phase) -> None:
    """Training mode, except a frozen backbone's BatchNorm keeps its running statistics (eval mode)."""
    net.train()
    if phase == "head":
        for name, m in net.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not name.startswith(HEAD_PREFIX):
                m.eval()


def param_groups(net: nn.Module, lr: float, backbone_lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """Head and backbone groups (their own learning rates), each split so biases and norms get no decay."""
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, p in net.named_parameters():
        part = "head" if name.startswith(HEAD_PREFIX) else "backbone"
        buckets.setdefault((part, p.ndim > 1), []).append(p)
    groups = []
    for (part, decay), params in buckets.items():
        base = lr if part == "head" else backbone_lr
        groups.append({"params": params, "name": part, "lr": base, "base_lr": base,
                       "weight_decay": weight_decay if decay else 0.0})
    return groups


def build_optimizer(name: str, groups: list[dict[str, Any]], lr: float, momentum: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    return torch.optim.AdamW(groups, lr=lr)


def lr_of(optimizer: torch.optim.Optimizer, part: str) -> float:
    return next(float(g["lr"]) for g in optimizer.param_groups if g["name"] == part)
