"""`sightline predict` and `sightline info` through the real CLI root, on a tiny seeded bundle."""

from __future__ import annotations

import json
import re
import urllib.error

import numpy as np
import pytest
import torch
import torch.hub
from PIL import Image
from sightline.model.bundle import FORMAT_VERSION


def error_lines(err: str) -> list[str]:
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    assert all(line.startswith("error: ") for line in lines), lines
    return lines


def test_human_output_is_one_block_per_image(run_cli, bundle_path, write_photo):
    cat, cup = write_photo("chelsea"), write_photo("coffee", "coffee.jpg")
    code, out, err = run_cli("predict", cat, cup, "--model", bundle_path, "--topk", "2")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == str(cat) and lines[3] == str(cup)
    for line in lines[1:3] + lines[4:6]:
        assert re.fullmatch(r"  +\d+\.\d\d%  (cat|cup|rocket) \([0-2]\)", line), line
    assert len(lines) == 6


def test_json_output_schema(run_cli, bundle_path, write_photo):
    paths = [write_photo("astronaut"), write_photo("rocket")]
    code, out, _ = run_cli("predict", *paths, "--model", bundle_path, "--json", "--topk", "3")
    assert code == 0
    results = json.loads(out)
    assert [r["image"] for r in results] == [str(p) for p in paths]
    for result in results:
        assert set(result) == {"image", "top"}
        probs = [t["prob"] for t in result["top"]]
        assert probs == sorted(probs, reverse=True)
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)  # all 3 classes shown
        for top in result["top"]:
            assert set(top) == {"index", "label", "prob"}
            assert ["cat", "cup", "rocket"][top["index"]] == top["label"]


def test_batches_give_the_same_answers_as_one_batch(run_cli, bundle_path, write_photo):
    paths = [write_photo(name) for name in ("chelsea", "coffee", "astronaut")]
    _, one_batch, _ = run_cli("predict", *paths, "--model", bundle_path, "--json")
    _, batches_of_one, _ = run_cli("predict", *paths, "--model", bundle_path, "--json", "--batch-size", "1")
    a, b = json.loads(one_batch), json.loads(batches_of_one)
    assert [r["image"] for r in a] == [r["image"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert [t["index"] for t in ra["top"]] == [t["index"] for t in rb["top"]]
        assert [t["prob"] for t in ra["top"]] == pytest.approx([t["prob"] for t in rb["top"]], abs=1e-5)


def test_bad_inputs_are_reported_and_the_rest_still_predicted(run_cli, bundle_path, write_photo, tmp_path):
    good1, good2 = write_photo("chelsea"), write_photo("rocket")
    truncated = write_photo("coffee", "truncated.png")
    truncated.write_bytes(truncated.read_bytes()[:5000])
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("not a picture")
    folder = tmp_path / "folder"
    folder.mkdir()
    missing = tmp_path / "missing.png"
    code, out, err = run_cli("predict", good1, missing, folder, not_image, truncated, good2,
                             "--model", bundle_path, "--json", "--batch-size", "2")
    assert code == 1  # README: the other images are still classified, exit status 1
    assert [r["image"] for r in json.loads(out)] == [str(good1), str(good2)]
    lines = error_lines(err)
    assert len(lines) == 4
    assert f"{missing}: no such file" in lines[0]
    assert f"{folder}: is a directory" in lines[1]
    assert f"{not_image}: not an image" in lines[2]
    assert f"{truncated}: cannot decode image" in lines[3] and "truncated" in lines[3]


def test_every_common_mode_is_converted_not_rejected(run_cli, bundle_path, write_photo, tmp_path):
    paths = [
        write_photo("coffee", "gray.png", mode="L"),
        write_photo("coffee", "alpha.png", mode="RGBA"),
        write_photo("coffee", "palette.gif", mode="P"),
        write_photo("coffee", "cmyk.jpg", mode="CMYK"),
        write_photo("coffee", "bilevel.png", mode="1"),
        write_photo("coffee", "gray_alpha.png", mode="LA"),
        tmp_path / "deep.png",
    ]
    Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20).save(paths[-1])
    code, out, err = run_cli("predict", *paths, "--model", bundle_path, "--json")
    assert code == 0, err
    assert err == ""
    assert [r["image"] for r in json.loads(out)] == [str(p) for p in paths]
    assert Image.open(paths[4]).mode == "1" and Image.open(paths[5]).mode == "LA"  # saved as such, not converted


def test_gpu_out_of_memory_is_one_line_of_advice(run_cli, bundle_path, write_photo, monkeypatch):
    """Injected: the network raises torch's CUDA OOM error (as a GPU would) on any machine."""
    import sightline.model.classifier as classifier_module

    class OutOfMemory(torch.nn.Module):
        def forward(self, x):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(classifier_module, "fold_batchnorm", lambda net: OutOfMemory())
    code, out, err = run_cli("predict", write_photo("chelsea"), write_photo("coffee"), "--model", bundle_path,
                             "--device", "cpu", "--precision", "fp32")  # auto: bf16 on CPUs that run it natively
    assert code == 2 and out == ""
    (line,) = error_lines(err)
    assert line == ("error: out of memory on cpu for a batch of 2 image(s) at fp32: use a smaller batch "
                    "(--batch-size), fp16/bf16 precision, or free the device")


def test_torch_build_without_kernels_for_the_gpu_names_its_architectures(run_cli, bundle_path, write_photo,
                                                                         monkeypatch):
    """Injected: CUDA reports a GPU, but the first kernel fails as on a GPU the torch build was not compiled
    for; the error names torch's architectures (sm_...) and the way out, before any model is loaded."""
    ones = torch.ones

    def no_kernel_image(*args, **kwargs):
        if str(kwargs.get("device", "cpu")).startswith("cuda"):
            raise RuntimeError("CUDA error: no kernel image is available for execution on the device\nmore")
        return ones(*args, **kwargs)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_75", "sm_80", "sm_120"])
    monkeypatch.setattr(torch, "ones", no_kernel_image)
    code, out, err = run_cli("predict", write_photo("chelsea"), "--model", bundle_path / "not-read.pt",
                             "--device", "cuda")
    assert code == 2 and out == ""
    (line,) = error_lines(err)
    assert line.startswith("error: CUDA device cuda is visible but unusable with torch ")
    assert "GPU architectures sm_75 sm_80 sm_120" in line
    assert "no kernel image is available for execution on the device" in line and "more" not in line
    assert line.endswith("or use --device cpu")


@pytest.mark.cpu_only
@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_device_cuda_without_cuda_is_one_clear_error(run_cli, bundle_path, write_photo):
    code, out, err = run_cli("predict", write_photo("chelsea"), "--model", bundle_path, "--device", "cuda")
    assert code == 2 and out == ""
    (line,) = error_lines(err)
    assert "CUDA is not available" in line and "--device cpu" in line


@pytest.mark.cpu_only
@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_device_is_checked_before_any_model_download(run_cli, write_photo, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    attempts: list[object] = []

    def no_network(request, *args, **kwargs):
        attempts.append(request)
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "urlopen", no_network)
    code, out, err = run_cli("predict", write_photo("chelsea"), "--device", "cuda")
    assert code == 2
    (line,) = error_lines(err)
    assert "CUDA is not available" in line
    assert attempts == []


@pytest.mark.parametrize("flag", ["--topk", "--batch-size"])
def test_counts_below_one_are_usage_errors(run_cli, bundle_path, write_photo, flag):
    code, _, err = run_cli("predict", write_photo("chelsea"), "--model", bundle_path, flag, "0")
    assert code == 2
    assert f"argument {flag}: must be at least 1" in err


@pytest.mark.parametrize("changes, expected", [
    ({"class_names": ["a", "b", "c", "d", "e"]}, "3 outputs but 5 class names"),
    ({"arch": "alexnet"}, "unknown architecture 'alexnet'"),
    ({"format_version": FORMAT_VERSION + 1}, f"bundle format version {FORMAT_VERSION + 1} is not supported"),
])
def test_bad_checkpoints_are_one_error_line(run_cli, tiny_bundle, write_photo, tmp_path, changes, expected):
    path = tmp_path / "bad.pt"
    torch.save({**tiny_bundle.to_dict(), **changes}, path)
    code, out, err = run_cli("predict", write_photo("chelsea"), "--model", path)
    assert code == 2 and out == ""
    (line,) = error_lines(err)
    assert str(path) in line and expected in line


def test_info_on_a_bundle(run_cli, bundle_path):
    code, out, _ = run_cli("info", bundle_path)
    assert code == 0
    assert f"model:         {bundle_path}" in out
    assert "architecture:  resnet18  (11,178,051 parameters)" in out
    assert "classes:       3: cat, cup, rocket" in out
    assert "shorter side 64 (bilinear, antialiased), centre crop 56" in out
    assert "provenance:\n  dataset:       synthetic\n  epochs:        0" in out


def test_info_json_on_a_torchvision_pth(run_cli, tiny_bundle, tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(tiny_bundle.state_dict, path)
    code, out, _ = run_cli("info", path, "--json")
    assert code == 0
    info = json.loads(out)
    assert info["arch"] == "resnet18" and info["num_classes"] == 3
    assert info["class_names"] == ["class_0", "class_1", "class_2"]
    assert info["preprocess"]["resize"] == 256 and info["preprocess"]["crop"] == 224
    assert info["provenance"] == {"source": "state_dict", "file": "weights.pth"}
    assert info["source"] == str(path)


def test_info_on_a_missing_file_is_one_error_line(run_cli, tmp_path):
    code, _, err = run_cli("info", tmp_path / "gone.pt")
    assert code == 2
    (line,) = error_lines(err)
    assert "gone.pt: no such model file" in line
