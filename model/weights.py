"""Turn a model source (``imagenet``, a torchvision ``.pth`` state dict, or a bundle) into a ModelBundle."""

from __future__ import annotations

import contextlib
import os
import sys
import urllib.error
from pathlib import Path

import torch
from sightline.model.bundle import FORMAT, ModelBundle, PreprocessSpec, load_checkpoint
from sightline.model.errors import ModelLoadError
from sightline.model.offline import OFFLINE_ENV, offline
from torchvision.models import ResNet18_Weights

IMAGENET = "imagenet"
IMAGENET_WEIGHTS = ResNet18_Weights.IMAGENET1K_V1


def imagenet_cache_path() -> Path:
    """Where torchvision keeps the ResNet18 ImageNet weights (honours TORCH_HOME)."""
    filename = os.path.basename(IMAGENET_WEIGHTS.url)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def imagenet_preprocess() -> PreprocessSpec:
    t = IMAGENET_WEIGHTS.transforms()
    return PreprocessSpec(
        resize=int(t.resize_size[0]),
        crop=int(t.crop_size[0]),
        mean=tuple(float(v) for v in t.mean),  # type: ignore[arg-type]
        std=tuple(float(v) for v in t.std),  # type: ignore[arg-type]
    )


def imagenet_classes() -> list[str]:
    return list(IMAGENET_WEIGHTS.meta["categories"])


def load_imagenet(download: bool | None = None) -> ModelBundle:
    """ResNet18 IMAGENET1K_V1 through torchvision's Weights API, from torch's cache or downloaded into it.

    ``download=None`` downloads unless offline mode is on (``--offline``, SIGHTLINE_OFFLINE=1).
    """
    path = imagenet_cache_path()
    if download is None:
        download = not offline()
    if path.exists():
        try:
            state_dict = load_checkpoint(path)
        except ModelLoadError as exc:
            raise ModelLoadError(f"{exc}; delete it to download it again") from exc
    elif not download:
        raise _offline_error(path, f"offline mode is on ({OFFLINE_ENV}=1 or --offline)" if offline()
                             else "downloads are disabled here")
    else:
        try:
            # torch.hub announces the download on stdout; keep stdout for results (`predict --json`).
            with contextlib.redirect_stdout(sys.stderr):
                state_dict = IMAGENET_WEIGHTS.get_state_dict(progress=True, check_hash=True)
        except (urllib.error.URLError, OSError, RuntimeError) as exc:
            raise _offline_error(path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
    return ModelBundle(
        arch="resnet18",
        class_names=imagenet_classes(),
        state_dict=state_dict,
        preprocess=imagenet_preprocess(),
        provenance={"source": "torchvision", "weights": "ResNet18_Weights.IMAGENET1K_V1",
                    "val_acc1": IMAGENET_WEIGHTS.meta["_metrics"]["ImageNet-1K"]["acc@1"]},
    )


def _offline_error(path: Path, reason: str) -> ModelLoadError:
    return ModelLoadError(
        f"ImageNet weights for resnet18 are not cached and could not be downloaded ({reason}). "
        f"Put {os.path.basename(IMAGENET_WEIGHTS.url)} at {path} (or set TORCH_HOME), "
        f"or pass a local file with --model PATH (a .pth state dict or a Sightline bundle)"
    )


def load_model_source(source: str | os.PathLike[str], *, arch: str = "resnet18",
                      download: bool | None = None) -> ModelBundle:
    """Resolve ``imagenet`` or a path to a bundle or a torchvision state dict."""
    if str(source) == IMAGENET:
        return load_imagenet(download=download)
    path = Path(source)
    data = load_checkpoint(path)
    if not isinstance(data, dict):
        raise ModelLoadError(
            f"{path}: expected a state dict or a Sightline bundle, found {type(data).__name__}"
        )
    if data.get("format") == FORMAT:
        return ModelBundle.from_dict(data, origin=str(path))
    if "format" in data or "format_version" in data:
        raise ModelLoadError(f"{path}: unknown checkpoint format {data.get('format')!r} "
                             f"version {data.get('format_version')!r}")
    return _from_state_dict(path, data, arch)


def _from_state_dict(path: Path, data: dict, arch: str) -> ModelBundle:
    """A torchvision-format state dict: 1000 outputs are ImageNet's classes, other widths numbered names."""
    state_dict = data.get("state_dict", data) if isinstance(data.get("state_dict"), dict) else data
    if not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ModelLoadError(f"{path}: not a state dict (values are not all tensors)")
    if state_dict and all(k.startswith("module.") for k in state_dict):
        # saved from a DataParallel/DistributedDataParallel wrapper
        state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
    weight = state_dict.get("fc.weight")
    if weight is None:
        raise ModelLoadError(f"{path}: no 'fc.weight' in the state dict; is this a {arch} checkpoint?")
    width = int(weight.shape[0])
    classes = imagenet_classes() if width == len(imagenet_classes()) else [f"class_{i}" for i in range(width)]
    try:
        return ModelBundle(arch=arch, class_names=classes, state_dict=state_dict,
                           preprocess=imagenet_preprocess(),
                           provenance={"source": "state_dict", "file": path.name})
    except ModelLoadError as exc:
        raise ModelLoadError(f"{path}: {exc}") from exc
