"""Issue #23 item 16: the OpenAPI document is honest. A table reaches every documented status code of every
operation at least once, on a real pipeline (looping file, webrtc:// stream, events, model files), and each
answer's body matches the schema documented for its code; the table holds nothing the document does not say.

Where a state is not cheap to make for real, the table says how it gets there: a fake ClusterAdmin (deps.py's
protocol, as ``sightline run --ray`` hands one in); a fake controller behind the cluster's own model control and
viewing (no worker ready, a stream without a worker, a worker that does not answer); ``app.state.closing`` set
(the stop signal); a stream claimed for removal (a DELETE in flight). ServiceGuard's refusals (400, 403, 413)
are made for every operation.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import pytest
import pytest_asyncio
import torch
from sightline import synthetic_media as media
from sightline.model.bundle import PreprocessSpec
from sightline.model.classifier import Classifier
from sightline.stream.cluster.model_control import ClusterModelControl, ClusterModelService
from sightline.stream.cluster.viewing import ClusterViewing
from sightline.stream.config import RunConfig
from sightline.stream.errors import UnknownStreamError
from sightline.stream.events.hub import EventHub
from sightline.stream.metrics import Metrics
from sightline.stream.passwords import hash_password
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.service.app import create_app

from tests.support.models import tiny_bundle
from tests.support.webrtc import loopback_peer, make_offer

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

TOKEN = "contract-token-16"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SCRAPE = {"Authorization": "Bearer contract-metrics-token"}
PASSWORD = "contract-password"
MAX_BODY = 4096


class FakeCluster:
    """Two workers; drain/resume move nothing (the cluster's own tests move streams)."""

    def workers(self) -> list[dict[str, Any]]:
        return [{"id": "w1", "node": "n1", "streams": [], "draining": False}]

    def targets(self) -> list[dict[str, Any]]:
        return [{"targets": ["127.0.0.1:9101"], "labels": {"worker": "w1", "node": "n1"}}]

    def drain(self, worker_id: str) -> list[str]:
        if worker_id != "w1":
            raise LookupError(worker_id)
        return []

    resume = drain


class FakeController:
    """What ``sightline run --ray`` hands the app, minus Ray: no worker is ready; stream 'moving' has no worker,
    stream 'stuck' has one that does not answer. The cluster's own ClusterModelControl and ClusterViewing answer."""

    ray = None

    def __init__(self, spec: Any) -> None:
        self.model_service = ClusterModelService(self, spec)

    def worker_handles(self) -> list[Any]:
        return []

    def get(self, name: str) -> Any:
        if name not in ("moving", "stuck"):
            raise UnknownStreamError(name)
        return SimpleNamespace(placement=SimpleNamespace(state="moving" if name == "moving" else "running",
                                                         stream=name))

    def owner(self, placement: Any) -> Any:
        if placement.stream == "moving":
            return None

        def gone(*args: Any) -> Any:
            raise RuntimeError("the worker died")

        return SimpleNamespace(worker_id="w1", actor=SimpleNamespace(video_status=SimpleNamespace(remote=gone)))


@dataclass
class Service:
    tmp: Path
    pipeline: Pipeline
    apps: dict[str, Any]  # "main", "bare" (no metrics, no events), "cluster", "closing"
    schema: dict[str, Any]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("contract")
    models = tmp / "models"
    models.mkdir()
    a = tiny_bundle(4, seed=0)
    a.save(models / "a.pt")
    tiny_bundle(4, seed=5).save(models / "good.pt")
    broken = tiny_bundle(4, seed=4)
    broken.state_dict["fc.weight"] = torch.full_like(broken.state_dict["fc.weight"], float("nan"))
    broken.save(models / "nan.pt")
    tiny_bundle(4, seed=6, spec=PreprocessSpec(resize=2000, crop=32)).save(models / "huge.pt")
    media.make_test_clip(tmp / "clip.mp4", frames=30, fps=10, size=(96, 72))
    media.make_test_clip(tmp / "short.mp4", frames=3, fps=10, size=(96, 72))
    config = RunConfig.model_validate({
        "output_dir": tmp / "out", "media_root": tmp, "log_predictions": False,
        "model": {"source": str(models / "a.pt"), "swap_dir": str(models), "device": "cpu"},
        "server": {"token": TOKEN, "max_streams": 4, "max_body_bytes": MAX_BODY,
                   "viewer_tokens": ["contract-viewer-token"], "metrics_token": SCRAPE["Authorization"][7:],
                   "users": [{"name": "ann", "password_hash": hash_password(PASSWORD, iterations=1000)}],
                   "login_max_failures": 1},
        "annotated_video": {"max_viewers": 1, "height": 120},
        "events": {"max_rules": 2, "preroll_s": 0, "postroll_s": 1, "rules": [
            {"name": "always", "streams": ["cam"], "labels": ["*"], "min_prob": 0, "min_duration_s": 0}]},
        "storage": {"recordings": {"segment_s": 2}},  # closed segments to download within seconds
        "streams": [{"name": "cam", "url": str(tmp / "clip.mp4"), "loop": True, "record": True},
                    {"name": "pub", "url": "webrtc://pub"}]})
    metrics = Metrics()
    events = EventHub.build(config, metrics)
    pipeline = Pipeline(Classifier(a, device="cpu"), config, metrics, extra_sinks=events.sinks_for)
    pipeline.events = events
    pipeline.start()
    bare = create_app(pipeline, config, None)
    bare.state.events = None
    closing = create_app(pipeline, config, metrics)
    closing.state.closing.set()
    ray = FakeController(pipeline.models.current.spec)
    apps = {"main": create_app(pipeline, config, metrics), "bare": bare, "closing": closing,
            "cluster": create_app(pipeline, config, metrics, cluster=FakeCluster()),
            "ray": create_app(pipeline, config, metrics, model_control=ClusterModelControl(ray),
                              viewing=ClusterViewing(ray))}
    try:
        yield Service(tmp, pipeline, apps, apps["main"].openapi())
    finally:
        pipeline.shutdown()


async def call(app: Any, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"",
               host: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
    """One request straight through the ASGI app; a streaming answer (MJPEG) is cut after its first part. Without
    ``headers``, with the admin token."""
    headers = AUTH if headers is None else headers
    raw = [(b"host", host.encode())] + [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    if body and not any(k == b"content-length" for k, _ in raw):
        raw.append((b"content-length", str(len(body)).encode()))
    path, _, query = path.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
             "headers": raw, "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000)}
    sent = False
    done = asyncio.Event()
    start: dict[str, Any] = {}
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False) or start["status"] == 200 and path.endswith("/mjpeg"):
                done.set()

    task = asyncio.create_task(app(scope, receive, send))
    await asyncio.wait_for(done.wait(), 30)
    if not task.done():
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    headers_out = {k.decode().lower(): v.decode() for k, v in start.get("headers", [])}
    return start["status"], headers_out, b"".join(chunks)


async def wait_for(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)




async def offer(publisher: bool) -> tuple[Any, str]:
    """An aiortc offer (a camera for a publisher, recvonly for a viewer) without ICE candidates: it is answered,
    and never connects, so no packet is sent."""
    from tests.stream.sources.test_webrtc import Camera

    peer = loopback_peer()
    if publisher:
        peer.addTrack(Camera())
    else:
        peer.addTransceiver("video", direction="recvonly")
    await make_offer(peer)
    return peer, "\r\n".join(line for line in peer.localDescription.sdp.split("\r\n") if "candidate" not in line)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def reached(service: Service) -> AsyncIterator[dict[tuple[str, str, str], Any]]:
    """Run the table; (method, path template, status) -> the answer's body, for every row."""
    tmp, pipeline, apps = service.tmp, service.pipeline, service.apps
    main = apps["main"]
    seen: dict[tuple[str, str, str], Any] = {}
    peers: list[Any] = []

    async def row(app: str, method: str, template: str, status: int, path: str | None = None,
                  json_body: Any = None, token: bool = True, **kw: Any) -> bytes:
        headers = {**(AUTH if token else {}), **kw.pop("headers", {})}
        body = b""
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers["content-type"] = "application/json"
        got, _, content = await call(apps[app], method, path or template, headers, body, **kw)
        assert got == status, (method, path or template, status, got, content[:300])
        seen[(method, template, str(status))] = content
        return content

    async def classified() -> bool:
        _, _, body = await call(main, "GET", "/api/streams/cam")
        return json.loads(body)["frames_inferred"] > 0

    await wait_for(classified, "cam classified")
    clip = str(tmp / "clip.mp4")
    s = "/api/streams"
    await row("main", "GET", "/healthz", 200)
    await row("main", "GET", "/readyz", 200)
    await row("closing", "GET", "/readyz", 503)
    await row("main", "GET", "/metrics", 200, token=False, headers=SCRAPE)
    await row("bare", "GET", "/metrics", 404, token=False, headers=SCRAPE)
    await row("main", "GET", s, 200)
    await row("main", "GET", s, 422, f"{s}?limit=0")
    await row("main", "POST", s, 201, json_body={"name": "extra", "url": clip, "loop": True})
    await row("main", "POST", s, 401, json_body={"name": "x", "url": clip}, token=False)
    await row("main", "POST", s, 403, json_body={"name": "x", "url": "/etc/hosts"})
    await row("main", "POST", s, 409, json_body={"name": "cam", "url": clip})
    await row("main", "POST", s, 422, json_body={"name": "x", "url": "ftp://example/x"})
    await row("main", "POST", s, 422, json_body={"name": "x", "url": str(tmp / "missing.mp4")})
    await row("main", "POST", s, 201, json_body={"name": "short", "url": str(tmp / "short.mp4")})
    await row("main", "POST", s, 429, json_body={"name": "x", "url": clip})
    await row("closing", "POST", s, 503, json_body={"name": "x", "url": clip})
    n = f"{s}/{{name}}"
    await row("main", "GET", n, 200, f"{s}/cam")
    await row("main", "GET", n, 404, f"{s}/nope")
    await row("main", "DELETE", n, 200, f"{s}/extra")
    await row("main", "DELETE", n, 401, f"{s}/cam", token=False)
    await row("main", "DELETE", n, 404, f"{s}/nope")
    await row("closing", "DELETE", n, 503, f"{s}/cam")
    await row("main", "GET", f"{n}/snapshot.jpg", 200, f"{s}/cam/snapshot.jpg")
    await row("main", "GET", f"{n}/snapshot.jpg", 404, f"{s}/nope/snapshot.jpg")
    await row("main", "GET", f"{n}/snapshot.jpg", 503, f"{s}/pub/snapshot.jpg")  # no publisher: no frame yet
    await row("main", "GET", f"{n}/mjpeg", 200, f"{s}/cam/mjpeg")
    await row("main", "GET", f"{n}/mjpeg", 404, f"{s}/nope/mjpeg")
    await row("closing", "GET", f"{n}/mjpeg", 503, f"{s}/cam/mjpeg")
    await row("main", "GET", f"{n}/video", 200, f"{s}/cam/video")
    await row("main", "GET", f"{n}/video", 404, f"{s}/nope/video")
    await row("ray", "GET", f"{n}/video", 409, f"{s}/moving/video")
    await row("ray", "GET", f"{n}/video", 503, f"{s}/stuck/video")
    await row("ray", "GET", "/api/model", 503)

    rec = f"{n}/recordings"
    listed: list[dict[str, Any]] = []

    async def a_closed_segment() -> bool:
        _, _, body = await call(main, "GET", f"{s}/cam/recordings")
        listed[:] = json.loads(body)["segments"]
        return any(not x["open"] for x in listed) and listed[-1]["open"]

    await wait_for(a_closed_segment, "a closed recording segment")
    closed = next(x for x in listed if not x["open"])
    await row("main", "GET", rec, 200, f"{s}/cam/recordings")
    await row("main", "GET", rec, 404, f"{s}/nope/recordings")
    await row("main", "GET", rec, 422, f"{s}/cam/recordings?since=yesterday")
    one = f"{rec}/{{file}}"
    await row("main", "GET", one, 200, closed["url"])
    await row("main", "GET", one, 206, closed["url"], headers={"range": "bytes=0-99"})
    await row("main", "GET", one, 404, f"{s}/cam/recordings/cam.20000101T000000Z.mp4")
    await row("main", "GET", one, 422, f"{s}/cam/recordings/passwd")

    async def open_one_refused() -> bool:  # the open segment may close just as it is asked for: ask again
        await a_closed_segment()
        got, _, content = await call(main, "GET", listed[-1]["url"])
        if got == 503:
            seen[("GET", one, "503")] = content
        return got == 503

    await wait_for(open_one_refused, "the open segment refused")

    publisher, sdp = await offer(publisher=True)
    peers.append(publisher)
    webrtc = {"sdp": sdp, "type": "offer"}
    await row("main", "POST", f"{n}/webrtc", 200, f"{s}/pub/webrtc", json_body=webrtc)
    await row("main", "POST", f"{n}/webrtc", 401, f"{s}/pub/webrtc", json_body=webrtc, token=False)
    await row("main", "POST", f"{n}/webrtc", 404, f"{s}/nope/webrtc", json_body=webrtc)
    await row("main", "POST", f"{n}/webrtc", 409, f"{s}/cam/webrtc", json_body=webrtc)
    await row("main", "POST", f"{n}/webrtc", 422, f"{s}/pub/webrtc", json_body={"sdp": "", "type": "offer"})
    await row("closing", "POST", f"{n}/webrtc", 503, f"{s}/pub/webrtc", json_body=webrtc)

    viewer, sdp = await offer(publisher=False)
    second, sdp2 = await offer(publisher=False)
    peers += [viewer, second]
    await row("main", "POST", f"{n}/watch", 200, f"{s}/cam/watch", json_body={"sdp": sdp, "type": "offer"})
    await row("main", "POST", f"{n}/watch", 429, f"{s}/cam/watch", json_body={"sdp": sdp2, "type": "offer"})
    await row("main", "POST", f"{n}/watch", 401, f"{s}/cam/watch", json_body={"sdp": sdp2, "type": "offer"},
              token=False)
    await row("main", "POST", f"{n}/watch", 404, f"{s}/nope/watch", json_body={"sdp": sdp2, "type": "offer"})
    await row("main", "POST", f"{n}/watch", 422, f"{s}/short/watch", json_body={"sdp": "x", "type": "answer"})
    await row("closing", "POST", f"{n}/watch", 503, f"{s}/cam/watch", json_body={"sdp": sdp2, "type": "offer"})

    async def short_ended() -> bool:  # its file is over and its annotated video closed; GET still lists it
        _, _, body = await call(main, "GET", f"{s}/short")
        return json.loads(body)["state"] == "ended" and pipeline.video_out.get("short") is None

    await wait_for(short_ended, "the short clip's end")
    # registered, its video over: 409, not 404 (before: "no stream named 'short'" for a stream GET lists)
    await row("main", "POST", f"{n}/watch", 409, f"{s}/short/watch", json_body={"sdp": sdp2, "type": "offer"})

    runtime = pipeline.registry.claim("short")  # a DELETE in flight
    try:
        await row("main", "DELETE", n, 409, f"{s}/short")
    finally:
        await asyncio.to_thread(pipeline.runner.stop_stream, runtime, 10.0)
        pipeline.registry.forget(runtime)

    m = "/api/model"
    models = tmp / "models"
    await row("main", "GET", m, 200)
    await row("main", "PUT", m, 401, json_body={"source": str(models / "good.pt")}, token=False)
    await row("main", "PUT", m, 403, json_body={"source": "/etc/passwd"})
    await row("main", "PUT", m, 409, json_body={"source": str(models / "huge.pt")})
    await row("main", "PUT", m, 422, json_body={"source": str(models / "missing.pt")})
    await row("main", "PUT", m, 500, json_body={"source": str(models / "nan.pt")})
    await row("closing", "PUT", m, 503, json_body={"source": str(models / "good.pt")})
    await row("main", "PUT", m, 200, json_body={"source": str(models / "good.pt")})

    r = "/api/events/rules"
    rule = {"name": "second", "labels": ["*"], "min_prob": 0.99}
    await row("main", "GET", r, 200)
    await row("bare", "GET", r, 404)
    await row("main", "POST", r, 201, json_body=rule)
    await row("main", "POST", r, 401, json_body=rule, token=False)
    await row("bare", "POST", r, 404, json_body=rule)
    await row("main", "POST", r, 409, json_body=rule)
    await row("main", "POST", r, 422, json_body={"name": "third", "labels": ["no_such_class"]})
    await row("main", "POST", r, 429, json_body={"name": "third", "labels": ["*"]})
    await row("closing", "POST", r, 503, json_body={"name": "third", "labels": ["*"]})
    await row("main", "DELETE", f"{r}/{{name}}", 200, f"{r}/second")
    await row("main", "DELETE", f"{r}/{{name}}", 401, f"{r}/second", token=False)
    await row("main", "DELETE", f"{r}/{{name}}", 404, f"{r}/second")
    await row("closing", "DELETE", f"{r}/{{name}}", 503, f"{r}/always")

    e = "/api/events"
    hub = pipeline.events

    async def an_event() -> bool:
        _, _, body = await call(main, "GET", e)
        return bool(json.loads(body)["events"])

    await wait_for(an_event, "an event of the rule 'always'")
    _, _, body = await call(main, "GET", e)
    event_id = json.loads(body)["events"][0]["id"]
    await row("main", "GET", e, 200)
    await row("bare", "GET", e, 404)
    await row("main", "GET", e, 422, f"{e}?until=not-a-time")
    await row("main", "GET", e, 422, f"{e}?limit=0")
    ev = f"{e}/{{event_id}}"
    await row("main", "GET", ev, 200, f"{e}/{event_id}")
    await row("main", "GET", ev, 404, f"{e}/nope")
    await row("main", "GET", f"{ev}/snapshot.jpg", 404, f"{e}/nope/snapshot.jpg")
    await wait_for(lambda: asyncio.sleep(0, hub.snapshot_path(event_id).is_file()), "the event's snapshot")
    await row("main", "GET", f"{ev}/snapshot.jpg", 200, f"{e}/{event_id}/snapshot.jpg")
    await row("main", "GET", f"{ev}/clip.mp4", 404, f"{e}/nope/clip.mp4")
    await wait_for(lambda: asyncio.sleep(0, hub.clip_path(event_id).is_file()), "the event's clip file")
    await row("main", "GET", f"{ev}/clip.mp4", 503, f"{e}/{event_id}/clip.mp4")  # the event is still going on
    await row("main", "DELETE", f"{r}/{{name}}", 200, f"{r}/always")  # its events end now; clips after post-roll
    await wait_for(lambda: asyncio.sleep(0, not hub.clip_writing(event_id)), "the clip's post-roll")
    await row("main", "GET", f"{ev}/clip.mp4", 200, f"{e}/{event_id}/clip.mp4")

    await row("cluster", "GET", "/api/workers", 200)
    await row("main", "GET", "/api/workers", 404)
    await row("main", "GET", "/api/cluster/targets", 200, token=False, headers=SCRAPE)
    for action in ("drain", "resume"):
        w = f"/api/workers/{{worker_id}}/{action}"
        await row("cluster", "POST", w, 200, f"/api/workers/w1/{action}")
        await row("cluster", "POST", w, 401, f"/api/workers/w1/{action}", token=False)
        await row("cluster", "POST", w, 404, f"/api/workers/w9/{action}")
        await row("main", "POST", w, 404, f"/api/workers/w1/{action}")
        await row("closing", "POST", w, 503, f"/api/workers/w1/{action}")

    # Who may (auth.py): a login and its session; every operation that needs a credential is 401 without one; once
    # an address has failed login_max_failures times, a login or a Basic try from it is 429
    login = {"name": "ann", "password": PASSWORD}
    await row("main", "POST", "/login", 200, json_body=login, token=False)
    await row("main", "GET", "/api/session", 200, token=False)
    await row("main", "POST", "/logout", 204, token=False)
    await row("main", "POST", "/login", 422, json_body={"name": "ann"}, token=False)
    await row("main", "POST", "/login", 401, json_body={**login, "password": "wrong"}, token=False)
    await row("main", "POST", "/login", 429, json_body=login, token=False)
    wrong_basic = {"Authorization": "Basic " + base64.b64encode(b"ann:wrong").decode()}
    for template, operations in service.schema["paths"].items():
        path = template.replace("{name}", "cam").replace("{event_id}", event_id).replace("{worker_id}", "w1")
        for method, operation in operations.items():
            if "security" in operation:
                await row("main", method.upper(), template, 401, path, token=False)
            if "429" in operation["responses"] and {"basic": []} in operation.get("security", ()):
                await row("main", method.upper(), template, 429, path, token=False, headers=wrong_basic)

    # ServiceGuard, for every operation: a foreign Host, a malformed Content-Length, a body over the cap
    for template, operations in service.schema["paths"].items():
        path = template.replace("{name}", "cam").replace("{event_id}", event_id).replace("{worker_id}", "w1") \
            .replace("{file}", closed["file"])
        for method in operations:
            method = method.upper()
            await row("main", method, template, 403, path, host="rebind.example")
            await row("main", method, template, 400, path, headers={"content-length": "12x"})
            await row("main", method, template, 413, path, headers={"content-length": str(MAX_BODY + 1)})
    try:
        yield seen
    finally:
        for peer in peers:
            await peer.close()
        if main.state.viewing._hub is not None:
            await main.state.viewing.hub.close()


def documented(schema: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(method.upper(), path, code) for path, operations in schema["paths"].items()
            for method, operation in operations.items() for code in operation["responses"]}


async def test_every_documented_status_code_is_reached(service: Service, reached: dict) -> None:
    assert documented(service.schema) - set(reached) == set(), "documented, never reached"


async def test_the_table_reaches_nothing_undocumented(service: Service, reached: dict) -> None:
    assert set(reached) - documented(service.schema) == set(), "reached, not documented"


async def test_every_json_answer_matches_its_documented_schema(service: Service, reached: dict) -> None:
    schema = service.schema
    for (method, path, code), body in reached.items():
        content = schema["paths"][path][method.lower()]["responses"][code].get("content", {})
        if "application/json" not in content:
            continue
        declared = content["application/json"].get("schema", {})
        jsonschema.validate(json.loads(body), {**declared, "components": schema["components"]},
                            cls=jsonschema.Draft202012Validator)


async def test_no_default_responses_and_one_error_body(service: Service) -> None:
    schema = service.schema
    components = schema["components"]["schemas"]
    assert "HTTPValidationError" not in components  # FastAPI's list-shaped detail: never sent here
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert "default" not in operation["responses"], (method, path)
            for code, response in operation["responses"].items():
                if int(code) >= 400 and (method, path, code) != ("get", "/readyz", "503"):
                    assert response["content"] == {"application/json": {"schema": {
                        "$ref": "#/components/schemas/ErrorBody"}}}, (method, path, code)


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("OPTIONS", "/api/streams", "GET, POST"),
    ("PATCH", "/api/streams/cam", "DELETE, GET"),
    ("OPTIONS", "/api/events/rules", "GET, POST"),
    ("PUT", "/api/streams/cam/watch", "POST"),
])
async def test_an_unserved_method_is_405_with_every_method_of_the_path(service: Service, method: str, path: str,
                                                                       allow: str) -> None:
    """Starlette's 405 named the methods of the first route matching the path only (OPTIONS /api/streams: no POST)."""
    status, headers, body = await call(service.apps["main"], method, path, AUTH)
    assert status == 405 and headers["allow"] == allow
    assert "detail" in json.loads(body)


async def test_rule_constraints_are_in_the_schema(service: Service) -> None:
    """A rule's labels and streams were checked by a validator the schema did not show: `labels: [""]` was
    schema-valid and refused."""
    rule = service.schema["components"]["schemas"]["EventRule"]["properties"]
    label = rule["labels"]["items"]
    assert label["minLength"] == 1 and label["maxLength"] == 200 and "pattern" in label
    assert rule["streams"]["items"]["pattern"].startswith("^(\\*|")
    status, _, body = await call(service.apps["main"], "POST", "/api/events/rules",
                                 {**AUTH, "content-type": "application/json"},
                                 json.dumps({"name": "empty", "labels": [""]}).encode())
    assert status == 422 and "labels[0]" in json.loads(body)["detail"]
