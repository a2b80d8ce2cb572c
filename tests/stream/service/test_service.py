"""The service over a real socket: uvicorn on loopback, a real Prometheus scraping it, headless
Chromium showing the page, and MJPEG previews parsed and decoded frame by frame."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import pytest_asyncio
import yaml
from sightline import synthetic_media as media
from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.service.app import create_app
from sightline.stream.service.server import HttpServer

from tests.support import browsers
from tests.support.models import tiny_classifier
from tests.support.processes import stop_process

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(90)]

TOKEN = "service-token-5678"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STREAMS = ("cam-a", "cam-b")
DASHBOARD = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "dashboards" / "sightline.json"
RECORDING = DASHBOARD.parents[2] / "prometheus" / "recording.yml"  # the series the dashboard reads besides /metrics
PROMETHEUS = shutil.which("prometheus")
CHROMIUM = browsers.chromium()
CHROMEDRIVER = browsers.chromedriver()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2, explain=None):
    """Poll a blocking predicate until it returns something truthy (returned)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}"
                                 + (f": {explain()}" if explain else ""))
        time.sleep(interval)


@dataclass
class Service:
    url: str
    pipeline: Pipeline
    server: HttpServer
    media_root: Path


@pytest.fixture(scope="module")
def media_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media")
    media.make_test_clip(root / "clip.mp4", frames=40, fps=10, size=(160, 120))
    return root


@pytest.fixture(scope="module")
def pipeline(media_root: Path) -> Iterator[Pipeline]:
    clip = str(media_root / "clip.mp4")
    config = RunConfig(output_dir=media_root.parent / "out", media_root=media_root,
                       server={"token": TOKEN, "port": 0, "mjpeg_fps": 5},
                       streams=[StreamConfig(name=name, url=clip, loop=True) for name in STREAMS])
    pipe = Pipeline(tiny_classifier(), config, Metrics())
    pipe.start()
    yield pipe
    pipe.shutdown()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def service(pipeline: Pipeline, media_root: Path) -> AsyncIterator[Service]:
    server = HttpServer("127.0.0.1", 0)
    await server.start(create_app(pipeline, pipeline.config, pipeline.metrics))
    try:
        yield Service(server.url, pipeline, server, media_root)
    finally:
        await server.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def client(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as c:
        yield c


async def wait_classified(client: httpx.AsyncClient, names: tuple[str, ...] = STREAMS, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        streams = {s["name"]: s for s in (await client.get("/api/streams")).json()["streams"]}
        if all(streams.get(n, {}).get("frames_inferred", 0) > 0 for n in names):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"streams {names} not classified within {timeout}s: {streams}")
        await asyncio.sleep(0.1)


async def test_health_endpoints_answer_over_the_socket(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).status_code == 200
    r = await client.get("/readyz")
    assert r.status_code == 200 and r.json()["ready"] is True


async def test_add_and_remove_over_the_socket(client: httpx.AsyncClient, service: Service) -> None:
    body = {"name": "cam-c", "url": str(service.media_root / "clip.mp4"), "loop": True}
    assert (await client.post("/api/streams", json=body)).status_code == 401
    r = await client.post("/api/streams", json=body, headers=AUTH)
    assert r.status_code == 201
    await wait_classified(client, ("cam-c",))
    assert (await client.delete("/api/streams/cam-c", headers=AUTH)).status_code == 200
    assert (await client.get("/api/streams/cam-c")).status_code == 404


# -- MJPEG ------------------------------------------------------------------------------------------


class MultipartReader:
    """Splits a multipart/x-mixed-replace body into parts using each part's Content-Length."""

    def __init__(self, boundary: str) -> None:
        self.delimiter = b"--" + boundary.encode()
        self.buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        self.buffer += chunk
        parts = []
        while True:
            start = self.buffer.find(self.delimiter)
            head_end = self.buffer.find(b"\r\n\r\n", start)
            if start < 0 or head_end < 0:
                return parts
            headers = dict(line.split(": ", 1) for line in
                           self.buffer[start + len(self.delimiter):head_end].decode().strip().split("\r\n"))
            assert headers["Content-Type"] == "image/jpeg"
            length = int(headers["Content-Length"])
            body_start = head_end + 4
            if len(self.buffer) < body_start + length:
                return parts
            parts.append(self.buffer[body_start:body_start + length])
            self.buffer = self.buffer[body_start + length:]


def decode_jpeg(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a decodable JPEG"
    return image


async def test_mjpeg_yields_decodable_frames_at_the_configured_rate(client: httpx.AsyncClient) -> None:
    await wait_classified(client)
    frames: list[np.ndarray] = []
    arrived: list[float] = []
    async with client.stream("GET", "/api/streams/cam-a/mjpeg") as r:
        assert r.status_code == 200
        content_type = r.headers["content-type"]
        assert content_type.startswith("multipart/x-mixed-replace")
        reader = MultipartReader(content_type.split("boundary=")[1])
        async for chunk in r.aiter_bytes():
            for part in reader.feed(chunk):
                frames.append(decode_jpeg(part))
                arrived.append(time.monotonic())
            if len(frames) >= 4:
                break
    assert all(f.ndim == 3 and f.shape[2] == 3 for f in frames)
    assert not np.array_equal(frames[0], frames[-1])  # live: the picture moves
    # mjpeg_fps=5: at least ~0.2 s between parts (a lower bound, so a slow machine cannot fail it)
    assert arrived[-1] - arrived[0] >= 3 * 0.2 * 0.9


async def test_mjpeg_ends_when_its_stream_is_removed(client: httpx.AsyncClient, service: Service) -> None:
    body = {"name": "cam-d", "url": str(service.media_root / "clip.mp4"), "loop": True}
    assert (await client.post("/api/streams", json=body, headers=AUTH)).status_code == 201
    await wait_classified(client, ("cam-d",))

    async def watch_until_the_body_ends() -> int:
        parts = 0
        async with client.stream("GET", "/api/streams/cam-d/mjpeg") as r:
            reader = MultipartReader("frame")
            async for chunk in r.aiter_bytes():
                parts += len(reader.feed(chunk))
                if parts == 1:
                    async with httpx.AsyncClient(base_url=service.url) as other:
                        assert (await other.delete("/api/streams/cam-d", headers=AUTH)).status_code == 200
        return parts

    # the server must end the body by itself once the stream is gone
    assert await asyncio.wait_for(watch_until_the_body_ends(), 15) >= 1


async def test_a_closed_preview_frees_its_slot(client: httpx.AsyncClient, service: Service) -> None:
    await wait_classified(client)
    state = service.server.app.state  # type: ignore[union-attr]
    async with client.stream("GET", "/api/streams/cam-b/mjpeg") as r:
        async for _ in r.aiter_bytes():
            break
        assert state.preview_slots.in_use == 1
    deadline = time.monotonic() + 5
    while state.preview_slots.in_use and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert state.preview_slots.in_use == 0


# -- Prometheus -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus(service: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if PROMETHEUS is None:
        pytest.skip("the prometheus binary is not installed (Debian package 'prometheus')")
    work = tmp_path_factory.mktemp("prometheus")
    target = service.url.removeprefix("http://")
    rules = yaml.safe_load(RECORDING.read_text())
    for group in rules["groups"]:
        group.pop("interval", None)  # every rule at this test's 1 s pace (the per-stream group's 1 min outlasts waits)
    (work / "recording.yml").write_text(yaml.safe_dump(rules))
    (work / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - recording.yml\n"
        "scrape_configs:\n  - job_name: sightline\n    scrape_interval: 1s\n    scrape_timeout: 1s\n"
        f"    static_configs:\n      - targets: ['{target}']\n")
    port = free_port()
    log = (work / "prometheus.log").open("w")
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={work / 'prometheus.yml'}",
                             f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"prometheus exited: {(work / 'prometheus.log').read_text()[-2000:]}")
        try:
            return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, 30, "prometheus to start")
        yield url
    finally:
        stop_process(proc)
        log.close()


def query(prometheus: str, expr: str) -> list[dict]:
    r = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=5)
    body = r.json()
    assert body["status"] == "success", f"{expr}: {body}"
    return body["data"]["result"]


def scrape_health(prometheus: str) -> list[dict]:
    targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
    return [{k: t.get(k) for k in ("health", "lastError", "lastScrapeDuration")} for t in targets]


def by_stream(result: list[dict]) -> dict[str, float]:
    return {s["metric"].get("stream", ""): float(s["value"][1]) for s in result}


async def test_prometheus_computes_per_stream_fps_and_p99(prometheus: str) -> None:
    fps_expr = "sum by (stream) (rate(sightline_frames_inferred_total[15s]))"
    p99_expr = ("histogram_quantile(0.99, sum by (le, stream) "
                "(rate(sightline_end_to_end_latency_seconds_bucket[15s])))")

    def fps_for_every_stream() -> dict[str, float] | None:
        rates = by_stream(query(prometheus, fps_expr))
        return rates if all(rates.get(n, 0) > 0 for n in STREAMS) else None

    rates = await asyncio.to_thread(wait_until, fps_for_every_stream, 40, "a positive rate for every stream", 0.5,
                                    lambda: scrape_health(prometheus))
    assert all(0 < rates[n] < 100 for n in STREAMS)  # a 10 fps clip, paced in real time
    p99 = by_stream(await asyncio.to_thread(query, prometheus, p99_expr))
    assert set(STREAMS) <= set(p99)
    assert all(math.isfinite(p99[n]) and p99[n] > 0 for n in STREAMS), p99


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard, with Grafana's variables filled in as Grafana would."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            exprs.append(target["expr"])
    out = []
    for e in exprs:
        e = e.replace("$__rate_interval", "15s")
        for var in ("stream", "node", "worker"):  # "All" selected (one process: no node/worker labels, ".*" matches)
            e = e.replace("${" + var + ":regex}", ".*").replace(f"${var}", ".*")
        out.append(e)
    return out


async def test_every_dashboard_query_runs_on_real_prometheus(prometheus: str) -> None:
    def has_data() -> bool:
        return bool(query(prometheus, "sum by (stream) (rate(sightline_frames_inferred_total[15s])) > 0"))

    await asyncio.to_thread(wait_until, has_data, 40, "scraped data", 0.5, lambda: scrape_health(prometheus))

    # sink errors, GPU memory, publishing and encoding, cluster workers, events and alerts have no series
    # here (no failing sink, no CUDA, no viewer or publish target, no Ray, no event rule, no alert rules);
    # every other query has data, the recorded series (deploy/prometheus/recording.yml) included
    allowed_empty = ("sightline_sink_errors_total", "sightline_gpu_memory_bytes",
                     "sightline_publish_", "sightline_annotated_",  # nobody watches or publishes here
                     "sightline_worker_",  # a Ray worker's own gauges (sightline run --ray)
                     "sightline_events_total", "sightline_event_output_", "ALERTS")  # no rules, outputs, alerts

    def only_allowed_empty() -> bool:  # polled (in a thread): one slow scrape on a busy machine marks series stale
        empty = [expr for expr in dashboard_queries() if not query(prometheus, expr)]
        return all(any(word in e for word in allowed_empty) for e in empty)

    await asyncio.to_thread(wait_until, only_allowed_empty, 20, "every dashboard query to return data", 1.0,
                            lambda: ([e for e in dashboard_queries() if not query(prometheus, e)],
                                     scrape_health(prometheus)))


# -- Chromium ---------------------------------------------------------------------------------------


class WebDriver(browsers.WebDriver):
    def __init__(self, url: str, profile: Path) -> None:
        super().__init__(url, profile, ("--window-size=1024,768",))


@pytest_asyncio.fixture(loop_scope="module")
async def browser(tmp_path: Path) -> AsyncIterator[WebDriver]:
    """Blocking WebDriver calls run in threads: the page's requests are served by this same event loop."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("chromium and chromium-driver (Debian packages) are not installed")
    driver, url = await asyncio.to_thread(browsers.start_chromedriver)
    web = None
    try:
        web = await asyncio.to_thread(WebDriver, url, tmp_path / "profile")
        yield web
    finally:
        try:
            if web is not None:
                await asyncio.to_thread(web.close)
        finally:  # the driver (and its browser) go away even when closing the session failed
            await asyncio.to_thread(stop_process, driver)


CARDS = """return [...document.querySelectorAll('#streams .stream')].map(li => ({
  name: li.dataset.name, state: li.querySelector('.state').textContent,
  label: li.querySelector('.label').textContent, figures: li.querySelector('.figures').textContent,
  topk: li.querySelectorAll('.topk li').length, height: li.querySelector('img').naturalHeight,
  width: li.querySelector('img').naturalWidth}));"""


async def test_chromium_shows_each_stream_with_its_preview_and_top_k(service: Service, client: httpx.AsyncClient,
                                                             browser: WebDriver) -> None:
    await wait_classified(client)
    await asyncio.to_thread(browser.open, service.url + "/")

    def previews_decoded() -> list[dict] | None:
        cards = browser.run(CARDS)
        assert isinstance(cards, list)
        shown = sorted(c["name"] for c in cards)
        return cards if shown == sorted(STREAMS) and all(c["width"] > 0 for c in cards) else None

    cards = await asyncio.to_thread(wait_until, previews_decoded, 30, "the page to show both previews")
    for card in cards:
        assert card["state"] == "live"
        assert card["height"] == 360  # previews share one size whatever the stream's
        assert card["topk"] == 4  # the top-k of the pictured frame (k=5, 4 classes)
        assert card["label"].startswith("class_")
        assert "fps" in card["figures"]

    # a camera with two inputs: the card says each input's state, and the error of each one down
    body = {"name": "cam-two", "reconnect": {"initial_s": 0.1, "max_s": 0.2},
            "inputs": [{"name": "main", "url": "rtsp://127.0.0.1:9/main", "roles": ["record", "view"]},
                       {"name": "sub", "url": "rtsp://127.0.0.1:9/sub", "roles": ["classify"]}]}
    assert (await client.post("/api/streams", json=body, headers=AUTH)).status_code == 201
    try:
        inputs = """return [...document.querySelectorAll('#streams .stream')]
          .filter(li => li.dataset.name === 'cam-two')
          .map(li => [li.querySelector('.inputs').textContent, li.querySelector('.error').textContent]);"""

        def both_shown() -> list | None:
            found = browser.run(inputs)
            return found if found and "main (record+view) reconnecting" in found[0][0] and "main: " in found[0][1] \
                else None

        (text, errors), = await asyncio.to_thread(wait_until, both_shown, 30, "the card to show both inputs")
        assert text.startswith("inputs: sub (classify) ") and "sub: " in errors
    finally:
        assert (await client.delete("/api/streams/cam-two", headers=AUTH)).status_code == 200
