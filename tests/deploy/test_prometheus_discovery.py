"""The `sightline-workers` job of deploy/prometheus/prometheus.yml, run by a real Prometheus: it reads an
http_sd list like the controller's `/api/cluster/targets` and scrapes each listed worker with its labels.
The list is served here by a stand-in on 127.0.0.1 (the controller's own endpoint is tested with the cluster);
only the job's host is moved there, everything else is the committed job: the stand-in answers only requests
that carry the scrape token from the job's credentials_file (the list and the metrics alike)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from tests.support.deploy_files import ROOT
from tests.support.processes import stop_process

PROMETHEUS = shutil.which("prometheus")
JOB = "sightline-workers"
SCRAPE_TOKEN = "test-metrics-token-16"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StandIn(BaseHTTPRequestHandler):
    """Serves the target list at the job's path and a worker's /metrics."""

    sd_path = ""
    targets: list[dict] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.headers.get("Authorization") != f"Bearer {SCRAPE_TOKEN}":
            self.send_error(401)
            return
        if self.path == self.sd_path:
            body, kind = json.dumps(self.targets).encode(), "application/json"
        elif self.path == "/metrics":
            body, kind = b"# TYPE worker_probe gauge\nworker_probe 1\n", "text/plain; version=0.0.4"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stand_in() -> Iterator[tuple[ThreadingHTTPServer, dict]]:
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    (job,) = [j for j in scrape["scrape_configs"] if j["job_name"] == JOB]
    handler = type("Handler", (StandIn,), {"sd_path": urlsplit(job["http_sd_configs"][0]["url"]).path})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    port = server.server_address[1]
    handler.targets = [{"targets": [f"127.0.0.1:{port}"], "labels": {"node": "node-a", "worker": "w-1"}}]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, job
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(PROMETHEUS is None, reason="the prometheus binary is not installed (Debian package 'prometheus')")
@pytest.mark.timeout(60)
def test_workers_job_discovers_and_scrapes_the_listed_workers(tmp_path: Path, stand_in) -> None:
    server, job = stand_in
    url = urlsplit(job["http_sd_configs"][0]["url"])
    job["http_sd_configs"][0]["url"] = url._replace(netloc=f"127.0.0.1:{server.server_address[1]}").geturl()
    job["scrape_interval"], job["scrape_timeout"] = "1s", "1s"  # only the pace differs from the committed job
    (tmp_path / "sightline-metrics-token").write_text(SCRAPE_TOKEN)  # the file compose writes beside the config
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({"scrape_configs": [job]}))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)

    def scraped() -> dict | None:
        assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
        try:
            active = httpx.get(f"http://127.0.0.1:{port}/api/v1/targets", timeout=2).json()["data"]["activeTargets"]
        except (httpx.HTTPError, ValueError, KeyError):
            return None
        up = [t for t in active if t["labels"].get("job") == JOB and t["health"] == "up"]
        return up[0] if up else None

    try:
        deadline = time.monotonic() + 40
        while not (target := scraped()):
            assert time.monotonic() < deadline, "Prometheus did not discover and scrape the listed worker"
            time.sleep(0.2)
    finally:
        stop_process(proc)
        log.close()
    assert target["labels"]["node"] == "node-a" and target["labels"]["worker"] == "w-1"
    assert target["scrapeUrl"] == f"http://127.0.0.1:{server.server_address[1]}{job['metrics_path']}"
