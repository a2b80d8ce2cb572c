"""`sightline run` as a process with an event going on: SIGTERM ends the event (end message in events.jsonl)
and leaves its clip finalized and playable; while it runs, the API reports the event and serves its snapshot."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import av
import httpx
import pytest
import yaml
from sightline import synthetic_media as media

from tests.support.models import tiny_bundle
from tests.support.processes import stop_process

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sigterm_mid_event_ends_it_and_leaves_a_playable_clip(tmp_path: Path) -> None:
    media.make_test_clip(tmp_path / "clip.mp4", frames=50, fps=25, size=(160, 120))
    tiny_bundle().save(tmp_path / "model.pt")
    port = free_port()
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({
        "model": {"source": "model.pt", "device": "cpu"}, "output_dir": "out", "media_root": ".",
        "server": {"host": "127.0.0.1", "port": port},
        # any label, any probability: an event starts half a second in and lasts until the service stops
        "events": {"preroll_s": 1.0, "postroll_s": 1.0, "rules": [
            {"name": "all", "labels": ["*"], "min_prob": 0.0, "min_duration_s": 0.5, "end_after_s": 600}]},
        "streams": [{"name": "cam", "url": "clip.mp4", "loop": True}]}))
    log_file = (tmp_path / "service.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "sightline", "run", "run.yaml"], cwd=tmp_path,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=log_file, stderr=subprocess.STDOUT)
    log_file.close()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline, event = time.monotonic() + 60, None
        while event is None:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "service.log").read_text()[-3000:]
            try:
                events = httpx.get(f"{url}/api/events", timeout=2).json()["events"]
                event = events[0] if events else None
            except (httpx.HTTPError, KeyError):
                pass
            time.sleep(0.2)
        assert event["end"] is None and event["clip_ready"] is False
        snapshot = httpx.get(f"{url}{event['snapshot_url']}", timeout=5)
        assert snapshot.status_code == 200 and snapshot.content[:2] == b"\xff\xd8"
        assert httpx.get(f"{url}{event['clip_url']}", timeout=5).status_code == 503  # still being written
        time.sleep(2.5)  # well into the event
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(45)
    finally:
        stop_process(proc, signal.SIGKILL)
    log = (tmp_path / "service.log").read_text()
    assert code == 0 and "Traceback" not in log, log[-3000:]
    messages = [json.loads(line) for line in (tmp_path / "out" / "events.jsonl").read_text().splitlines()]
    ours = [m for m in messages if m["event"]["id"] == event["id"]]
    assert [m["type"] for m in ours if m["type"] != "update"] == ["start", "end"]
    assert ours[-1]["event"]["end_reason"] == "stream_ended" and ours[-1]["event"]["end"] >= event["start"]
    clip = tmp_path / "out" / "events" / f"{event['id']}.mp4"
    with av.open(str(clip)) as container:  # finalized: opens and decodes to the end without an error
        frames = sum(1 for _ in container.decode(video=0))
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", str(clip)],
                           capture_output=True, text=True, check=True, timeout=30)
    duration = float(json.loads(probe.stdout)["format"]["duration"])
    # one second of pre-roll, then at least the 2.5 s waited after the event was reported
    assert duration >= 3.0 and frames >= 3.0 * 25 * 0.8, (duration, frames)
