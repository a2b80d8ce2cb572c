"""YAML -> pydantic with errors a person can act on: file name, dotted path, every problem at once.

Each package defines its own config models (deriving from StrictModel); this module only reads and
reports.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal, Optional, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator
from sightline.model.echo import echo
from sightline.model.errors import ConfigError

T = TypeVar("T", bound=BaseModel)

OPTIONAL_BOOL = (bool | None, Optional[bool])  # noqa: UP045 (a field may spell it either way)
BOOL_TAG = "tag:yaml.org,2002:bool"
LOC_PART_LIMIT = 64  # a path element echoed in an error (an unknown key may be megabytes long)


class StrictModel(BaseModel):
    """Unknown keys are errors (a typo never silently falls back to a default); booleans are strict.

    pydantic's lax mode reads "yes", "on", "true", "1" and 1 as true. The config is documented as
    strict, so a bool field takes only a YAML/JSON boolean (``true``/``false``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _strict_bools(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is None or isinstance(value, bool):
            return value
        if field.annotation is bool or (field.annotation in OPTIONAL_BOOL and value is not None):
            raise ValueError(f"must be true or false (a boolean, not {type(value).__name__})")
        words = _bool_or_words(field.annotation)
        if words is not None and value not in words:
            raise ValueError(f"must be true, false or one of {', '.join(words)} (not {echo(value)})")
        return value


def _bool_or_words(annotation: Any) -> tuple[str, ...] | None:
    """The words of a ``bool | Literal[...]`` field (``record: true | passthrough | annotated``), else None: such a
    field takes a boolean or one of its words, never "yes" or 1 read as true."""
    args = get_args(annotation)
    if bool not in args:
        return None
    words = tuple(w for a in args if get_origin(a) is Literal for w in get_args(a))
    return words or None


def dotted(loc: tuple[Any, ...]) -> str:
    """('streams', 2, 'url') -> 'streams[2].url'. Each part is bounded (it may be a user's key)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + echo(part, LOC_PART_LIMIT)
    return out or "(top level)"


class DuplicateKeyError(ConfigError):
    """A mapping names the same key twice (YAML would silently keep the last one)."""


class UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, except that a key given twice in one mapping is an error naming both lines, and only
    ``true``/``false`` are booleans (YAML 1.2): ``yes``, ``no``, ``on``, ``off`` stay strings, so a bool
    field refuses them and a stream named ``no`` stays a name.

    ``<<`` merge keys still work: a key coming from a merged mapping may be overridden.
    """

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != BOOL_TAG]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base constructor reports it
                continue
            line = key_node.start_mark.line + 1
            if first is not None:
                raise DuplicateKeyError(f"line {line}: duplicate key {echo(repr(key), LOC_PART_LIMIT)} "
                                        f"(first on line {first}); each key may appear once")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


UniqueKeyLoader.add_implicit_resolver(BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, UniqueKeyLoader.construct_mapping)


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
        msg = echo(msg, 500)
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
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except DuplicateKeyError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = echo(getattr(exc, "problem", None) or str(exc).splitlines()[0])
        raise ConfigError(f"{path}:{where}: not valid YAML: {problem}") from None
    return {} if data is None else data


def load_yaml(path: str | os.PathLike[str], model: type[T], overrides: dict[str, Any] | None = None) -> T:
    """Read, merge top-level ``overrides`` (CLI flags win over the file), validate."""
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, found {type(data).__name__}")
    data = {**data, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    return validate(data, model, str(path))
