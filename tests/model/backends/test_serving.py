"""Compiled backends behind the commands users run: predict, evaluate-images and `sightline run`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sightline.cli import main
from sightline.model.backends.cache import META_FILE, cache_root

pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")
REPO = Path(__file__).resolve().parents[3]


def test_predict_on_onnxruntime_answers_as_torch(bundle_copy, trained, capsys):
    images = sorted((trained.data / "val").rglob("*.png"))[:12]
    assert main(["predict", *map(str, images), "--model", str(bundle_copy), "--device", "cpu", "--json",
                 "--precision", "fp32"]) == 0  # the fp32 reference (auto is bf16 on CPUs that run it natively)
    reference = json.loads(capsys.readouterr().out)
    assert main(["predict", *map(str, images), "--model", str(bundle_copy), "--device", "cpu", "--json",
                 "--backend", "onnxruntime"]) == 0
    compiled = json.loads(capsys.readouterr().out)
    assert [r["top"][0]["label"] for r in compiled] == [r["top"][0]["label"] for r in reference]
    assert [r["top"][0]["prob"] for r in compiled] == pytest.approx([r["top"][0]["prob"] for r in reference],
                                                                    abs=1e-4)
    (folder,) = cache_root(bundle_copy).iterdir()  # built on first use, next to the bundle
    assert folder.name.startswith("onnxruntime-") and (folder / META_FILE).is_file()


def test_evaluate_images_on_openvino_bf16_keeps_accuracy(bundle_copy, trained, capsys):
    val = str(trained.data / "val")
    assert main(["evaluate-images", str(bundle_copy), val, "--device", "cpu", "--num-workers", "0", "--json",
                 "--no-progress", "--backend", "openvino", "--precision", "bf16"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["backend"] == "openvino" and report["precision"] == "bf16"
    assert report["acc1"] >= trained.val_acc1 - 0.02


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_run_serves_openvino_int8_built_on_first_use(trained, tmp_path):
    """A real `sightline run` process: the int8 artefact is built from the bundle's own train/ images, checked
    on its val/ images, logged, and the stream's labels match a torch run of the same clip."""
    from sightline import synthetic_media as media
    from sightline.model.bundle import ModelBundle

    bundle = ModelBundle.load(trained.bundle).save(tmp_path / "model.pt")
    clip = media.make_test_clip(tmp_path / "clip.mp4", frames=40, fps=25, size=(160, 120), pattern="photos",
                                counter=False)
    labels = {}
    for backend, precision in (("torch", "fp32"), ("openvino", "int8")):
        out = tmp_path / f"out-{backend}"
        cfg = tmp_path / f"{backend}.yaml"
        cfg.write_text(yaml.safe_dump({
            "model": {"source": str(bundle), "device": "cpu", "backend": backend, "precision": precision},
            "output_dir": str(out), "media_root": str(tmp_path), "server": {"enabled": False},
            "smoothing": {"ema": 0.0, "hysteresis": 0.0},
            "streams": [{"name": "cam", "url": str(clip), "mode": "fast"}]}))
        proc = subprocess.run([sys.executable, "-m", "sightline", "run", str(cfg)], cwd=REPO, capture_output=True,
                              text=True, timeout=240, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        records = [json.loads(line) for line in (out / "cam.jsonl").read_text().splitlines()]
        labels[backend] = [r["top"][0]["label"] for r in records if r.get("top")]
        if backend == "openvino":
            assert "serving with openvino" in proc.stderr and "int8" in proc.stderr
            assert "built now" in proc.stderr and "top-1 agreement with torch fp32" in proc.stderr
    assert len(labels["openvino"]) == len(labels["torch"]) == 40  # fast mode is lossless
    same = sum(a == b for a, b in zip(labels["openvino"], labels["torch"], strict=True))
    assert same >= 36  # ≥ 90% of frames (held-out agreement is ≥ 98%; these frames are pans over whole photos)
    (folder,) = cache_root(bundle).iterdir()
    meta = json.loads((folder / META_FILE).read_text())
    assert meta["precision"] == "int8" and meta["agreement"]["passed"]
