"""Pieces of the HTTP API that need no server: readiness rule, token check, error messages, env override."""

from __future__ import annotations

import pytest
from sightline.stream.api import bearer_token_matches, readiness, validation_message
from sightline.stream.config import RunConfig
from sightline.stream.run_cli import apply_environment


class FakeClassifier:
    def describe(self) -> dict[str, object]:
        return {"arch": "resnet18"}


class FakePipeline:
    """Just what readiness() reads: statuses and the classifier."""

    classifier = FakeClassifier()

    def __init__(self, *states: str) -> None:
        self.states = states

    def statuses(self) -> list[dict[str, object]]:
        return [{"state": s} for s in self.states]


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
    assert readiness(FakePipeline(*states), share).ready is ready  # type: ignore[arg-type]


def test_not_ready_while_closing() -> None:
    r = readiness(FakePipeline("live"), 0.5, closing=True)  # type: ignore[arg-type]
    assert not r.ready and r.reason == "shutting down"


@pytest.mark.parametrize(("header", "ok"), [
    ("Bearer s3cret", True), ("bearer s3cret", True), ("Bearer  s3cret ", True), ("Bearer s3cre", False),
    ("Bearer s3cretX", False), ("Basic s3cret", False), ("s3cret", False), (None, False), ("", False),
    ("Bearer sécret", False),
])
def test_bearer_token_matching(header: str | None, ok: bool) -> None:
    assert bearer_token_matches(header, "s3cret") is ok


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
