"""A camera with two inputs over real RTSP (GStreamer's server, TCP): the substream is classified, the main stream
recorded and never decoded; either input can die and come back while the other goes on."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import av
import pytest
from sightline import synthetic_media as media
from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline

from tests.support.gst_rtsp import GstRtspServer, missing_gst
from tests.support.models import tiny_classifier
from tests.support.recordings import segments as segment_files

MISSING = missing_gst()
pytestmark = [pytest.mark.timeout(150), pytest.mark.slow, pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]


def wait_for(check: Callable[[], bool], timeout: float, what: str, explain: Callable[[], object]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}: {explain()}")
        time.sleep(0.05)


def test_substream_classified_main_recorded_each_input_survives_the_other(tmp_path: Path) -> None:
    main_clip = media.make_test_clip(tmp_path / "main.mp4", frames=1000, fps=25, size=(320, 240))
    sub_clip = media.make_test_clip(tmp_path / "sub.mp4", frames=400, fps=10, size=(160, 120))
    main, sub = GstRtspServer(main_clip, path="/main").start(), GstRtspServer(sub_clip, path="/sub").start()
    stream = StreamConfig(name="door", infer_fps=5, open_timeout_s=5, stall_timeout_s=2,
                          reconnect={"initial_s": 0.2, "max_s": 1.0},
                          inputs=[{"name": "main", "url": main.url, "roles": ["record", "view"]},
                                  {"name": "sub", "url": sub.url, "roles": ["classify"]}])
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path, streams=[stream],
                       storage={"recordings": {"segment_s": 2}})
    pipeline = Pipeline(tiny_classifier(), config, Metrics())
    pipeline.start()
    try:
        runtime = pipeline.get("door")
        door, (recorded,) = runtime.stats, runtime.stats.inputs
        status = pipeline.statuses
        wait_for(lambda: door.frames_inferred >= 10 and recorded.packets >= 50, 30, "both inputs flowing", status)
        snap = door.snapshot()
        assert [(i["name"], i["roles"], i["state"]) for i in snap["inputs"]] == [
            ("sub", ["classify"], "live"), ("main", ["record", "view"], "live")]
        assert snap["inputs_down"] == []
        # the main stream is read, never decoded while nobody watches: only the substream's packets are decoded
        assert recorded.frames_decoded == 0
        assert door.frames_decoded <= door.packets

        # watching shows the main stream (decoded from the next keyframe on) with the substream's labels
        latest = runtime.output.latest
        assert latest is not None and latest.result.frame.image.shape[:2] != (240, 320)  # the classified frames

        def main_shown() -> bool:
            runtime.watch_preview()
            item = runtime.output.latest
            return item is not None and item.result.frame.display is not None \
                and item.result.frame.display.shape == (240, 320, 3) and bool(item.top)

        wait_for(main_shown, 15, "the main stream in the preview", status)
        # (its labels, item.top, can only have come from the substream: the main input is never classified)
        assert pipeline.snapshot("door").shape[:2] == (240, 320)  # labels drawn on the main picture
        assert recorded.frames_decoded > 0  # decoded for the viewer, while watched
        time.sleep(3.5)  # nobody watches any more: the main input goes back to packets only
        decoded = recorded.frames_decoded
        time.sleep(1.0)
        assert recorded.frames_decoded == decoded

        main.kill()  # the recorded input dies: classification goes on
        wait_for(lambda: recorded.state == "reconnecting", 15, "the main input to notice", status)
        assert door.snapshot()["inputs_down"] == ["main"] and door.state == "live"
        before = door.frames_inferred
        wait_for(lambda: door.frames_inferred >= before + 10, 15, "classifying with the main input down", status)
        assert recorded.state == "reconnecting" and recorded.reconnects >= 1
        main.start()
        packets = recorded.packets
        wait_for(lambda: recorded.state == "live" and recorded.packets > packets + 50, 30, "main back", status)

        sub.kill()  # the classified input dies: recording goes on
        wait_for(lambda: door.state == "reconnecting", 15, "the sub input to notice", status)
        assert door.snapshot()["inputs_down"] == ["sub"]
        packets = recorded.packets
        wait_for(lambda: recorded.packets > packets + 50, 15, "recording with the sub input down", status)
        assert recorded.state == "live"
        sub.start()
        inferred = door.frames_inferred
        wait_for(lambda: door.state == "live" and door.frames_inferred > inferred + 5, 30, "sub back", status)
    finally:
        pipeline.shutdown()
        main.stop()
        sub.stop()
    assert door.snapshot()["inputs"][1]["state"] == "stopped"
    segments = segment_files(tmp_path / "out", "door")
    assert len(segments) >= 2  # a session each side of the main input's outage
    for segment in segments:
        with av.open(str(segment)) as container:  # the main stream's own picture, not the substream's
            video = container.streams.video[0]
            assert (video.codec_context.width, video.codec_context.height) == (320, 240)
