"""`sightline run` as a process: SIGINT and SIGTERM finalize recordings and logs and end open previews;
after SIGKILL the fragmented MP4 still plays up to its last complete fragment."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import httpx
import pytest
import yaml
from sightline import synthetic_media as media

from tests.support.models import tiny_bundle
from tests.support.predictions import prediction_lines
from tests.support.processes import stop_process
from tests.support.recordings import only_segment

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]  # a real `sightline run` process per test


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_service(tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    media.make_test_clip(tmp_path / "clip.mp4", frames=50, fps=25, size=(160, 120))
    tiny_bundle().save(tmp_path / "model.pt")
    port = free_port()
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({
        "model": {"source": "model.pt", "device": "cpu"}, "output_dir": "out", "media_root": ".",
        "server": {"host": "127.0.0.1", "port": port},
        "streams": [{"name": "cam", "url": "clip.mp4", "loop": True, "record": True}]}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = (tmp_path / "service.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "sightline", "run", "run.yaml"], cwd=tmp_path, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return proc, f"http://127.0.0.1:{port}"


def wait_classified(proc: subprocess.Popen[bytes], url: str, frames: int, tmp_path: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, (tmp_path / "service.log").read_text()[-3000:]
        try:
            if httpx.get(f"{url}/api/streams/cam", timeout=2).json()["frames_inferred"] >= frames:
                return
        except (httpx.HTTPError, KeyError):
            pass
        assert time.monotonic() < deadline, (tmp_path / "service.log").read_text()[-3000:]
        time.sleep(0.2)


def decoded_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


class PreviewWatcher(threading.Thread):
    """An MJPEG client that reads until the server ends the response."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.parts = 0
        self.first_part = threading.Event()
        self.ended_cleanly = False
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.stream("GET", self.url, timeout=httpx.Timeout(5, read=60)) as r:
                assert r.status_code == 200
                for chunk in r.iter_bytes():
                    self.parts += chunk.count(b"Content-Type: image/jpeg")
                    if self.parts:
                        self.first_part.set()
            self.ended_cleanly = True
        except BaseException as exc:  # reported by the test
            self.error = exc


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_finalizes_the_recording_and_log_and_ends_previews(tmp_path: Path, sig: signal.Signals) -> None:
    proc, url = start_service(tmp_path)
    try:
        wait_classified(proc, url, 20, tmp_path)
        watcher = PreviewWatcher(f"{url}/api/streams/cam/mjpeg")
        watcher.start()
        assert watcher.first_part.wait(20), watcher.error
        proc.send_signal(sig)
        code = proc.wait(45)
        watcher.join(15)
    finally:
        stop_process(proc, signal.SIGKILL)
    log = (tmp_path / "service.log").read_text()
    assert code == 0, log[-3000:]
    assert not watcher.is_alive(), "the open preview did not end at shutdown"
    assert watcher.ended_cleanly, f"the preview ended with {watcher.error!r}"
    assert "Traceback" not in log
    lines = prediction_lines(tmp_path / "out", "cam")
    records = [json.loads(line) for line in lines]
    assert len(lines) >= 20 and all(r["stream"] == "cam" for r in records)  # flushed, whole lines
    # finalized: the encoder was flushed, so the recording holds every frame up to the last classified one (a live
    # stream also records the frames it drops as stale when the model falls behind on a busy machine, which have
    # no JSONL line: more frames than lines is fine, fewer is the encoder's look-ahead lost)
    assert decoded_frames(only_segment(tmp_path / "out", "cam")) >= records[-1]["seq"] + 1


def test_recording_plays_after_sigkill(tmp_path: Path) -> None:
    proc, url = start_service(tmp_path)
    try:
        # the recorder starts a fragment at each keyframe, one per 2 s of video (50 frames at 25 fps):
        # 150 classified frames leave at least one complete fragment even with the encoder's look-ahead
        wait_classified(proc, url, 150, tmp_path)
        proc.kill()
        proc.wait(10)
    finally:
        stop_process(proc, signal.SIGKILL)
    recording = only_segment(tmp_path / "out", "cam")  # passthrough, mid-segment
    frames = decoded_frames(recording)  # no exception: the file opens and decodes without a trailer
    assert frames >= 50, f"{frames} frames playable from {recording.stat().st_size} bytes"
