"""The HTTP API in process (httpx + ASGI) on a real pipeline with two looping file streams.

The real-socket path (uvicorn, Prometheus, Chromium, MJPEG) is in test_service.py.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import av
import cv2
import httpx
import numpy as np
import pytest
import pytest_asyncio
from sightline import synthetic_media as media
from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.service.app import create_app

from tests.support.models import tiny_classifier
from tests.support.predictions import prediction_lines

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

TOKEN = "test-token-1234"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STATUS_KEYS = {"name", "url", "mode", "state", "error", "fps", "p50_ms", "p99_ms", "frames_decoded",
               "frames_inferred", "dropped", "reconnects", "sink_errors", "prediction", "smoothed", "snapshot", "mjpeg",
               "corrupt_packets", "frames_lost", "records_lost", "model", "smoothing", "active_s", "capacity", "decode",
               "inputs", "inputs_down"}
UNREACHABLE = "rtsp://user:secret@127.0.0.1:9/x"  # port 9 (discard) refuses: the stream keeps reconnecting


@pytest.fixture(scope="module")
def media_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media")
    media.make_test_clip(root / "clip.mp4", frames=30, fps=10, size=(160, 120))
    return root


@pytest.fixture(scope="module")
def pipeline(media_root: Path) -> Iterator[Pipeline]:
    clip = str(media_root / "clip.mp4")
    config = RunConfig(output_dir=media_root.parent / "out", media_root=media_root,
                       server={"token": TOKEN},
                       streams=[StreamConfig(name="cam-a", url=clip, loop=True),
                                StreamConfig(name="cam-b", url=clip, loop=True)])
    pipe = Pipeline(tiny_classifier(), config, Metrics())
    pipe.start()
    yield pipe
    pipe.shutdown()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(pipeline: Pipeline) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(pipeline, pipeline.config, pipeline.metrics)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
        yield c


async def wait_for(predicate, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def classified(client: httpx.AsyncClient, name: str) -> bool:
    r = await client.get(f"/api/streams/{name}")
    return r.status_code == 200 and r.json()["frames_inferred"] > 0


def clip_url(media_root: Path) -> str:
    return str(media_root / "clip.mp4")


async def test_list_reports_both_streams_with_their_figures(client: httpx.AsyncClient) -> None:
    await wait_for(lambda: classified(client, "cam-a"), what="cam-a classified")
    await wait_for(lambda: classified(client, "cam-b"), what="cam-b classified")
    r = await client.get("/api/streams")
    assert r.status_code == 200
    streams = {s["name"]: s for s in r.json()["streams"]}
    assert set(streams) == {"cam-a", "cam-b"}
    a = streams["cam-a"]
    assert set(a) == STATUS_KEYS
    assert a["state"] == "live" and a["mode"] == "realtime"
    assert a["p50_ms"] is not None and a["p99_ms"] >= a["p50_ms"]
    assert a["capacity"]["demand_per_s"] >= a["capacity"]["served_per_s"] > 0  # its share of the model
    assert r.json()["capacity"]["window_s"] > 0  # and the box's figure
    assert a["decode"]["setting"] == "auto" and a["decode"]["mode"] in ("all", "keyframes") and a["decode"]["reason"]
    assert a["prediction"][0]["label"].startswith("class_")
    # the shown label is the smoothed one, and the status says how it was smoothed (config defaults here)
    assert a["smoothed"]["label"].startswith("class_")
    assert a["smoothing"] == {"ema": 0.6, "hysteresis": 0.1}
    assert a["snapshot"] == "/api/streams/cam-a/snapshot.jpg" and a["mjpeg"] == "/api/streams/cam-a/mjpeg"


async def test_get_one_stream(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/streams/cam-b")
    assert r.status_code == 200
    assert r.json()["name"] == "cam-b" and set(r.json()) == STATUS_KEYS


async def test_unknown_stream_is_404(client: httpx.AsyncClient) -> None:
    for path in ("/api/streams/nope", "/api/streams/nope/snapshot.jpg", "/api/streams/nope/mjpeg"):
        r = await client.get(path)
        assert r.status_code == 404, path
        assert "nope" in r.json()["detail"]
    assert (await client.delete("/api/streams/nope", headers=AUTH)).status_code == 404


async def test_add_and_remove_a_stream(client: httpx.AsyncClient, pipeline: Pipeline, media_root: Path) -> None:
    r = await client.post("/api/streams", json={"name": "cam-c", "url": clip_url(media_root), "loop": True},
                          headers=AUTH)
    assert r.status_code == 201, r.text
    assert r.headers["location"] == "/api/streams/cam-c"
    assert r.json()["name"] == "cam-c"
    await wait_for(lambda: classified(client, "cam-c"), what="cam-c classified")
    assert 'sightline_frames_inferred_total{stream="cam-c"}' in (await client.get("/metrics")).text

    r = await client.delete("/api/streams/cam-c", headers=AUTH)
    assert r.status_code == 200
    assert r.json()["state"] == "stopped" and r.json()["frames_inferred"] > 0
    names = [s["name"] for s in (await client.get("/api/streams")).json()["streams"]]
    assert names == ["cam-a", "cam-b"]
    assert (await client.get("/api/streams/cam-c")).status_code == 404
    assert 'stream="cam-c"' not in (await client.get("/metrics")).text
    lines = prediction_lines(pipeline.config.output_dir, "cam-c")
    assert len(lines) == r.json()["frames_inferred"]  # sink flushed and closed


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token"},
                                     {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}],
                         ids=["none", "wrong", "basic", "no-scheme"])
async def test_changes_need_the_token(client: httpx.AsyncClient, media_root: Path, headers: dict) -> None:
    r = await client.post("/api/streams", json={"name": "intruder", "url": clip_url(media_root)}, headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = await client.delete("/api/streams/cam-a", headers=headers)
    assert r.status_code == 401
    names = [s["name"] for s in (await client.get("/api/streams")).json()["streams"]]
    assert names == ["cam-a", "cam-b"]


async def test_token_is_checked_before_the_body(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/streams", json={"name": "x", "url": "ftp://example/x"})
    assert r.status_code == 401


async def test_duplicate_name_is_409(client: httpx.AsyncClient, media_root: Path) -> None:
    r = await client.post("/api/streams", json={"name": "cam-a", "url": clip_url(media_root)}, headers=AUTH)
    assert r.status_code == 409
    assert "cam-a" in r.json()["detail"]


async def test_file_outside_media_root_is_403(client: httpx.AsyncClient, media_root: Path) -> None:
    outside = media.make_test_clip(media_root.parent / "elsewhere.mp4", frames=5, fps=10)
    r = await client.post("/api/streams", json={"name": "sneaky", "url": str(outside)}, headers=AUTH)
    assert r.status_code == 403
    assert "outside the media root" in r.json()["detail"]
    r = await client.post("/api/streams", json={"name": "sneaky", "url": str(media_root / ".." / "elsewhere.mp4")},
                          headers=AUTH)
    assert r.status_code == 403


async def test_missing_or_unreadable_file_is_422(client: httpx.AsyncClient, media_root: Path) -> None:
    r = await client.post("/api/streams", json={"name": "ghost", "url": str(media_root / "ghost.mp4")}, headers=AUTH)
    assert r.status_code == 422
    assert "no such file" in r.json()["detail"]
    (media_root / "text.mp4").write_text("not a video")
    r = await client.post("/api/streams", json={"name": "text", "url": str(media_root / "text.mp4")}, headers=AUTH)
    assert r.status_code == 422
    assert "not a readable video" in r.json()["detail"]


@pytest.mark.parametrize(("body", "message"), [
    ({"name": "x", "url": "ftp://example/x"}, "url: unsupported scheme 'ftp'"),
    ({"name": "x", "url": "rtsp://u:secret@cam/x", "mode": "fast"}, "mode 'fast' needs a file"),
    ({"name": "bad name!", "url": "rtsp://u:secret@cam/x"}, "name: String should match pattern"),
    ({"name": "x", "url": "rtsp://u:secret@cam/x", "lop": True}, "lop: unknown key"),
    ({"url": "rtsp://u:secret@cam/x"}, "name: Field required"),
])
async def test_invalid_fields_are_422_with_the_field_named(client: httpx.AsyncClient, body: dict,
                                                           message: str) -> None:
    r = await client.post("/api/streams", json=body, headers=AUTH)
    assert r.status_code == 422
    assert message in r.json()["detail"]
    assert "secret" not in r.text  # FastAPI's default response echoes the body, URL credentials included


async def test_unreachable_camera_never_exposes_its_credentials(client: httpx.AsyncClient,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    body = {"name": "cam-x", "url": UNREACHABLE, "reconnect": {"initial_s": 0.1, "max_s": 0.2}}
    r = await client.post("/api/streams", json=body, headers=AUTH)
    assert r.status_code == 201
    assert r.json()["url"] == "rtsp://***@127.0.0.1:9/x"

    async def reconnecting() -> bool:
        s = (await client.get("/api/streams/cam-x")).json()
        return s["reconnects"] >= 1 and s["error"] is not None

    await wait_for(reconnecting, what="cam-x to fail and reconnect")
    for path in ("/api/streams", "/api/streams/cam-x", "/metrics", "/readyz"):
        r = await client.get(path)
        assert "secret" not in r.text, path
    assert (await client.get("/api/streams/cam-x/snapshot.jpg")).status_code == 503  # no frame yet
    assert (await client.delete("/api/streams/cam-x", headers=AUTH)).status_code == 200
    assert "secret" not in caplog.text


async def test_a_camera_with_two_inputs_shows_both_redacted_and_which_is_down(
        client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    body = {"name": "cam-y", "reconnect": {"initial_s": 0.1, "max_s": 0.2},
            "inputs": [{"name": "main", "url": "rtsp://user:secret@127.0.0.1:9/main", "roles": ["record", "view"]},
                       {"name": "sub", "url": "rtsp://user:secret@127.0.0.1:9/sub", "roles": ["classify"]}]}
    r = await client.post("/api/streams", json=body, headers=AUTH)
    assert r.status_code == 201
    assert r.json()["url"] == "rtsp://***@127.0.0.1:9/sub"  # the classified input's

    async def both_reconnecting() -> bool:
        s = (await client.get("/api/streams/cam-y")).json()
        return all(i["reconnects"] >= 1 for i in s["inputs"])

    await wait_for(both_reconnecting, what="both inputs to fail and reconnect")
    s = (await client.get("/api/streams/cam-y")).json()
    assert [(i["name"], i["roles"], i["url"]) for i in s["inputs"]] == [
        ("sub", ["classify"], "rtsp://***@127.0.0.1:9/sub"), ("main", ["record", "view"], "rtsp://***@127.0.0.1:9/main")]
    assert s["inputs_down"] == ["sub", "main"] and all(i["error"] for i in s["inputs"])
    metrics = (await client.get("/metrics")).text
    assert 'sightline_input_up{input="main",roles="record+view",stream="cam-y"} 0.0' in metrics
    assert 'sightline_input_reconnects_total{input="main",stream="cam-y"}' in metrics
    for path in ("/api/streams", "/api/streams/cam-y", "/metrics", "/readyz"):
        assert "secret" not in (await client.get(path)).text, path
    bad = {**body, "name": "cam-z", "inputs": [{**body["inputs"][0], "roles": ["record"]}]}
    r = await client.post("/api/streams", json=bad, headers=AUTH)
    assert r.status_code == 422 and "classify role" in r.text and "secret" not in r.text
    assert (await client.delete("/api/streams/cam-y", headers=AUTH)).status_code == 200
    assert "secret" not in caplog.text


async def test_snapshot_is_the_latest_annotated_frame(client: httpx.AsyncClient, media_root: Path) -> None:
    await wait_for(lambda: classified(client, "cam-a"), what="cam-a classified")
    r = await client.get("/api/streams/cam-a/snapshot.jpg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.ndim == 3 and image.shape[0] > 0
    # The overlay's label panel (stream name and figures in white, the smoothed label in green, the top-k)
    # sits in the top-left corner; previews are drawn 360 lines high, where the panel is ~120 px tall and
    # wider than 150 px. In that corner the clip itself is dark (checked below on every frame, scaled the
    # same way), so near-white and green pixels there can only be the overlay's text.
    assert image.shape[0] == 360
    corner = (slice(0, 120), slice(0, 150))
    rgb = image[..., ::-1][corner]  # cv2 decodes to BGR

    def text_pixels(picture: np.ndarray) -> tuple[int, int]:
        white = np.count_nonzero(picture.min(axis=2) > 170)
        green = np.count_nonzero((picture[..., 1] > 190) & (picture[..., 0] < 150) & (picture[..., 2] < 170))
        return white, green

    raw = [cv2.resize(f.to_ndarray(format="rgb24"), (image.shape[1], 360))[corner]
           for f in av.open(clip_url(media_root)).decode(video=0)]
    assert max(sum(text_pixels(f)) for f in raw) == 0  # the clip never has such pixels there
    white, green = text_pixels(rgb)
    assert white >= 50 and green >= 10, f"overlay text missing: {white} white, {green} green pixels"


async def test_metrics_are_prometheus_text(client: httpx.AsyncClient, pipeline: Pipeline) -> None:
    await wait_for(lambda: classified(client, "cam-a"), what="cam-a classified")
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=")
    assert 'sightline_frames_inferred_total{stream="cam-a"}' in r.text
    model = pipeline.models.current.id
    assert f'sightline_model_info{{arch="resnet18",classes="4",device="cpu",model="{model}",precision="fp32"}} 1.0' \
        in r.text
    assert "sightline_end_to_end_latency_seconds_bucket{" in r.text


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    r = await client.get("/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["ready"] is True and body["model"]["arch"] == "resnet18"
    assert body["streams_running"] == 2 and body["streams_down"] == 0


async def test_page_and_openapi_are_served(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="streams"' in page.text and "/api/streams" in page.text
    schema = (await client.get("/openapi.json")).json()
    for path in ("/api/streams", "/api/streams/{name}", "/api/streams/{name}/snapshot.jpg",
                 "/api/streams/{name}/mjpeg", "/healthz", "/readyz", "/metrics"):
        assert path in schema["paths"], path
    assert "StreamConfig" in str(schema["paths"]["/api/streams"]["post"]["requestBody"])


async def test_no_page_loads_anything_from_another_host(client: httpx.AsyncClient) -> None:
    """FastAPI's /docs and /redoc fetch their scripts from a public CDN (blank offline, a third-party request from
    the operator's browser): they are off; the schema stays. Every page served references this host only."""
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        assert (await client.get(path)).status_code == 404, path
    assert (await client.get("/openapi.json")).status_code == 200
    for path in ("/", "/publish?stream=cam-a", "/watch?stream=cam-a"):
        page = await client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), path
        remote = re.findall(r"""(?:https?:|wss?:)?//(?!127\.0\.0\.1[:/]|localhost[:/])[A-Za-z0-9.-]+\.[A-Za-z]""",
                            page.text)
        assert remote == [], (path, remote)
        assert "cdn" not in page.text.lower(), path
