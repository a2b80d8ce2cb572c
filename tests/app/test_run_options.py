"""The `sightline run` options the README lists, each shown doing what it says: accepted URL kinds, buffer
defaults, model.topk, log_predictions, CLI flags over the file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml
from sightline import synthetic_media as media
from sightline.cli import build_parser
from sightline.model.errors import ConfigError
from sightline.run_cli import apply_overrides
from sightline.stream.config import RunConfig, StreamConfig, load_run_config
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.service.status import stream_status

from tests.support.models import tiny_classifier

pytestmark = pytest.mark.timeout(60)

NETWORK_URLS = [
    "rtsp://user:pw@10.0.0.7:554/stream1", "rtsps://cam.example/live", "rtmp://127.0.0.1/live/cam",
    "http://127.0.0.1:8000/hls/index.m3u8", "https://cams.example/mjpeg", "srt://127.0.0.1:9000?mode=caller",
    "udp://127.0.0.1:1234", "tcp://127.0.0.1:5000",
]


@pytest.fixture(scope="module")
def classifier():
    return tiny_classifier()


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_every_promised_url_kind_passes_validation(tmp_path: Path) -> None:
    streams = [{"name": f"net{i}", "url": url} for i, url in enumerate(NETWORK_URLS)]
    streams += [{"name": "usb", "url": "/dev/video0"}, {"name": "lobby", "url": "webrtc://lobby"}]
    config = load_run_config(write(tmp_path, {"streams": streams}))  # device and network: not probed here
    by_name = {s.name: s for s in config.streams}
    assert all(by_name[f"net{i}"].is_network and by_name[f"net{i}"].live for i in range(len(NETWORK_URLS)))
    assert by_name["usb"].is_device and not by_name["usb"].is_file
    assert by_name["lobby"].is_webrtc


@pytest.mark.parametrize("url", ["ftp://host/x.mp4", "gopher://x", "smb://share/cam.mp4"])
def test_other_schemes_are_refused_with_the_dotted_path(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError, match=r"streams\[0\]\.url: .*unsupported scheme"):
        load_run_config(write(tmp_path, {"streams": [{"name": "x", "url": url}]}))


def test_buffer_defaults_are_2_live_and_32_fast_and_reach_the_queues(classifier, tmp_path: Path) -> None:
    clip = media.make_test_clip(tmp_path / "c.mp4", frames=5, size=(96, 64))
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path, streams=[
        StreamConfig(name="live", url=str(clip)), StreamConfig(name="fast", url=str(clip), mode="fast"),
        StreamConfig(name="cam", url="rtsp://127.0.0.1:9/x"),
        StreamConfig(name="tuned", url=str(clip), buffer=5)])
    assert [s.capacity for s in config.streams] == [2, 32, 2, 5]
    pipeline = Pipeline(classifier, config, Metrics())
    runtimes = {s.name: pipeline.factory.build(s) for s in config.streams}  # queues as the factory makes them
    assert {n: r.source.queue.capacity for n, r in runtimes.items()} == {"live": 2, "fast": 32, "cam": 2, "tuned": 5}
    assert {n: r.source.queue.policy for n, r in runtimes.items()} == {
        "live": "latest", "fast": "block", "cam": "latest", "tuned": "latest"}
    for runtime in runtimes.values():
        for sink in runtime.output.sinks:
            sink.close()


def test_model_topk_sets_the_labels_kept_per_frame(classifier, tmp_path: Path) -> None:
    clip = media.make_test_clip(tmp_path / "c.mp4", frames=6, size=(96, 64))
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path, model={"topk": 2},
                       streams=[StreamConfig(name="c", url=str(clip), mode="fast")])
    pipeline = Pipeline(classifier, config, Metrics())
    assert asyncio.run(pipeline.run(duration=30)) == 0
    lines = [json.loads(x) for x in (tmp_path / "out" / "c.jsonl").read_text().splitlines()]
    assert len(lines) == 6 and all(len(r["top"]) == 2 for r in lines)
    assert len(stream_status(pipeline.get("c"))["prediction"]) == 2


def test_log_predictions_false_writes_no_jsonl_but_still_records(classifier, tmp_path: Path) -> None:
    clip = media.make_test_clip(tmp_path / "c.mp4", frames=6, size=(96, 64))
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path, log_predictions=False,
                       streams=[StreamConfig(name="c", url=str(clip), mode="fast", record=True)])
    pipeline = Pipeline(classifier, config, Metrics())
    assert asyncio.run(pipeline.run(duration=30)) == 0
    assert stream_status(pipeline.get("c"))["frames_inferred"] == 6
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["c.mp4"]


def test_command_line_flags_win_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, {"model": {"source": "from-file.pt", "device": "cuda", "topk": 3},
                            "server": {"port": 8123, "mjpeg_fps": 2}})
    args = build_parser().parse_args(["run", str(path), "--model", "flag.pt", "--device", "cpu", "--port", "9000"])
    config = apply_overrides(load_run_config(args.config), args)
    assert (config.model.source, config.model.device, config.server.port) == ("flag.pt", "cpu", 9000)
    assert config.model.topk == 3 and config.server.mjpeg_fps == 2  # what no flag names stays as in the file
    unchanged = apply_overrides(load_run_config(path), build_parser().parse_args(["run", str(path)]))
    assert (unchanged.model.source, unchanged.model.device, unchanged.server.port) == ("from-file.pt", "cuda", 8123)
