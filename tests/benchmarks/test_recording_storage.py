"""benchmarks/recording_storage.py at its smallest (a 2 s 160x120 clip): the five recordings run, and their
figures come out in one table (not the figures themselves: they are the benchmark's to measure)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.support.scripts import BENCHMARKS

pytestmark = [pytest.mark.timeout(180), pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")]


def test_the_smallest_run_end_to_end() -> None:
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "recording_storage.py"), "--seconds", "2",
                           "--size", "160x120", "--loops", "2", "--short-segment", "1"],
                          capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| (")]
    assert [row.split("|")[1].strip() for row in rows] == [
        "(a) passthrough, one file", "(b) passthrough, 60 s segments", "(b) passthrough, 1 s segments",
        "(c) annotated, one file", "(d) annotated, 1 s segments"]
    files = [int(row.split("|")[3]) for row in rows]
    assert files == [1, 1, 2, 1, 2]  # 4 s of passthrough, keyframes every 2 s; 2 s annotated
    amplification = [float(row.split("|")[4]) for row in rows]
    assert all(0.99 <= a <= 1.1 for a in amplification[:3])  # the camera's bytes plus the MP4 boxes
