"""YAML -> pydantic with errors a person can act on: file name, dotted path, every problem at once.

Each package defines its own config models (deriving from StrictModel); this module only reads and
reports.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from sightline.model.errors import ConfigError

T = TypeVar("T", bound=BaseModel)


class StrictModel(BaseModel):
    """Unknown keys are errors (a typo never silently falls back to a default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def dotted(loc: tuple[Any, ...]) -> str:
    """('streams', 2, 'url') -> 'streams[2].url'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def format_validation_error(exc: ValidationError, origin: str) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"]
                    if not (isinstance(p, str) and ("function-" in p or p.startswith("tagged"))))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling)"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        lines.append(f"{origin}: {dotted(loc)}: {msg}" if loc else f"{origin}: {msg}")
    return "\n".join(lines)


def validate(data: Any, model: type[T], origin: str) -> T:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, origin)) from None


def read_yaml(path: str | os.PathLike[str]) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}:{where}: not valid YAML: {problem}") from None
    return {} if data is None else data


def load_yaml(path: str | os.PathLike[str], model: type[T], overrides: dict[str, Any] | None = None) -> T:
    """Read, merge top-level ``overrides`` (CLI flags win over the file), validate."""
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, found {type(data).__name__}")
    data = {**data, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    return validate(data, model, str(path))
