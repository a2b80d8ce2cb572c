"""``auto`` backend and precision: chosen from what is installed and what this CPU runs natively, said why."""

from __future__ import annotations

import pytest
import torch
from sightline.model.backends import registry
from sightline.model.backends.base import BackendError

CPU = torch.device("cpu")


def test_auto_precision_on_openvino_follows_the_cpu_flags():
    pytest.importorskip("openvino")
    choice = registry.choose("openvino", "auto", CPU)
    native = bool(registry.cpu_flags() & {"avx512_bf16", "amx_bf16"})
    assert choice.precision == ("bf16" if native else "fp32")
    assert "precision auto -> " + choice.precision in choice.reason


def test_auto_backend_on_a_cpu_is_the_fastest_installed(monkeypatch):
    pytest.importorskip("openvino")
    assert registry.choose("auto", "fp32", CPU).backend == "openvino"
    monkeypatch.setattr(registry, "installed", lambda name: name != "openvino")
    choice = registry.choose("auto", "fp32", CPU)  # ONNX Runtime measured slower than torch here: never picked
    assert choice.backend == "torch" and "not installed: openvino" in choice.reason


def test_int8_on_torch_is_refused():
    with pytest.raises(BackendError, match="int8 needs a compiled backend"):
        registry.choose("torch", "int8", CPU)


def test_unknown_backend_is_one_clear_error():
    with pytest.raises(BackendError, match="unknown backend 'tflite'"):
        registry.choose("tflite", "fp32", CPU)


def test_precision_a_backend_cannot_run_is_refused(tmp_path):
    pytest.importorskip("openvino")
    from sightline.model.backends.openvino_backend import OpenVINOBackend

    with pytest.raises(BackendError, match="supports fp32, bf16, int8, not fp16"):
        OpenVINOBackend(tmp_path, "fp16", CPU)


def test_run_config_refuses_int8_on_torch():
    from sightline.model.errors import ConfigError
    from sightline.model.yamlconfig import validate
    from sightline.stream.config import RunConfig

    with pytest.raises(ConfigError, match="int8 needs a compiled backend"):
        validate({"model": {"precision": "int8"}}, RunConfig, "run.yaml")
    config = validate({"model": {"precision": "int8", "backend": "openvino"}}, RunConfig, "run.yaml")
    assert config.model.backend == "openvino" and config.model.precision == "int8"
    assert validate({}, RunConfig, "run.yaml").model.backend == "torch"  # the reference stays the default


def test_run_flag_replaces_model_backend():
    import argparse

    from sightline.run_cli import apply_overrides
    from sightline.stream.config import RunConfig

    args = argparse.Namespace(model=None, device=None, port=None, backend="onnxruntime")
    assert apply_overrides(RunConfig(), args).model.backend == "onnxruntime"


def test_backend_auto_falling_back_to_torch_takes_bf16_only_where_native(monkeypatch):
    monkeypatch.setattr(registry, "torch_cpu_bf16", lambda: True)
    monkeypatch.setattr(registry, "installed", lambda name: name == "torch")
    monkeypatch.setattr(registry, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    choice = registry.choose("auto", "auto", CPU)
    assert (choice.backend, choice.precision) == ("torch", "bf16") and "avx512_bf16" in choice.reason
    monkeypatch.setattr(registry, "cpu_flags", lambda: {"avx2", "avx512f"})
    assert registry.choose("auto", "auto", CPU).precision == "auto"  # torch's rule: fp32 on the CPU
    monkeypatch.setattr(registry, "cpu_flags", lambda: {"amx_bf16"})
    monkeypatch.setattr(registry, "torch_cpu_bf16", lambda: True)
    assert registry.choose("torch", "auto", CPU).precision == "bf16"  # an explicit torch backend follows the CPU too


def test_cpu_ranking_follows_the_measured_table():
    assert registry.CPU_RANKING == ("openvino", "torch", "onnxruntime")
