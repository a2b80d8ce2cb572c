"""Pieces of the HTTP API that need no server: readiness rule, token check, error messages, env override."""

from __future__ import annotations

import httpx
import pytest
from sightline.run_cli import apply_environment
from sightline.stream.config import RunConfig
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.service import deps
from sightline.stream.service.app import create_app, validation_message
from sightline.stream.service.status import readiness

from tests.support.models import tiny_classifier

MODEL = {"arch": "resnet18"}


@pytest.mark.parametrize(("states", "share", "ready"), [
    ((), 0.5, True),
    (("live", "failed"), 0.5, True),  # exactly the share: still ready
    (("live", "failed", "reconnecting"), 0.5, False),
    (("connecting", "connecting"), 0.0, True),  # starting up is not down
    (("live", "failed", "ended", "stopped", "ended"), 0.5, True),  # finished streams count neither way
    (("ended", "failed"), 0.5, False),
    (("failed",), 1.0, True),
])
def test_readiness_counts_down_streams_among_running_ones(states: tuple[str, ...], share: float,
                                                         ready: bool) -> None:
    assert readiness(states, MODEL, share).ready is ready


def test_not_ready_while_closing() -> None:
    r = readiness(["live"], MODEL, 0.5, closing=True)
    assert not r.ready and r.reason == "shutting down"


async def test_readyz_answers_from_the_states_its_dependency_reads(tmp_path) -> None:
    """The endpoint, not only the rule: a real app whose stream-states dependency is overridden."""
    config = RunConfig(output_dir=tmp_path, media_root=tmp_path, server={"ready_max_down_share": 0.5})
    app = create_app(Pipeline(tiny_classifier(), config), config, None)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        app.dependency_overrides[deps.stream_states] = lambda: ["live", "reconnecting", "failed", "ended"]
        down = await client.get("/readyz")
        app.dependency_overrides[deps.stream_states] = lambda: ["live", "live", "reconnecting", "stopped"]
        up = await client.get("/readyz")
        app.dependency_overrides[deps.model_info] = lambda: {"arch": "swapped"}
        swapped = await client.get("/readyz")
    assert down.status_code == 503 and down.json()["streams_running"] == 3 and down.json()["streams_down"] == 2
    assert up.status_code == 200 and up.json()["down_share"] == round(1 / 3, 4)
    assert swapped.json()["model"] == {"arch": "swapped"}


def test_validation_message_uses_the_config_style() -> None:
    errors = [{"loc": ("body", "reconnect", "max_s"), "msg": "Input should be greater than 0", "type": "x"},
              {"loc": ("body",), "msg": "Value error, mode 'fast' needs a file", "type": "value_error"}]
    assert validation_message(errors) == "reconnect.max_s: Input should be greater than 0\nmode 'fast' needs a file"


def test_sightline_token_environment_overrides_the_config() -> None:
    config = RunConfig(server={"token": "from-file"})
    assert apply_environment(config, {"SIGHTLINE_TOKEN": "from-env"}).server.token == "from-env"
    assert apply_environment(config, {"SIGHTLINE_TOKEN": "  "}).server.token == "from-file"
    assert apply_environment(config, {}).server.token == "from-file"
    assert apply_environment(RunConfig(), {}).server.token is None
