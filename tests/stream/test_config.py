"""`sightline run` configuration: strict validation, every error at once with file and dotted path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sightline import synthetic_media as media
from sightline.cli import main
from sightline.model.errors import ConfigError
from sightline.model.yamlconfig import load_yaml
from sightline.stream.config import BatchingConfig, RunConfig, load_run_config, redact_url

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
APP = Path(__file__).resolve().parents[2] / "app"


def write(tmp_path: Path, data: object, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("path", [CONFIGS / "example.yaml", APP / "demo.yaml"], ids=lambda p: p.name)
def test_shipped_service_configs_validate(path: Path) -> None:
    config = load_yaml(path, RunConfig)
    assert config.streams
    assert config.server.host == "127.0.0.1"


def test_packaged_demo_config_resolves_its_paths_in_the_demo_folder(tmp_path: Path) -> None:
    from sightline.demo import load_demo_config

    media.make_test_clip(tmp_path / "media" / "demo.mp4", frames=5)
    config = load_demo_config(tmp_path)
    assert [s.name for s in config.streams] == ["camera", "replay"]
    assert {s.url for s in config.streams} == {str(tmp_path / "media" / "demo.mp4")}
    assert (config.output_dir, config.media_root) == (tmp_path / "runs", tmp_path / "media")


def test_all_errors_are_reported_at_once_with_dotted_paths(tmp_path: Path) -> None:
    path = write(tmp_path, {
        "batchin": {"max_batch": 4},
        "batching": {"max_batch": 0},
        "model": {"precision": "fp8"},
        "streams": [
            {"name": "a", "url": "rtsp://cam/1"},
            {"name": "b", "url": "rtsp://cam/2", "mode": "fast"},
            {"name": "c", "url": "ftp://example/video.mp4"},
            {"name": "d", "url": "rtsp://cam/3", "recrod": True},
        ],
    })
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    msg = str(err.value)
    assert f"{path}: batchin: unknown key" in msg
    assert f"{path}: batching.max_batch: must be 'auto' or 1-1024" in msg
    assert f"{path}: model.precision:" in msg
    assert f"{path}: streams[1]: mode 'fast' needs a file" in msg
    assert f"{path}: streams[2].url: unsupported scheme 'ftp'" in msg
    assert f"{path}: streams[3].recrod: unknown key" in msg


def test_duplicate_stream_names_are_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, {"streams": [{"name": "cam", "url": "rtsp://a/1"}, {"name": "cam", "url": "rtsp://a/2"}]})
    with pytest.raises(ConfigError, match=r"streams\[1\]\.name: duplicate stream name 'cam' \(also streams\[0\]\)"):
        load_run_config(path)


def test_file_problems_are_found_before_start(tmp_path: Path) -> None:
    root = tmp_path / "media"
    root.mkdir()
    media.make_audio_clip(root / "song.m4a")
    media.make_test_clip(tmp_path / "outside.mp4", frames=3)
    (root / "notes.txt").write_text("not a video")
    path = write(tmp_path, {"media_root": str(root), "streams": [
        {"name": "missing", "url": str(root / "nope.mp4")},
        {"name": "audio", "url": str(root / "song.m4a")},
        {"name": "outside", "url": str(tmp_path / "outside.mp4")},
        {"name": "text", "url": str(root / "notes.txt")},
    ]})
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    lines = str(err.value).splitlines()
    assert len(lines) == 4
    assert "streams[0].url:" in lines[0] and "no such file" in lines[0]
    assert "streams[1].url:" in lines[1] and "song.m4a has no video stream (found: audio)" in lines[1]
    assert "streams[2].url:" in lines[2] and "outside the media root" in lines[2]
    assert "streams[3].url:" in lines[3] and "not a readable video" in lines[3]


def test_a_typo_and_a_file_outside_the_media_root_are_reported_together(tmp_path: Path) -> None:
    root = tmp_path / "media"
    root.mkdir()
    outside = media.make_test_clip(tmp_path / "outside.mp4", frames=3)
    path = write(tmp_path, {"media_root": str(root), "sever": {"port": 1}, "streams": [
        {"name": "out", "url": str(outside)},
        {"name": "typo", "url": str(outside), "lop": True},
    ]})
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    lines = str(err.value).splitlines()
    assert f"{path}: sever: unknown key (check the spelling)" in lines
    assert f"{path}: streams[1].lop: unknown key (check the spelling)" in lines
    assert any(line.startswith(f"{path}: streams[0].url: ") and "outside the media root" in line for line in lines)
    assert len(lines) == 3  # the stream with the typo is reported once, for its typo


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "streams:\n  - name: a\n    url: [unclosed\n")
    with pytest.raises(ConfigError, match=r"line \d+ column \d+: not valid YAML"):
        load_run_config(path)


def test_cli_reports_config_errors_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, {"streams": [{"name": "x", "url": "gopher://old/x"}], "outptu_dir": "runs"})
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "streams[0].url: unsupported scheme 'gopher'" in err
    assert "outptu_dir: unknown key" in err


@pytest.mark.parametrize(("url", "safe"), [
    ("rtsp://admin:s3cret@10.0.0.5:554/live", "rtsp://***@10.0.0.5:554/live"),
    ("rtsp://user@cam.local/stream1", "rtsp://***@cam.local/stream1"),
    ("https://cdn.example/hls/index.m3u8?token=abc", "https://cdn.example/hls/index.m3u8?token=***"),
    ("rtsp://cam.local/stream1", "rtsp://cam.local/stream1"),
    ("media/clip.mp4", "media/clip.mp4"),
])
def test_redact_url_hides_credentials_and_tokens(url: str, safe: str) -> None:
    assert redact_url(url) == safe


@pytest.mark.parametrize(("model", "expected"), [
    ({"workers": 0}, "model.workers: must be 'auto' or 1-64"),
    ({"workers": "many"}, "model.workers"),
    ({"workers": 2, "compile": True}, "model: workers: a torch.compile'd network runs in one lane"),
])
def test_inference_workers_are_checked(tmp_path: Path, model: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_run_config(write(tmp_path, {"model": model}))
    assert expected in str(err.value)
    assert load_yaml(write(tmp_path, {"model": {"workers": 3}}), RunConfig).model.workers == 3


def test_max_batch_auto_depends_on_the_device(tmp_path: Path) -> None:
    assert BatchingConfig().batch_size("cpu") == 8
    assert BatchingConfig().batch_size("cuda") == 32
    assert BatchingConfig(max_batch=5).batch_size("cuda") == 5
    assert load_yaml(write(tmp_path, {"batching": {"max_batch": "auto"}}), RunConfig).batching.max_batch == "auto"


@pytest.mark.parametrize(("stream", "problem"), [
    ({"stall_timeout_s": 6.5e-173}, "streams[0].stall_timeout_s: Input should be greater than or equal to 0.1"),
    ({"open_timeout_s": 0.001}, "streams[0].open_timeout_s: Input should be greater than or equal to 0.1"),
    ({"reconnect": {"initial_s": 5, "max_s": 1}}, "streams[0].reconnect: max_s must be at least initial_s"),
])
def test_absurd_timeouts_are_refused_naming_the_key(tmp_path: Path, stream: dict, problem: str) -> None:
    """Accepted before, they made the stream fail with an error blaming the file ("corrupt or truncated data")."""
    media.make_test_clip(tmp_path / "clip.mp4", frames=2)
    path = write(tmp_path, {"media_root": str(tmp_path),
                            "streams": [{"name": "a", "url": str(tmp_path / "clip.mp4"), **stream}]})
    with pytest.raises(ConfigError) as info:
        load_run_config(path)
    assert problem in str(info.value)
