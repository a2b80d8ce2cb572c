"""The project's wheel, built once per test session from a copy of the package folders (a build in the checkout
would leave setuptools' build/ folder there), and its files unpacked: the layout a user installs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[2]


def package_dirs() -> dict[str, Path]:
    """``[tool.setuptools] package-dir``: import package -> folder in the repository."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    return {name: REPO / folder for name, folder in config["tool"]["setuptools"]["package-dir"].items()}


@dataclass(frozen=True)
class Wheel:
    path: Path
    names: list[str]
    unpacked: Path  # the wheel's files: put it first on PYTHONPATH to import the shipped layout


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Wheel:
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for folder in {p.name for p in package_dirs().values()}:
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(root / "dist"), str(src)], check=True, capture_output=True, timeout=300)
    (path,) = (root / "dist").glob("sightline-*.whl")
    with zipfile.ZipFile(path) as archive:
        archive.extractall(root / "unpacked")
        names = archive.namelist()
    return Wheel(path, names, root / "unpacked")
