"""Training configuration: one root model, the same keys as the `sightline train` flags.

Flags override the file; on ``--resume`` the run's own stored config is the base instead.
Unknown keys and bad values are errors naming the file and the dotted path (model.yamlconfig).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator
from sightline.model.yamlconfig import StrictModel, load_yaml, validate

Mode = Literal["head", "full", "head-then-full"]


def default_workers() -> int:
    """Loader processes: one per usable core, at most 4 (more only warn and contend on a small machine)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, usable))


class AugmentConfig(StrictModel):
    """Training-only augmentation; evaluation always uses the bundle's serving preprocessing."""

    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: bool = True
    trivial_augment: bool = False

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not (0 < v[0] <= v[1] <= 1):
            raise ValueError("needs 0 < min <= max <= 1 (fractions of the image area)")
        return v

    @field_validator("ratio")
    @classmethod
    def _ratio(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not (0 < v[0] <= v[1]):
            raise ValueError("needs 0 < min <= max (aspect ratios)")
        return v


class EarlyStoppingConfig(StrictModel):
    """Stop when val top-1 has not improved by more than ``min_delta`` for ``patience`` epochs (0: never)."""

    patience: int = Field(0, ge=0)
    min_delta: float = Field(0.0, ge=0.0)


class TrainConfig(StrictModel):
    data: Path | None = None
    out: Path | None = None
    epochs: int = Field(10, ge=1)
    mode: Mode = "head-then-full"
    head_epochs: int = Field(1, ge=0, validate_default=True)
    backbone_lr_scale: float = Field(0.1, gt=0.0, le=1.0)
    init: str = "imagenet"
    arch: str | None = None
    batch_size: int = Field(32, ge=1)
    accumulate: int = Field(1, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.001, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    warmup_epochs: float = Field(1.0, ge=0.0)
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    grad_clip: float | None = Field(None, gt=0.0)
    class_weighting: Literal["none", "balanced"] = "none"
    amp: bool = True
    precision: Literal["auto", "fp16", "bf16"] = "auto"
    device: str = "auto"
    seed: int = 0
    deterministic: bool = False
    num_workers: int = Field(default_factory=default_workers, ge=0)
    val_split: float = Field(0.2, gt=0.0, lt=1.0)
    resize: int | None = Field(None, ge=1)
    crop: int | None = Field(None, ge=1)
    augment: AugmentConfig = AugmentConfig()
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    progress: bool = True

    @field_validator("head_epochs")
    @classmethod
    def _head_epochs(cls, v: int, info: ValidationInfo) -> int:
        mode = info.data.get("mode")
        if mode == "head-then-full" and v < 1:
            raise ValueError("head-then-full trains the head alone for at least 1 epoch")
        return v

    def full_phase_skipped(self) -> bool:
        """head-then-full with no epoch left after the head phase (e.g. ``--epochs 1``): a head-only run."""
        return self.mode == "head-then-full" and self.head_epochs >= self.epochs

    @field_validator("crop")
    @classmethod
    def _crop(cls, v: int | None, info: ValidationInfo) -> int | None:
        resize = info.data.get("resize")
        if v is not None and resize is not None and v > resize:
            raise ValueError(f"crop {v} is larger than resize {resize}")
        return v

    @field_validator("init")
    @classmethod
    def _init(cls, v: str, info: ValidationInfo) -> str:
        if v == "scratch" and info.data.get("mode") == "head":
            raise ValueError("mode 'head' freezes the backbone, which is random from scratch; use mode 'full'")
        return v

    def effective_batch(self) -> int:
        return self.batch_size * self.accumulate

    def to_plain(self) -> dict[str, Any]:
        """JSON-able and weights_only-loadable (stored in last.pt and report.json)."""
        return self.model_dump(mode="json")


# init: scratch, for the keys the user did not set (flags or the config file): a random backbone has to train
# with its head (mode full; head-then-full would fit fc to random features first), and a randomly initialised
# ResNet18 learns from small inputs with AdamW in minutes on a CPU (docs/training.md has the measured run).
# resize and crop are one choice: either given (not null: null asks for the initial model's) keeps both out of
# the recipe. augment.scale, because a random crop of 8% of a 64-pixel image leaves too little to learn.
SCRATCH_RECIPE: dict[str, Any] = {"mode": "full", "optimizer": "adamw", "lr": 0.003, "batch_size": 16,
                                  "warmup_epochs": 0.5, "resize": 64, "crop": 56, "augment": {"scale": (0.3, 1.0)}}
SCRATCH_WHY = "a random backbone has to train too, and small inputs learn in minutes on a CPU"


def with_scratch_recipe(cfg: TrainConfig) -> tuple[TrainConfig, str | None]:
    """``cfg`` with SCRATCH_RECIPE filling the keys it leaves unset when ``init`` is scratch, and one line
    saying which were chosen (``None``: nothing chosen)."""
    if cfg.init != "scratch":
        return cfg, None
    given = {k for k in cfg.model_fields_set if k not in ("resize", "crop", "augment") or getattr(cfg, k) is not None}
    if "scale" not in cfg.augment.model_fields_set:  # the recipe's only augment key; the others stay as given
        given.discard("augment")
    chosen = {k: v for k, v in SCRATCH_RECIPE.items() if k not in given}
    if "resize" in given or "crop" in given:
        chosen.pop("resize", None)
        chosen.pop("crop", None)
    if chosen.get("optimizer", cfg.optimizer) != "adamw":  # the recipe's lr is AdamW's: another keeps its own
        chosen.pop("lr", None)
    if not chosen:
        return cfg, None
    if "augment" in chosen:
        chosen["augment"] = {**cfg.augment.model_dump(), **chosen["augment"]}
    kept = [f"{_setting_name(k)} {_setting_value(k, getattr(cfg, k))}" for k in SCRATCH_RECIPE if k in given]
    settings = ", ".join(f"{_setting_name(k)} {_setting_value(k, v)}" for k, v in chosen.items())
    note = f"init scratch: chose {settings} ({SCRATCH_WHY})"
    if kept:
        note += f"; kept your {', '.join(kept)}"
    note += "; set any of them to override"
    return validate({**cfg.model_dump(), **chosen}, TrainConfig, "scratch recipe"), note


def _setting_name(key: str) -> str:
    """How the user sets ``key``: its flag where there is one, else the config key."""
    if key == "augment":
        return "augment.scale"
    return key if key == "warmup_epochs" else f"--{key.replace('_', '-')}"


def _setting_value(key: str, value: Any) -> Any:
    if key == "augment":
        return list(value["scale"] if isinstance(value, dict) else value.scale)
    return value


def load_config(path: str | os.PathLike[str] | None, overrides: dict[str, Any] | None = None,
                base: dict[str, Any] | None = None, origin: str = "command line") -> TrainConfig:
    """The file (or ``base``, a stored config) with flag ``overrides`` on top; ``None`` flags are not given."""
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if path is not None:
        return load_yaml(path, TrainConfig, given)
    return validate({**(base or {}), **given}, TrainConfig, origin)
