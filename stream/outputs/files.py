"""Output files are never overwritten: an existing file is moved aside before a new one is opened.

A re-added stream, or a restarted service, finds ``out/cam.mp4`` from before; that recording (and
its JSONL log) is evidence an operator may still need, so it is renamed to
``out/cam.20261201T171931Z.mp4`` (the time it was moved aside, UTC; ``-2``, ``-3``... when that
name is taken too) and the new output starts at the plain name, where dashboards and scripts look.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

MAX_SUFFIX_TRIES = 1000


def rotated_name(path: Path, stamp: str, n: int) -> Path:
    """``cam.mp4`` -> ``cam.<stamp>.mp4`` (n == 1) or ``cam.<stamp>-<n>.mp4``."""
    tag = stamp if n == 1 else f"{stamp}-{n}"
    return path.with_name(f"{path.stem}.{tag}{path.suffix}")


def rotate_aside(path: Path, now: Callable[[], float] = time.time) -> Path | None:
    """Move an existing ``path`` to a free timestamped name; returns where it went (None if nothing was there).

    ``os.link`` + ``unlink`` would race less, but link fails on some filesystems; ``os.rename`` onto a
    name checked free a moment ago is safe here because only this process writes the output folder.
    """
    if not path.exists():
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now()))
    for n in range(1, MAX_SUFFIX_TRIES + 1):
        target = rotated_name(path, stamp, n)
        if not target.exists():
            os.rename(path, target)
            log.info("kept the earlier %s as %s", path.name, target.name)
            return target
    raise FileExistsError(f"{path}: {MAX_SUFFIX_TRIES} rotated copies with stamp {stamp} already exist")


def fresh_output(path: Path, now: Callable[[], float] = time.time) -> Path:
    """Make ``path``'s folder, move any earlier file aside, and return ``path`` ready to be created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rotate_aside(path, now)
    return path
