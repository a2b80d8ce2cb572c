"""deploy/docker-compose.yml (single process) and deploy/docker-compose.cluster.yml (Ray head + controller and a
Ray worker, laid over it) validate with `docker-compose config` (offline: no Docker engine is needed or here),
and what they start agrees with the image, the config and Prometheus' discovery of the workers."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from sightline.run_cli import apply_environment
from sightline.stream.config import load_run_config
from sightline.stream.service.auth import require_safe_bind

from tests.support.deploy_files import ROOT, dockerfile_values

DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "docker-compose.yml"
CLUSTER = DEPLOY / "docker-compose.cluster.yml"


TOKENS = {"SIGHTLINE_TOKEN": "test-token", "SIGHTLINE_VIEWER_TOKEN": "test-viewer-token-16",
          "SIGHTLINE_METRICS_TOKEN": "test-metrics-token-16"}


def compose_config(*files: Path, without: str | None = None) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing (Debian package docker-compose; .ci/run installs it)"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGHTLINE_", "COMPOSE_", "DOCKER_"))}
    env.update({k: v for k, v in TOKENS.items() if k != without})
    args = [binary, "--project-directory", str(DEPLOY)]
    for file in files:
        args += ["-f", str(file)]
    return subprocess.run([*args, "config"], capture_output=True, text=True, timeout=60, env=env, cwd=DEPLOY)


@functools.cache  # one `docker-compose config` per combination of files (about a second each)
def merged(*files: Path) -> dict[str, Any]:
    result = compose_config(*files)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_files_validate_alone_and_layered() -> None:
    base = merged(BASE)
    assert set(base["services"]) == {"sightline", "prometheus", "grafana"}
    cluster = merged(BASE, CLUSTER)
    assert set(cluster["services"]) == {"sightline", "prometheus", "grafana", "ray-worker"}


@pytest.mark.parametrize("missing", sorted(TOKENS))
def test_compose_refuses_to_start_without_a_token(missing: str) -> None:
    result = compose_config(BASE, CLUSTER, without=missing)
    assert result.returncode != 0 and missing in result.stderr


def test_the_container_config_starts_with_the_environment_compose_hands_it() -> None:
    """configs/docker.yaml binds 0.0.0.0: with compose's tokens it passes the start checks (viewer and admin
    credentials), and Prometheus is handed the same scrape token."""
    services = merged(BASE)["services"]
    config = apply_environment(load_run_config(ROOT / "configs/docker.yaml"), services["sightline"]["environment"])
    require_safe_bind(config.server)
    assert config.server.viewer_tokens == [TOKENS["SIGHTLINE_VIEWER_TOKEN"]]
    assert config.server.metrics_token == services["prometheus"]["environment"]["SIGHTLINE_METRICS_TOKEN"]
    scrape = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    files = {job["authorization"]["credentials_file"] for job in scrape["scrape_configs"]}
    files |= {sd["authorization"]["credentials_file"] for job in scrape["scrape_configs"]
              for sd in job.get("http_sd_configs", ())}
    assert files == {"sightline-metrics-token"}  # beside prometheus.yml: /etc/prometheus/ in the container
    assert "> /etc/prometheus/sightline-metrics-token &&" in " ".join(services["prometheus"]["entrypoint"])


def test_cluster_head_runs_ray_and_the_controller_and_the_worker_joins_it() -> None:
    services = merged(BASE, CLUSTER)["services"]
    head, worker = services["sightline"], services["ray-worker"]
    script = head["command"][-1]
    assert head["command"][:2] == ["/bin/bash", "-c"]
    assert script.startswith("ray start --head --port=6379 ") and "--dashboard-host=127.0.0.1" in script
    assert script.endswith("&& exec sightline run /config/config.yaml --ray auto")
    assert head["environment"]["SIGHTLINE_TOKEN"] == "test-token"
    assert worker["image"] == head["image"]  # the one image, built once by the head's `build:`
    assert head["init"] is True and worker["init"] is True  # Ray's daemons are reaped
    assert worker["command"][:2] == ["ray", "start"] and "--block" in worker["command"]
    assert "--address=sightline:6379" in worker["command"]
    assert worker["environment"]["RAY_USAGE_STATS_ENABLED"] == "0"
    assert "RAY_USAGE_STATS_ENABLED=0" in " ".join(dockerfile_values("ENV"))  # the head: the image's default
    # Ray's metrics export must not take the API port of the head container
    api = load_run_config(ROOT / "configs/docker.yaml").server.port
    for args in (script.split(), worker["command"]):
        (metrics,) = [a for a in args if a.startswith("--metrics-export-port=")]
        assert int(metrics.split("=")[1]) != api
    # the worker writes and reads where the single-process service does
    targets = {v["target"] if isinstance(v, dict) else v.split(":")[1] for v in worker["volumes"]}
    assert {"/media", "/data/runs", "/data/cache"} <= targets
    (gpu,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["capabilities"] == ["gpu"] and len(gpu["device_ids"]) == 1


def test_cluster_layer_leaves_the_single_process_service_as_it_was() -> None:
    base = merged(BASE)["services"]["sightline"]
    layered = merged(BASE, CLUSTER)["services"]["sightline"]
    assert "command" not in base  # the image's CMD: `sightline run /config/config.yaml`, no Ray
    for key in ("build", "image", "environment", "ports", "deploy"):
        assert layered.get(key) == base.get(key), key
    assert sorted(layered["volumes"], key=str) == sorted(base["volumes"], key=str)


def test_prometheus_keeps_the_static_job_and_discovers_workers_from_the_controller() -> None:
    scrape = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    port = load_run_config(ROOT / "configs/docker.yaml").server.port
    assert jobs["sightline"]["static_configs"][0]["targets"] == [f"sightline:{port}"]
    discovered = [job for job in jobs.values() if "http_sd_configs" in job]
    assert len(discovered) == 1
    (sd,) = discovered[0]["http_sd_configs"]
    url = urlsplit(sd["url"])
    assert (url.scheme, url.hostname, url.port, url.path) == ("http", "sightline", port, "/api/cluster/targets")
    # the controller's Host check accepts the name Prometheus uses
    assert "sightline" in load_run_config(ROOT / "configs/docker.yaml").server.allowed_hosts
