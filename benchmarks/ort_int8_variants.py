"""Why ONNX Runtime int8 was slower than its fp32 on the CPU: each quantization variant of the random-init
ResNet18, with the op types ONNX Runtime runs after its own graph optimization (ORT_ENABLE_ALL), batch 1/8.

Finding (benchmarks/results/ort-int8-variants.txt): without ONNX Runtime's quantization pre-processing, the
exporter's Identity-fed biases keep most convolutions in fp32 between DequantizeLinear/QuantizeLinear;
after it every convolution is a QLinearConv (QDQ and QOperator give the same graph); s8 activations are not
fused by the x86 CPU provider (u8 activations / s8 weights are).

    flock /tmp/sightline-bench.lock python benchmarks/ort_int8_variants.py
"""

from __future__ import annotations

import collections
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from backend_setup import photo_folder
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from pipeline import load_bundle
from sightline.model.backends.data import load_images
from sightline.model.backends.onnx_export import INPUT, export_onnx
from sightline.model.preprocess import Preprocessor

U8, S8 = QuantType.QUInt8, QuantType.QInt8
VARIANTS = [  # (name, pre-processed, format, per-channel, activations, weights)
    ("QDQ per-channel u8/s8 (before the fix)", False, QuantFormat.QDQ, True, U8, S8),
    ("QDQ per-channel u8/s8 (the fix)", True, QuantFormat.QDQ, True, U8, S8),
    ("QOperator per-channel u8/s8", True, QuantFormat.QOperator, True, U8, S8),
    ("QDQ per-tensor u8/s8", True, QuantFormat.QDQ, False, U8, S8),
    ("QDQ per-channel s8/s8", True, QuantFormat.QDQ, True, S8, S8),
]


def bench(path: Path, tag: str, x: np.ndarray, seconds: float = 3.0) -> None:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = torch.get_num_threads()
    options.optimized_model_filepath = str(path) + ".opt.onnx"
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ops = collections.Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)
    rates = []
    for batch in (1, 8):
        feed = {INPUT: x[:batch]}
        for _ in range(3):
            session.run(None, feed)
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            session.run(None, feed)
            done += batch
        rates.append(done / (time.perf_counter() - start))
    print(f"{tag:42} batch 1 {rates[0]:6.1f}  batch 8 {rates[1]:6.1f} images/s   ops {dict(ops.most_common(6))}",
          flush=True)


def main() -> None:
    bundle = load_bundle("random")
    work = Path(tempfile.mkdtemp())
    fp32 = export_onnx(bundle, work / "fp32.onnx")
    ready = work / "pre.onnx"
    quant_pre_process(str(fp32), str(ready))
    calibration = load_images(photo_folder(work / "cal", 64), bundle.class_names, limit=64)
    pre = Preprocessor(bundle.preprocess, torch.device("cpu"))
    tensors = [np.ascontiguousarray(pre([im]).numpy()) for im in calibration.images]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(tensors)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self.items, None)
            return None if item is None else {INPUT: item}

    x = np.random.default_rng(0).standard_normal((8, 3, 224, 224)).astype(np.float32)
    bench(fp32, "fp32", x)
    for i, (tag, preprocessed, fmt, per_channel, act, weight) in enumerate(VARIANTS):
        out = work / f"int8-{i}.onnx"
        quantize_static(str(ready if preprocessed else fp32), str(out), Reader(), quant_format=fmt,
                        per_channel=per_channel, activation_type=act, weight_type=weight)
        bench(out, tag, x)


if __name__ == "__main__":
    main()
