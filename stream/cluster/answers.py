"""Errors cross Ray as data, not as pickled classes: one table of kinds for both sides.

A worker answers ``{"error": kind, "detail": message}`` (``error_answer``); the controller raises the same
class again (``raise_for``). ``"worker"`` (the worker did not answer) is the controller's own kind.
"""

from __future__ import annotations

from typing import Any

from sightline.model.errors import ConfigError
from sightline.stream import errors

KINDS: dict[str, type[Exception]] = {
    "duplicate": errors.DuplicateStreamError,
    "too_many": errors.TooManyStreamsError,
    "output": errors.StreamOutputError,
    "unknown": errors.UnknownStreamError,
    "busy": errors.StreamBusyError,
    "publisher": errors.PublisherConnectedError,
    "config": ConfigError,
    "offer": errors.StreamError,  # last: any other stream error
}


def error_answer(exc: Exception) -> dict[str, Any]:
    """``exc`` as data: the first kind in ``KINDS`` it is an instance of (a caller catches only those)."""
    kind = next(k for k, cls in KINDS.items() if isinstance(exc, cls))
    return {"error": kind, "detail": str(exc)}


def raise_for(answer: dict[str, Any], default: type[Exception] = errors.StreamError) -> None:
    """Raise the answer's error again on this side (nothing when it is not an error)."""
    if "error" in answer:
        raise KINDS.get(answer["error"], default)(answer["detail"])

