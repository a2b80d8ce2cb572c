"""Offline mode: one switch that every command and the service honour, so nothing downloads model weights.

Light on purpose (no torch): ``sightline --offline`` sets the variable before any command imports a loader.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

OFFLINE_ENV = "SIGHTLINE_OFFLINE"  # set (to anything but 0/empty) and no command downloads model weights


def offline(environ: Mapping[str, str] | None = None) -> bool:
    """True when SIGHTLINE_OFFLINE asks that nothing be downloaded (``sightline --offline`` sets it)."""
    return (os.environ if environ is None else environ).get(OFFLINE_ENV, "").strip() not in ("", "0")
