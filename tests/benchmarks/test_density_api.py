"""Many cameras, the API's side: 200 configured file streams start, and GET /api/streams and /metrics answer,
over a real socket on 127.0.0.1, within 3x the issue's targets (30 s, 100 ms and 300 ms p99). Generous on
purpose: the real figures, on a named CPU, are in benchmarks/results/density-api-cpu.md
(``python benchmarks/density_api.py``); this catches a regression by an order of magnitude, not a few ms."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.scripts import benchmark_script

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def density():
    with benchmark_script("density_api") as module:
        yield module


def test_two_hundred_streams_start_and_the_api_answers_in_time(density, tmp_path: Path) -> None:
    figures = asyncio.run(density.measure(tmp_path, streams=200, requests=40, settle_s=1.0, start_timeout_s=90))
    assert figures.start_s < 3 * 30, figures
    assert figures.streams_p99_ms < 3 * 100, figures
    assert figures.metrics_p99_ms < 3 * 300, figures
    assert figures.streams_bytes > 200 * 200  # every stream listed (a name and its figures each)
