"""benchmarks/density.py: its figures and verdicts on synthetic input, and its cheapest path end to end.

The end-to-end run is the smallest the script allows (one camera, a 320x180 clip, the tests' tiny random
model on torch, 2-s windows): it proves the clip, costs, service, RTSP server, polling and reports fit
together, not any figure.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.scripts import BENCHMARKS, benchmark_script


@pytest.fixture(scope="module")
def density():
    with benchmark_script("density") as module:
        yield module


METRICS = """\
# HELP sightline_end_to_end_latency_seconds Capture (or due time, for paced files) to prediction
# TYPE sightline_end_to_end_latency_seconds histogram
sightline_end_to_end_latency_seconds_bucket{stream="cam-0",le="0.1"} 50.0
sightline_end_to_end_latency_seconds_bucket{stream="cam-0",le="1.0"} 99.0
sightline_end_to_end_latency_seconds_bucket{stream="cam-0",le="+Inf"} 100.0
sightline_end_to_end_latency_seconds_count{stream="cam-0"} 100.0
sightline_end_to_end_latency_seconds_bucket{stream="cam,1",le="0.1"} 100.0
sightline_end_to_end_latency_seconds_bucket{stream="cam,1",le="1.0"} 100.0
sightline_end_to_end_latency_seconds_bucket{stream="cam,1",le="+Inf"} 100.0
sightline_batch_size_sum 300.0
sightline_batch_size_count 100.0
"""


def test_histograms_per_stream_and_their_quantiles(density) -> None:
    h = density.parse_histograms(METRICS, density.LATENCY_METRIC)
    assert h["cam-0"] == {0.1: 50.0, 1.0: 99.0, math.inf: 100.0}
    assert h["cam,1"][1.0] == 100.0  # a comma inside a quoted label does not split it
    assert density.quantile(h["cam-0"], 0.5) == pytest.approx(0.1)
    assert density.quantile(h["cam-0"], 0.99) == pytest.approx(1.0)
    assert density.quantile(h["cam-0"], 0.995) == pytest.approx(1.0)  # in +Inf: the last finite bound
    assert density.share_above(h["cam-0"], 1.0) == pytest.approx(0.01)
    merged = density.merge_buckets([h["cam-0"], h["cam,1"]])
    assert merged[math.inf] == 200.0 and density.quantile(merged, 0.25) == pytest.approx(0.1 * 50 / 150)
    before = {0.1: 10.0, 1.0: 10.0, math.inf: 10.0}
    assert density.bucket_delta(before, h["cam-0"]) == {0.1: 40.0, 1.0: 89.0, math.inf: 90.0}
    assert density.quantile({0.1: 0.0, math.inf: 0.0}, 0.99) is None
    assert density.parse_sum_count(METRICS, density.BATCH_METRIC) == (300.0, 100.0)


def step(density, rates, p99_s=0.2, **kw):
    return density.Step(source="file", cameras=len(rates), window_s=20, rates=rates, p99_s=p99_s,
                        worst_camera_p99_s=p99_s, over_1s=0.0, cpu_cores=1.0, rss_mb=1000, threads=40,
                        api_streams_p99_ms=10, metrics_p99_ms=20, mean_batch=2.0, start_s=3, **kw)


def test_a_step_fails_on_a_slow_camera_a_slow_p99_or_a_camera_not_live(density) -> None:
    assert density.judge(step(density, [1.0, 0.95, 1.0]), 1.0) == []
    assert density.judge(step(density, [1.0, 0.85]), 1.0)[0].startswith("slowest camera 0.850/s")
    assert density.judge(step(density, [5.0, 5.0], p99_s=1.2), 5.0) == ["p99 1200 ms > 1000 ms"]
    assert density.judge(step(density, [1.0], p99_s=None), 1.0) == ["no result in the window"]
    assert density.judge(step(density, [1.0], not_live=1), 1.0) == ["1 camera(s) not live"]


def test_ladder_outcome_and_slopes(density) -> None:
    a, b, c = step(density, [1.0] * 10), step(density, [1.0] * 20), step(density, [0.5] * 40)
    c.problems = ["slow"]
    b.rss_mb, b.threads = 1220, 90
    assert density.ladder_outcome([a, b, c]) == (20, 40)
    assert density.ladder_outcome([c]) == (None, 40)
    assert density.ladder_outcome([a, b]) == (20, None)
    assert density.per_added_camera([a, b]) == {"rss_mb": 22.0, "threads": 5.0}


def test_computed_limit_from_costs(density) -> None:
    costs = density.Costs(fps=30, keyframe_rate=1.0, keyframe_decode_s=0.0035, frame_decode_s=0.00225,
                          scale_s=0.001, demux_s=0.0005, model_s={1: 0.004, 2: 0.003, 8: 0.002},
                          model_wall_s={1: 0.002, 2: 0.0015, 8: 0.001})
    assert density.model_cost_at(costs, None) == (1, 0.004)
    assert density.model_cost_at(costs, 3.4) == (2, 0.003)
    assert density.model_cost_at(costs, 8.0) == (8, 0.002)
    # every frame decoded: 30 x 2.25 + 1 x (1 + 3) + 0.5 ms per camera-second
    assert density.camera_cost(costs, 1.0, "all", 0.003) == pytest.approx(0.0720)
    # keyframes: 1 x (3.5 + 1 + 3) + 0.5; infer_fps past the keyframe rate classifies keyframes only
    assert density.camera_cost(costs, 1.0, "keyframes", 0.003) == pytest.approx(0.008)
    assert density.camera_cost(costs, 5.0, "keyframes", 0.003) == pytest.approx(0.008)
    assert density.expected_mode(None, 1.0, 1.0) == "all"  # the key left out: today's behaviour
    assert density.expected_mode("auto", 1.0, 1.0) == "keyframes"
    assert density.expected_mode("auto", 5.0, 1.0) == "all"
    assert density.expected_mode("keyframes", 5.0, 1.0) == "keyframes"


@pytest.mark.slow
def test_the_smallest_run_end_to_end(density, tmp_path: Path) -> None:
    """One camera per source for 2 s; RTSP too where the GStreamer RTSP server is installed (.ci/run has it)."""
    missing = density.missing_rtsp()
    out = tmp_path / "density.json"
    cmd = [sys.executable, str(BENCHMARKS / "density.py"), "--source", "file" if missing else "both", "--ladder", "1",
           "--seconds", "2", "--warmup", "0.5", "--model", "random", "--backend", "torch", "--size", "320x180",
           "--clip-seconds", "3", "--model-seconds", "0.1", "--start-timeout", "60", "--poll-per-s", "2",
           "--work", str(tmp_path / "work"),
           "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["meta"]["cores"] >= 1 and report["meta"]["cpu"]
    costs = report["costs"]
    assert costs["keyframe_rate"] == pytest.approx(1.0, rel=0.05) and costs["fps"] == 30
    assert costs["frame_decode_s"] > 0 and costs["keyframe_decode_s"] > 0
    assert set(costs["model_s"]) == {"1", "2", "4", "8"}
    sources = ["file"] if missing else ["file", "rtsp"]
    assert list(report["ladders"]) == sources
    for source in sources:
        ladder = report["ladders"][source]
        (one,) = ladder["steps"]
        assert one["cameras"] == 1 and one["not_live"] == 0, one
        assert one["rss_mb"] > 100 and one["threads"] > 5 and one["cpu_cores"] > 0
        assert one["api_streams_p99_ms"] is not None and one["metrics_p99_ms"] is not None
        # the service's default (decode: auto) at infer_fps 1 and a 1 s GOP: keyframes only, as it said
        assert ladder["limit"]["cameras"] > 0 and ladder["limit"]["mode"] == "keyframes"
        assert any("auto->keyframes" in line for line in one["decode"]), one["decode"]
    if source == "rtsp":
        assert one["server_cpu_cores"] is not None
    md = out.with_suffix(".md").read_text()
    assert "| file | 1 |" in md and "computed limit" in md
    if missing:
        pytest.skip(f"file source checked; rtsp not: {missing}")
