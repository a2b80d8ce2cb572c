"""`sightline export` on a bundle fine-tuned on scikit-image photos: built, checked against torch fp32, cached."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from sightline.cli import main
from sightline.model.backends.cache import META_FILE, cache_root

pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")


def export(capsys, *args: str) -> tuple[int, dict | None, str]:
    code = main(["export", *args, "--device", "cpu", "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if code == 0 else None, captured.err


@pytest.fixture(scope="module")
def openvino_int8(trained, tmp_path_factory):
    """One OpenVINO int8 build (NNCF calibration on the bundle's own train/ images), shared by the tests below."""
    from sightline.model.bundle import ModelBundle

    bundle = ModelBundle.load(trained.bundle).save(tmp_path_factory.mktemp("ov") / "model.pt")
    assert main(["export", str(bundle), "--backend", "openvino", "--precision", "int8", "--device", "cpu"]) == 0
    (folder,) = cache_root(bundle).iterdir()
    return bundle, folder, json.loads((folder / META_FILE).read_text())


def test_int8_keeps_top1_agreement_and_accuracy(openvino_int8, trained):
    _, folder, meta = openvino_int8
    agreement = meta["agreement"]
    assert meta["backend"] == "openvino" and meta["precision"] == "int8"
    assert agreement["passed"] and agreement["top1_agreement"] >= 0.98 and agreement["threshold"] == 0.98
    assert agreement["images"] == 120 and meta["holdout"]["labelled"]  # the bundle's own val/ folder
    assert agreement["reference_acc1"] == pytest.approx(trained.val_acc1, abs=0.01)  # torch fp32 = training's figure
    assert agreement["backend_acc1"] >= agreement["reference_acc1"] - 0.02
    assert meta["calibration"]["source"].endswith("train") and meta["calibration"]["images"] == 64
    assert (folder / "model.xml").is_file() and (folder / "model.bin").stat().st_size > 1_000_000


def test_artefact_is_keyed_by_bundle_hash_version_and_precision(openvino_int8):
    import hashlib

    import openvino

    bundle, folder, meta = openvino_int8
    digest = hashlib.sha256(bundle.read_bytes()).hexdigest()
    assert meta["bundle_sha256"] == digest
    assert folder.name == f"openvino-{openvino.get_version().split('-')[0]}-int8-{digest[:16]}"


def test_second_export_reuses_the_cached_artefact(openvino_int8, capsys):
    bundle, folder, meta = openvino_int8
    code, out, _ = export(capsys, str(bundle), "--backend", "openvino", "--precision", "int8")
    assert code == 0 and out["cached"] and out["built"] == meta["built"] and out["artefact"] == str(folder)


def test_a_changed_bundle_is_built_again(bundle_copy, capsys):
    from sightline.model.bundle import ModelBundle

    code, first, _ = export(capsys, str(bundle_copy), "--backend", "onnxruntime", "--precision", "fp32")
    assert code == 0 and not first["cached"]
    bundle = ModelBundle.load(bundle_copy)
    bundle.state_dict["fc.bias"] = bundle.state_dict["fc.bias"] + 0.01
    bundle.save(bundle_copy)
    code, second, _ = export(capsys, str(bundle_copy), "--backend", "onnxruntime", "--precision", "fp32")
    assert code == 0 and not second["cached"] and second["bundle_sha256"] != first["bundle_sha256"]
    assert second["agreement"]["top1_agreement"] == 1.0  # fp32 ONNX Runtime matches torch fp32
    assert len(list(cache_root(bundle_copy).iterdir())) == 2


def test_int8_calibrated_on_the_wrong_data_is_refused_then_kept_with_force(bundle_copy, tmp_path, capsys):
    """Calibrating on flat grey images clips the real activations: the agreement check must catch it."""
    grey = tmp_path / "grey"
    grey.mkdir()
    for i in range(16):
        Image.fromarray(np.full((40, 48, 3), 100 + i, np.uint8)).save(grey / f"{i}.png")
    code, _, err = export(capsys, str(bundle_copy), "--backend", "onnxruntime", "--precision", "int8",
                          "--calibrate", str(grey))
    assert code == 2
    assert "refused" in err and "below the 98.0% threshold" in err and "--force" in err
    assert not any(cache_root(bundle_copy).glob(f"*/{META_FILE}"))  # nothing half-made is left to be served
    assert not any(p.name.startswith(".") for p in cache_root(bundle_copy).iterdir())

    code, kept, _ = export(capsys, str(bundle_copy), "--backend", "onnxruntime", "--precision", "int8",
                           "--calibrate", str(grey), "--force")
    assert code == 0 and kept["forced"] and not kept["agreement"]["passed"]
    assert kept["agreement"]["top1_agreement"] < 0.98


def test_export_without_held_out_images_is_refused(tmp_path, capsys):
    from tests.support.models import tiny_bundle

    path = tiny_bundle().save(tmp_path / "tiny.pt")  # provenance names no dataset
    code, _, err = export(capsys, str(path), "--backend", "onnxruntime", "--precision", "fp32")
    assert code == 2 and "no held-out images" in err and "--holdout" in err


def test_one_source_is_split_into_calibration_and_held_out_images(bundle_copy, trained, capsys):
    code, out, _ = export(capsys, str(bundle_copy), "--backend", "onnxruntime", "--precision", "int8",
                          "--calibrate", str(trained.data / "val"), "--holdout", str(trained.data / "val"))
    assert code == 0
    assert out["calibration"]["images"] + out["holdout"]["images"] == 120  # disjoint halves of val/
    assert "not used for calibration" in out["holdout"]["source"]
    assert out["agreement"]["top1_agreement"] >= 0.98
