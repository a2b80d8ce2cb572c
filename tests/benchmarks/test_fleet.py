"""benchmarks/fleet.py: its smallest run end to end (3 simulated workers in this machine's process, 12 cameras,
short windows), so the pieces fit together and every figure the report names is there; no figure is judged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.scripts import BENCHMARKS

ROOT = BENCHMARKS.parent


@pytest.mark.slow
def test_the_smallest_fleet_runs_every_step_and_reports_it(tmp_path: Path) -> None:
    out = tmp_path / "fleet"
    cmd = [sys.executable, str(BENCHMARKS / "fleet.py"), "--points", "3x12", "--steady-s", "1", "--heartbeat-s",
           "0.5", "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    (point,) = report["points"]
    assert (point["workers"], point["streams"], point["workers_in"]) == (3, 12, "inprocess")
    assert point["api_streams"]["status"] == point["api_streams_page"]["status"] == 200
    assert point["metrics"]["status"] == point["targets"]["status"] == point["api_workers"]["status"] == 200
    assert point["failover"]["streams"] == 4 and point["drain"]["streams"] >= 4  # 12 cameras spread evenly
    assert point["swap"]["workers"] == 3 and point["swap"]["s"] >= point["swap"]["load_s"]
    assert {"cores", "ms_per_heartbeat", "rss_mb"} <= set(point["steady"]) and point["table"]["bytes"] > 12 * 200
    text = out.with_suffix(".md").read_text()
    assert report["cpu"] in text and "| 3 | 12 |" in text
