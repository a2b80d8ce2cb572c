"""`sightline run` as a user runs it: a real process, a real signal, files that play afterwards."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import av
import pytest
import yaml
from sightline import synthetic_media as media

from tests.support.models import tiny_bundle
from tests.support.predictions import prediction_lines, predictions
from tests.support.recordings import only_segment, segments

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
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(prediction_lines(tmp_path / "out", "cam")) < 20:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = predictions(tmp_path / "out", "cam")  # every line complete
    assert len(lines) > 10
    with av.open(str(only_segment(tmp_path / "out", "cam"))) as recording:
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


def demo_env(tmp_path: Path) -> dict[str, str]:
    """A machine that has never run Sightline: empty caches, and no download ever attempted."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "TORCH_HOME": str(tmp_path / "torch"), "SIGHTLINE_OFFLINE": "1"}


def wait_for_line(stream, prefix: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if line.startswith(prefix):
            return line
        if not line:
            break
    raise AssertionError(f"no line starting {prefix!r} within {timeout} s")


def test_demo_runs_from_any_directory_until_ctrl_c_and_prints_a_summary(tmp_path: Path) -> None:
    bundle = tiny_bundle().save(tmp_path / "bundle.pt")
    cwd = tmp_path / "somewhere"
    cwd.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "sightline", "demo", "--model", str(bundle), "--device", "cpu",
                             "--port", "0"], cwd=cwd, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=demo_env(tmp_path))
    try:
        banner = wait_for_line(proc.stdout, "Sightline is serving http://127.0.0.1:", 90)
        url = banner.split()[3]
        replay = cwd / "sightline-demo" / "runs" / "replay.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(replay.read_text().splitlines() if replay.exists() else []) < 200:
            time.sleep(0.2)
        time.sleep(1.0)  # the looping camera stream goes on after the replay has ended
        listed = json.loads(urllib.request.urlopen(url + "api/streams", timeout=10).read())["streams"]
        streams = {s["name"]: s for s in listed}
        assert streams["camera"]["state"] == "live" and streams["replay"]["state"] == "ended"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "summary after" in out and "replay  ended" in out and "200 frames decoded, 200 classified" in out
    assert f"outputs: {cwd / 'sightline-demo'}" in out
    with av.open(str(cwd / "sightline-demo" / "media" / "demo.mp4")) as clip:
        assert sum(1 for _ in clip.decode(video=0)) == 200  # 8 s at 25 fps
    assert len(replay.read_text().splitlines()) == 200  # the fast stream classified every frame once
    assert segments(cwd / "sightline-demo" / "runs", "camera")[0].stat().st_size > 0
    assert not (cwd / "media").exists() and not (cwd / "runs").exists()  # nothing outside the demo folder


@pytest.mark.timeout(600)  # the one-off training: ~1 min on an idle 2-core machine, several under load
def test_demo_offline_trains_a_demo_classifier_once_that_recognises_the_clip(tmp_path: Path) -> None:
    """No ImageNet weights and no network: the demo says so in one line, trains, caches, and is right."""
    env = demo_env(tmp_path)
    first = subprocess.run([sys.executable, "-m", "sightline", "demo", "--port", "0", "--duration", "12"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert first.returncode == 0, first.stderr
    said = [line for line in first.stdout.splitlines() if "ImageNet weights" in line]
    assert len(said) == 1 and "demo classifier" in said[0]
    cached = tmp_path / "cache" / "sightline" / "demo-classifier-v1.pt"
    assert cached.is_file() and f"cached at {cached}" in first.stdout
    truth = {r["label"]: r for r in csv.DictReader((tmp_path / "sightline-demo" / "media" / "demo_labels.csv").open())}
    assert set(truth) == {"cat", "coffee", "rocket", "astronaut"}
    rows = [json.loads(line) for line in (tmp_path / "sightline-demo" / "runs" / "replay.jsonl").open()]
    assert len(rows) == 200

    def expected(t: float) -> str:
        return next(label for label, r in truth.items() if float(r["start_s"]) <= t < float(r["end_s"]))

    right = sum(r["top"][0]["label"] == expected(r["time"]) for r in rows)
    assert right >= 0.9 * len(rows), f"{right}/200 frames right"

    again = subprocess.run([sys.executable, "-m", "sightline", "demo", "--port", "0", "--duration", "3"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=180, env=env)
    assert again.returncode == 0, again.stderr
    assert "training the demo classifier" not in again.stdout  # served from the cache


def test_the_service_caps_glibc_malloc_arenas_unless_the_environment_does() -> None:
    """The soak's RSS creep came from per-thread malloc arenas (benchmarks/results/soak-cpu*.txt)."""
    import platform

    code = "from sightline.run_cli import limit_malloc_arenas; print(limit_malloc_arenas())"
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    capped = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert capped.stdout.strip() == str(platform.libc_ver()[0] == "glibc")  # mallopt accepted the cap
    kept = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**env, "MALLOC_ARENA_MAX": "4"})
    assert kept.stdout.strip() == "False"  # an operator's own setting wins


def test_demo_reports_a_busy_port_before_choosing_or_training_a_model(tmp_path: Path) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        started = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "sightline", "demo", "--out", str(tmp_path / "demo"),
                              "--port", str(port)], cwd=REPO, text=True, capture_output=True, timeout=60,
                             env=demo_env(tmp_path))  # empty caches: the demo would train a classifier first
        took = time.monotonic() - started
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        f"error: server: cannot listen on 127.0.0.1:{port}: Address already in use; is another service using it? "
        f"Pass --port N (0: any free port) or set server.port")
    assert "training" not in out.stdout and not (tmp_path / "demo" / "media").exists()
    assert took < 15, took  # not after a model was chosen (training one takes 8-20 s on 2 cores)


def test_pid_file_holds_the_pid_for_the_documented_sighup_and_goes_at_exit(tmp_path: Path) -> None:
    """docs/model-swap.md: `sightline run CONFIG --pid-file PATH`, then `kill -HUP "$(cat PATH)"` reloads."""
    import threading

    clip = media.make_test_clip(tmp_path / "loop.mp4", frames=20, fps=10, size=(96, 72))
    cfg = config(tmp_path, [{"name": "cam", "url": str(clip), "loop": True}])
    pid_path = tmp_path / "run" / "sightline.pid"
    pid_path.parent.mkdir()
    proc = sightline("run", str(cfg), "--pid-file", str(pid_path))
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(prediction_lines(tmp_path / "out", "cam")) < 3:
            time.sleep(0.2)
        assert pid_path.read_text() == f"{proc.pid}\n"  # the process itself (python -m sightline), not a wrapper
        assert [p.name for p in pid_path.parent.iterdir()] == ["sightline.pid"]  # no partial file left
        subprocess.run(["bash", "-c", 'kill -HUP "$(cat "$1")"', "bash", str(pid_path)], check=True, timeout=10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any("SIGHUP: the model section" in line for line in err):
            time.sleep(0.2)
        assert any("SIGHUP: reloading the config file" in line for line in err), "".join(err)
        assert any("SIGHUP: the model section is unchanged: no swap" in line for line in err), "".join(err)
        assert proc.poll() is None  # reloaded (the same model: nothing to swap), still serving
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    reader.join(5)
    assert proc.returncode == 0, "".join(err)
    assert not pid_path.exists()
    nowhere = subprocess.run([sys.executable, "-m", "sightline", "run", str(cfg), "--pid-file",
                              str(tmp_path / "no-such-dir" / "s.pid")], capture_output=True, text=True, timeout=60)
    assert nowhere.returncode == 2 and "--pid-file" in nowhere.stderr and "Traceback" not in nowhere.stderr
