"""A real browser camera: headless Chromium's fake camera publishes to a webrtc:// stream via /publish.

The page sends Chromium's offer unfiltered; the service's own ICE policy (stream/ice.py) keeps it on
loopback: it offers 127.0.0.1 only, ignores the browser's other candidates and answers loopback only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import subprocess
from pathlib import Path

import pytest
from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.service.app import create_app
from sightline.stream.service.server import HttpServer

from tests.support.models import tiny_classifier
from tests.support.predictions import prediction_lines
from tests.support.processes import stop_process

CHROMIUM = shutil.which("chromium")
TOKEN = "browser-test-token"
pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(CHROMIUM is None, reason="chromium (Debian package) is not installed")]


def chromium(url: str, profile: Path) -> subprocess.Popen[bytes]:
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
            "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            "--allow-loopback-in-peer-connection", "--remote-debugging-port=0", url]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_chromium_fake_camera_is_classified(tmp_path: Path) -> None:
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path, server={"token": TOKEN, "port": 0},
                       streams=[StreamConfig(name="browser", url="webrtc://browser")])
    pipeline = Pipeline(tiny_classifier(), config, Metrics())
    await asyncio.to_thread(pipeline.start)
    server = HttpServer("127.0.0.1", 0)
    await server.start(create_app(pipeline, config, pipeline.metrics))
    browser = chromium(f"{server.url}/publish?stream=browser#token={TOKEN}", tmp_path / "profile")
    stats = pipeline.get("browser").stats
    try:
        for _ in range(600):
            if stats.frames_inferred >= 10:
                break
            assert browser.poll() is None, "chromium exited"
            await asyncio.sleep(0.1)
        assert stats.frames_inferred >= 10, stats.snapshot()
        assert stats.state == "live"
        # every candidate pair the service's ICE checked is loopback to loopback (aioice's check list)
        peer = pipeline.get("browser").source._peer
        ice = peer.getTransceivers()[0].receiver.transport.transport.iceGatherer._connection
        pairs = [(p.local_candidate.host, p.remote_addr[0]) for p in ice._check_list]
        assert pairs and all(ipaddress.ip_address(a).is_loopback for pair in pairs for a in pair), pairs
    finally:
        stop_process(browser)
        await server.stop()
        await asyncio.to_thread(pipeline.shutdown)
    assert len(prediction_lines(tmp_path / "out", "browser")) >= 10
