"""Bundle save/load and the checkpoints a bundle or a .pth can be wrong in."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from sightline.model.bundle import FORMAT_VERSION, ModelBundle, PreprocessSpec
from sightline.model.errors import ModelLoadError
from sightline.model.weights import imagenet_classes, load_model_source


@dataclasses.dataclass
class Recipe:
    lr: float
    folder: Path


def test_round_trip_keeps_everything(tmp_path, tiny_bundle):
    path = tiny_bundle.save(tmp_path / "model.pt")
    loaded = ModelBundle.load(path)
    assert loaded.arch == tiny_bundle.arch
    assert loaded.class_names == tiny_bundle.class_names
    assert loaded.preprocess == tiny_bundle.preprocess == PreprocessSpec(resize=64, crop=56)
    assert loaded.provenance == tiny_bundle.provenance
    assert loaded.state_dict.keys() == tiny_bundle.state_dict.keys()
    for key, value in tiny_bundle.state_dict.items():
        assert torch.equal(loaded.state_dict[key], value), key


def test_saved_bundle_is_plain_data_for_weights_only_load(tmp_path, tiny_bundle):
    path = tiny_bundle.save(tmp_path / "model.pt")
    data = torch.load(path, weights_only=True)
    assert data["format"] == "sightline-bundle" and data["format_version"] == FORMAT_VERSION
    assert not list(tmp_path.glob("*.tmp"))  # written atomically through a temporary file


def test_provenance_objects_are_stored_as_plain_values(tmp_path, tiny_bundle):
    bundle = dataclasses.replace(tiny_bundle, provenance={"recipe": Recipe(0.1, Path("/data")), "acc": 0.5})
    loaded = ModelBundle.load(bundle.save(tmp_path / "model.pt"))
    assert loaded.provenance == {"recipe": {"lr": 0.1, "folder": "/data"}, "acc": 0.5}


def test_loaded_bundle_predicts_like_the_original(tmp_path, tiny_bundle):
    loaded = ModelBundle.load(tiny_bundle.save(tmp_path / "model.pt"))
    x = torch.rand(1, 3, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(loaded.build()(x), tiny_bundle.build()(x), rtol=0, atol=0)


def test_fc_width_disagreeing_with_class_names_names_both_numbers(tiny_bundle):
    with pytest.raises(ModelLoadError, match="3 outputs but 5 class names"):
        ModelBundle(arch="resnet18", class_names=list("abcde"), state_dict=tiny_bundle.state_dict)


def write_tampered(tmp_path: Path, bundle: ModelBundle, **changes) -> Path:
    data = {**bundle.to_dict(), **changes}
    path = tmp_path / "tampered.pt"
    torch.save(data, path)
    return path


def test_bundle_file_with_class_count_mismatch_is_refused(tmp_path, tiny_bundle):
    path = write_tampered(tmp_path, tiny_bundle, class_names=["a", "b"])
    with pytest.raises(ModelLoadError, match=r"tampered\.pt: .*3 outputs but 2 class names"):
        load_model_source(path)


def test_unknown_architecture_is_named(tmp_path, tiny_bundle):
    path = write_tampered(tmp_path, tiny_bundle, arch="vgg11")
    with pytest.raises(ModelLoadError, match=r"unknown architecture 'vgg11'; supported: resnet18"):
        load_model_source(path)


def test_unknown_format_version_is_named(tmp_path, tiny_bundle):
    path = write_tampered(tmp_path, tiny_bundle, format_version=7)
    with pytest.raises(ModelLoadError, match=f"format version 7 is not supported.*version {FORMAT_VERSION}"):
        load_model_source(path)


def test_bundle_missing_a_field_is_named(tmp_path, tiny_bundle):
    data = tiny_bundle.to_dict()
    del data["preprocess"]
    torch.save(data, tmp_path / "partial.pt")
    with pytest.raises(ModelLoadError, match="missing the field 'preprocess'"):
        load_model_source(tmp_path / "partial.pt")


def test_weights_that_do_not_fit_the_architecture_are_refused(tiny_bundle):
    state = dict(tiny_bundle.state_dict)
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    with pytest.raises(ModelLoadError, match="weights do not fit resnet18: .*conv1.weight"):
        ModelBundle(arch="resnet18", class_names=["a", "b", "c"], state_dict=state).build()


def test_file_that_is_not_a_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint")
    with pytest.raises(ModelLoadError, match=r"notes\.pth: not a readable PyTorch checkpoint"):
        load_model_source(path)


def test_pickled_whole_model_is_refused_with_advice(tmp_path, make_resnet18):
    path = tmp_path / "whole.pt"
    torch.save(make_resnet18(3), path)
    expected = r"whole\.pt: holds a pickled Python object \(torchvision.models.resnet.ResNet;.*state_dict\(\)"
    with pytest.raises(ModelLoadError, match=expected):
        load_model_source(path)


def test_missing_model_file_is_named(tmp_path):
    with pytest.raises(ModelLoadError, match=r"nothere\.pt: no such model file"):
        load_model_source(tmp_path / "nothere.pt")


def test_torchvision_state_dict_with_1000_outputs_gets_imagenet_names(tmp_path, make_resnet18):
    path = tmp_path / "resnet18.pth"
    torch.save(make_resnet18(1000).state_dict(), path)
    bundle = load_model_source(path)
    assert bundle.class_names == imagenet_classes()
    assert bundle.class_names[0] == "tench"
    assert bundle.preprocess == PreprocessSpec(resize=256, crop=224)


def test_torchvision_state_dict_of_other_width_gets_numbered_names(tmp_path, tiny_bundle):
    path = tmp_path / "finetuned.pth"
    torch.save(tiny_bundle.state_dict, path)
    assert load_model_source(path).class_names == ["class_0", "class_1", "class_2"]


def test_data_parallel_prefix_is_stripped(tmp_path, tiny_bundle):
    path = tmp_path / "ddp.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in tiny_bundle.state_dict.items()}, "epoch": 3}, path)
    bundle = load_model_source(path)
    assert bundle.state_dict.keys() == tiny_bundle.state_dict.keys()
    for key, value in tiny_bundle.state_dict.items():
        assert torch.equal(bundle.state_dict[key], value), key
    net, reference = bundle.build().eval(), tiny_bundle.build().eval()
    x = torch.randn(1, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(net(x), reference(x))  # the loaded weights are the saved ones, not a fresh init


def test_a_preprocess_size_no_resnet_input_has_is_refused_when_the_bundle_is_read(tmp_path, tiny_bundle):
    path = tiny_bundle.save(tmp_path / "b.pt")
    data = torch.load(path, weights_only=True)
    data["preprocess"]["resize"] = 60000  # tens of GB per frame: a MemoryError inside a batch, before
    torch.save(data, path)
    with pytest.raises(ModelLoadError, match=r"malformed bundle \(preprocessing needs 0 < crop <= resize <= 4096"):
        load_model_source(path)
