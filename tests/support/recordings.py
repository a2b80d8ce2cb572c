"""A stream's recording segments on disk (``recordings/<stream>/<day>/<stream>.<start>.mp4``), oldest first."""

from __future__ import annotations

from pathlib import Path


def segments(output_dir: Path, stream: str) -> list[Path]:
    return sorted((output_dir / "recordings" / stream).glob(f"*/{stream}.*.mp4"))


def only_segment(output_dir: Path, stream: str) -> Path:
    """The one segment of a run shorter than ``storage.recordings.segment_s``."""
    found = segments(output_dir, stream)
    assert len(found) == 1, found
    return found[0]
