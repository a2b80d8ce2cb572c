"""Read the Dockerfile, constraints.txt and deploy/kuberay/ the way their consumers do, for the deploy tests."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
CONSTRAINTS = ROOT / "constraints.txt"
KUBERAY = ROOT / "deploy" / "kuberay"


def dockerfile_instructions(text: str | None = None) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per logical line: comments dropped, backslash continuations joined as Docker
    joins them (a comment line inside a continuation is skipped, as BuildKit does)."""
    text = DOCKERFILE.read_text() if text is None else text
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += raw.rstrip()[:-1]
            continue
        full = (pending + raw).strip()
        pending = ""
        if full:
            word, _, rest = full.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerfile_values(name: str) -> list[str]:
    return [args for word, args in dockerfile_instructions() if word == name]


def constraints() -> dict[str, str]:
    """Canonical name -> pinned version; every line must be an exact pin."""
    pins: dict[str, str] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)", line)
        assert match, f"constraints.txt: not an exact pin: {line!r}"
        pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def project() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def runtime_requirements(*extras: str) -> list[Requirement]:
    meta = project()
    reqs = [Requirement(r) for r in meta["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in meta["optional-dependencies"][extra]]
    return reqs


def kuberay_objects() -> list[dict[str, Any]]:
    objects = []
    for path in sorted(KUBERAY.glob("*.yaml")):
        objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    return objects


def kuberay_object(kind: str) -> dict[str, Any]:
    (found,) = [o for o in kuberay_objects() if o["kind"] == kind]
    return found


def prometheus_config_copy(folder: Path) -> Path:
    """deploy/prometheus/ as Prometheus sees it in the container: prometheus.yml with its rule files, and the scrape
    token file compose writes beside it (promtool and Prometheus refuse a config whose credentials_file is missing)."""
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    for name in ("prometheus.yml", *config.get("rule_files", [])):
        (folder / name).write_text((ROOT / "deploy" / "prometheus" / name).read_text())
    (folder / "sightline-metrics-token").write_text("test-metrics-token-16")
    return folder / "prometheus.yml"
