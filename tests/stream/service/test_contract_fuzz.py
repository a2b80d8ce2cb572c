"""Issue #23 item 16: Schemathesis against the live app keeps the OpenAPI document true.

The schema is loaded from the running ASGI app (``/openapi.json``), and every operation gets generated requests,
schema-valid (positive) and, where the schema constrains something, schema-invalid (negative), with the bearer
token. Checks: no server error, status codes the document lists, bodies matching the schema of their code.
Bounded and reproducible: a fixed number of examples per operation, ``derandomize=True``, no example database.

Excluded, and reached instead by test_contract_table.py: ``GET /api/streams/{name}/mjpeg`` (an endless
multipart stream), ``POST /api/streams/{name}/webrtc`` and ``POST /api/streams/{name}/watch`` (they need a real
SDP offer; a generated one is only ever refused, and a usable one would start ICE towards its candidates).

No request leaves loopback: the stream cap is full (``server.max_streams`` 1 with one stream), and a stream URL
with a scheme (a camera, a server) is refused before the registry sees it, whatever the cap.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance
from sightline import synthetic_media as media
from sightline.model.classifier import Classifier
from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.errors import TooManyStreamsError
from sightline.stream.events.hub import EventHub
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.service.app import create_app

from tests.support.models import tiny_bundle

pytestmark = pytest.mark.timeout(240)

TOKEN = "contract-fuzz-token"
EXCLUDED = {("GET", "/api/streams/{name}/mjpeg"), ("POST", "/api/streams/{name}/webrtc"),
            ("POST", "/api/streams/{name}/watch")}
EXAMPLES = {GenerationMode.POSITIVE: 40, GenerationMode.NEGATIVE: 20}  # per operation
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("fuzz")
    models = tmp / "models"
    models.mkdir()
    bundle = tiny_bundle(4, seed=0)
    bundle.save(models / "a.pt")
    media.make_test_clip(tmp / "clip.mp4", frames=30, fps=10, size=(96, 72))
    config = RunConfig.model_validate({
        "output_dir": tmp / "out", "media_root": tmp, "log_predictions": False,
        "model": {"source": str(models / "a.pt"), "swap_dir": str(models), "device": "cpu"},
        # schemathesis' client sends Host: testserver
        "server": {"token": TOKEN, "max_streams": 1, "allowed_hosts": ["testserver"]},
        "events": {"enabled": True, "max_rules": 2, "preroll_s": 0, "postroll_s": 0},
        "streams": [{"name": "cam-under-test", "url": str(tmp / "clip.mp4"), "loop": True}]})
    metrics = Metrics()
    events = EventHub.build(config, metrics)
    pipeline = Pipeline(Classifier(bundle, device="cpu"), config, metrics, extra_sinks=events.sinks_for)
    pipeline.events = events
    add_stream = pipeline.add_stream

    def local_only(stream: StreamConfig, check: bool = True) -> Any:
        if "://" in stream.url:
            raise TooManyStreamsError("refused by the test: only files reach the registry here")
        return add_stream(stream, check)

    pipeline.add_stream = local_only  # type: ignore[method-assign]
    pipeline.start()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(tmp / "empty-torch-home"))  # 'imagenet' is refused (422), never loaded
        try:
            yield create_app(pipeline, config, metrics)
        finally:
            pipeline.shutdown()


def test_the_live_app_keeps_its_openapi_contract(app: Any) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    ran = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in EXCLUDED:
            continue
        for mode, examples in EXAMPLES.items():

            @given(case=operation.as_strategy(mode))
            @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def run(case: Any) -> None:
                case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS)

            try:
                run()
                ran += 1
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, operation.label  # nothing to negate: no parameter, no body
            except BaseException as exc:  # noqa: BLE001 -- schemathesis' failure groups; every operation is reported
                failures.append(f"{mode.value} {operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
    assert ran >= 22 + 4  # every operation but the excluded positively, those with inputs negatively too


def test_the_excluded_operations_exist(app: Any) -> None:
    """An exclusion of an operation that is gone (renamed) would silently shrink the run."""
    paths = app.openapi()["paths"]
    for method, path in EXCLUDED:
        assert method.lower() in paths[path]
