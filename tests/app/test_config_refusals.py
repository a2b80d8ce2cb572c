"""What a config asks for and cannot get is refused in one line, never a traceback after the model has loaded:
an absent extra (named with its `pip install`), an event rule on a label the model lacks (issue #22)."""

from __future__ import annotations

import importlib.metadata
from importlib.util import find_spec
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from sightline import synthetic_media as media
from sightline.cli import main
from sightline.model.backends import BACKENDS, EXTRAS
from sightline.stream.config import RAY_INSTALL_HINT

from tests.support.models import tiny_bundle


def hide(monkeypatch: pytest.MonkeyPatch, module: object, *names: str) -> None:
    """``find_spec`` in ``module`` answers None for ``names``, as on a machine without those packages."""
    monkeypatch.setattr(module, "find_spec", lambda name, *a: None if name in names else find_spec(name, *a))


def write_config(tmp_path: Path, **sections: object) -> Path:
    bundle = tiny_bundle().save(tmp_path / "bundle.pt")
    clip = media.make_test_clip(tmp_path / "clip.mp4", frames=2, size=(64, 48))
    data = {"model": {"source": str(bundle), "device": "cpu"}, "media_root": str(tmp_path),
            "output_dir": str(tmp_path / "out"), "server": {"enabled": False},
            "streams": [{"name": "a", "url": str(clip)}], **sections}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run_refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("backend", sorted(EXTRAS))
def test_an_absent_backend_is_refused_when_the_config_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str],
                                                               backend: str) -> None:
    import sightline.model.backends as backends

    hide(monkeypatch, backends, *EXTRAS[backend][0])
    config = write_config(tmp_path, model={"source": str(tmp_path / "bundle.pt"), "backend": backend})
    err = run_refused(capsys, "run", str(config))
    assert "model.backend" in err and f"pip install -e '.[{backend}]'" in err
    assert len([line for line in err.splitlines() if "pip install" in line]) == 1


def test_every_compiled_backend_names_its_extra() -> None:
    declared = importlib.metadata.metadata("sightline").get_all("Provides-Extra")
    assert set(EXTRAS) == set(BACKENDS) - {"auto", "torch"}
    assert {extra for _, extra in EXTRAS.values()} <= set(declared)


def test_ray_absent_refuses_the_cluster_config_and_the_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import sightline.stream.config as config_module

    hide(monkeypatch, config_module, "ray")
    config = write_config(tmp_path, cluster={"ray": {"address": "local"}})
    assert RAY_INSTALL_HINT in run_refused(capsys, "run", str(config))
    plain = write_config(tmp_path)
    assert run_refused(capsys, "run", str(plain), "--ray", "local") == f"error: --ray: {RAY_INSTALL_HINT}"


def test_event_outputs_need_no_extra() -> None:
    """MQTT and webhook outputs are plain dependencies: `pip install -e .` installs what they import."""
    required = {Requirement(r).name for r in importlib.metadata.requires("sightline") or []
                if "extra ==" not in r}
    assert {"paho-mqtt", "httpx"} <= required


def test_a_rule_on_a_label_the_model_lacks_exits_2_naming_the_closest_class(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, events={"rules": [{"name": "ok", "labels": ["class_a", "*"]},
                                                      {"name": "typo", "labels": ["clas_b"]}]})
    err = run_refused(capsys, "run", str(config))
    assert err == ("error: events.rules[1].labels: rule 'typo': 'clas_b' (closest: 'class_b') not among the "
                   "model's classes (class_a, class_b, class_c, class_d)")


def test_a_model_resizing_past_model_max_resize_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sightline.model.bundle import PreprocessSpec

    config = write_config(tmp_path)
    tiny_bundle(spec=PreprocessSpec(resize=1500, crop=32)).save(tmp_path / "bundle.pt")
    assert run_refused(capsys, "run", str(config)) == (
        "error: model.source: the model resizes frames to 1500 px, over model.max_resize (1024); raise "
        "model.max_resize if that is intended")
