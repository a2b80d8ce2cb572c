"""A full disk, for real: `sightline run` in a mount namespace of its own (``unshare -m``) whose output_dir is a 4 MB
tmpfs. The test fills it up (through ``/proc/<pid>/root``, the service's view of the files), then frees it.

While it is full the stream stays live and classified, the failed prediction-log and recording writes are counted
and said (status, ``/readyz``'s detail, metrics) and the free space shows in ``GET /api/streams``' ``storage``; once
the filler is deleted the log resumes by itself, with whole lines only, the recording goes on in a new segment and
the failures clear. Needs root, as CI has (the mount exists only in the child's namespace)."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sightline import synthetic_media as media

from tests.support.models import tiny_bundle
from tests.support.processes import stop_process
from tests.support.service import spawn_service

pytestmark = pytest.mark.timeout(120)

TMPFS = "size=4m"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fill(folder: Path) -> Path:
    """Write a file until the volume is full (ENOSPC)."""
    filler = folder / "filler.bin"
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def prediction_lines(folder: Path) -> list[str]:
    """Every line of every prediction log (<stream>.jsonl, or rotated files under predictions/)."""
    return [line for path in sorted(folder.rglob("*.jsonl")) if path.name != "events.jsonl"
            for line in path.read_text().splitlines()]


async def lines_beyond(folder: Path, count: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while len(prediction_lines(folder)) <= count:
        assert time.monotonic() < deadline, f"no prediction log line beyond the first {count} within {seconds} s"
        await asyncio.sleep(0.2)


async def until(client: httpx.AsyncClient, check: Callable[[dict], bool], what: str, seconds: float = 30) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        try:
            listed = (await client.get("/api/streams")).json()
            if listed["streams"] and check(listed):
                return listed
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        await asyncio.sleep(0.1)


async def readiness_until(client: httpx.AsyncClient, check: Callable[[str], bool], what: str,
                          seconds: float = 30) -> httpx.Response:
    deadline = time.monotonic() + seconds
    while True:
        answer = await client.get("/readyz")
        if check(answer.json().get("detail") or ""):
            return answer
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}: {answer.text}"
        await asyncio.sleep(0.2)


async def test_a_full_disk_keeps_streams_classified_counts_the_failures_and_recovers(tmp_path: Path) -> None:
    assert shutil.which("unshare") and os.geteuid() == 0, "util-linux unshare and root are needed (as in CI)"
    out = tmp_path / "out"
    out.mkdir()  # the mount point; the tmpfs is mounted over it in the child's namespace only
    port = free_port()
    clip = media.make_test_clip(tmp_path / "clip.mp4", frames=20, fps=10, size=(160, 120))
    config = {"model": {"source": str(tiny_bundle().save(tmp_path / "model.pt")), "device": "cpu"},
              "output_dir": str(out), "media_root": str(tmp_path), "server": {"port": port},
              "storage": {"retention": {"interval_s": 1, "min_free_gb": 0}},
              "streams": [{"name": "cam", "url": str(clip), "loop": True, "record": True}]}
    mount = f'mount -t tmpfs -o {TMPFS} sightline-disk-full "$0" && exec "$@"'
    proc, log = spawn_service(tmp_path, config, prefix=("unshare", "-m", "sh", "-c", mount, str(out)))
    try:
        seen = Path(f"/proc/{proc.pid}/root") / out.relative_to("/")  # output_dir as the service sees it
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            listed = await until(client, lambda s: s["streams"][0]["frames_inferred"] > 0, "classified")
            assert listed["storage"]["volume_bytes"] <= 4 * 1024 * 1024  # the tmpfs, not the test's disk
            await lines_beyond(seen, 0)

            filler = fill(seen)
            full = await until(client, lambda s: (s["streams"][0]["sink_errors"].get("jsonl", 0) >= 1
                                                  and s["storage"]["free_bytes"] < 65536), "writes failing")
            cam = full["streams"][0]
            assert cam["records_lost"]["jsonl"] >= 1
            await asyncio.sleep(2.0)
            later = (await client.get("/api/streams/cam")).json()
            assert later["state"] == "live" and later["frames_inferred"] > cam["frames_inferred"]  # still classified
            metrics = (await client.get("/metrics")).text
            assert 'sightline_sink_errors_total{sink="jsonl",stream="cam"}' in metrics
            ready = await readiness_until(client, lambda d: "predictions writes failing" in d
                                          and "recordings writes failing" in d, "the failures in /readyz")
            assert ready.status_code == 200  # a full disk does not take the service out
            assert 'sightline_storage_writes_failing{kind="predictions"} 1.0' in (await client.get("/metrics")).text
            written = len(prediction_lines(seen))
            segments_before = {p.name for p in seen.rglob("*.mp4")}

            filler.unlink()
            await until(client, lambda s: s["storage"]["free_bytes"] > 1024 * 1024, "space back")
            await lines_beyond(seen, written)  # the log resumed by itself
            await readiness_until(client, lambda d: "writes failing" not in d, "the failures cleared", seconds=30)
            assert {p.name for p in seen.rglob("*.mp4")} - segments_before  # the recording went on in a new segment
            for line in prediction_lines(seen):
                assert json.loads(line)["stream"] == "cam"  # whole lines only, across the failure
    finally:
        stop_process(proc)
    assert proc.returncode == 0, log.read_text()[-3000:]
