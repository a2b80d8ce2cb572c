"""deploy/ and the container config: the dashboard only asks for metrics the service exports, the
Prometheus config is valid, and compose, provisioning, Dockerfile and configs/docker.yaml agree."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from prometheus_client import Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sightline.stream.config import RunConfig, StreamConfig, load_run_config
from sightline.stream.events.notifiers.metrics import OutputMetrics
from sightline.stream.metrics import (
    DROP_REASONS,
    LOGIN_FAILURES,
    LOSS_REASONS,
    STAGES,
    STATES,
    SWAP_RESULTS,
    Metrics,
)
from sightline.stream.outputs.annotated_video import DROP_STAGES, video_out_metrics
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.stats import StageStats, StreamStats
from sightline.stream.storage.layout import KINDS
from sightline.stream.storage.stats import StorageStats
from sightline.synthetic_media import make_test_clip

from tests.support.deploy_files import prometheus_config_copy
from tests.support.models import tiny_classifier

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "sightline.json"
RECORDING = DEPLOY / "prometheus" / "recording.yml"
WORKER_GAUGES = {"sightline_worker_capacity_fps", "sightline_worker_asked_fps", "sightline_worker_measured_fps",
                 "sightline_worker_streams"}

PROMETHEUS_SERIES = {"ALERTS", "up"}  # written by Prometheus itself (alert states, scrape health)
GROUPING = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless",
            "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords or label names."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals (label values, regexes)
    expr = re.sub(r"\$\{[^}]*\}|\$\w+", "", expr)  # Grafana variables
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range and subquery selectors
    expr = re.sub(GROUPING, "", expr)  # grouping label lists
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        word = match.group()
        if expr[match.end():].lstrip().startswith("(") or word.lower() in KEYWORDS:
            continue  # a function call, or a keyword
        if match.start() > 0 and (expr[match.start() - 1].isdigit() or expr[match.start() - 1] == "."):
            continue  # the exponent or unit of a number (1e3)
        names.add(word)
    return names


def recording_rules() -> dict[str, str]:
    """deploy/prometheus/recording.yml: recorded name -> its expression, in file order."""
    groups = yaml.safe_load(RECORDING.read_text())["groups"]
    return {rule["record"]: rule["expr"] for group in groups for rule in group["rules"]}


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        labels = re.fullmatch(r"\s*label_values\(\s*(.+?)\s*,\s*\w+\s*\)\s*", text)
        exprs.append(labels.group(1) if labels else text)
    return exprs


class Exported:
    """What ``Metrics`` reads at scrape time: one stream's plain stats, the stage stats, a CUDA-looking model."""

    def __init__(self) -> None:
        self.stage_stats = StageStats()
        self.stats = StreamStats("cam", self.stage_stats)
        self.storage = StorageStats()  # output_dir's disk: every series there at 0
        self.classifier = SimpleNamespace(describe=lambda: {"arch": "resnet18", "classes": 1000, "device": "cuda:0",
                                                            "precision": "fp16"}, device=SimpleNamespace(type="cpu"))

    def stream_stats(self) -> list[StreamStats]:
        return [self.stats]


def exported_names() -> set[str]:
    """Sample names the service exports once every metric has a value (GPU memory as on CUDA)."""
    metrics = Metrics()
    view = Exported()
    metrics.watch(view)
    stats = view.stats
    stats.set_state("live")
    stats.on_decoded()
    stats.on_inferred(0.02)
    stats.on_reconnect()
    stats.on_sink_error("jsonl")
    stats.on_records_lost("jsonl", 1)
    stats.on_corrupt_packet()
    for reason in DROP_REASONS:
        stats.on_dropped(reason)
    for reason in LOSS_REASONS:
        stats.on_lost(reason)
    for stage in STAGES:
        view.stage_stats.stages[stage].observe(0.001)
    view.stage_stats.batch_size.observe(4)
    metrics.watch_gpu_memory(lambda: (1, 2))
    video = video_out_metrics(metrics)  # annotated video: WebRTC viewers, publishing (outputs/annotated_video.py)
    video.encode_seconds.labels("cam").observe(0.01)
    video.encoders.labels("cam").set(1)
    video.dropped.labels("cam", "publish").inc()
    video.viewers.labels("cam").set(1)
    video.publish_up.labels("cam").set(1)
    video.publish_reconnects.labels("cam").inc()
    video.publish_packets.labels("cam").inc()
    OutputMetrics(metrics.registry).bind("mqtt")  # event outputs (stream/events/outputs)
    # sightline_events_total is EventHub's counter (stream/events/hub.py, issue #13 part A).
    Counter("sightline_events_total", "Events started", ["stream", "rule", "label"],
            registry=metrics.registry).labels("cam", "rule", "label").inc()
    text = generate_latest(metrics.registry).decode()
    names = {re.split(r"[{ ]", line, maxsplit=1)[0] for line in text.splitlines() if line and not line.startswith("#")}
    # Prometheus' own series, and a Ray pipeline worker's gauges (its own endpoint: stream/cluster/worker.py)
    return names | PROMETHEUS_SERIES | WORKER_GAUGES


def test_metric_name_extraction() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, stream) (rate(foo_seconds_bucket{stream=~"$stream", '
            'le!="+Inf"}[$__rate_interval]))) / ignoring(kind) group_left bar_total offset 5m > 1e3')
    assert metric_names(expr) == {"foo_seconds_bucket", "bar_total"}


def test_dashboard_asks_only_for_exported_metrics() -> None:
    """Or for series the shipped recording rules write (whose own inputs tests/deploy/test_prometheus_recording.py
    checks the same way)."""
    exported = exported_names() | set(recording_rules())
    exprs = dashboard_expressions()
    assert len(exprs) >= 10
    unknown = {name: e for e in exprs for name in metric_names(e) if name not in exported}
    assert not unknown, f"not exported by the service or recorded: {unknown}"


def test_dashboard_covers_the_promised_views() -> None:
    """Each view reads its metric directly or through a recording rule built on it."""
    used = set().union(*(metric_names(e) for e in dashboard_expressions()))
    records = recording_rules()
    pending = [name for name in used if name in records]
    while pending:  # what the recorded series are computed from, and so on
        for name in metric_names(records[pending.pop()]) - used:
            used.add(name)
            if name in records:
                pending.append(name)
    for name in ("sightline_frames_inferred_total", "sightline_end_to_end_latency_seconds_bucket",
                 "sightline_frames_dropped_total", "sightline_reconnects_total", "sightline_batch_size_bucket",
                 "sightline_stage_latency_seconds_bucket", "sightline_gpu_memory_bytes", "sightline_events_total",
                 "ALERTS", "sightline_event_output_dropped_total", "sightline_event_output_queue_depth",
                 "sightline_storage_free_bytes", "sightline_storage_bytes", "sightline_retention_deleted_files_total",
                 "sightline_storage_write_errors_total"):
        assert name in used, name
    text = DASHBOARD.read_text()
    assert "histogram_quantile(0.5," in text and "histogram_quantile(0.99," in text


@pytest.mark.timeout(60)
def test_metric_labels_come_from_finite_sets_in_a_real_run(tmp_path: Path) -> None:
    """A file stream and unreachable RTSP cameras (one with two inputs) with credentials in their URLs, through the
    real pipeline: every label value the run exported comes from the config or a fixed set, and no URL part leaks."""
    clip = make_test_clip(tmp_path / "clip.mp4", frames=20, fps=10, size=(96, 64))
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path, streams=[
        StreamConfig(name="file-cam", url=str(clip), mode="fast"),
        StreamConfig(name="door", url="rtsp://admin:hunter2@127.0.0.1:9/stream1?token=abc",
                     open_timeout_s=1, reconnect={"initial_s": 0.05, "max_s": 0.1}),
        StreamConfig(name="gate", open_timeout_s=1, reconnect={"initial_s": 0.05, "max_s": 0.1},
                     inputs=[{"url": "rtsp://admin:hunter2@127.0.0.1:9/stream1?token=abc", "roles": ["record"]},
                             {"name": "sub", "url": "rtsp://admin:hunter2@127.0.0.1:9/stream2",
                              "roles": ["classify"]}])])
    metrics = Metrics()
    pipeline = Pipeline(tiny_classifier(), config, metrics)
    pipeline.start()
    try:
        deadline = time.monotonic() + 30
        while not (pipeline.get("file-cam").stats.state == "ended" and pipeline.get("door").stats.reconnects >= 1
                   and pipeline.get("gate").stats.inputs[0].reconnects >= 1):
            assert time.monotonic() < deadline, pipeline.statuses()
            time.sleep(0.05)
        text = generate_latest(metrics.registry).decode()
    finally:
        pipeline.shutdown()
    for secret in ("admin", "hunter2", "127.0.0.1", "stream1", "token", "abc", "rtsp"):
        assert secret not in text, secret
    allowed = {"stream": {"file-cam", "door", "gate"}, "state": set(STATES),
               "input": {"main", "record", "sub"}, "roles": {"classify+view", "record", "classify"},
               "stage": set(STAGES) | set(DROP_STAGES),
               "reason": set(DROP_REASONS) | set(LOSS_REASONS) | set(LOGIN_FAILURES),
               "sink": {"jsonl", "recorder", "annotated_video"},
               "arch": {"resnet18"}, "classes": {"4"},
               "device": {"cpu"}, "precision": {"fp32"},
               "model": {pipeline.models.current.id}, "result": set(SWAP_RESULTS),  # the served model's id (hash)
               "kind": set(KINDS)}  # output_dir's kinds of file (stream/storage/layout.py)
    seen: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for label, value in sample.labels.items():
                if label == "le":
                    continue
                assert label in allowed and value in allowed[label], (sample.name, label, value)
                seen.setdefault(label, set()).add(value)
    assert seen["stream"] == {"file-cam", "door", "gate"} and seen["state"] == set(STATES)
    assert seen["input"] == {"main", "record", "sub"}  # names from the config; a single url's one input is "main"
    assert 'sightline_stream_state{state="ended",stream="file-cam"} 1.0' in text
    assert 'sightline_stream_state{state="reconnecting",stream="door"} 1.0' in text


def test_grafana_datasource_uid_matches_the_dashboard() -> None:
    provisioned = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    uids = {d["uid"] for d in provisioned["datasources"]}
    dashboard = json.loads(DASHBOARD.read_text())
    used = {p["datasource"]["uid"] for p in dashboard["panels"]}
    used |= {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert used <= uids
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/sightline.yml").read_text())
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mounts = {v.split(":")[0]: v.split(":")[1] for v in compose["services"]["grafana"]["volumes"]}
    assert mounts["./grafana/dashboards"] == provider["providers"][0]["options"]["path"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package 'prometheus') not installed")
def test_prometheus_config_is_valid(tmp_path: Path) -> None:
    result = subprocess.run(["promtool", "check", "config", str(prometheus_config_copy(tmp_path))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_mounts_what_exists_and_scrapes_the_service() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert set(compose["services"]) == {"sightline", "prometheus", "grafana"}
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), source
    scrape = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    targets = scrape["scrape_configs"][0]["static_configs"][0]["targets"]
    port = load_run_config(ROOT / "configs/docker.yaml").server.port
    assert targets == [f"sightline:{port}"]
    assert "../configs/docker.yaml:/config/config.yaml:ro" in compose["services"]["sightline"]["volumes"]


def test_container_config_binds_all_interfaces_without_a_secret_in_the_file() -> None:
    config = load_run_config(ROOT / "configs/docker.yaml")
    assert config.server.enabled and config.server.host == "0.0.0.0" and config.server.token is None
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"EXPOSE {config.server.port}" in dockerfile
    assert f"127.0.0.1:{config.server.port}/healthz" in dockerfile
    assert 'CMD ["sightline", "run", "/config/config.yaml"]' in dockerfile
    assert re.search(r"^USER (?!root|0\b)\S+", dockerfile, re.M)
