from pathlib import Path

import pytest
from sightline.cli import main
from sightline.model.errors import ConfigError
from sightline.model.yamlconfig import validate
from sightline.training.config import TrainConfig, load_config

REPO = Path(__file__).resolve().parents[2]


def test_example_config_loads_with_the_defaults():
    cfg = load_config(REPO / "configs" / "train.yaml")
    assert cfg == TrainConfig()


def test_typo_is_an_error_naming_file_and_dotted_path(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("epochs: 3\naugment:\n  sclae: [0.5, 1.0]\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{path}: augment.sclae: unknown key" in str(err.value)


def test_all_bad_values_are_reported_at_once(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("lr: -1\noptimizer: adam\naugment:\n  scale: [0.9, 0.1]\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert f"{path}: lr:" in msg and f"{path}: optimizer:" in msg and f"{path}: augment.scale:" in msg


def test_flags_override_the_file(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("epochs: 3\nlr: 0.01\n")
    cfg = load_config(path, {"epochs": 7, "lr": None})
    assert (cfg.epochs, cfg.lr) == (7, 0.01)


def test_one_epoch_of_head_then_full_is_a_head_only_run():
    cfg = load_config(None, {"epochs": 1})
    assert (cfg.mode, cfg.head_epochs, cfg.full_phase_skipped()) == ("head-then-full", 1, True)
    assert not load_config(None, {"epochs": 2}).full_phase_skipped()


def test_head_then_full_needs_a_head_epoch():
    with pytest.raises(ConfigError, match="head_epochs: .*head-then-full"):
        validate({"head_epochs": 0}, TrainConfig, "test")


def test_head_mode_from_scratch_is_refused():
    with pytest.raises(ConfigError, match="init: .*mode 'head'"):
        load_config(None, {"mode": "head", "init": "scratch"})


def test_cli_reports_a_bad_config_as_one_error_line(tmp_path, capsys):
    path = tmp_path / "train.yaml"
    path.write_text("batch_sise: 8\n")
    code = main(["train", "--config", str(path), "--data", str(tmp_path), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and "batch_sise: unknown key" in err and "Traceback" not in err


def test_missing_data_flag_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "run")]) == 2
    assert "data: missing; pass --data ROOT" in capsys.readouterr().err
