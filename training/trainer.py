"""The training run: data, model, optimizer and loop wired together; files written by rank 0 only."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from sightline.model.architectures import build_network
from sightline.model.bundle import ModelBundle, PreprocessSpec
from sightline.model.classifier import Classifier
from sightline.model.device import autocast_dtype, precision_name
from sightline.model.errors import ConfigError
from sightline.model.preprocess import Preprocessor
from sightline.training.config import TrainConfig, load_config, with_scratch_recipe
from sightline.training.data import (
    DatasetSplit,
    EvalImages,
    SkipLog,
    TrainImages,
    balanced_class_weights,
    collate_eval,
    collate_train,
    imbalance,
    imbalance_warning,
    scan_dataset,
    train_transform,
)
from sightline.training.distributed import DistContext
from sightline.training.errors import TrainingError
from sightline.training.evaluate import Tally, evaluate_classifier, evaluate_network, format_table
from sightline.training.network import (
    build_optimizer,
    initial_model,
    lr_of,
    param_groups,
    phase_of_epoch,
    set_phase,
    train_mode,
)
from sightline.training.reports import plot_curves, write_evaluation, write_json, write_metrics_csv
from sightline.training.schedule import WarmupCosine
from sightline.training.state import capture_rng, load_state, restore_rng, save_state, seed_everything
from sightline.training.step import Normalizer, OomEvent, StepTotals, TrainStep, training_memory_format
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

log = logging.getLogger("sightline.training")


@dataclass
class TrainHooks:
    """Seams for tests and embedding: ``before_micro_batch(size)`` runs before each forward pass (tests raise
    an out-of-memory error there); ``on_epoch_end(row)`` gets each metrics.csv row after last.pt is saved."""

    before_micro_batch: Callable[[int], None] | None = None
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None


@dataclass
class TrainResult:
    out: Path
    epochs_run: int
    best_epoch: int
    best_acc1: float
    stopped_early: bool
    report: dict[str, Any] = field(default_factory=dict)


def resolve_amp(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """``amp`` on: fp16 on CUDA by default, bf16 when asked; on the CPU autocast only with precision bf16."""
    if not cfg.amp:
        return None
    return autocast_dtype(cfg.precision, device)


def preprocess_spec(cfg: TrainConfig, inherited: PreprocessSpec) -> PreprocessSpec:
    """Serving preprocessing of the bundle: the config's sizes, else the initial model's."""
    resize = cfg.resize or inherited.resize
    crop = cfg.crop or (round(resize * 224 / 256) if cfg.resize else inherited.crop)
    try:
        return PreprocessSpec(resize=resize, crop=crop, mean=inherited.mean, std=inherited.std)
    except ValueError as exc:
        raise ConfigError(f"resize/crop: {exc}") from None


@contextlib.contextmanager
def determinism(enabled: bool, device: torch.device) -> Iterator[None]:
    """The deterministic switch, restored afterwards (these are process-wide torch settings)."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    if enabled:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # warn_only: a few CUDA backward kernels (adaptive pooling) have no deterministic version
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    else:
        torch.backends.cudnn.benchmark = device.type == "cuda"
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2], saved[3]


class Trainer:
    """One run. ``state`` is a loaded last.pt to continue from (its epoch, optimizer, RNG...)."""

    def __init__(self, cfg: TrainConfig, dist: DistContext | None = None, hooks: TrainHooks | None = None,
                 state: dict[str, Any] | None = None) -> None:
        if cfg.data is None:
            raise ConfigError("data: missing; pass --data ROOT or set data: in the config")
        if cfg.out is None:
            raise ConfigError("out: missing; pass --out RUN_DIR or set out: in the config")
        # a new run from scratch fills the settings it was not given; a resumed one keeps its stored config
        cfg, self.recipe_note = (cfg, None) if state is not None else with_scratch_recipe(cfg)
        self.cfg = cfg
        self.dist = dist or DistContext()
        self.hooks = hooks or TrainHooks()
        self.state = state
        self.out = Path(cfg.out)
        self.skips = SkipLog(log.warning)
        # epochs held by out/last.pt (None: no last.pt of this run yet), for the message of an interrupted run
        self.saved_epochs: int | None = len(state["progress"]["history"]) if state is not None else None
        self._saving: int | None = None  # the epoch being saved to last.pt, while it is

    @classmethod
    def resume(cls, path: str | os.PathLike[str], overrides: dict[str, Any], dist: DistContext | None = None,
               hooks: TrainHooks | None = None) -> Trainer:
        """Continue from a last.pt: its stored config is the base, flags given now override single keys."""
        state = load_state(path)
        given = dict(overrides)
        if given.get("out") is None:
            given["out"] = str(Path(path).parent)
        cfg = load_config(None, given, base=state["config"], origin=f"{path} (stored config + flags)")
        return cls(cfg, dist, hooks, state)

    def run(self) -> TrainResult:
        device = self.dist.device(self.cfg.device)
        self.dist.init(device)
        try:
            with determinism(self.cfg.deterministic, device):
                return self._run(device)
        finally:
            self.dist.close()

    # -- setup -------------------------------------------------------------------------------------

    def _info(self, msg: str, *args: Any) -> None:
        if self.dist.is_main:
            log.info(msg, *args)

    def _run(self, device: torch.device) -> TrainResult:
        cfg, dist, state = self.cfg, self.dist, self.state
        if dist.is_main and state is None and (self.out / "last.pt").exists():
            raise TrainingError(f"{self.out} already holds a run (last.pt); continue it with --resume "
                                f"{self.out / 'last.pt'} or choose another --out")
        generator = torch.Generator()
        seed_everything(cfg.seed + dist.rank, generator)
        amp_dtype = resolve_amp(cfg, device)
        split = scan_dataset(cfg.data, cfg.val_split, cfg.seed)  # type: ignore[arg-type]
        names = split.class_names
        self._report_data(split)

        if state is not None:
            if list(state["class_names"]) != names:
                raise TrainingError(f"{cfg.data} has classes {names} but the run being resumed was trained on "
                                    f"{list(state['class_names'])}")
            net = build_network(state["arch"], len(names))
            arch, init_desc = state["arch"], state["init_description"]
            spec = PreprocessSpec.from_dict(state["preprocess"])
        else:
            if self.recipe_note:
                self._info("%s", self.recipe_note)
            init = initial_model(cfg.init, names, cfg.arch)
            net, arch, init_desc = init.net, init.arch, init.description
            spec = preprocess_spec(cfg, init.preprocess)
        self._info("model: %s from %s; preprocessing resize %d crop %d", arch, init_desc, spec.resize, spec.crop)
        if cfg.full_phase_skipped():
            self._info("%d epoch(s), all in the head phase (head_epochs %d): the backbone stays frozen; "
                       "give --epochs %d or more to fine-tune it too", cfg.epochs, cfg.head_epochs,
                       cfg.head_epochs + 1)
        net = net.to(device, memory_format=training_memory_format(device))
        if dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)

        backbone_lr = cfg.lr * (cfg.backbone_lr_scale if cfg.mode == "head-then-full" else 1.0)
        optimizer = build_optimizer(cfg.optimizer, param_groups(net, cfg.lr, backbone_lr, cfg.weight_decay),
                                    cfg.lr, cfg.momentum)
        train_loader = self._train_loader(split, spec, generator, device)
        val_loader = self._val_loader(split, device)
        steps_per_epoch = math.ceil(len(train_loader) / cfg.accumulate)
        scheduler = WarmupCosine(optimizer, steps_per_epoch * cfg.epochs, round(cfg.warmup_epochs * steps_per_epoch),
                                 cfg.min_lr_ratio)
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        weights = balanced_class_weights(split.train_counts()) if cfg.class_weighting == "balanced" else None
        step = TrainStep(net, optimizer, scheduler, scaler, Normalizer(spec, device), amp_dtype, cfg.batch_size,
                         class_weights=weights, label_smoothing=cfg.label_smoothing, grad_clip=cfg.grad_clip,
                         distributed=dist.enabled, before_micro_batch=self.hooks.before_micro_batch)
        self._info("device %s, precision %s, %d process(es), batch %d x accumulate %d = effective batch %d, "
                   "%d optimizer steps/epoch", device, precision_name(amp_dtype), dist.world_size, cfg.batch_size,
                   cfg.accumulate, cfg.effective_batch() * dist.world_size, steps_per_epoch)

        progress = RunProgress()
        if state is not None:
            net.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            if int(state["config"]["batch_size"]) == cfg.batch_size:  # keep an out-of-memory reduction
                step.micro_batch = int(state["micro_batch"])
            step.oom_events = [OomEvent(**e) for e in state["oom_events"]]
            step.steps_done = int(state["scheduler"]["step_count"])
            progress = RunProgress.from_state(state["progress"])
            self.skips.files.update(state["skipped"])
            rngs = state["rng"]
            if len(rngs) == dist.world_size:
                restore_rng(rngs[dist.rank], generator)
            else:
                log.warning("resuming with %d processes, the run used %d: random streams are reseeded, so the "
                            "continuation is not bit-exact", dist.world_size, len(rngs))
                seed_everything(cfg.seed + 1000 * progress.epoch + dist.rank, generator)
            self._info("resuming after epoch %d of %d", progress.epoch, cfg.epochs)

        preprocessor = Preprocessor(spec, device)
        ddp: DistributedDataParallel | None = None
        current_phase = None
        started = time.perf_counter()
        for epoch in range(progress.epoch, cfg.epochs):
            phase = phase_of_epoch(cfg.mode, cfg.head_epochs, epoch)
            if phase != current_phase:
                set_phase(net, phase)
                if dist.enabled:  # DDP registers the trainable parameters when wrapped: re-wrap per phase
                    ddp = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
                step.net = ddp if ddp is not None else net
                if current_phase is not None or epoch == 0:
                    self._info("epoch %d: %s", epoch + 1, "training fc only (backbone frozen)" if phase == "head"
                               else "training all layers")
                current_phase = phase
            t0 = time.perf_counter()
            totals = self._train_epoch(epoch, phase, net, step, train_loader, device)
            train_seconds = time.perf_counter() - t0
            tally = Tally(names, range(len(names)), len(names), device)
            evaluate_network(net, tqdm(val_loader, desc=f"epoch {epoch + 1}/{cfg.epochs} val", unit="batch",
                                       disable=self._bars_off(), leave=False),
                             preprocessor, amp_dtype, tally, self.skips.record)
            count = torch.tensor(totals.count, device=device, dtype=torch.int64)
            dist.sum_([*tally.tensors(), totals.loss_sum, totals.correct, count])
            if dist.enabled:  # every rank saw other files: report the union
                for files in dist.gather_objects(dict(self.skips.files)):
                    self.skips.files.update(files)
            result = tally.result()
            row = {
                "epoch": epoch + 1, "phase": phase,
                "train_loss": float(totals.loss_sum) / max(1, int(count)),
                "train_acc1": int(totals.correct) / max(1, int(count)),
                "val_loss": result.loss, "val_acc1": result.acc1, "val_acc5": result.acc5,
                "lr": lr_of(optimizer, "head"), "backbone_lr": lr_of(optimizer, "backbone"),
                "images_per_s": int(count) / train_seconds, "micro_batch": step.micro_batch,
                "effective_batch": cfg.effective_batch() * dist.world_size, "skipped_images": self.skips.count,
                "seconds": time.perf_counter() - t0,
            }
            improved = progress.record(row, cfg.early_stopping.min_delta)
            rngs = dist.gather_objects(capture_rng(generator))
            if dist.is_main:
                if improved:
                    self._bundle(net, arch, names, spec, split, row, init_desc).save(self.out / "bundle.pt")
                write_metrics_csv(self.out / "metrics.csv", progress.history)
                plot_curves(self.out / "curves.png", progress.history, topk=result.k, classes=len(names))
                self._saving = progress.epoch  # a Ctrl-C from here to the line after the save: read last.pt itself
                save_state(self.out / "last.pt", {
                    "config": cfg.to_plain(), "arch": arch, "class_names": names, "preprocess": spec.to_dict(),
                    "init_description": init_desc, "model": _cpu_state(net), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                    "micro_batch": step.micro_batch, "progress": progress.to_state(), "rng": rngs,
                    "skipped": dict(self.skips.files),
                    "oom_events": [vars(e) for e in step.oom_events],
                })
                self.saved_epochs = progress.epoch
                self._saving = None
            self._info("epoch %d/%d %s: train loss %.4f acc %.3f | val loss %.4f top-1 %.3f top-%d %.3f | lr %.3g | "
                       "%.1f img/s%s", epoch + 1, cfg.epochs, phase, row["train_loss"], row["train_acc1"],
                       row["val_loss"], row["val_acc1"], result.k, row["val_acc5"], row["lr"], row["images_per_s"],
                       " | best so far, bundle.pt saved" if improved else "")
            dist.barrier()
            if self.hooks.on_epoch_end is not None:
                self.hooks.on_epoch_end(row)
            patience = cfg.early_stopping.patience
            if patience and progress.bad_epochs >= patience:
                progress.stopped_early = True
                self._info("early stopping: val top-1 has not improved for %d epochs (best %.4f at epoch %d)",
                           patience, progress.best_acc1, progress.best_epoch)
                break

        report: dict[str, Any] = {}
        if dist.is_main:
            report = self._final_report(split, device, amp_dtype, progress, step, init_desc,
                                        time.perf_counter() - started)
        dist.barrier()
        return TrainResult(self.out, len(progress.history), progress.best_epoch, progress.best_acc1,
                           progress.stopped_early, report)

    def _bars_off(self) -> bool:
        return not (self.cfg.progress and self.dist.is_main)

    def _report_data(self, split: DatasetSplit) -> None:
        train_counts, val_counts = split.train_counts(), split.val_counts()
        self._info("dataset %s: %d classes, %d train / %d val images (val: %s)", self.cfg.data,
                   len(split.class_names), len(split.train), len(split.val), split.val_source)
        warning = imbalance_warning(split.class_names, train_counts, self.cfg.class_weighting)
        if warning and self.dist.is_main:
            log.warning("%s", warning)
        if val_counts and min(val_counts) == 0 and self.dist.is_main:
            log.warning("val has no images of: %s", ", ".join(n for n, c in zip(split.class_names, val_counts,
                                                                                  strict=True) if c == 0))

    def _train_loader(self, split: DatasetSplit, spec: PreprocessSpec, generator: torch.Generator,
                      device: torch.device) -> DataLoader:
        cfg, dist = self.cfg, self.dist
        dataset = TrainImages(split.train, train_transform(spec.crop, cfg.augment))
        per_rank = math.ceil(len(dataset) / dist.world_size)
        # A trailing batch of one image breaks BatchNorm in training mode; drop it (the order changes every epoch).
        drop_last = per_rank > 1 and per_rank % cfg.batch_size == 1
        sampler = (DistributedSampler(dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=True,
                                      seed=cfg.seed, drop_last=False) if dist.enabled else None)
        # Workers are not persistent: each epoch draws their seeds from the (saved) loader generator,
        # which is what makes a resumed run exact.
        return DataLoader(dataset, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler,
                          num_workers=cfg.num_workers, collate_fn=collate_train, pin_memory=device.type == "cuda",
                          drop_last=drop_last, generator=generator)

    def _val_loader(self, split: DatasetSplit, device: torch.device) -> DataLoader:
        shard = split.val[self.dist.rank::self.dist.world_size]
        return DataLoader(EvalImages(shard), batch_size=self.cfg.batch_size, shuffle=False,
                          num_workers=self.cfg.num_workers, collate_fn=collate_eval)

    # -- the epoch ---------------------------------------------------------------------------------

    def _train_epoch(self, epoch: int, phase: str, net: torch.nn.Module, step: TrainStep, loader: DataLoader,
                     device: torch.device) -> StepTotals:
        cfg = self.cfg
        sampler = loader.sampler
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        train_mode(net, phase)  # type: ignore[arg-type]
        totals = StepTotals.zeros(device)
        window = []
        n = len(loader)
        bar = tqdm(loader, total=n, desc=f"epoch {epoch + 1}/{cfg.epochs} train", unit="batch",
                   disable=self._bars_off(), leave=False)
        for i, batch in enumerate(bar):
            self.skips.record(batch.skipped)
            if len(batch):
                window.append(batch)
            if window and (len(window) == cfg.accumulate or i == n - 1):
                step(window, totals)
                window = []
        return totals

    # -- outputs -----------------------------------------------------------------------------------

    def _bundle(self, net: torch.nn.Module, arch: str, names: list[str], spec: PreprocessSpec, split: DatasetSplit,
                row: dict[str, Any], init_desc: str) -> ModelBundle:
        cfg = self.cfg
        return ModelBundle(arch=arch, class_names=names, state_dict=_cpu_state(net), preprocess=spec, provenance={
            "source": "sightline train", "dataset": str(cfg.data), "val": split.val_source,
            "train_images": len(split.train), "val_images": len(split.val), "epochs": row["epoch"],
            "val_acc1": row["val_acc1"], "val_acc5": row["val_acc5"], "val_loss": row["val_loss"],
            "mode": cfg.mode, "init": init_desc, "optimizer": cfg.optimizer, "lr": cfg.lr, "seed": cfg.seed,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })

    def _final_report(self, split: DatasetSplit, device: torch.device, amp_dtype: torch.dtype | None,
                      progress: RunProgress, step: TrainStep, init_desc: str, seconds: float) -> dict[str, Any]:
        """Evaluate bundle.pt exactly as serving runs it (model.Classifier) and write the reports."""
        cfg = self.cfg
        bundle = ModelBundle.load(self.out / "bundle.pt")
        classifier = Classifier(bundle, device=str(device), precision=precision_name(amp_dtype))
        loader = DataLoader(EvalImages(split.val), batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                            collate_fn=collate_eval)
        tally = Tally(bundle.class_names, range(bundle.num_classes), bundle.num_classes, device)
        result = evaluate_classifier(classifier, loader, tally, self.skips.record, progress=not self._bars_off(),
                                     total=len(loader)).result()
        report = {
            "run": str(self.out),
            "bundle": str(self.out / "bundle.pt"),
            "dataset": {
                "root": str(cfg.data), "val": split.val_source, "classes": split.class_names,
                "train_counts": split.train_counts(), "val_counts": split.val_counts(),
                "imbalance": imbalance(split.train_counts()), "class_weighting": cfg.class_weighting,
                "skipped_images": {"count": self.skips.count, "files": dict(self.skips.files)},
            },
            "model": {"arch": bundle.arch, "init": init_desc, "preprocess": bundle.preprocess.to_dict()},
            "training": {
                "mode": cfg.mode, "epochs_run": len(progress.history), "epochs_planned": cfg.epochs,
                "best_epoch": progress.best_epoch, "stopped_early": progress.stopped_early,
                "device": str(device), "precision": precision_name(amp_dtype), "world_size": self.dist.world_size,
                "effective_batch": cfg.effective_batch() * self.dist.world_size, "micro_batch": step.micro_batch,
                "oom_events": [vars(e) for e in step.oom_events], "seconds_this_session": seconds,
            },
            "config": cfg.to_plain(),
            "val": result.to_dict(),
        }
        warning = near_chance_warning(cfg, progress.best_acc1, bundle.num_classes)
        report["warnings"] = [warning] if warning else []
        write_evaluation(self.out, result, report, title=f"{self.out.name} best epoch {progress.best_epoch}, val")
        write_json(self.out / "report.json", report)
        log.info("best epoch %d, bundle %s evaluated as served:\n%s", progress.best_epoch, self.out / "bundle.pt",
                 format_table(result))
        if self.skips.count:
            log.warning("%d unreadable image(s) were skipped (listed in report.json)", self.skips.count)
        if warning:
            log.warning("%s", warning)
        return report

    def interrupted_message(self) -> str:
        """What to do after Ctrl-C: where last.pt is and the exact command that continues the run."""
        last = self.out / "last.pt"
        epochs = self.saved_epochs
        if self._saving is not None and last.exists():  # interrupted while saving: before or after the rename
            with contextlib.suppress(TrainingError, OSError, KeyError, RuntimeError):  # else: what it last saved
                epochs = len(load_state(last)["progress"]["history"])
        if epochs is None or not last.exists():
            return (f"interrupted before the first epoch finished: no last.pt in {self.out} to resume from; "
                    f"run the same command again to start over")
        return (f"interrupted: {last} holds the run after epoch {epochs} of {self.cfg.epochs}\n"
                f"continue it with: sightline train --resume {shlex.quote(str(last))}")


def near_chance_warning(cfg: TrainConfig, best_acc1: float, num_classes: int) -> str | None:
    """One line when the best val top-1 stays under 1.5x chance: the run has learned (almost) nothing."""
    chance = 1 / num_classes
    if best_acc1 >= 1.5 * chance:
        return None
    tips = [f"more epochs (--epochs {cfg.epochs * 2})"]
    if cfg.mode != "full":
        tips.append("--mode full")
    tips.append("--init PATH (start from a trained bundle or .pth)" if cfg.init == "scratch"
                else "another --lr")
    tips.append("check the data (one folder per class, the right images in each)")
    return (f"near chance: best val top-1 {best_acc1:.3f} is under 1.5x chance ({chance:.3f} for {num_classes} "
            f"classes), so the model has barely learned; try {', '.join(tips)}")


@dataclass
class RunProgress:
    """Where a run stands: history rows, best epoch, early-stopping counter. Stored in last.pt."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best_acc1: float = -1.0
    best_loss: float = math.inf
    best_epoch: int = 0
    es_best: float = -1.0
    bad_epochs: int = 0
    stopped_early: bool = False

    @property
    def epoch(self) -> int:
        return len(self.history)

    def record(self, row: dict[str, Any], min_delta: float) -> bool:
        """Append ``row``; True when it is the new best (top-1, ties broken by lower val loss)."""
        self.history.append(row)
        acc, loss = row["val_acc1"], row["val_loss"]
        if acc > self.es_best + min_delta:
            self.es_best, self.bad_epochs = acc, 0
        else:
            self.bad_epochs += 1
        if acc > self.best_acc1 or (acc == self.best_acc1 and loss < self.best_loss):
            self.best_acc1, self.best_loss, self.best_epoch = acc, loss, row["epoch"]
            return True
        return False

    def to_state(self) -> dict[str, Any]:
        return {"history": self.history, "best_acc1": self.best_acc1, "best_loss": self.best_loss,
                "best_epoch": self.best_epoch, "es_best": self.es_best, "bad_epochs": self.bad_epochs}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RunProgress:
        return cls(history=[dict(r) for r in state["history"]], best_acc1=float(state["best_acc1"]),
                   best_loss=float(state["best_loss"]), best_epoch=int(state["best_epoch"]),
                   es_best=float(state["es_best"]), bad_epochs=int(state["bad_epochs"]))


def _cpu_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in net.state_dict().items()}
