"""Where a stream's recording goes, and when one file ends and the next begins (docs/recordings.md).

Both recording modes (passthrough: the camera's packets; annotated: re-encoded with labels) share these rules:

- a stream that runs until stopped records segments of about ``storage.recordings.segment_s`` of stream time,
  ``recordings/<stream>/<YYYY-MM-DD>/<stream>.<UTC start>.mp4``, each starting at a keyframe;
- a file without loop records one file per run at ``output_dir/<stream>.mp4`` (an earlier one moved aside);
- a segment's name is the wall time of its first frame: for a live stream when it arrived, for a fast replay the
  run's wall start plus the stream time recorded so far (names stay in order and do not all fall in one second);
- a write that fails (a full disk) is reported to ``StorageStats``; the writer closes its file as well as it can
  and opens a fresh one at a later keyframe, trying at most once per ``RETRY_S``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

from sightline.stream.outputs.files import fresh_output
from sightline.stream.storage.layout import free_stamped_path, segment_folder
from sightline.stream.storage.stats import StorageStats

RETRY_S = 1.0  # after a failed write, the next file is opened at most this often
SUFFIX = ".mp4"
# fragmented MP4: every fragment plays on its own, so a killed process leaves a playable file; flush_packets sends
# each fragment to the file when it is muxed (FFmpeg's 32 KB write buffer would otherwise hold it back)
MP4_OPTIONS = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}


class RisingClock:
    """A stream's timestamps made to rise across file loops, reconnects and clock resets: after a step back the
    recording continues one ``step`` after its last timestamp (the time between is not recorded)."""

    def __init__(self) -> None:
        self.offset: float = 0
        self.last: float | None = None

    def see(self, t: float, step: float) -> float:
        if self.last is not None and t + self.offset < self.last:
            self.offset = self.last - t + step
        self.last = t + self.offset
        return self.last


class SegmentPlan:
    """One stream's recording files: their paths, when a segment is long enough, and failed writes.

    ``segment_s`` None: one file (a file without loop). Times are the recording's own (``RisingClock``) seconds.
    """

    def __init__(self, output_dir: Path, stream: str, segment_s: float | None, live: bool, storage: StorageStats,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.output_dir = output_dir
        self.stream = stream
        self.segment_s = segment_s
        self.live = live
        self.storage = storage
        self.monotonic = monotonic
        self._run_wall: float | None = None  # the wall time at recording time 0 (fast replays name by it)
        self._failed_at: float | None = None

    def due(self, in_segment_s: float) -> bool:
        """Whether the open segment is long enough to end at this keyframe."""
        return self.segment_s is not None and in_segment_s >= self.segment_s

    def next_path(self, t: float, arrived_wall: float) -> Path | None:
        """The file whose first frame is at recording time ``t`` (it arrived at ``arrived_wall``), registered as
        open; None while a failed write is recent. OSError: its folder cannot be made."""
        if self._failed_at is not None and self.monotonic() - self._failed_at < RETRY_S:
            return None
        if self._run_wall is None:
            self._run_wall = arrived_wall - t
        if self.segment_s is None:
            path = fresh_output(self.output_dir / f"{self.stream}{SUFFIX}")
        else:
            wall = arrived_wall if self.live else self._run_wall + t
            path = free_stamped_path(segment_folder(self.output_dir, self.stream, wall), self.stream, wall, SUFFIX)
        self.storage.opened(path)
        return path

    def closed(self, path: Path, written: bool) -> None:
        """A file is closed; one that got no frame (its first write failed) is removed, not left as litter."""
        self.storage.closed(path)
        if not written:
            with contextlib.suppress(OSError):  # retention sweeps it later if it cannot go now
                path.unlink(missing_ok=True)

    def wrote(self) -> None:
        self.storage.on_write_ok("recordings")

    def failed(self, exc: BaseException) -> None:
        self._failed_at = self.monotonic()
        self.storage.on_write_error("recordings", exc)
