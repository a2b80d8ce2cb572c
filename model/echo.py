"""Values echoed back in error messages are bounded: a 10 MB field never comes back whole."""

from __future__ import annotations

import unicodedata

ECHO_LIMIT = 200
# Unicode categories escaped in anything echoed: control, format (bidi overrides, zero-width), surrogate,
# private use, line and paragraph separators. They would split a log line or disguise a value.
HIDDEN_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Zl", "Zp")
ELLIPSIS = "…"


def bounded(value: object, limit: int = ECHO_LIMIT) -> str:
    """``str(value)`` cut to at most ``limit`` characters, the cut marked with an ellipsis."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return text
    return text[:max(limit - 1, 0)] + ELLIPSIS


def printable(text: str) -> str:
    """Control and invisible characters escaped (``\\n``, ``\\x00``, ``\\u202e``): an echoed value stays one
    honest line."""
    if all(unicodedata.category(ch) not in HIDDEN_CATEGORIES for ch in text):
        return text
    return "".join(ascii(ch)[1:-1] if unicodedata.category(ch) in HIDDEN_CATEGORIES else ch for ch in text)


def echo(value: object, limit: int = ECHO_LIMIT) -> str:
    """A user's value as an error message quotes it: one line, bounded."""
    return bounded(printable(value if isinstance(value, str) else str(value)), limit)
