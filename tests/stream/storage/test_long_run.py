"""Ten minutes of a camera's footage in 5 s segments under a tiny size budget, for real: a looping file replayed
fast (passthrough, keyframes classified), the retention thread running every second. The budget holds within one
segment, the oldest go first, and the segment an event covers outlives the plain footage around it."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.storage.layout import parse_stamped

from tests.support.models import tiny_classifier
from tests.support.recordings import segments

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")]

SEGMENT_S = 5
SEGMENTS = 121  # ten minutes of stream time, and the one being written
BUDGET_SEGMENTS = 12


def clip(folder: Path) -> Path:
    path = folder / "clip.mp4"  # 2 s, a keyframe a second
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=30",
                    "-t", "2", "-c:v", "libx264", "-g", "30", "-keyint_min", "30", "-sc_threshold", "0",
                    "-pix_fmt", "yuv420p", str(path)], check=True, timeout=60)
    return path


def test_ten_minutes_of_segments_keep_the_budget_oldest_first_and_the_event_footage(tmp_path: Path) -> None:
    source = clip(tmp_path)
    out = tmp_path / "out"
    # about 94 KB a segment here: measured by a first run, the budget is 12 of them
    budget = BUDGET_SEGMENTS * 94_000
    config = RunConfig(output_dir=out, media_root=tmp_path,
                       storage={"recordings": {"segment_s": SEGMENT_S},
                                "retention": {"recordings": {"max_gb": budget / 1e9}, "min_free_gb": 0,
                                              "interval_s": 1}},
                       streams=[StreamConfig(name="cam", url=str(source), mode="fast", loop=True, record=True,
                                             infer_fps=1)])
    pipeline = Pipeline(tiny_classifier(), config, Metrics())
    retention = pipeline.retention.retention
    event: list[tuple[str, float, float]] = []
    retention.event_footage = lambda: event  # what the event hub hands in: (stream, from, to) in wall seconds
    recordings = pipeline.storage.kinds["recordings"]
    stop = asyncio.Event()
    seen_totals: list[int] = []

    def watch(loop: asyncio.AbstractEventLoop) -> None:
        """Marks the third segment as an event's footage, samples the budget, stops after ten minutes of footage."""
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            files = segments(out, "cam")
            if not event and len(files) >= 3:
                third = parse_stamped(files[2].name)[1]
                event.append(("cam", third - 0.5, third + 0.5))
            if recordings.deleted_files + len(files) >= SEGMENTS:
                break
            if pipeline.storage.last_pass.passes:
                seen_totals.append(recordings.bytes)
            time.sleep(0.05)
        loop.call_soon_threadsafe(stop.set)

    async def main() -> None:
        watcher = threading.Thread(target=watch, args=(asyncio.get_running_loop(),), daemon=True)
        watcher.start()
        await pipeline.run(stop=stop)
        watcher.join(5)

    asyncio.run(main())
    assert event, "the run made no third segment"
    made = recordings.deleted_files + len(segments(out, "cam"))
    assert made >= SEGMENTS, f"{made} segments made"
    retention.run_pass()  # the last one: what the stream wrote since the thread's last pass

    kept = segments(out, "cam")
    sizes = [f.stat().st_size for f in kept]
    plain = [f for f in kept if parse_stamped(f.name)[1] != event[0][1] + 0.5]
    assert len(plain) == len(kept) - 1, "the event's segment is gone"
    # within the budget, and no more than one segment under it: the oldest went, one at a time
    assert sum(sizes) <= budget
    assert sum(sizes) + max(sizes) > budget
    starts = [parse_stamped(f.name)[1] for f in plain]
    assert all(b - a == SEGMENT_S for a, b in zip(starts, starts[1:], strict=False)), starts  # the newest, in a row
    assert recordings.deleted_files >= SEGMENTS - len(kept) - 1
    # every pass during the run left the recordings within the budget
    assert seen_totals and max(seen_totals) <= budget, max(seen_totals)
