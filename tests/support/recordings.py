"""A stream's recording segments on disk (``recordings/<stream>/<day>/<stream>.<start>.mp4``), oldest first."""

from __future__ import annotations

from pathlib import Path

from sightline.stream.storage.layout import parse_stamped


def segments(output_dir: Path, stream: str) -> list[Path]:
    """By start, then ``-n`` (``cam.<t>-2.mp4`` sorts before ``cam.<t>.mp4`` by name)."""
    found = (output_dir / "recordings" / stream).glob(f"*/{stream}.*.mp4")
    return sorted(found, key=lambda p: parse_stamped(p.name)[1:])


def only_segment(output_dir: Path, stream: str) -> Path:
    """The one segment of a run shorter than ``storage.recordings.segment_s``."""
    found = segments(output_dir, stream)
    assert len(found) == 1, found
    return found[0]
