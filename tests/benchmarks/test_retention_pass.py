"""benchmarks/retention_pass.py: the smallest run end to end (500 files), and its tree as the pass sees it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.scripts import BENCHMARKS, benchmark_script

pytestmark = pytest.mark.timeout(120)


def test_the_tree_holds_every_kind_and_the_pass_deletes_the_old_recordings_and_logs(tmp_path: Path) -> None:
    now = time.time()
    with benchmark_script("retention_pass") as bench:
        old = bench.make_tree(tmp_path, 1000, now)
        figures = bench.measure(tmp_path, now)
    assert figures["files"] == 1000 and old == 100
    assert figures["deleted"] == 90  # the old recordings (85) and logs (5); clips and history are kept longer
    assert figures["scan_files_per_s"] > 0


def test_the_script_prints_its_figures_with_the_cpu(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "retention_pass.py"), "--files", "500", "--dir",
                           str(tmp_path)], capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["files"] == 500 and 0 < report["deleted"] < report["old"] and report["cpu"] and report["pass_s"] > 0
