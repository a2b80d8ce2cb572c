"""Values echoed back in error messages are bounded: a 10 MB field never comes back whole."""

from __future__ import annotations

ECHO_LIMIT = 200
ELLIPSIS = "…"


def bounded(value: object, limit: int = ECHO_LIMIT) -> str:
    """``str(value)`` cut to at most ``limit`` characters, the cut marked with an ellipsis."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return text
    return text[:max(limit - 1, 0)] + ELLIPSIS
