"""How a backend serves on this CPU: OpenVINO streams per inference lane and its compiled-blob cache, torch's
``precision: auto`` following the CPU's native bf16, ONNX Runtime int8 quantizing every convolution."""

from __future__ import annotations

import collections
import dataclasses
import threading

import numpy as np
import pytest
import torch
from sightline.model.backends import registry
from sightline.model.backends.build import BuildOptions
from sightline.model.backends.serving import open_classifier
from sightline.model.classifier import Classifier
from sightline.model.images import load_image
from sightline.stream.inference.batcher import Batcher
from sightline.stream.inference.lanes import InferenceWorker

CPU = torch.device("cpu")


def val_images(trained, limit: int | None = None) -> list[np.ndarray]:
    paths = sorted(p for p in (trained.data / "val").rglob("*") if p.suffix in (".jpg", ".png"))
    return [load_image(p) for p in paths[:limit]]


@pytest.fixture(scope="module")
def openvino_fp32(trained, tmp_path_factory):
    """One OpenVINO fp32 artefact (checked on the bundle's val/ images) served by the tests below."""
    pytest.importorskip("openvino")
    from sightline.model.bundle import ModelBundle

    bundle = ModelBundle.load(trained.bundle).save(tmp_path_factory.mktemp("ov-modes") / "model.pt")
    return open_classifier(bundle, device="cpu", precision="fp32", backend="openvino",
                           options=BuildOptions(force=True, require_check=False))


def test_openvino_gets_one_stream_per_inference_lane_and_answers_the_same(openvino_fp32, trained):
    backend = openvino_fp32.backend
    assert backend.streams == 1 and backend.compiled.get_property("PERFORMANCE_HINT") == "LATENCY"
    images = val_images(trained, 16)
    batches = [openvino_fp32.preprocessor(images[:8]), openvino_fp32.preprocessor(images[8:])]
    expected = [openvino_fp32.forward(b) for b in batches]

    worker = InferenceWorker(openvino_fp32, Batcher(8, 0.01), 1, lambda r: None, lambda n: None, lanes=2)
    assert worker.lanes == 2 and backend.streams == 2  # the worker told the backend how many lanes call it
    assert backend.compiled.get_property("PERFORMANCE_HINT") == "THROUGHPUT"
    assert int(backend.compiled.get_property("NUM_STREAMS")) == 2
    got: dict[int, list[torch.Tensor]] = {}

    def lane(i: int) -> None:  # two lanes at once, each with its own request on its own stream
        got[i] = [openvino_fp32.forward(batches[i]) for _ in range(3)]

    threads = [threading.Thread(target=lane, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(2):
        for out in got[i]:
            torch.testing.assert_close(out, expected[i], atol=1e-5, rtol=1e-4)

    InferenceWorker(openvino_fp32, Batcher(8, 0.01), 1, lambda r: None, lambda n: None, lanes=1)
    assert backend.streams == 1 and backend.compiled.get_property("PERFORMANCE_HINT") == "LATENCY"
    torch.testing.assert_close(openvino_fp32.forward(batches[0]), expected[0], atol=1e-5, rtol=1e-4)


def test_openvino_compiled_blob_is_cached_in_the_artefact_folder(openvino_fp32, trained):
    from sightline.model.backends.openvino_backend import CACHE_DIR, OpenVINOBackend

    folder = openvino_fp32.compiled_artefact.folder
    assert openvino_fp32.backend.cache_dir is None and not (folder / CACHE_DIR).exists()  # off by default
    batch = openvino_fp32.preprocessor(val_images(trained, 4))
    first = OpenVINOBackend(folder, "fp32", CPU, cache=True)
    blobs = list((folder / CACHE_DIR).glob("*.blob"))
    assert first.cache_dir == folder / CACHE_DIR and len(blobs) == 1 and blobs[0].stat().st_size > 100_000
    again = OpenVINOBackend(folder, "fp32", CPU, cache=True)  # served from the cache: same answers
    assert list((folder / CACHE_DIR).glob("*.blob")) == blobs
    for backend in (first, again):
        torch.testing.assert_close(backend.forward(batch), openvino_fp32.forward(batch), atol=1e-5, rtol=1e-4)


def test_torch_auto_precision_is_bf16_only_where_the_cpu_runs_it_natively(monkeypatch):
    monkeypatch.setattr(registry, "torch_cpu_bf16", lambda: True)
    monkeypatch.setattr(registry, "cpu_flags", lambda: {"avx2", "avx512f", "amx_bf16"})
    choice = registry.choose("torch", "auto", CPU)  # an explicit torch backend too
    assert choice.precision == "bf16" and "amx_bf16 in /proc/cpuinfo" in choice.reason
    assert "precision: fp32" in choice.reason  # how to get the exact reference back
    monkeypatch.setattr(registry, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_vnni"})
    choice = registry.choose("torch", "auto", CPU)
    assert choice.precision == "auto" and "no native bf16" in choice.reason  # torch's rule: fp32 on the CPU
    monkeypatch.setattr(registry, "cpu_flags", lambda: {"avx512_bf16"})
    monkeypatch.setattr(registry, "torch_cpu_bf16", lambda: False)
    choice = registry.choose("torch", "auto", CPU)
    assert choice.precision == "auto" and "oneDNN does not report bf16" in choice.reason
    assert registry.choose("torch", "fp32", CPU).precision == "fp32"  # an explicit precision is kept
    assert registry.choose("torch", "auto", torch.device("cuda")).precision == "auto"  # fp16 autocast there


def test_torch_bf16_chosen_by_auto_keeps_top1_on_the_trained_bundle(bundle_copy, trained, monkeypatch, caplog):
    """Where auto picks bf16 (forced here, so the check runs on any CPU), the trained bundle's answers stay."""
    monkeypatch.setattr(registry, "torch_cpu_bf16", lambda: True)
    monkeypatch.setattr(registry, "cpu_flags", lambda: {"avx512_bf16"})
    with caplog.at_level("INFO", logger="sightline.backend"):
        served = open_classifier(bundle_copy, device="cpu", precision="auto", backend="torch")
    assert served.precision == "bf16" and "precision auto -> bf16" in caplog.text
    reference = Classifier.from_source(bundle_copy, device="cpu", precision="fp32")
    images = val_images(trained)
    with torch.inference_mode():
        got = served.probabilities(images).argmax(1)
        want = reference.probabilities(images).argmax(1)
    assert len(images) == 120 and (got == want).float().mean().item() >= 0.99


def test_onnxruntime_int8_quantizes_every_convolution(trained, tmp_path):
    """A bundle whose folded biases coincide (fresh batch norms: the exporter stores them once, behind Identity
    nodes) used to keep 16 of 20 convolutions in fp32 between Dequantize/Quantize pairs: slower than fp32."""
    ort = pytest.importorskip("onnxruntime")
    import onnx
    from sightline.model.architectures import build_network
    from sightline.model.backends.onnxruntime_backend import MODEL_FILE, build
    from sightline.model.bundle import ModelBundle
    from sightline.model.preprocess import Preprocessor

    base = ModelBundle.load(trained.bundle)
    torch.manual_seed(0)
    bundle = dataclasses.replace(base, state_dict=build_network(base.arch, len(base.class_names)).state_dict())
    pre = Preprocessor(bundle.preprocess, CPU)
    calibration = [pre([img]) for img in val_images(trained, 16)]
    build(bundle, "int8", calibration, tmp_path)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(tmp_path / MODEL_FILE), options, providers=["CPUExecutionProvider"])
    ops = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)
    assert ops["QLinearConv"] == 20 and ops["Conv"] == 0, ops
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "optimized.onnx"]  # no leftovers
