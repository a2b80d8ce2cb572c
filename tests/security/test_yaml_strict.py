"""Issue 11, row 3: duplicate YAML keys are an error naming both lines; booleans are strict.

The issue's example: a second ``server:`` block silently replaced the first and dropped its token.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sightline.model.errors import ConfigError
from sightline.stream.config import load_run_config
from sightline.training.config import load_config as load_train_config

from tests.support.api_client import AUTH, api_client


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_second_server_block_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  token: s3cret-token\nstreams: []\nserver:\n  port: 8081\n")
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    assert str(err.value) == f"{path}: line 4: duplicate key 'server' (first on line 1); each key may appear once"


def test_duplicate_key_inside_a_stream_entry(tmp_path: Path) -> None:
    path = write(tmp_path, "streams:\n  - name: a\n    url: rtsp://cam/1\n    name: b\n")
    with pytest.raises(ConfigError, match=r"line 4: duplicate key 'name' \(first on line 2\)"):
        load_run_config(path)


def test_duplicate_key_in_a_training_config(tmp_path: Path) -> None:
    path = write(tmp_path, "data: d\nepochs: 2\nepochs: 3\n")
    with pytest.raises(ConfigError, match=r"line 3: duplicate key 'epochs' \(first on line 2\)"):
        load_train_config(path)


def test_merge_keys_may_still_override_merged_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "streams:\n  - &cam {name: a, url: 'rtsp://cam/1', infer_fps: 5}\n"
                           "  - <<: *cam\n    name: b\n")
    config = load_run_config(path)
    assert [(s.name, s.url, s.infer_fps) for s in config.streams] == [("a", "rtsp://cam/1", 5),
                                                                      ("b", "rtsp://cam/1", 5)]


@pytest.mark.parametrize("value", ['"yes"', '"true"', "yes", "on", "1", "0", '"false"', "no", "null"])
@pytest.mark.parametrize("where", ["streams[0].loop", "streams[0].record", "log_predictions", "server.enabled",
                                   "model.compile"])
def test_booleans_take_only_true_or_false(tmp_path: Path, value: str, where: str) -> None:
    stream = "streams:\n  - {name: a, url: 'rtsp://cam/1'%s}\n"
    if where.startswith("streams"):
        text = stream % f", {where.split('.')[1]}: {value}"
    else:
        section, _, key = where.rpartition(".")
        text = (f"{section}:\n  {key}: {value}\n" if section else f"{key}: {value}\n") + stream % ""
    with pytest.raises(ConfigError) as err:
        load_run_config(write(tmp_path, text))
    assert f"{where}: must be true" in str(err.value)  # "or false", or "false or one of <its words>"


def test_true_and_false_are_booleans(tmp_path: Path) -> None:
    config = load_run_config(write(tmp_path, "log_predictions: False\nstreams:\n"
                                             "  - {name: a, url: 'rtsp://cam/1', loop: true, record: FALSE}\n"))
    assert config.log_predictions is False and config.streams[0].loop is True and config.streams[0].record is False


def test_yes_no_stay_strings_for_string_fields(tmp_path: Path) -> None:
    config = load_run_config(write(tmp_path, "streams:\n  - {name: no, url: 'rtsp://cam/1'}\n"))
    assert config.streams[0].name == "no"


def test_training_booleans_are_strict(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_train_config(write(tmp_path, "data: d\namp: 'yes'\naugment: {hflip: 1}\n"))
    assert "amp: must be true or false" in str(err.value)
    assert "augment.hflip: must be true or false" in str(err.value)


@pytest.mark.timeout(60)
async def test_api_refuses_non_boolean_booleans(tmp_path: Path) -> None:
    async with api_client(tmp_path, tmp_path / "out") as (client, pipeline):
        for loop in ("yes", "true", 1, "on", 0, None):
            body = {"name": "cam", "url": "webrtc://cam", "loop": loop}
            r = await client.post("/api/streams", json=body, headers=AUTH)
            assert r.status_code == 422, loop
            assert "loop: must be true or false" in r.json()["detail"]
        assert pipeline.names() == []
