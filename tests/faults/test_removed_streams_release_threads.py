"""Found by benchmarks/soak.py: removed streams with `record: true` kept FFmpeg's scaler threads until a
full garbage collection (the recorder's fps hint referred back to the source: a reference cycle). 118
add/remove cycles left 71 extra threads in a 20-minute soak. Resources go when the stream goes."""

from __future__ import annotations

import gc
import time
import weakref
from pathlib import Path

import pytest
from sightline import synthetic_media as media
from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline

from tests.support.models import tiny_classifier

pytestmark = pytest.mark.timeout(120)


def native_threads() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads: line in /proc/self/status")


@pytest.fixture
def no_gc():
    """Cycles are never collected here: what a stream holds must be freed by reference counting alone."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def cycle(pipeline: Pipeline, clip: Path, name: str, inferred: int = 0) -> weakref.ref:
    """Add a looping recorded stream, let it decode (and classify) a little, remove it; a weak ref to its source."""
    runtime = pipeline.add_stream(StreamConfig(name=name, url=str(clip), loop=True, record="annotated", infer_fps=2))
    deadline = time.monotonic() + 20
    while runtime.stats.frames_decoded < 5 or runtime.stats.frames_inferred < inferred:
        assert time.monotonic() < deadline, f"{name}: decoded {runtime.stats.frames_decoded}, " \
                                            f"classified {runtime.stats.frames_inferred} in 20 s"
        time.sleep(0.05)
    source = weakref.ref(runtime.source)
    del runtime
    pipeline.remove_stream(name)
    return source


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs procfs")
def test_adding_and_removing_recorded_streams_leaves_no_threads_behind(tmp_path: Path, no_gc) -> None:
    clip = media.make_test_clip(tmp_path / "loop.mp4", frames=60, fps=15, size=(320, 180), counter=False)
    pipeline = Pipeline(tiny_classifier(), RunConfig(output_dir=tmp_path / "out", media_root=tmp_path), Metrics())
    pipeline.start()
    try:
        # a first stream starts what lives as long as the process or the pipeline, not a stream: the inference
        # lane's OpenMP team (one thread per core less one: 15 more on a 16-core machine) and FFmpeg's pools
        cycle(pipeline, clip, "warm-up", inferred=1)
        time.sleep(0.5)
        before = native_threads()
        sources = [cycle(pipeline, clip, f"c{i}") for i in range(5)]
        time.sleep(0.5)
        assert [ref() for ref in sources] == [None] * 5  # each source was freed as soon as its stream went
        assert native_threads() <= before + 2
    finally:
        pipeline.shutdown()
