"""Every shell and YAML example in README.md and docs/*.md works offline, or says why it is not run (issue #22).

A ```bash / ```sh / ```shell block runs as written, with ``bash -euo pipefail``, as an operator would from the
repository root: in a fresh temporary folder holding a copy of ``configs/``, with the venv's ``bin`` first on
PATH, ``SIGHTLINE_OFFLINE=1``, a home folder of its own (no ImageNet weights in torch's cache) and inside a
network namespace that has only loopback, so a block that tries to reach another host fails and ports never
clash with other processes. A ```yaml / ```yml block is read as strictly as a config file and validated against
the config it belongs to: ``RunConfig`` (``sightline run``) or ``TrainConfig`` (``sightline train``), chosen by
its top-level keys. A block that cannot run here carries a marker on the line right before it, with its reason:

    <!-- docs-test: skip (needs a camera) -->

The offline demo classifier (trained by the first ``sightline demo``, a minute or more on 2 cores) is kept in
pytest's cache folder between runs, so later runs take seconds per block.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHELL, YAML = ("bash", "sh", "shell"), ("yaml", "yml")
FENCE = re.compile(r"^```(\w+)\s*$")
MARKER = re.compile(r"^<!--\s*docs-test:\s*(.*?)\s*-->$")
SKIP = re.compile(r"^skip \((.+)\)$")
MIN_RAN = 11  # blocks that run or validate (3 shell + 8 YAML now); raise it when more examples become runnable
BLOCK_TIMEOUT_S = 600  # the first `sightline demo` on an empty cache trains the demo classifier (~1-3 min)


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    skip: str | None  # the marker's reason

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def blocks_of(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
        assert end is not None, f"{path.relative_to(REPO)}:{i + 1}: unclosed code block"
        lang = fence.group(1).lower()
        if lang in SHELL + YAML:
            before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            marker = MARKER.match(before)
            skip = None
            if marker is not None:
                reason = SKIP.match(marker.group(1))
                assert reason, f"{path.relative_to(REPO)}:{i + 1}: a marker is `docs-test: skip (REASON)`"
                skip = reason.group(1).strip()
            found.append(Block(path, i + 1, lang, "\n".join(lines[i + 1:end]) + "\n", skip))
        i = end + 1
    return found


BLOCKS = [block for path in documents() for block in blocks_of(path)]


def test_every_example_runs_or_says_why_not(capsys: pytest.CaptureFixture[str]) -> None:
    """The tally, and a floor on what runs: a block marked skip without cause would lower it."""
    ran = Counter(b.lang if b.lang in YAML else "shell" for b in BLOCKS if b.skip is None)
    skipped = Counter(b.skip for b in BLOCKS if b.skip is not None)
    with capsys.disabled():
        print(f"\ndocs examples: {sum(ran.values())} run ({', '.join(f'{n} {k}' for k, n in sorted(ran.items()))}), "
              f"{sum(skipped.values())} skipped:")
        for reason, n in skipped.most_common():
            print(f"  {n} x {reason}")
    assert len(BLOCKS) > 20  # the documents were found and read
    assert sum(ran.values()) >= MIN_RAN, ran


def config_model(data: object, block: Block) -> type:
    from sightline.stream.config import RunConfig
    from sightline.training.config import TrainConfig

    assert isinstance(data, dict) and data, f"{block.id}: a YAML example is a config (a mapping of keys)"
    for model in (RunConfig, TrainConfig):
        if set(data) <= set(model.model_fields):
            return model
    raise AssertionError(f"{block.id}: keys {sorted(data)} are neither a `sightline run` nor a `sightline train` "
                         "config; fix the example or mark it skip with a reason")


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang in YAML and b.skip is None], ids=lambda b: b.id)
def test_yaml_example_is_a_valid_config(block: Block, tmp_path: Path) -> None:
    from sightline.model.yamlconfig import load_yaml

    path = tmp_path / "example.yaml"
    path.write_text(block.text)
    load_yaml(path, config_model(yaml.safe_load(block.text), block))  # strict: unknown keys, duplicates, types


@pytest.fixture(scope="module")
def home(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home folder whose ~/.cache/sightline survives between runs (pytest's cache), and nothing else cached."""
    home = tmp_path_factory.mktemp("home")
    kept = getattr(request.config, "cache", None)  # None under -p no:cacheprovider: trained again, in this run only
    cache = kept.mkdir("sightline-docs-examples") if kept is not None else home / "kept"
    (home / ".cache").mkdir()
    cache.mkdir(exist_ok=True)
    (home / ".cache" / "sightline").symlink_to(cache, target_is_directory=True)
    return home


@pytest.mark.slow
@pytest.mark.timeout(BLOCK_TIMEOUT_S + 60)
@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang not in YAML and b.skip is None], ids=lambda b: b.id)
def test_shell_example_runs_offline(block: Block, home: Path, tmp_path: Path) -> None:
    assert shutil.which("unshare") and shutil.which("ip"), "util-linux unshare and iproute2 ip are needed"
    work = tmp_path / "checkout"
    shutil.copytree(REPO / "configs", work / "configs")
    script = tmp_path / "block.sh"
    script.write_text(block.text)
    keep = {k: os.environ[k] for k in ("LANG", "LC_ALL", "TMPDIR") if k in os.environ}
    env = {**keep, "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home),
           "SIGHTLINE_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    cmd = ["unshare", "--net", "bash", "-c", 'ip link set lo up && exec bash -euo pipefail "$0"', str(script)]
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group: a timeout ends everything it started
    try:
        out, err = proc.communicate(timeout=BLOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        raise AssertionError(f"{block.id}: still running after {BLOCK_TIMEOUT_S} s\n{out[-4000:]}\n{err[-4000:]}") \
            from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    assert proc.returncode == 0, (f"{block.id} exited {proc.returncode}:\n{block.text}\n--- stdout\n"
                                  f"{out[-4000:]}\n--- stderr\n{err[-4000:]}")
    assert "Traceback" not in err, err[-4000:]
