"""Issue #11 row 7 and #26: no non-loopback bind without an admin credential (unless server.insecure) and viewer
credentials (unless server.public_read), each relaxation on purpose."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sightline.model.errors import ConfigError
from sightline.stream.config import ServerConfig
from sightline.stream.service.auth import require_safe_bind

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
    assert "server.viewer_tokens" in lines[0] and "server.public_read" in lines[0]


def test_a_public_bind_with_an_admin_token_only_is_refused_naming_both_read_options(tmp_path: Path) -> None:
    config = tmp_path / "token-only.yaml"
    config.write_text("server:\n  host: 0.0.0.0\n  port: 0\n")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SIGHTLINE_")}, "SIGHTLINE_TOKEN": "t" * 20}
    proc = subprocess.run([sys.executable, "-m", "sightline", "run", str(config)], capture_output=True, text=True,
                          timeout=100, env=env, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "SIGHTLINE_VIEWER_TOKEN" in line and "server.public_read: true" in line and "server.insecure" not in line


VIEWER = {"viewer_tokens": ["v" * 16]}
HASH = "pbkdf2_sha256$1000$" + "A" * 22 + "$" + "B" * 43
ADMIN_USER = {"users": [{"name": "ann", "password_hash": HASH, "role": "admin"}]}


@pytest.mark.parametrize(("server", "refused"), [
    ({"host": "0.0.0.0"}, "server.token"),
    ({"host": "192.168.1.20", **VIEWER}, "server.token"),
    ({"host": "::", "public_read": True}, "server.token"),
    ({"host": "0.0.0.0", "token": "t0ken"}, "server.public_read"),
    ({"host": "0.0.0.0", "insecure": True}, "server.viewer_tokens"),
    ({"host": "0.0.0.0", "token": "t0ken", **VIEWER}, None),
    ({"host": "0.0.0.0", "token": "t0ken", "public_read": True}, None),
    ({"host": "0.0.0.0", **ADMIN_USER}, None),  # an admin user is the admin credential, and can log in to read
    ({"host": "0.0.0.0", "insecure": True, "public_read": True}, None),  # open on purpose, twice
    ({"host": "127.0.0.1"}, None),
    ({"host": "127.8.9.1"}, None),
    ({"host": "::1"}, None),
    ({"host": "localhost"}, None),
    ({"host": "0.0.0.0", "enabled": False}, None),  # no server: nothing to expose
])
def test_which_binds_are_refused(server: dict[str, object], refused: str | None) -> None:
    if refused:
        with pytest.raises(ConfigError, match=refused):
            require_safe_bind(ServerConfig(**server))
    else:
        require_safe_bind(ServerConfig(**server))
