"""The Sightline model bundle: one file that says everything needed to serve a classifier.

A bundle is a plain dict of tensors, strings and numbers so that ``torch.load(weights_only=True)``
can read it without unpickling code. The ImageNet-pretrained model is the same kind of object.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from sightline.model.architectures import build_network, fc_width
from sightline.model.errors import ModelLoadError
from sightline.model.limits import MAX_RESIZE

FORMAT = "sightline-bundle"
FORMAT_VERSION = 1

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PreprocessSpec:
    """Serving preprocessing: shorter side to ``resize`` (bilinear, antialiased), centre crop, normalize."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if not (0 < self.crop <= self.resize <= MAX_RESIZE):
            raise ValueError(
                f"preprocessing needs 0 < crop <= resize <= {MAX_RESIZE}, got crop={self.crop} resize={self.resize}"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("preprocessing mean and std need three values each, std > 0")

    def to_dict(self) -> dict[str, Any]:
        return {"resize": self.resize, "crop": self.crop, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSpec:
        return cls(
            resize=int(data["resize"]),
            crop=int(data["crop"]),
            mean=tuple(float(v) for v in data["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in data["std"]),  # type: ignore[arg-type]
        )


@dataclass
class ModelBundle:
    """Architecture, class names, preprocessing, weights and where they came from."""

    arch: str
    class_names: list[str]
    state_dict: dict[str, torch.Tensor]
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        width = fc_width(self.arch, self.state_dict)
        if width != len(self.class_names):
            raise ModelLoadError(
                f"checkpoint's classifier has {width} outputs but {len(self.class_names)} class names "
                f"were given"
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def build(self) -> torch.nn.Module:
        """A network in eval mode with this bundle's weights loaded (on the CPU).

        Built on the meta device, so no time goes into a random initialisation that the weights
        replace anyway; the parameters are copies, so the network never aliases this bundle.
        """
        with torch.device("meta"):
            net = build_network(self.arch, self.num_classes)
        try:
            net.load_state_dict({k: _own_copy(v) for k, v in self.state_dict.items()}, assign=True)
        except RuntimeError as exc:
            first = " ".join(str(exc).strip().splitlines()[:2])
            raise ModelLoadError(f"weights do not fit {self.arch}: {first[:400]}") from exc
        return net.eval()

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "arch": self.arch,
            "class_names": list(self.class_names),
            "preprocess": self.preprocess.to_dict(),
            "provenance": _plain(self.provenance),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict.items()},
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically, so a reader never sees half a bundle."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(self.to_dict(), tmp)
        os.replace(tmp, path)
        return path

    @classmethod
    def from_dict(cls, data: Any, origin: str = "bundle") -> ModelBundle:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ModelLoadError(f"{origin}: not a Sightline bundle (no '{FORMAT}' format tag)")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ModelLoadError(
                f"{origin}: bundle format version {version} is not supported (this Sightline reads version "
                f"{FORMAT_VERSION})"
            )
        try:
            return cls(
                arch=str(data["arch"]),
                class_names=[str(c) for c in data["class_names"]],
                state_dict=dict(data["state_dict"]),
                preprocess=PreprocessSpec.from_dict(data["preprocess"]),
                provenance=dict(data.get("provenance") or {}),
            )
        except KeyError as exc:
            raise ModelLoadError(f"{origin}: bundle is missing the field {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"{origin}: malformed bundle ({exc})") from exc
        except ModelLoadError as exc:
            raise ModelLoadError(f"{origin}: {exc}") from exc

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ModelBundle:
        return cls.from_dict(load_checkpoint(path), origin=str(path))

    def content_hash(self) -> str:
        """SHA-256 of what serves: architecture, class names, preprocessing and every weight (not provenance).

        The same model has the same hash whichever file (bundle or torchvision .pth) it came from.
        """
        digest = hashlib.sha256()
        digest.update(json.dumps([self.arch, list(self.class_names), self.preprocess.to_dict()]).encode("utf-8"))
        for key in sorted(self.state_dict):
            tensor = self.state_dict[key].detach().cpu().reshape(-1).contiguous()
            digest.update(f"{key}|{tensor.dtype}|{tuple(self.state_dict[key].shape)}|".encode())
            digest.update(tensor.view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def describe(self) -> dict[str, Any]:
        """What `sightline info` prints."""
        return {
            "arch": self.arch,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "preprocess": self.preprocess.to_dict(),
            "parameters": sum(v.numel() for k, v in self.state_dict.items() if "running_" not in k
                              and "num_batches" not in k),
            "provenance": self.provenance,
        }


def load_checkpoint(path: str | os.PathLike[str]) -> Any:
    """torch.load with weights_only=True and errors that name the file."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such model file")
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a directory, expected a .pt/.pth file")
    if not path.is_file():  # a FIFO (or socket, device) would block the read forever
        raise ModelLoadError(f"{path}: not a regular file (a FIFO, socket or device), expected a .pt/.pth file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file; all mean "unreadable"
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if found:
            raise ModelLoadError(
                f"{path}: holds a pickled Python object ({found.group(1)}; e.g. a whole model saved with "
                f"torch.save(model)), which Sightline never unpickles; save model.state_dict() instead, "
                f"or a Sightline bundle"
            ) from exc
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
        reason = detail.group(1) if detail else text.splitlines()[0] if text else type(exc).__name__
        raise ModelLoadError(f"{path}: not a readable PyTorch checkpoint ({reason[:200]})") from exc


def _own_copy(tensor: torch.Tensor) -> torch.Tensor:
    """Float weights as float32 (an fp16-saved checkpoint still serves in fp32 / autocast), never aliased."""
    if tensor.is_floating_point():
        return tensor.detach().to(torch.float32, copy=True)
    return tensor.detach().clone()


def _plain(value: Any) -> Any:
    """Provenance must stay weights_only-loadable: only str/int/float/bool/None/list/dict."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "__dataclass_fields__"):
        return _plain(asdict(value))
    return str(value)
