"""Runs cluster_cases.py (the service on a real 3-node Ray cluster) inside a network namespace that has only
loopback: Ray binds the machine's interface address even when told 127.0.0.1, so no Ray process of the test
suite may run in the machine's own namespace. Needs root (``unshare --net``), as here and in CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
CASES = Path(__file__).with_name("cluster_cases.py")
BUDGET_S = 280


@pytest.mark.slow
@pytest.mark.timeout(BUDGET_S + 20)
def test_cluster_cases_in_a_loopback_only_namespace() -> None:
    assert shutil.which("unshare") and shutil.which("ip"), "util-linux unshare and iproute2 ip are needed"
    inner = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "--timeout", "240", str(CASES)]
    cmd = ["unshare", "--net", "bash", "-c", 'ip link set lo up && exec "$@"', "bash", *inner]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=BUDGET_S)
    out = proc.stdout + proc.stderr
    # pytest's own report is on stdout; Ray's log noise (actors dying on purpose) on stderr
    assert proc.returncode == 0, proc.stdout[-10000:] + "\n--- stderr, last lines ---\n" + proc.stderr[-2000:]
    assert "11 passed" in out and "skipped" not in out
