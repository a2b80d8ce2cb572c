"""benchmarks/camera_inputs.py: its camera configs, recording figures, verdicts and report on synthetic steps,
and its smallest run end to end (one camera, the tests' tiny random model, short windows: the pieces fit
together, no figure)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.scripts import BENCHMARKS, benchmark_script


@pytest.fixture(scope="module")
def bench():
    with benchmark_script("camera_inputs") as module:
        yield module


def test_each_config_makes_the_camera_it_names(bench) -> None:
    a = bench.camera_stream("inputs", 3, "rtsp://h/cam-3", "rtsp://h/cam-3-sub", 2.0)
    assert a["name"] == "cam-3" and a["infer_fps"] == 2.0 and "url" not in a and "record" not in a
    assert a["inputs"] == [{"name": "main", "url": "rtsp://h/cam-3", "roles": ["record", "view"]},
                           {"name": "sub", "url": "rtsp://h/cam-3-sub", "roles": ["classify"]}]
    b = bench.camera_stream("main-only", 0, "rtsp://h/cam-0", "rtsp://h/cam-0-sub", 2.0)
    assert b["url"] == "rtsp://h/cam-0" and b["record"] is True and "inputs" not in b
    assert a["transport"] == b["transport"] == "tcp"
    with pytest.raises(ValueError, match="unknown config"):
        bench.camera_stream("sub-only", 0, "a", "b", 2.0)


def test_recorded_and_read_bytes_per_camera_minute_and_a_recording_behind_fails(bench) -> None:
    before, after = {"cam-0": 1_000_000, "cam-1": 0}, {"cam-0": 6_000_000, "cam-1": 2_500_000, "other": 9}
    per_min = bench.recorded_per_minute(before, after, ["cam-0", "cam-1", "cam-2"], 30.0)
    assert per_min == [pytest.approx(10.0), pytest.approx(5.0), 0.0]
    snap = {"inputs": [{"name": "sub", "roles": ["classify"], "bytes": 5}, {"name": "main", "roles": ["record", "view"],
                                                                             "bytes": 7}]}
    assert bench.record_input_bytes(snap) == 7 and bench.record_input_bytes({"inputs": snap["inputs"][:1]}) is None
    assert bench.record_input_bytes({}) is None  # a service without inputs in its snapshot
    # a 23 MB/min camera over a 20 s window: read at least 0.9 x 23 = 20.7; recorded at least 20.7 x 19/20 = 19.7
    assert bench.recording_problems([23.0, None], [23.1, 19.8], 23.0, 20.0) == []
    assert bench.recording_problems([20.0, 23.0], [22.0, 19.0], 23.0, 20.0) == [
        "1 camera(s) read behind the camera: slowest 20.0 MB/min < 0.9 x 23.0",
        "1 recording(s) behind: slowest 19.0 MB/min < 19.7"]
    assert bench.recording_problems([None], [0.0], 23.0, 20.0) == ["1 camera(s) recorded nothing"]


def step(bench, config, n, rate=2.0, **kw):
    return bench.Step(config=config, cameras=n, window_s=20, rates=[rate] * n, p99_s=0.05, worst_camera_p99_s=0.06,
                      cpu_cores=0.02 * n if config == "inputs" else 0.06 * n, server_cpu_cores=0.01 * n,
                      rss_mb=1000, threads=40, recorded_mb_per_min=[23.0] * n, read_mb_per_min=[23.2] * n,
                      start_s=4, **kw)


def test_steps_are_judged_by_density_rules_and_summarised_side_by_side(bench) -> None:
    ok, slow = step(bench, "inputs", 10), step(bench, "main-only", 20, rate=1.7)
    assert bench.judge(ok, 2.0) == []
    assert bench.judge(slow, 2.0)[0].startswith("slowest camera 1.700/s < 0.9 x 2")
    slow.problems = bench.judge(slow, 2.0)
    ladders = {}
    for config, steps in (("inputs", [step(bench, "inputs", 10), step(bench, "inputs", 20)]),
                          ("main-only", [step(bench, "main-only", 10), slow])):
        passed, failed = bench.ladder_outcome(steps)
        ladders[config] = {"steps": [{**bench.asdict(s)} for s in steps], "rows_md": [bench.step_row(s) for s in steps],
                           "passed": passed, "failed": failed}
    lines = bench.summary(ladders)
    assert lines[0] == "- inputs: last passing N **20**, first failing N none (the ladder ended first: a lower bound)"
    assert lines[1] == "- main-only: last passing N **10**, first failing N 20"
    assert lines[2].startswith("- at N=10 (both passed): service CPU inputs 0.20 cores (0.020 per camera) vs "
                               "main-only 0.60 cores (0.060 per camera); inputs uses 0.33x")
    row = bench.step_row(slow)
    assert row.startswith("| main-only | 20 | 1.70 / 1.70 | 50 ms (worst cam 60) | 1.20 | 0.060 | 0.20 | 1000 MB |")
    assert "| 23.2 / 23.0 / 23.0 |" in row and row.endswith("**fail**: slowest camera 1.700/s < 0.9 x 2 |")
    meta = {"started": "now", "command": "python x", "cpu": "AMD EPYC", "cores": 2, "load_avg_start": (1, 1, 1),
            "load_avg_end": (2, 2, 2), "commit": "abc", "backend": "auto", "served_by": None, "main": "m", "sub": "s",
            "bundle": "b", "infer_fps": 2.0, "seconds": 20, "warmup": 6, "stagger_s": 1}
    md = bench.markdown({"meta": meta, "ladders": ladders})
    assert "CPU: AMD EPYC (2 logical cores)" in md and "## inputs" in md and "## main-only" in md
    assert md.count("| inputs | ") == 2 and "## Summary" in md


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_smallest_run_end_to_end(bench, tmp_path: Path) -> None:
    """One camera, main-only (and inputs where the service takes them), 3-s windows, the tiny random model."""
    if (missing := bench.missing_rtsp()) is not None:
        pytest.skip(missing)
    out = tmp_path / "inputs.md"
    configs = "main-only" if "inputs" not in _config_fields() else "inputs,main-only"
    cmd = [sys.executable, str(BENCHMARKS / "camera_inputs.py"), "--configs", configs, "--ladder", "1",
           "--seconds", "3", "--warmup", "1", "--model", "random", "--backend", "torch", "--start-timeout", "60",
           "--work", str(tmp_path / "work"), "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["meta"]["cpu"] and report["meta"]["cores"] >= 1
    for config in configs.split(","):
        (one,) = report["ladders"][config]["steps"]
        assert one["cameras"] == 1 and one["not_live"] == 0 and one["cpu_cores"] > 0, one
        assert one["recorded_mb_per_min"][0] > 0 and one["read_mb_per_min"][0] > 0, one
    assert "| main-only | 1 |" in out.read_text()


def _config_fields() -> set[str]:
    from sightline.stream.config import StreamConfig

    return set(StreamConfig.model_fields)
