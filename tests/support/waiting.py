"""Waiting in a test for something a background thread brings about, with a message that says what was seen."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(check: Callable[[], bool], timeout: float, what: str, explain: Callable[[], object] = lambda: "") -> None:
    """Poll ``check`` until it holds; after ``timeout`` seconds fail with ``what`` and ``explain()`` (the state)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}: {explain()}")
        time.sleep(0.05)
