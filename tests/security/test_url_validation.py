"""Issue 11, rows 1 and 11: every stream URL is parsed and checked whole before it is accepted.

A bad URL is a config error / 422 naming the field and the reason, never quoting the URL (its
password often sits where the parser wanted a port); nothing is registered; and no stored value can
make an endpoint that lists all streams fail.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml
from sightline.cli import main
from sightline.model.errors import ConfigError
from sightline.model.yamlconfig import validate
from sightline.stream.config import StreamConfig, check_source, load_run_config

from tests.support.api_client import AUTH, api_client, listing_endpoints_answer

SECRET = "hunter2"

# (url, the reason the error must give). Each URL carries SECRET, which no output may show.
BAD_URLS = [
    (f"rtsp://user:{SECRET}@127.0.0.1:abc/x", "invalid port"),
    (f"http://a:{SECRET}@127.0.0.1:99999/x", "invalid port"),
    (f"rtsp://user:{SECRET}@127.0.0.1:0/x", "invalid port"),
    (f"rtsp://user:{SECRET}@127.0.0.1:/x", "invalid port"),
    (f"rtsp://user:{SECRET}@/x", "has no host"),
    (f"rtsp://user:{SECRET}@cam@other/x", "unencoded '@'"),
    (f"rtsp://user:{SECRET}#1@cam/x", "'#' fragment"),
    (f"rtsp://user:{SECRET}/1@cam/x", "invalid port"),  # an unencoded '/' in the password
    (f"srt://user:{SECRET}@cam", "needs a port"),
    (f"rtsp://user:{SECRET}@cam name/x", "white space"),
    (f"rtsp://user:{SECRET}@[::zz]/x", "not an IPv6 address"),
    (f"rtsp://user:{SECRET}@::1/x", "in brackets"),
    (f"rtsp://user:{SECRET}@999.1.1.1/x", "not a valid IPv4 address"),
    (f"rtsp://user:{SECRET}@bad_-.host!/x", "not a valid host name"),
    (f"rtsp://user:{SECRET}@cam/x%zz", "two hex digits"),
    (f"rtsp://user:{SECRET}@cam/x\nINFO forged log line", "control or invisible character"),
    (f"gopher://user:{SECRET}@cam/x", "unsupported scheme 'gopher'"),
    (f"rtsp:user:{SECRET}@cam/x", "must be followed by '//'"),
    (f"concat:/media/a.mp4|/etc/{SECRET}", "must not start with 'concat:'"),
    ("x" * 5000 + SECRET, "at most 4096"),
]


@pytest.mark.parametrize(("url", "reason"), BAD_URLS)
def test_bad_url_is_a_config_error_that_names_the_reason_not_the_secret(url: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate({"name": "cam", "url": url}, StreamConfig, "c.yaml")
    message = str(err.value)
    assert message.startswith("c.yaml: url: ") and reason in message, message
    assert SECRET not in message


def test_config_file_with_bad_urls_reports_each_without_traceback_or_secret(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"streams": [{"name": f"s{i}", "url": url} for i, (url, _) in enumerate(BAD_URLS)]}))
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    lines = str(err.value).splitlines()
    assert len(lines) == len(BAD_URLS)  # every problem at once, one line each (the newline URL included)
    for i, ((_, reason), line) in enumerate(zip(BAD_URLS, lines, strict=True)):
        assert line.startswith(f"{path}: streams[{i}].url: ") and reason in line, line
    assert main(["run", str(path)]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and SECRET not in captured.err + captured.out
    assert "invalid port" in captured.err


@pytest.mark.timeout(60)
async def test_api_refuses_bad_urls_with_422_and_registers_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with api_client(tmp_path, tmp_path / "out") as (client, pipeline):
        for url, reason in BAD_URLS:
            r = await client.post("/api/streams", json={"name": "cam", "url": url}, headers=AUTH)
            assert r.status_code == 422, (url, r.text)
            assert r.json()["detail"].startswith("url: ") and reason in r.json()["detail"]
            assert SECRET not in r.text
            assert pipeline.names() == []
            for response in (await listing_endpoints_answer(client)).values():
                assert SECRET not in response.text
            assert (await client.get("/api/streams/cam")).status_code == 404
    assert SECRET not in caplog.text


@pytest.mark.timeout(60)
async def test_a_stored_malformed_url_never_breaks_the_listing_endpoints(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The issue's failure: a bad port made status building raise, so /api/streams, /readyz and /metrics
    returned 500 for everyone. Whatever URL a stream holds (here one that skipped validation), listing works."""
    caplog.set_level(logging.DEBUG)
    hostile = StreamConfig.model_construct(name="legacy", url=f"rtsp://user:{SECRET}@127.0.0.1:abc/x")
    async with api_client(tmp_path, tmp_path / "out") as (client, pipeline):
        with pytest.raises(ValueError, match="invalid port"):  # the pipeline itself refuses it too
            pipeline.add_stream(hostile.model_copy(update={"name": "refused"}), check=False)
        assert pipeline.names() == []
        runtime = pipeline.add_stream(StreamConfig(name="legacy", url="webrtc://legacy"))
        for url in (hostile.url, f"rtsp://u:{SECRET}@h/x\x00\n", f"rtsp://u:{SECRET}@[h/x",
                    f"https://h/?token={SECRET}" + "x" * 100_000, f"rtmp://h/live/{SECRET}\u202e"):
            runtime.config = StreamConfig.model_construct(name="legacy", url=url)  # as if stored before validation
            responses = await listing_endpoints_answer(client)
            listed = responses["/api/streams"].json()["streams"]
            assert [s["name"] for s in listed] == ["legacy"]
            assert listed[0]["url"].endswith("://***")  # unparseable: nothing of it is shown
            one = await client.get("/api/streams/legacy")
            assert one.status_code == 200
            for response in (*responses.values(), one):
                assert SECRET not in response.text, url
        assert (await client.delete("/api/streams/legacy", headers=AUTH)).status_code == 200
    assert SECRET not in caplog.text


# -- row 11: only /dev/videoN is a camera --------------------------------------------------------------


@pytest.mark.parametrize("url", ["/dev/video../../etc/shadow", "/dev/video0/../../etc/shadow", "/dev/videos",
                                 "/dev/video0x", "/dev/video01", "/dev/video-1"])
def test_only_dev_video_n_is_a_device(url: str) -> None:
    with pytest.raises(ConfigError, match=r"url: a camera device is /dev/videoN"):
        validate({"name": "cam", "url": url}, StreamConfig, "c.yaml")


@pytest.mark.parametrize("url", ["/dev/video0", "/dev/video7", "/dev/video42"])
def test_dev_video_n_is_a_device_and_skips_the_media_root(tmp_path: Path, url: str) -> None:
    stream = validate({"name": "cam", "url": url}, StreamConfig, "c.yaml")
    assert stream.is_device and not stream.is_file
    assert check_source(stream, tmp_path) is None


@pytest.mark.parametrize("url", ["/dev/v4l/../../etc/shadow", "file:///dev/video0", "/etc/shadow"])
def test_other_paths_are_files_held_to_the_media_root(tmp_path: Path, url: str) -> None:
    stream = validate({"name": "cam", "url": url}, StreamConfig, "c.yaml")
    assert stream.is_file and not stream.is_device
    assert "outside the media root" in (check_source(stream, tmp_path) or "")


@pytest.mark.timeout(60)
async def test_api_refuses_the_device_path_traversal(tmp_path: Path) -> None:
    async with api_client(tmp_path, tmp_path / "out") as (client, pipeline):
        r = await client.post("/api/streams", json={"name": "cam", "url": "/dev/video../../etc/shadow"}, headers=AUTH)
        assert r.status_code == 422
        assert "a camera device is /dev/videoN" in r.json()["detail"]
        r = await client.post("/api/streams", json={"name": "cam", "url": "file:///dev/video0"}, headers=AUTH)
        assert r.status_code == 403 and "outside the media root" in r.json()["detail"]
        assert pipeline.names() == []
