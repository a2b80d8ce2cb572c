"""Prometheus at fleet size: the scrape jobs drop exactly the ``_created`` series the service writes (nothing reads
them), and benchmarks/prometheus_series.py's pure parts (splitting an exposition by stream, the projection, the
stand-in workers' exposition, the Prometheus config it runs) on small inputs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.stream.test_deploy import dashboard_expressions, exported_names, metric_names, recording_rules
from tests.support.deploy_files import ROOT
from tests.support.scripts import benchmark_script

PROMETHEUS = ROOT / "deploy" / "prometheus"
EXPOSITION = """\
# HELP sightline_frames_inferred_total Frames classified by the model
# TYPE sightline_frames_inferred_total counter
sightline_frames_inferred_total{stream="cam-1"} 10.0
sightline_frames_inferred_total{stream="b \\"q\\""} 20.0
# HELP sightline_end_to_end_latency_seconds Capture to prediction
# TYPE sightline_end_to_end_latency_seconds histogram
sightline_end_to_end_latency_seconds_bucket{le="0.1",stream="cam-1"} 4.0
sightline_end_to_end_latency_seconds_bucket{le="+Inf",stream="cam-1"} 5.0
sightline_end_to_end_latency_seconds_count{stream="cam-1"} 5.0
sightline_end_to_end_latency_seconds_sum{stream="cam-1"} 0.5
# HELP sightline_annotated_frames_dropped_created Annotated frames dropped
# TYPE sightline_annotated_frames_dropped_created gauge
sightline_annotated_frames_dropped_created{stream="cam-1",stage="encoder"} 1.7e+09
# HELP sightline_worker_streams Streams placed on this worker
# TYPE sightline_worker_streams gauge
sightline_worker_streams{worker="w1"} 2.0
# HELP sightline_batch_size Frames per model batch
# TYPE sightline_batch_size histogram
sightline_batch_size_bucket{le="+Inf"} 3.0
sightline_batch_size_count 3.0
sightline_batch_size_sum 6.0
"""


@pytest.fixture(scope="module")
def bench():
    with benchmark_script("prometheus_series") as module:
        yield module


def test_scrape_jobs_drop_the_created_series_and_nothing_else() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    exported = exported_names()
    created = {name for name in exported if name.endswith("_created")}
    assert created  # prometheus_client's Counter and Histogram objects write one beside each (login failures, video)
    for name in created:  # when its counter or histogram was made, not a metric of its own
        base = name.removesuffix("_created")
        assert f"{base}_total" in exported or f"{base}_count" in exported, name
    for job in config["scrape_configs"]:
        (rule,) = job["metric_relabel_configs"]
        assert rule["source_labels"] == ["__name__"] and rule["action"] == "drop"
        pattern = re.compile(f"^(?:{rule['regex']})$")  # Prometheus anchors its regexes
        assert {name for name in exported if pattern.match(name)} == created, job["job_name"]
    used = set().union(*(metric_names(e) for e in dashboard_expressions()), *(
        metric_names(e) for e in recording_rules().values()))
    assert not used & created


def test_split_exposition_by_stream(bench) -> None:
    exp = bench.split_exposition(EXPOSITION)
    assert set(exp.streams) == {"cam-1", 'b \\"q\\"'}
    cam = exp.streams["cam-1"]
    assert dict(cam.series) == {"sightline_frames_inferred_total": 1, "sightline_end_to_end_latency_seconds": 4,
                                "sightline_annotated_frames_dropped_created": 1}
    assert cam.bytes["sightline_frames_inferred_total"] == len('sightline_frames_inferred_total{stream="cam-1"} 10.0\n')
    assert dict(exp.fixed.series) == {"sightline_worker_streams": 1, "sightline_batch_size": 3}
    assert exp.total_series == 11 and exp.total_bytes == len(EXPOSITION)
    assert exp.comment_bytes == sum(len(line) + 1 for line in EXPOSITION.splitlines() if line.startswith("#"))
    assert bench.series_keys(EXPOSITION) == bench.series_keys(EXPOSITION.replace("10.0", "11.0"))


def test_projection_arithmetic(bench) -> None:
    fleet = bench.project(50, 200, per_stream=(52, 2, 3500), fixed=(135, 2, 16000))
    assert fleet.cameras == 10_000
    assert fleet.series_per_worker == 135 + 200 * 52
    assert fleet.series == 50 * (135 - 2 + 200 * 50 + len(bench.PER_TARGET))
    assert fleet.text_bytes_per_worker == 16000 + 200 * 3500
    assert fleet.text_bytes_per_scrape_round == 50 * fleet.text_bytes_per_worker
    assert fleet.samples_per_s == pytest.approx(fleet.series / 5)
    low, high = fleet.memory_gib_rule_of_thumb
    assert low == pytest.approx(fleet.series * 3 * 1024 / 2**30) and high == pytest.approx(fleet.series * 4096 / 2**30)
    assert bench.project(1, 1, (1, 0, 1), (0, 0, 0), measured_bytes_per_series=2**30).memory_gib_measured_basis == 6
    assert bench.dropped({"a_created": 2, "a_total": 2, "b": 1}) == 2


def test_stand_in_writes_the_fixed_part_once_and_the_stream_per_camera(bench) -> None:
    template = bench.fleet_template(EXPOSITION, "cam-1")
    stand_in = bench.StandIn(template, "cam-1", "w07", 3)
    assert stand_in.series == 4 + 3 * 6  # fixed: worker gauge and batch histogram; cam-1's 6 lines per camera
    first, second = stand_in.body().decode(), stand_in.body().decode()
    assert bench.series_keys(first) == bench.series_keys(second)
    assert 'sightline_worker_streams{worker="w07"} 2.0' in first
    assert 'stream="b' not in first and "cam-1" not in first
    for j in range(3):
        assert f'sightline_frames_inferred_total{{stream="w07-cam-{j:03d}"}} 11.0' in first  # grows 10% a scrape
        assert f'sightline_frames_inferred_total{{stream="w07-cam-{j:03d}"}} 12.0' in second
    assert 'sightline_annotated_frames_dropped_created{stream="w07-cam-000",stage="encoder"} 1.7e+09' in second
    count = re.search(r"^sightline_batch_size_count (\S+)$", first, re.M)
    assert count and float(count.group(1)) == pytest.approx(3.3)  # counter-like samples grow, gauges do not
    assert first.count("# TYPE sightline_frames_inferred_total counter") == 1
    assert bench.split_exposition(first).total_series == stand_in.series


def test_fleet_prometheus_runs_the_shipped_job_and_rules(bench, tmp_path: Path) -> None:
    config = bench.fleet_config(tmp_path / "targets.json")
    shipped = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    (original,) = [j for j in shipped["scrape_configs"] if j["job_name"] == "sightline-workers"]
    assert job["file_sd_configs"] == [{"files": [str(tmp_path / "targets.json")]}]
    assert {k: v for k, v in job.items() if k != "file_sd_configs"} == {
        k: v for k, v in original.items() if k not in ("authorization", "http_sd_configs")}
    assert config["rule_files"] == shipped["rule_files"] and config["global"] == shipped["global"]
