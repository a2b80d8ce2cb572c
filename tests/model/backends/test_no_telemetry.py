"""OpenVINO's converter and NNCF send usage events through ``openvino_telemetry`` unless it is blocked: an int8
export must leave it unimported and open no connection to anything but loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("openvino")

PROBE = r"""
import ipaddress, json, sys
connections = []

def audit(event, args):
    if event == "socket.connect":
        address = args[1]
        host = address[0] if isinstance(address, tuple) else str(address)
        try:
            local = ipaddress.ip_address(host).is_loopback
        except ValueError:
            local = False  # a name, not an address: it would need a lookup first
        if not local:
            connections.append(repr(address))
    elif event == "socket.getaddrinfo":
        connections.append("lookup " + repr(args[0]))

sys.addaudithook(audit)
from sightline.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "connections": connections,
                  "telemetry_blocked": sys.modules.get("openvino_telemetry", "absent") is None,
                  "ovc_loaded": "openvino.tools.ovc" in sys.modules}))
"""


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_int8_export_sends_nothing_and_loads_no_telemetry(trained, tmp_path: Path):
    from sightline.model.bundle import ModelBundle

    bundle = ModelBundle.load(trained.bundle).save(tmp_path / "model.pt")
    env = {k: v for k, v in os.environ.items() if k not in ("NNCF_CI", "CI")}  # no CI switch helps here
    proc = subprocess.run([sys.executable, "-c", PROBE, "export", str(bundle), "--backend", "openvino",
                           "--precision", "int8", "--device", "cpu", "--force"],
                          capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["code"] == 0
    assert report["ovc_loaded"]  # the converter (which would send events) did run
    assert report["telemetry_blocked"]
    assert report["connections"] == []
