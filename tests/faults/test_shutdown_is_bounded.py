"""Issue #23: SIGTERM with 32 stalled webhooks, a stalled MQTT broker and a swap on a FIFO ends in at most 25 s
(a container's grace period is often 30 s), and the outputs are finalized: before, each stalled webhook added
its drain and timeout one after another (6.5 minutes for 32) and a FIFO swap never ended."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import av
import httpx
import pytest
from sightline import synthetic_media as media

from tests.support.models import tiny_bundle
from tests.support.predictions import prediction_lines
from tests.support.recordings import only_segment
from tests.support.service import spawn_service

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]
TOKEN = "shutdown-bound-token"


def test_sigterm_with_stalled_outputs_and_a_fifo_swap_exits_within_25_s(tmp_path: Path) -> None:
    clip = media.make_test_clip(tmp_path / "clip.mp4", frames=20, fps=10, size=(160, 120))
    bundle = tiny_bundle().save(tmp_path / "model.pt")
    os.mkfifo(tmp_path / "fifo.pt")
    stalls = [socket.create_server(("127.0.0.1", 0), backlog=64) for _ in range(33)]  # accept, never answer
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = {
        "model": {"source": str(bundle), "device": "cpu"}, "output_dir": str(tmp_path / "out"),
        "media_root": str(tmp_path), "server": {"port": port, "token": TOKEN},
        "streams": [{"name": "cam", "url": str(clip), "loop": True, "record": True}],
        "events": {"rules": [{"name": "any", "labels": ["*"], "min_prob": 0.0, "min_duration_s": 0.0}],
                   "outputs": {
                       "webhooks": [{"name": f"stalled{i}", "url": f"http://127.0.0.1:{s.getsockname()[1]}/hook",
                                     "timeout_s": 60, "retries": 5} for i, s in enumerate(stalls[:32])],
                       "mqtt": {"host": "127.0.0.1", "port": stalls[32].getsockname()[1],
                                "publish_timeout_s": 60}}},
    }
    proc, log = spawn_service(tmp_path, config)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, log.read_text()[-3000:]
                try:
                    if client.get("/api/events").json()["total"] > 0:
                        break  # an event started: 32 webhook deliveries are now stalled
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "no event within 60 s"
                time.sleep(0.1)
            time.sleep(1.0)
            swap = client.put("/api/model", json={"source": str(tmp_path / "fifo.pt")},
                              headers={"Authorization": f"Bearer {TOKEN}"})
            assert swap.status_code == 422 and "not a regular file" in swap.text  # refused, not stuck
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for s in stalls:
            s.close()
    out = log.read_text()
    assert proc.returncode == 0, out[-3000:]
    assert took <= 25, f"SIGTERM took {took:.1f} s"
    assert "summary after" in out
    assert prediction_lines(tmp_path / "out", "cam")
    assert (tmp_path / "out" / "events.jsonl").stat().st_size > 0
    with av.open(str(only_segment(tmp_path / "out", "cam"))) as recording:  # finalized: it opens and decodes
        assert sum(1 for _ in recording.decode(video=0)) > 0
    print(f"SIGTERM to exit: {took:.1f} s")
