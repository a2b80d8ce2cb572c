"""Issue 11 row 13: a re-added stream or a restarted service never truncates an earlier recording or JSONL log."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from sightline import synthetic_media as media
from sightline.stream.config import RunConfig
from sightline.stream.metrics import Metrics
from sightline.stream.outputs.files import fresh_output, rotate_aside, rotated_name
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.service.app import create_app

from tests.faults.support import jsonl, recorded, run
from tests.support.models import tiny_classifier

pytestmark = pytest.mark.timeout(120)

NOON = 1_764_590_400.0  # 2025-12-01 12:00:00 UTC


@pytest.fixture(scope="module")
def classifier():
    return tiny_classifier()


def test_an_existing_file_is_moved_aside_with_a_utc_stamp(tmp_path: Path) -> None:
    path = tmp_path / "cam.jsonl"
    path.write_text("first\n")
    moved = rotate_aside(path, now=lambda: NOON)
    assert moved == tmp_path / "cam.20251201T120000Z.jsonl"
    assert moved.read_text() == "first\n" and not path.exists()


def test_rotation_never_replaces_an_earlier_rotated_copy(tmp_path: Path) -> None:
    path = tmp_path / "cam.mp4"
    for i in range(3):
        path.write_text(f"run {i}")
        fresh_output(path, now=lambda: NOON)
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == ["cam.20251201T120000Z-2.mp4", "cam.20251201T120000Z-3.mp4", "cam.20251201T120000Z.mp4"]
    assert {(tmp_path / k).read_text() for k in kept} == {"run 0", "run 1", "run 2"}
    assert rotated_name(path, "S", 2).name == "cam.S-2.mp4"


def test_nothing_to_rotate_leaves_the_folder_alone(tmp_path: Path) -> None:
    assert rotate_aside(tmp_path / "absent.mp4") is None
    assert fresh_output(tmp_path / "sub" / "new.jsonl") == tmp_path / "sub" / "new.jsonl"
    assert list((tmp_path / "sub").iterdir()) == []


def test_a_second_run_of_the_same_config_keeps_the_first_runs_outputs(classifier, tmp_path: Path) -> None:
    clip = media.make_test_clip(tmp_path / "clip.mp4", frames=12, fps=25, size=(160, 120))
    streams = [{"name": "cam", "url": str(clip), "mode": "fast", "record": True}]
    first = run(classifier, tmp_path, streams)
    assert first.last_exit_code == 0
    out = tmp_path / "out"
    first_log, first_video = (out / "cam.jsonl").read_bytes(), (out / "cam.mp4").read_bytes()
    assert len(jsonl(out / "cam.jsonl")) == 12

    second = run(classifier, tmp_path, streams)
    assert second.last_exit_code == 0
    logs = sorted(out.glob("cam*.jsonl"))
    videos = sorted(out.glob("cam*.mp4"))
    assert len(logs) == 2 and len(videos) == 2
    rotated_log = next(p for p in logs if p.name != "cam.jsonl")
    rotated_video = next(p for p in videos if p.name != "cam.mp4")
    assert rotated_log.read_bytes() == first_log  # the earlier outputs, byte for byte
    assert rotated_video.read_bytes() == first_video
    assert len(jsonl(out / "cam.jsonl")) == 12  # and the new ones are complete
    assert len(recorded(out / "cam.mp4")) == 12


@pytest.mark.asyncio
async def test_re_adding_a_stream_through_the_api_keeps_its_earlier_outputs(classifier, tmp_path: Path) -> None:
    clip = media.make_test_clip(tmp_path / "clip.mp4", frames=20, fps=25, size=(160, 120))
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path)
    pipeline = Pipeline(classifier, config, Metrics())
    await asyncio.to_thread(pipeline.start)
    app = create_app(pipeline, config, pipeline.metrics)
    body = {"name": "cam", "url": str(clip), "mode": "fast", "record": True}
    try:
        async with asyncio.timeout(60), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                          base_url="http://127.0.0.1") as client:
            for _ in range(2):
                r = await client.post("/api/streams", json=body)
                assert r.status_code == 201, r.text
                deadline = time.monotonic() + 30
                while (await client.get("/api/streams/cam")).json()["state"] != "ended":
                    assert time.monotonic() < deadline, "the stream did not end"
                    await asyncio.sleep(0.05)
                assert (await client.delete("/api/streams/cam")).status_code == 200
    finally:
        await asyncio.to_thread(pipeline.shutdown)
    out = tmp_path / "out"
    logs, videos = sorted(out.glob("cam*.jsonl")), sorted(out.glob("cam*.mp4"))
    assert len(logs) == 2 and len(videos) == 2, sorted(p.name for p in out.iterdir())
    for log in logs:
        assert [r["seq"] for r in jsonl(log)] == list(range(20)), log.name
    for video in videos:
        assert len(recorded(video)) == 20, video.name
