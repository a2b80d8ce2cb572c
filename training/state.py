"""The full training state in ``last.pt``, readable with ``torch.load(weights_only=True)``.

Everything is stored as tensors, numbers, strings, lists and dicts: model, optimizer, scheduler and
scaler state dicts, and the random number generators (torch, CUDA, numpy, Python, the loader's own)
as tensors, so a resumed run draws exactly the numbers an uninterrupted one would.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sightline.model.bundle import load_checkpoint
from sightline.training.errors import TrainingError

STATE_FORMAT = "sightline-train-state"
STATE_VERSION = 1


def capture_rng(generator: torch.Generator) -> dict[str, Any]:
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()  # type: ignore[misc]
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "loader": generator.get_state(),
        "numpy": {"name": str(np_name), "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "python": {"version": int(py_version), "internal": torch.tensor(py_internal, dtype=torch.int64),
                   "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["loader"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss"]))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def seed_everything(seed: int, generator: torch.Generator) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    generator.manual_seed(seed)


def save_state(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Atomic write (a crash mid-save leaves the previous last.pt intact)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": STATE_FORMAT, "format_version": STATE_VERSION, **state}, tmp)
    os.replace(tmp, path)
    return path


def load_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    data = load_checkpoint(path)
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        raise TrainingError(f"{path}: not a Sightline training state (expected the last.pt of a run; "
                            f"a bundle.pt is a model: use it with --init to fine-tune further)")
    if data.get("format_version") != STATE_VERSION:
        raise TrainingError(f"{path}: training state version {data.get('format_version')} is not supported "
                            f"(this Sightline reads version {STATE_VERSION})")
    return data
