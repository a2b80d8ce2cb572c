"""Issue #26: credentials rotate without a restart. `sightline run` as an operator runs it: the config file gets a
new viewer token and the service a SIGHUP; the old token is refused from then on, the new one works, the model is
not reloaded (its section did not change), and a broken file changes nothing."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.models import tiny_bundle
from tests.support.service import spawn_service

pytestmark = pytest.mark.timeout(120)

OLD, NEW = "old-viewer-token-0123456789", "new-viewer-token-0123456789"


def wait_until(check, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_sighup_rotates_the_viewer_token_without_a_restart_or_a_model_swap(tmp_path: Path) -> None:
    bundle = tiny_bundle().save(tmp_path / "bundle.pt")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = {"model": {"source": str(bundle), "device": "cpu"}, "output_dir": str(tmp_path / "out"),
              "media_root": str(tmp_path), "server": {"port": port, "token": "admin-token-0123456789",
                                                      "viewer_tokens": [OLD]}, "streams": []}
    proc, log = spawn_service(tmp_path, config)
    path = tmp_path / "service.yaml"

    def status(token: str) -> int:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/api/streams", headers={"Authorization": f"Bearer {token}"},
                             timeout=5).status_code
        except httpx.TransportError:
            return 0

    try:
        wait_until(lambda: proc.poll() is not None or status(OLD) == 200, 90, "the service answers")
        assert proc.poll() is None, log.read_text()[-3000:]
        assert status(NEW) == 401
        path.write_text(yaml.safe_dump({**config, "server": {**config["server"], "viewer_tokens": [NEW]}}))
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: status(NEW) == 200, 30, "the new token in force")
        assert status(OLD) == 401
        # a file that is not a valid config changes nothing
        path.write_text(yaml.safe_dump({**config, "server": {**config["server"], "viewer_tokens": ["short"]}}))
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "the config file cannot be read" in log.read_text(), 30, "the refusal in the log")
        assert status(NEW) == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    out = log.read_text()
    assert out.count("SIGHUP: the model section is unchanged: no swap") == 1 and "model swap:" not in out
    assert OLD not in out and NEW not in out
