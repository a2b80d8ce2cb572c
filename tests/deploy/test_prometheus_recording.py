"""deploy/prometheus/recording.yml: wired into the shipped Prometheus config and compose, checked and unit-tested with
``promtool`` (a cluster's workers and a one-process service), built only on metrics the service exports, named
``level:metric:operations`` with the labels its level promises; and the Grafana dashboard reading it where a panel
would otherwise compute over every stream's raw series at each refresh (docs/fleet-prometheus.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from tests.deploy.test_prometheus_alerts import promtool
from tests.stream.test_deploy import DASHBOARD, exported_names, metric_names
from tests.support.deploy_files import ROOT, prometheus_config_copy

PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "recording.yml"
RULE_TESTS = PROMETHEUS / "recording.test.yml"
# level -> the labels a series of that level keeps (besides le, reason or state, which some rules keep too)
LEVELS = {"stream": {"job", "node", "worker", "stream"}, "worker": {"job", "node", "worker"}, "job": {"job"}}
EXTRA_LABELS = {"le", "reason", "state"}
NAME = re.compile(r"^(stream|worker|job):sightline_[a-z0-9_]+:[a-z0-9_]+$")
BY = re.compile(r"\bby\s*\(([^)]*)\)")
RANGE = re.compile(r"\[(\d+)([smh])\]")
SECONDS = {"s": 1, "m": 60, "h": 3600}


def groups() -> list[dict]:
    return yaml.safe_load(RULES.read_text())["groups"]


def records() -> dict[str, str]:
    return {rule["record"]: rule["expr"] for group in groups() for rule in group["rules"]}


def seconds(text: str) -> int:
    match = re.fullmatch(r"(\d+)([smh])", text)
    assert match, text
    return int(match.group(1)) * SECONDS[match.group(2)]


def test_rules_check_and_pass_their_promtool_unit_tests() -> None:
    check = promtool("check", "rules", str(RULES))
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(records())} rules found" in check.stdout
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_shipped_config_and_compose_load_the_rules(tmp_path: Path) -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert "recording.yml" in config["rule_files"]
    result = promtool("check", "config", str(prometheus_config_copy(tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Checking {tmp_path / 'recording.yml'}\n  SUCCESS: {len(records())} rules found" in result.stdout
    compose = yaml.safe_load((ROOT / "deploy/docker-compose.yml").read_text())
    volumes = compose["services"]["prometheus"]["volumes"]
    assert "./prometheus/recording.yml:/etc/prometheus/recording.yml:ro" in volumes


def test_rules_read_only_exported_metrics_or_records_made_before_them_in_their_group() -> None:
    exported = exported_names()
    raw: set[str] = set()
    for group in groups():
        earlier: set[str] = set()  # a group's rules run in order, each on the values this evaluation wrote
        for rule in group["rules"]:
            for name in metric_names(rule["expr"]):
                if NAME.match(name):
                    assert name in earlier, f"{rule['record']} reads {name}, not recorded before it in its group"
                else:
                    assert name in exported, f"{rule['record']} reads {name}, which the service does not export"
                    raw.add(name)
            earlier.add(rule["record"])
    assert {"sightline_frames_inferred_total", "sightline_frames_decoded_total", "sightline_frames_dropped_total",
            "sightline_end_to_end_latency_seconds_bucket", "sightline_stream_state"} == raw


def test_names_and_labels_follow_the_level() -> None:
    """level:metric:operations, and every aggregation keeps exactly its level's labels (instance and node_id go:
    one series per worker and stream, whichever target Prometheus scraped it from)."""
    found = records()
    assert len(found) == len(sum((g["rules"] for g in groups()), []))  # no name recorded twice
    for name, expr in found.items():
        assert NAME.match(name), name
        level = name.split(":")[0]
        kept = [set(re.split(r"\s*,\s*", labels.strip())) for labels in BY.findall(expr)]
        for labels in kept:
            assert labels - EXTRA_LABELS == LEVELS[level], f"{name}: by ({', '.join(sorted(labels))})"
        if not kept:  # no aggregation: the labels of what it reads, which must be of the same level
            assert all(read.split(":")[0] == level for read in metric_names(expr)), name


def test_windows_cover_enough_scrapes_and_the_evaluation_interval() -> None:
    """rate() over at least 4 scrapes (Grafana's rule for $__rate_interval), and no group evaluated less often than
    its windows are long (the recorded series would skip data)."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    scrape = max(seconds(job.get("scrape_interval", config["global"]["scrape_interval"]))
                 for job in config["scrape_configs"])
    default = seconds(config["global"]["evaluation_interval"])
    for group in groups():
        interval = seconds(group.get("interval", f"{default}s"))
        for rule in group["rules"]:
            for n, unit in RANGE.findall(rule["expr"]):
                window = int(n) * SECONDS[unit]
                assert window >= 4 * scrape and window >= interval, (rule["record"], window, scrape, interval)


def test_every_record_is_unit_tested_on_a_cluster_and_every_level_in_one_process() -> None:
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]

    def tested(case: dict) -> set[str]:
        return {name for test in case.get("promql_expr_test", []) for name in metric_names(test["expr"])}

    cluster = [c for c in cases if all('worker="' in s["series"] for s in c["input_series"])]
    one = [c for c in cases if all('job="sightline"' in s["series"] and "worker=" not in s["series"]
                                   for s in c["input_series"])]
    assert cluster and one
    assert set(records()) <= set().union(*map(tested, cluster))
    assert {name.split(":")[0] for name in set().union(*map(tested, one))} == set(LEVELS)


def test_dashboard_reads_records_instead_of_every_streams_raw_series() -> None:
    """At 10,000 cameras a raw per-stream panel draws 10,000 lines, and a latency quantile rates 170,000 buckets at
    every refresh. The frame counters and the end-to-end latency buckets are read through the recorded series only,
    the stream states too outside the (instant) state table, and every per-stream line graph is limited to 20 (a
    p50 line may follow the streams its p99 line picked: ``... and on (...) topk(20, ...)``)."""
    recorded = records()
    dashboard = json.loads(DASHBOARD.read_text())
    through_records = {"sightline_end_to_end_latency_seconds_bucket", "sightline_frames_inferred_total",
                       "sightline_frames_decoded_total", "sightline_frames_dropped_total"}
    tables_only = {"sightline_stream_up", "sightline_stream_state"}
    reads: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            names = metric_names(expr)
            reads |= names
            assert not names & through_records, f"{panel['title']}: {expr}"
            assert panel["type"] == "table" or not names & tables_only, f"{panel['title']}: {expr}"
            per_stream = any("stream" in re.split(r"\s*,\s*", labels.strip()) for labels in BY.findall(expr)) \
                or any(name.startswith("stream:") for name in names)
            if per_stream and panel["type"] != "table":
                assert re.search(r"\b(topk|bottomk)\(20, ", expr), f"{panel['title']}: {expr}"
    assert {name for name in recorded if name.startswith("stream:")} <= reads
    assert {"worker:sightline_frames_inferred:rate1m", "worker:sightline_end_to_end_latency_seconds_bucket:rate1m",
            "worker:sightline_end_to_end_latency_seconds:p99_1m", "worker:sightline_frames_dropped:rate1m",
            "worker:sightline_frames_dropped_per_decoded:ratio_rate1m", "worker:sightline_stream_state:sum"} <= reads
