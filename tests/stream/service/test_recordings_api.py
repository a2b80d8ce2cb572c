"""GET /api/streams/{name}/recordings (segments by time range) and /recordings/{file} (byte ranges; names checked
whole, links never followed). The segments are files named as the recorder names them; their content does not
matter to the API."""

from __future__ import annotations

import asyncio
import calendar
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from sightline.stream.pipeline.pipeline import Pipeline

from tests.support.service import make_service

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

DAY = "2027-01-15"
T0 = calendar.timegm((2027, 1, 15, 23, 58, 0))  # two segments before midnight, one after


def stamp(t: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(t))


def segment(out: Path, start: float, length: float, size: int = 1000, n: int = 1) -> Path:
    folder = out / "recordings" / "cam" / time.strftime("%Y-%m-%d", time.gmtime(start))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (f"cam.{stamp(start)}.mp4" if n == 1 else f"cam.{stamp(start)}-{n}.mp4")
    path.write_bytes(bytes(range(256)) * (size // 256) + bytes(size % 256))
    os.utime(path, (start + length, start + length))
    return path


@pytest_asyncio.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[Pipeline, httpx.AsyncClient, Path]]:
    pipeline, app = make_service(tmp_path, ("cam",))
    out = tmp_path / "out"
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
            yield pipeline, client, out
    finally:
        await asyncio.to_thread(pipeline.shutdown)


async def test_segments_overlapping_a_range_are_listed_oldest_first(service) -> None:
    pipeline, client, out = service
    a = segment(out, T0, 60)
    b = segment(out, T0 + 60, 60, size=2000)
    b2 = segment(out, T0 + 60, 1, n=2)  # a restart within the same second
    c = segment(out, T0 + 120, 60)  # the next UTC day's folder
    (out / "recordings" / "cam" / DAY / "notes.txt").write_text("not a segment")
    whole = (await client.get("/api/streams/cam/recordings")).json()
    assert [s["file"] for s in whole["segments"]] == [a.name, b.name, b2.name, c.name]
    first = whole["segments"][1]
    assert first == {"file": b.name, "start": T0 + 60, "end": T0 + 120, "open": False, "bytes": 2000,
                     "url": f"/api/streams/cam/recordings/{b.name}"}
    # epoch seconds or ISO 8601; a segment overlaps when it ends at/after since and starts at/before until
    since = (await client.get("/api/streams/cam/recordings", params={"since": T0 + 90})).json()
    assert [s["file"] for s in since["segments"]] == [b.name, c.name]
    until = (await client.get("/api/streams/cam/recordings", params={"until": "2027-01-15T23:59:30Z"})).json()
    assert [s["file"] for s in until["segments"]] == [a.name, b.name, b2.name]
    assert (await client.get("/api/streams/cam/recordings", params={"since": "soon"})).status_code == 422


async def test_the_open_segment_is_listed_as_open_and_not_served_yet(service) -> None:
    pipeline, client, out = service
    growing = segment(out, time.time() - 5, 0)
    pipeline.storage.opened(growing)
    listed = (await client.get("/api/streams/cam/recordings")).json()["segments"]
    assert listed[-1]["open"] is True and listed[-1]["end"] >= time.time() - 2
    assert (await client.get(listed[-1]["url"])).status_code == 503
    pipeline.storage.closed(growing)
    assert (await client.get(listed[-1]["url"])).status_code == 200


async def test_a_segment_downloads_whole_or_by_byte_range(service) -> None:
    _, client, out = service
    path = segment(out, T0, 60, size=5000)
    url = f"/api/streams/cam/recordings/{path.name}"
    whole = await client.get(url)
    assert whole.status_code == 200 and whole.content == path.read_bytes()
    assert whole.headers["content-type"] == "video/mp4" and whole.headers["accept-ranges"] == "bytes"
    part = await client.get(url, headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206
    assert part.headers["content-range"] == "bytes 1000-1999/5000"
    assert part.content == path.read_bytes()[1000:2000]


@pytest.mark.parametrize("name", ["passwd", "cam.mp4", "other.20270115T235800Z.mp4", "cam.20270115T235800Z.jpg",
                                  "..%2F..%2Fcam.20270115T235800Z.mp4", "cam.20270115T235800Z.mp4%00",
                                  ".cam.20270115T235800Z.mp4"])
async def test_a_name_that_is_not_a_segment_of_the_stream_is_refused(service, name: str) -> None:
    _, client, out = service
    segment(out, T0, 60)
    got = await client.get(f"/api/streams/cam/recordings/{name}")
    assert got.status_code in (404, 422), (name, got.status_code)


async def test_links_and_unknown_segments_and_streams_are_404(service, tmp_path: Path) -> None:
    _, client, out = service
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"not yours")
    folder = segment(out, T0, 60).parent
    (folder / f"cam.{stamp(T0 + 60)}.mp4").symlink_to(secret)  # a link inside the folder, pointing out
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / f"cam.{stamp(T0 + 86400)}.mp4").write_bytes(b"not yours either")
    (out / "recordings" / "cam" / "2027-01-16").symlink_to(outside)  # a day folder that is a link
    for name in (stamp(T0 + 60), stamp(T0 + 86400), stamp(T0 + 7)):
        assert (await client.get(f"/api/streams/cam/recordings/cam.{name}.mp4")).status_code == 404, name
    listed = (await client.get("/api/streams/cam/recordings")).json()["segments"]
    assert [s["start"] for s in listed] == [T0]  # neither link is listed
    assert (await client.get("/api/streams/nope/recordings")).status_code == 404
    assert (await client.get("/api/streams/nope/recordings/nope.20270115T235800Z.mp4")).status_code == 404
