"""Issue 11, row 2: every secret part of a URL is hidden wherever a URL is shown.

User info, RTMP/RTMPS stream keys and query parameters whose names carry secrets, in the status JSON
(open to anyone), the status error, and the log (tracebacks included).
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from pathlib import Path

import pytest
from sightline.cli import main
from sightline.stream.urls import RedactingLogFilter, redact_url, scrub_urls

from tests.support.api_client import AUTH, api_client, listing_endpoints_answer


@pytest.mark.parametrize(("url", "shown"), [
    ("rtsp://admin:s3cret@10.0.0.5:554/live", "rtsp://***@10.0.0.5:554/live"),
    ("rtsp://admin@cam.local/stream1", "rtsp://***@cam.local/stream1"),
    ("rtmp://ingest.example/live/SECRETKEY", "rtmp://ingest.example/live/***"),
    ("rtmps://ingest.example:443/app/inst/SECRETKEY", "rtmps://ingest.example:443/app/***"),
    ("RTMP://ingest.example/live/SECRETKEY", "RTMP://ingest.example/live/***"),
    ("rtmp://ingest.example/live", "rtmp://ingest.example/live"),  # no key: the application name alone
    ("srt://relay:9000?passphrase=SECRETKEY&latency=200", "srt://relay:9000?passphrase=***&latency=200"),
    ("https://cdn.example/a.m3u8?X-Amz-Signature=SECRETKEY&X-Amz-Credential=SECRETKEY&part=1",
     "https://cdn.example/a.m3u8?X-Amz-Signature=***&X-Amz-Credential=***&part=1"),
    ("https://h/a?API_KEY=SECRETKEY;Token=SECRETKEY&PassWord=SECRETKEY&auth=SECRETKEY&secret=SECRETKEY",
     "https://h/a?API_KEY=***;Token=***&PassWord=***&auth=***&secret=***"),
    ("https://h/a?%74oken=SECRETKEY", "https://h/a?%74oken=***"),  # a percent-encoded name is still 'token'
    ("https://h/a.m3u8?SECRETKEY", "https://h/a.m3u8?***"),  # a bare value may be a token: hidden
    ("https://h/p?src=rtsp://u:SECRETKEY@cam/x&n=1", "https://h/p?src=rtsp://***@cam/x&n=1"),  # nested URL
    ("https://h/p?email=a@b.example&sig=SECRETKEY", "https://h/p?email=a@b.example&sig=***"),
    ("rtsp://cam.local/stream1?tcp", "rtsp://cam.local/stream1?***"),
    ("rtsp://cam.local/stream1", "rtsp://cam.local/stream1"),
    ("media/clip.mp4", "media/clip.mp4"),
    ("webrtc://door", "webrtc://door"),
    # Not valid: its parts cannot be told apart, so none is shown.
    ("rtsp://user:SECRETKEY@127.0.0.1:abc/x", "rtsp://***"),
    ("rtsp:user:SECRETKEY@cam", "rtsp:***"),
    ("ftp://user:SECRETKEY@h/x", "ftp://***"),
])
def test_redact_url_hides_every_secret_part(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "SECRETKEY" not in redact_url(url)


def test_redact_url_never_raises_and_shows_one_line() -> None:
    for value in ("", "rtsp://", "://", "rtsp://[", "x://y\nz", "\x00", "rtsp://h/\u202e", 12, None, b"rtsp://u:p@h"):
        shown = redact_url(value)
        assert isinstance(shown, str) and "\n" not in shown and "\u202e" not in shown


def test_scrub_urls_redacts_urls_inside_text() -> None:
    text = ("cannot open 'rtsp://u:SECRETKEY@cam:554/x': refused\n"
            "  File \"x.py\", line 1, in f: av.open(\"rtmp://in.example/live/SECRETKEY\")")
    scrubbed = scrub_urls(text)
    assert "SECRETKEY" not in scrubbed
    assert "rtsp://***@cam:554/x" in scrubbed and "rtmp://in.example/live/***" in scrubbed
    assert scrubbed.count("\n") == 1


@pytest.mark.parametrize(("text", "scrubbed"), [
    ("started (rtsp://u:SECRETKEY@h/x, realtime)", "started (rtsp://***@h/x, realtime)"),
    ("added (rtmp://127.0.0.1:9/live/***?token=***)", "added (rtmp://127.0.0.1:9/live/***?token=***)"),
    ("open 'https://h/a?sig=SECRETKEY': refused.", "open 'https://h/a?sig=***': refused."),
    ("see rtsp://u:SECRETKEY@h/x.", "see rtsp://***@h/x."),
    ("no url here", "no url here"),
])
def test_scrub_urls_keeps_the_text_around_a_url(text: str, scrubbed: str) -> None:
    assert scrub_urls(text) == scrubbed
    assert scrub_urls(scrubbed) == scrubbed  # scrubbing twice (code redacts, then the log filter) changes nothing


def test_log_filter_redacts_messages_arguments_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingLogFilter())
    log = logging.getLogger("tests.security.redaction")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("stream %s: %s", "cam", "rtmp://in.example/live/SECRETKEY")
        try:
            raise OSError("connection refused: rtsp://admin:SECRETKEY@10.0.0.5/live")
        except OSError:
            log.exception("open failed")
        log.error("bad call %s %s", "https://h/?token=SECRETKEY")  # too few arguments: still no secret
    finally:
        log.removeHandler(handler)
    out = stream.getvalue()
    assert out.startswith("stream cam: rtmp://in.example/live/***\n")
    assert "SECRETKEY" not in out
    assert "rtmp://in.example/live/***" in out and "rtsp://***@10.0.0.5/live" in out
    assert "Traceback" in out and "OSError" in out


def test_the_cli_installs_the_log_filter(tmp_path: Path) -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler(io.StringIO())
    root.addHandler(handler)
    try:
        assert main(["run", str(tmp_path / "missing.yaml")]) == 2
        assert any(isinstance(f, RedactingLogFilter) for f in handler.filters)
    finally:
        root.removeHandler(handler)


@pytest.mark.timeout(60)
async def test_rtmp_key_and_query_secrets_never_reach_status_error_or_log(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The issue's example: an RTMP stream key showed in the open GET /api/streams, the status error and the log."""
    caplog.set_level(logging.DEBUG)
    url = "rtmp://127.0.0.1:9/live/SECRETKEY?token=TOPSECRET&app=x"  # port 9 refuses: the source keeps retrying
    body = {"name": "ingest", "url": url, "open_timeout_s": 2, "reconnect": {"initial_s": 0.1, "max_s": 0.2}}
    async with api_client(tmp_path, tmp_path / "out") as (client, _):
        r = await client.post("/api/streams", json=body, headers=AUTH)
        assert r.status_code == 201, r.text
        assert r.json()["url"] == "rtmp://127.0.0.1:9/live/***?token=***&app=x"
        deadline = time.monotonic() + 20
        while (status := (await client.get("/api/streams/ingest")).json())["error"] is None:
            assert time.monotonic() < deadline, "the source never reported its failure"
            await asyncio.sleep(0.1)
        assert "rtmp://127.0.0.1:9/live/***" in status["error"]
        responses = await listing_endpoints_answer(client)
        for text in (status["error"], *(x.text for x in responses.values())):
            assert "SECRETKEY" not in text and "TOPSECRET" not in text
        assert (await client.delete("/api/streams/ingest", headers=AUTH)).status_code == 200
    assert "ingest" in caplog.text
    assert "SECRETKEY" not in caplog.text and "TOPSECRET" not in caplog.text
