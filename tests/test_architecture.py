"""The house rules of docs/architecture.md, checked on the layout a user installs (the wheel's files).

The import contracts live in pyproject.toml (``[tool.importlinter]``) and are run here with import-linter:
a new circle or an import that runs upward fails the suite. Every import counts, also those inside
functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support.wheel import REPO, Wheel, package_dirs

MAX_MODULES_PER_FOLDER = 15
CYCLES = """
import sys
import grimp
graph = grimp.build_graph("sightline", include_external_packages=False)
index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]
def visit(v):
    index[v] = low[v] = counter[0]; counter[0] += 1; stack.append(v); on.add(v)
    for w in graph.find_modules_directly_imported_by(v):
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        group = []
        while True:
            w = stack.pop(); on.discard(w); group.append(w)
            if w == v: break
        if len(group) > 1: cycles.append(sorted(group))
sys.setrecursionlimit(10000)
for module in sorted(graph.modules):
    if module not in index: visit(module)
print(len(graph.modules), cycles)
"""


def shipped_python(wheel: Wheel, *args: str) -> subprocess.CompletedProcess[str]:
    """A command with the wheel's files first on the import path (the editable install maps the package onto
    several folders, which import-linter's module discovery cannot follow)."""
    env = {**os.environ, "PYTHONPATH": str(wheel.unpacked)}
    return subprocess.run(list(args), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_the_import_contracts_hold(wheel: Wheel) -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    proc = shipped_python(wheel, str(lint), "--config", str(REPO / "pyproject.toml"), "--no-cache")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout and "Contracts: 6 kept" in proc.stdout, proc.stdout


def test_no_module_imports_itself_round_a_circle(wheel: Wheel) -> None:
    proc = shipped_python(wheel, sys.executable, "-c", CYCLES)
    assert proc.returncode == 0, proc.stderr
    count, cycles = proc.stdout.split(" ", 1)
    assert int(count) > 130  # the whole package was read, not only the root folder
    assert cycles.strip() == "[]"


def test_no_folder_holds_more_than_fifteen_modules() -> None:
    for folder in package_dirs().values():
        for path in [folder, *(p for p in folder.rglob("*") if p.is_dir() and p.name != "__pycache__")]:
            modules = [p for p in path.glob("*.py") if p.name != "__init__.py"]
            assert len(modules) <= MAX_MODULES_PER_FOLDER, f"{path.relative_to(REPO)}: {len(modules)} modules"


DOTTED = re.compile(r"\bsightline(?:\.[A-Za-z_]\w*)+")
FILE = re.compile(r"(?<![\w/.-])((?:app|model|stream|training)/[\w/]+\.py)\b")


def resolves(dotted: str) -> bool:
    """A module, or a name in one (``sightline.stream.urls.redact_url``)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def documents() -> list[Path]:
    paths = [REPO / "README.md", *(REPO / "docs").rglob("*.md"), *(REPO / "benchmarks").rglob("*")]
    return [p for p in paths if p.is_file() and p.suffix in (".md", ".py", ".sh", ".txt")]


def test_docs_and_benchmarks_name_only_paths_that_exist() -> None:
    stale = []
    for path in documents():
        text = path.read_text(errors="replace")
        for dotted in sorted(set(DOTTED.findall(text))):
            if dotted.startswith(("sightline.stream", "sightline.model", "sightline.training")) \
                    and not resolves(dotted.rstrip(".")):
                stale.append(f"{path.relative_to(REPO)}: {dotted}")
        for file in sorted(set(FILE.findall(text))):
            if not (REPO / file).is_file():
                stale.append(f"{path.relative_to(REPO)}: {file}")
    assert stale == []


def test_the_model_packages_lazy_names_resolve() -> None:
    """``sightline.model`` imports its names on first use, from module names written as strings: a moved module
    must not leave one behind."""
    import sightline.model

    for name in sightline.model.__all__:
        assert getattr(sightline.model, name) is not None, name
