"""Strict mode for CI: a skipped test is a failure unless it is marked ``gpu`` (needs CUDA) or ``cpu_only``
(checks behaviour without CUDA, so it skips where CUDA is present).

The suite's real-component tests (RTSP server, Prometheus, Chromium, WebRTC, ffmpeg) skip politely on a
developer machine that lacks a Debian package; on CI such a skip would turn "green" into "not tested".
``SIGHTLINE_STRICT=1`` (set by ``.ci/run``; ``CI=true`` does the same) makes every other skip, including a
whole module skipped at collection, fail with its reason.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

ALLOWED_MARKERS = ("gpu", "cpu_only")


def strict_mode() -> bool:
    return os.environ.get("SIGHTLINE_STRICT", "") == "1" or os.environ.get("CI", "").lower() == "true"


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def failure_text(what: str, reason: str) -> str:
    return (f"{what} was skipped ({reason}) outside the {' / '.join(ALLOWED_MARKERS)} markers: strict mode "
            f"(SIGHTLINE_STRICT=1 or CI=true) treats that as a failure; install what it needs (see .ci/run)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cpu_only: checks behaviour without CUDA (skipped where CUDA is available)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Generator[None, None, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not (report.skipped and strict_mode()) or hasattr(report, "wasxfail"):
        return
    if any(item.get_closest_marker(name) for name in ALLOWED_MARKERS):
        return
    report.outcome = "failed"
    report.longrepr = failure_text(item.nodeid, skip_reason(report))


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, None, None]:
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()
    if report.skipped and strict_mode():
        report.outcome = "failed"
        report.longrepr = failure_text(collector.nodeid, skip_reason(report))
