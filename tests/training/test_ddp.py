import json
import os
import subprocess
import sys

import pytest
from sightline.training.reports import read_metrics_csv


@pytest.mark.slow
def test_torchrun_trains_with_two_processes(dataset_factory, tmp_path):
    root = dataset_factory(n_train=6, n_val=3, classes=("chelsea", "rocket"), size=(40, 36))
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "sightline.training",
         "--data", str(root), "--out", str(out), "--init", "scratch", "--mode", "full", "--epochs", "1",
         "--batch-size", "3", "--resize", "36", "--crop", "32", "--num-workers", "0", "--no-progress",
         "--device", "cpu"],
        capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stderr
    assert proc.stderr.count("dataset ") == 1  # only rank 0 logs
    row = read_metrics_csv(out / "metrics.csv")[0]
    assert row["effective_batch"] == "6"
    report = json.loads((out / "report.json").read_text())
    assert report["training"]["world_size"] == 2
    # validation was sharded across the ranks and summed: it saw every val image once, as the report did
    assert float(row["val_acc1"]) == pytest.approx(report["val"]["acc1"], abs=1e-6)
    assert report["val"]["images"] == 6
