"""Training on CUDA (GPU suite; skipped without CUDA): a GradScaler fp16 step, and a real out-of-memory
error recovered by halving the micro-batch (a per-process memory cap makes the GPU small)."""

from __future__ import annotations

import json

import pytest
import torch
from sightline.model.architectures import build_network
from sightline.model.bundle import PreprocessSpec
from sightline.training.config import load_config
from sightline.training.data import Batch
from sightline.training.reports import read_metrics_csv
from sightline.training.schedule import WarmupCosine
from sightline.training.step import Normalizer, StepTotals, TrainStep
from sightline.training.trainer import Trainer

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
              pytest.mark.timeout(240)]
CUDA = torch.device("cuda")


def make_step(precision: torch.dtype | None, seed: int = 0) -> TrainStep:
    torch.manual_seed(seed)
    net = build_network("resnet18", 3).to(CUDA, memory_format=torch.channels_last).train()
    opt = torch.optim.SGD([{"params": list(net.parameters()), "base_lr": 0.01}], lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == torch.float16)
    return TrainStep(net, opt, WarmupCosine(opt, 100, 0), scaler, Normalizer(PreprocessSpec(resize=72, crop=64), CUDA),
                     precision, micro_batch=8)


def window(seed: int) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    return [Batch(torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8, generator=g),
                  torch.randint(0, 3, (8,), generator=g)) for _ in range(2)]


def test_fp16_step_with_gradscaler_updates_like_fp32() -> None:
    fp16, fp32 = make_step(torch.float16), make_step(None)
    assert fp16.scaler.is_enabled() and not fp32.scaler.is_enabled()
    start = [p.detach().clone() for p in fp16.net.parameters()]
    scales = []
    for i in range(6):  # the first steps may overflow at the initial scale: those are skipped, the scale halves
        w = window(i)
        fp16(w, StepTotals.zeros(CUDA))
        fp32(w, StepTotals.zeros(CUDA))
        scales.append(fp16.scaler.get_scale())
    torch.cuda.synchronize()
    after = list(fp16.net.parameters())
    assert all(bool(torch.isfinite(p).all()) for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(start, after, strict=True))  # at least one step applied
    assert all(s > 0 for s in scales) and all(b in (a, a / 2, a * 2) for a, b in zip(scales, scales[1:],
                                                                                     strict=False))
    d16 = torch.cat([(p - s).flatten() for p, s in zip(after, start, strict=True)])
    d32 = torch.cat([(p - s).flatten() for p, s in zip(fp32.net.parameters(), start, strict=True)])
    cosine = float(torch.nn.functional.cosine_similarity(d16.float(), d32.float(), dim=0))
    skipped = sum(b < a for a, b in zip([65536.0, *scales], scales, strict=False))
    print(f"GradScaler fp16 step: scales {scales}, {skipped} skipped step(s), update cosine vs fp32 {cosine:.4f}")
    if skipped == 0:
        assert cosine > 0.9


def test_a_real_cuda_out_of_memory_halves_the_micro_batch(dataset_factory, tmp_path, caplog) -> None:
    root = dataset_factory(n_train=64, n_val=2, classes=("chelsea", "coffee", "rocket", "astronaut"),
                           size=(176, 160))
    cfg = load_config(None, dict(data=root, out=tmp_path / "run", init="scratch", mode="full", epochs=1,
                                 batch_size=256, accumulate=1, resize=176, crop=160, num_workers=2, progress=False,
                                 device="cuda", amp=True, precision="fp16"))
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(CUDA).total_memory
    cap = torch.cuda.memory_reserved(CUDA) + 768 * 2**20  # a GPU with ~768 MiB free for this run
    torch.cuda.set_per_process_memory_fraction(cap / total, CUDA)
    try:
        with caplog.at_level("WARNING", logger="training"):
            Trainer(cfg).run()
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, CUDA)
        torch.cuda.empty_cache()
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    events = report["training"]["oom_events"]
    print(f"real CUDA OOM recovery under a {cap / 2**20:.0f} MiB cap: {events}")
    assert events and events[0]["from_micro_batch"] == 256
    assert all(e["to_micro_batch"] == e["from_micro_batch"] // 2 for e in events)
    row = read_metrics_csv(tmp_path / "run" / "metrics.csv")[0]
    assert int(row["micro_batch"]) == events[-1]["to_micro_batch"] < 256
    assert int(row["effective_batch"]) == 256
    assert "CUDA out of memory at micro-batch 256" in caplog.text
