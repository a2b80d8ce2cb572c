"""`sightline run` as a user runs it: a real process, a real signal, files that play afterwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest
import yaml
from sightline.stream import media

from tests.support.models import tiny_bundle

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[2]


def config(tmp_path: Path, streams: list[dict]) -> Path:
    bundle = tiny_bundle().save(tmp_path / "bundle.pt")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"source": str(bundle), "device": "cpu"},
        "output_dir": str(tmp_path / "out"),
        "media_root": str(tmp_path),
        "server": {"enabled": False},
        "streams": streams,
    }))
    return path


def sightline(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "sightline", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_sigterm_drains_and_leaves_a_playable_recording(tmp_path: Path) -> None:
    clip = media.make_test_clip(tmp_path / "loop.mp4", frames=25, fps=25, size=(160, 120))
    cfg = config(tmp_path, [{"name": "cam", "url": str(clip), "mode": "realtime", "loop": True, "record": True}])
    proc = sightline("run", str(cfg))
    log = tmp_path / "out" / "cam.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not log.exists() or log.stat().st_size < 2000):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in log.read_text().splitlines()]  # every line complete
    assert len(lines) > 10
    with av.open(str(tmp_path / "out" / "cam.mp4")) as recording:
        decoded = sum(1 for _ in recording.decode(video=0))
    assert decoded >= len(lines) - 2  # all classified frames were recorded (live policy may drop a stale one)


def test_duration_bounds_a_run_and_exit_code_is_nonzero_when_every_stream_failed(tmp_path: Path) -> None:
    clip = media.make_test_clip(tmp_path / "ok.mp4", frames=10)
    good = sightline("run", str(config(tmp_path, [{"name": "ok", "url": str(clip), "mode": "fast"}])))
    assert good.wait(timeout=60) == 0
    whole = media.make_test_clip(tmp_path / "whole.mkv", frames=50)
    media.truncate_file(whole, tmp_path / "cut.mkv", 0.4)  # opens, then ends early: fails at run time
    bad = sightline("run", str(config(tmp_path, [{"name": "cut", "url": str(tmp_path / "cut.mkv")}])),
                    "--duration", "20")
    _, err = bad.communicate(timeout=60)
    assert bad.returncode == 1
    assert "stream cut" in err and "cut.mkv is truncated" in err
    assert "Traceback" not in err


def test_demo_makes_its_clip_and_labels_and_runs_the_demo_config(tmp_path: Path) -> None:
    bundle = tiny_bundle().save(tmp_path / "bundle.pt")
    proc = subprocess.run([sys.executable, "-m", "sightline", "demo", "--config", str(REPO / "configs" / "demo.yaml"),
                           "--model", str(bundle), "--device", "cpu", "--port", "0", "--duration", "60"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr
    with av.open(str(tmp_path / "media" / "demo.mp4")) as clip:
        frames = sum(1 for _ in clip.decode(video=0))
    assert frames == 200  # 8 s at 25 fps
    replay = (tmp_path / "runs" / "demo" / "replay.jsonl").read_text().splitlines()
    assert len(replay) == frames  # the fast stream classified every frame
    assert (tmp_path / "runs" / "demo" / "camera.mp4").stat().st_size > 0
    from sightline.model.sources import imagenet_classes

    rows = (tmp_path / "media" / "demo_labels.csv").read_text().splitlines()
    assert rows[0] == "video,start_s,end_s,label"
    assert {r.split(",")[3] for r in rows[1:]} <= set(imagenet_classes())
