"""A camera's several inputs in the config: roles complete and not repeated, URLs checked whole, secrets never echoed,
the single-url form one input with every role."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sightline.model.errors import ConfigError
from sightline.stream.config import RunConfig, StreamConfig, load_run_config

MAIN = "rtsp://admin:s3cret@127.0.0.1:8554/main"
SUB = "rtsp://admin:s3cret@127.0.0.1:8554/sub"


def camera(**extra: object) -> dict:
    return {"name": "door", "inputs": [{"name": "main", "url": MAIN, "roles": ["view", "record"]},
                                       {"name": "sub", "url": SUB, "roles": ["classify"]}], **extra}


def refused(tmp_path: Path, stream: dict) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"streams": [stream]}))
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    text = str(err.value)
    assert "s3cret" not in text  # an error never quotes an input's URL
    return text


def test_a_camera_with_a_main_and_a_substream() -> None:
    door = StreamConfig.model_validate(camera())
    assert [(i.label, i.roles) for i in door.input_list] == [("main", ["record", "view"]), ("sub", ["classify"])]
    assert door.classify_input.label == "sub" and door.record_input.label == "main" and door.view_input.label == "main"
    assert door.source_url == SUB and door.record_mode == "passthrough" and door.clips_input == "record"
    assert [i.label for i in door.separate_inputs] == ["main"]
    opened = door.for_input(door.record_input)  # what the main input's reader opens
    assert (opened.url, opened.inputs, opened.is_network) == (MAIN, None, True)
    assert StreamConfig.model_validate(door.model_dump()) == door  # a round trip (the cluster ships configs)


def test_defaults_name_by_roles_view_the_classified_input_and_clip_from_it_without_a_recording() -> None:
    door = StreamConfig.model_validate({"name": "door", "inputs": [{"url": MAIN, "roles": ["classify"]},
                                                                   {"url": SUB, "roles": ["view"]}]})
    assert [i.label for i in door.input_list] == ["classify", "view"]
    assert door.record_mode is None and door.record_input is None and door.clips_input == "classify"
    alone = StreamConfig.model_validate({"name": "d", "inputs": [{"url": SUB, "roles": ["classify"]}]})
    assert alone.view_input.label == "classify"  # view defaults to the classify input


def test_the_single_url_form_is_one_input_with_every_role() -> None:
    plain = StreamConfig(name="cam", url=MAIN, record=True)
    (only,) = plain.input_list
    assert (only.label, only.roles, only.url) == ("main", ["classify", "record", "view"], MAIN)
    assert StreamConfig(name="cam", url=MAIN).input_list[0].roles == ["classify", "view"]
    assert plain.clips_input == "classify"


@pytest.mark.parametrize(("stream", "message"), [
    ({"name": "door"}, "url or inputs is required"),
    ({**camera(), "url": MAIN}, "not both"),
    (camera(inputs=[{"url": MAIN, "roles": ["record"]}]), "one input needs the classify role"),
    (camera(inputs=[{"url": MAIN, "roles": ["classify", "classify"]}]), "a role is listed twice"),
    (camera(inputs=[{"url": MAIN, "roles": ["classify"]}, {"url": SUB, "roles": ["classify"]}]),
     "the classify role is given to inputs 0 and 1"),
    (camera(inputs=[{"url": MAIN, "roles": ["classify", "record"]}, {"url": SUB, "roles": ["record"]}]),
     "the record role is given to inputs 0 and 1"),
    (camera(inputs=[{"url": MAIN, "roles": ["classify"]}, {"url": MAIN, "roles": ["record"]}]), "same url"),
    (camera(inputs=[{"name": "a", "url": MAIN, "roles": ["classify"]}, {"name": "a", "url": SUB, "roles": ["view"]}]),
     "the name 'a' is taken"),
    (camera(inputs=[{"url": MAIN, "roles": []}]), "at least 1 item"),
    (camera(inputs=[{"url": MAIN, "roles": ["detect"]}]), "'classify', 'record' or 'view'"),
    (camera(inputs=[{"url": "/media/cam.mp4", "roles": ["classify"]}]), "files, devices and webrtc://"),
    (camera(inputs=[{"url": "webrtc://door", "roles": ["classify"]}]), "files, devices and webrtc://"),
    (camera(inputs=[{"url": "rtsp://admin:s3cret@127.0.0.1:99999/x", "roles": ["classify"]}]), "invalid port"),
    (camera(inputs=[{"url": "rtsp://admin:s3cret@127.0.0.1/x y", "roles": ["classify"]}]),
     "streams[0].inputs[0].url: contains white space"),
    (camera(record=True), "the record role says which input is recorded"),
    (camera(record="annotated"), "the record role says which input is recorded"),
    ({"name": "cam", "url": MAIN, "clips_from": "record"}, "clips_from: record needs an input with the record role"),
    (camera(inputs=[{"url": MAIN, "roles": ["classify", "view"]}], clips_from="record"), "record role"),
    ({"name": "cam", "url": "webrtc://cam", "view": "remux"}, "view: remux needs the camera's packets"),
])
def test_refused_with_a_reason_that_never_quotes_a_secret(tmp_path: Path, stream: dict, message: str) -> None:
    assert message in refused(tmp_path, stream)


def test_every_input_is_redacted_where_the_config_is_shown(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"streams": [camera()]}))
    config = load_run_config(path)
    assert isinstance(config, RunConfig)
    from sightline.stream.cluster.controller import blank_status

    shown = blank_status(config.streams[0])
    assert "s3cret" not in str(shown)
    assert [i["url"] for i in shown["inputs"]] == ["rtsp://***@127.0.0.1:8554/main", "rtsp://***@127.0.0.1:8554/sub"]
