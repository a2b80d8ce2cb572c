import json
import logging

import torch
from sightline.training.config import load_config
from sightline.training.reports import read_metrics_csv
from sightline.training.trainer import Trainer, TrainHooks


def test_out_of_memory_mid_run_halves_the_micro_batch_and_keeps_the_effective_batch(dataset_factory, tmp_path,
                                                                                      caplog):
    root = dataset_factory(n_train=8, n_val=2, classes=("chelsea", "coffee", "rocket"), size=(40, 36))
    sizes: list[int] = []

    def gpu_fits_four_images(size: int) -> None:
        sizes.append(size)
        if size > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")

    cfg = load_config(None, dict(data=root, out=tmp_path / "run", init="scratch", mode="full", epochs=1,
                                 batch_size=8, accumulate=2, resize=36, crop=32, num_workers=0, progress=False))
    with caplog.at_level(logging.WARNING, logger="sightline.training"):
        Trainer(cfg, hooks=TrainHooks(before_micro_batch=gpu_fits_four_images)).run()

    assert sizes[0] == 8 and max(sizes[1:]) == 4
    row = read_metrics_csv(tmp_path / "run" / "metrics.csv")[0]
    assert (row["micro_batch"], row["effective_batch"]) == ("4", "16")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["training"]["oom_events"] == [{"step": 0, "from_micro_batch": 8, "to_micro_batch": 4}]
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["scheduler"]["step_count"] == 2  # 24 images, batches of 8, 2 per step: no step lost or repeated
    assert state["micro_batch"] == 4
    assert "out of memory at micro-batch 8; continuing with micro-batch 4" in caplog.text
