"""deploy/prometheus/alerts.yml: wired into the shipped Prometheus config, every alert unit-tested with
``promtool test rules`` (a case where it fires and one where it must not), only real metric names."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.stream.test_deploy import exported_names, metric_names
from tests.support.deploy_files import prometheus_config_copy

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "alerts.yml"
RULE_TESTS = PROMETHEUS / "alerts.test.yml"
PROMISED = ("SightlineStreamFailed", "SightlineStreamReconnecting", "SightlineInputDown", "SightlineLatencyP99High",
            "SightlineFrameDropRatioHigh", "SightlineInferenceErrors", "SightlineScrapeFailing",
            "SightlineTargetMissing", "SightlineEventOutputFailing", "SightlineEventOutputDropping",
            "SightlineDiskFreeLow", "SightlineRetentionBehind", "SightlineRetentionStalled",
            "SightlineStorageWriteErrors")


def promtool(*args: str) -> subprocess.CompletedProcess:
    tool = shutil.which("promtool")
    assert tool, "promtool (Debian package 'prometheus') is needed; .ci/run installs it"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60, cwd=ROOT)


def alerts() -> dict[str, dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def test_rules_pass_their_promtool_unit_tests() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_shipped_config_loads_the_rules(tmp_path: Path) -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml", "recording.yml"]  # recording.yml: test_prometheus_recording.py
    result = promtool("check", "config", str(prometheus_config_copy(tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rule files found" in result.stdout
    assert f"Checking {tmp_path / 'alerts.yml'}\n  SUCCESS: 14 rules found" in result.stdout
    compose = yaml.safe_load((ROOT / "deploy/docker-compose.yml").read_text())
    assert "./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in compose["services"]["prometheus"]["volumes"]


def test_every_alert_is_promised_and_has_a_firing_and_a_quiet_case() -> None:
    rules = alerts()
    assert set(rules) == set(PROMISED)
    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    for name in PROMISED:
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in mine), f"{name}: no case where it fires"
        assert any(not case["exp_alerts"] for case in mine), f"{name}: no case where it stays quiet"
        assert rules[name]["labels"]["severity"] in ("warning", "critical")
        assert rules[name]["annotations"]["summary"] and rules[name]["annotations"]["description"]


def test_rules_ask_only_for_metrics_the_service_exports() -> None:
    exported = exported_names()
    used = {name: rule["expr"] for rule in alerts().values() for name in metric_names(rule["expr"])}
    unknown = {name: expr for name, expr in used.items() if name not in exported}
    assert not unknown, f"not exported by the service: {unknown}"
    assert {"sightline_stream_state", "sightline_end_to_end_latency_seconds_bucket", "sightline_frames_dropped_total",
            "sightline_frames_decoded_total", "up", "sightline_event_output_up",
            "sightline_event_output_dropped_total", "sightline_storage_free_bytes", "sightline_storage_min_free_bytes",
            "sightline_retention_behind", "sightline_retention_last_pass_timestamp_seconds",
            "sightline_storage_write_errors_total"} <= set(used)
