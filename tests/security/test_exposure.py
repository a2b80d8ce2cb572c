"""Issue #11 row 7: no non-loopback bind without a token, unless server.insecure says so on purpose."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sightline.model.errors import ConfigError
from sightline.stream.config import ServerConfig
from sightline.stream.service.server import require_safe_bind

pytestmark = pytest.mark.timeout(120)


def test_sightline_run_refuses_a_public_bind_without_a_token_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "open.yaml"
    config.write_text("server:\n  host: 0.0.0.0\n  port: 0\n")
    env = {k: v for k, v in os.environ.items() if k != "SIGHTLINE_TOKEN"}
    proc = subprocess.run([sys.executable, "-m", "sightline", "run", str(config)], capture_output=True, text=True,
                          timeout=100, env=env, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [lines[-1]] and lines[0].startswith("error: server.host '0.0.0.0'"), proc.stderr
    assert "server.insecure" in lines[0] and "Traceback" not in proc.stderr


@pytest.mark.parametrize(("server", "refused"), [
    ({"host": "0.0.0.0"}, True),
    ({"host": "192.168.1.20"}, True),
    ({"host": "::"}, True),
    ({"host": "0.0.0.0", "token": "t0ken"}, False),
    ({"host": "0.0.0.0", "insecure": True}, False),
    ({"host": "127.0.0.1"}, False),
    ({"host": "127.8.9.1"}, False),
    ({"host": "::1"}, False),
    ({"host": "localhost"}, False),
    ({"host": "0.0.0.0", "enabled": False}, False),  # no server: nothing to expose
])
def test_which_binds_are_refused(server: dict[str, object], refused: bool) -> None:
    if refused:
        with pytest.raises(ConfigError, match="server.token"):
            require_safe_bind(ServerConfig(**server))
    else:
        require_safe_bind(ServerConfig(**server))
