import pytest
import torch
from sightline.model.architectures import build_network
from sightline.model.bundle import ModelBundle, PreprocessSpec
from sightline.model.errors import ModelLoadError
from sightline.model.weights import imagenet_cache_path
from sightline.training.network import initial_model, param_groups, phase_of_epoch, set_phase, train_mode

NAMES = ["a", "b", "c"]


def test_head_phase_trains_only_fc():
    net = build_network("resnet18", 3)
    set_phase(net, "head")
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}
    set_phase(net, "full")
    assert all(p.requires_grad for p in net.parameters())


def test_head_phase_keeps_backbone_batchnorm_statistics():
    net = build_network("resnet18", 3)
    train_mode(net, "head")
    assert not net.bn1.training and not net.layer4[1].bn2.training and net.fc.training
    train_mode(net, "full")
    assert net.bn1.training


def test_head_then_full_switches_after_head_epochs():
    assert [phase_of_epoch("head-then-full", 2, e) for e in range(4)] == ["head", "head", "full", "full"]
    assert phase_of_epoch("head", 0, 5) == "head" and phase_of_epoch("full", 3, 0) == "full"


def test_param_groups_give_backbone_its_own_lr_and_no_decay_on_norms_and_biases():
    net = build_network("resnet18", 3)
    groups = param_groups(net, lr=0.01, backbone_lr=0.001, weight_decay=0.05)
    by_key = {(g["name"], g["weight_decay"] > 0): g for g in groups}
    assert by_key[("head", True)]["params"] == [net.fc.weight]
    assert by_key[("head", False)]["params"] == [net.fc.bias]
    assert by_key[("backbone", True)]["lr"] == 0.001 and by_key[("backbone", False)]["weight_decay"] == 0.0
    assert net.bn1.weight in by_key[("backbone", False)]["params"]
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))


def test_bundle_with_the_same_classes_keeps_its_classifier(tmp_path):
    net = build_network("resnet18", 3)
    spec = PreprocessSpec(resize=40, crop=32)
    ModelBundle("resnet18", NAMES, net.state_dict(), spec).save(tmp_path / "b.pt")
    init = initial_model(str(tmp_path / "b.pt"), NAMES)
    assert torch.equal(init.net.fc.weight, net.fc.weight)
    assert init.preprocess == spec and "kept" in init.description


def test_bundle_with_other_classes_gets_a_new_fc(tmp_path):
    net = build_network("resnet18", 3)
    ModelBundle("resnet18", NAMES, net.state_dict()).save(tmp_path / "b.pt")
    init = initial_model(str(tmp_path / "b.pt"), ["x", "y"])
    assert init.net.fc.out_features == 2
    assert torch.equal(init.net.conv1.weight, net.conv1.weight)


def test_imagenet_init_replaces_the_1000_class_fc(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = imagenet_cache_path()
    path.parent.mkdir(parents=True)
    torch.save(build_network("resnet18", 1000).state_dict(), path)  # stands in for the cached download
    init = initial_model("imagenet", NAMES)
    assert init.net.fc.out_features == 3 and init.arch == "resnet18"
    assert (init.preprocess.resize, init.preprocess.crop) == (256, 224)


def test_unusable_imagenet_weights_name_the_training_options(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = imagenet_cache_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"a truncated download")
    with pytest.raises(ModelLoadError, match=r"delete it to download it again; .*--init scratch .*--init PATH"):
        initial_model("imagenet", NAMES)


def test_an_unusable_init_file_names_the_training_options(tmp_path):
    (tmp_path / "b.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match=r"--init PATH, or --init scratch"):
        initial_model(str(tmp_path / "b.pt"), NAMES)
