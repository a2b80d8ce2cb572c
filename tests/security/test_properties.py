"""Property-based checks (hypothesis): arbitrary input gives a value or a clear one-line error, never
another exception; a URL's secrets never survive redaction; showing a URL never raises."""

from __future__ import annotations

import string
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sightline.model.errors import ConfigError
from sightline.model.yamlconfig import validate
from sightline.stream.config import RunConfig, StreamConfig, check_source, load_run_config
from sightline.stream.eval.labels import LabelsError, read_labels
from sightline.stream.urls import (
    NETWORK_SCHEMES,
    StreamUrl,
    UrlError,
    parse_stream_url,
    redact_url,
    scrub_urls,
    shown_url,
)

BOUNDED = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MESSAGE_LIMIT = 2_000

URL_ALPHABET = string.ascii_letters + string.digits + ":/?#@[]%&;=+-._~ \t\n\x00" + "é\u202e"
url_like = st.one_of(
    st.text(),
    st.text(alphabet=URL_ALPHABET, max_size=80),
    st.builds(lambda s, r: f"{s}://{r}", st.sampled_from([*NETWORK_SCHEMES, "file", "webrtc", "ftp", "RTSP"]),
              st.text(alphabet=URL_ALPHABET, max_size=60)),
    st.builds(lambda r: f"/dev/video{r}", st.text(alphabet=string.digits + "./x", max_size=8)),
)


@BOUNDED
@given(url_like)
def test_any_text_parses_or_is_a_one_line_url_error(text: str) -> None:
    try:
        parsed = parse_stream_url(text)
    except UrlError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < MESSAGE_LIMIT
        return
    assert isinstance(parsed, StreamUrl)
    if parsed.kind == "network":
        assert parsed.host and (parsed.port is None or 1 <= parsed.port <= 65535)


@BOUNDED
@given(st.one_of(url_like, st.none(), st.integers(), st.binary()))
def test_redact_url_never_raises_and_is_one_line(value: object) -> None:
    shown = redact_url(value)
    assert isinstance(shown, str) and "\n" not in shown and "\x00" not in shown
    assert len(shown_url(value)) <= 200


# -- secrets never survive redaction --------------------------------------------------------------------

SECRET_CHARS = string.ascii_letters + string.digits
# "S3" (capital S) occurs nowhere else in a generated URL, so finding a secret in the output is a real leak.
secret = st.text(alphabet=SECRET_CHARS, min_size=8, max_size=24).map(lambda s: "S3" + s)
host = st.one_of(st.sampled_from(["cam.local", "10.0.0.5", "[::1]", "relay-1.example.org", "a_b"]),
                 st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9](\.[a-z]{2,5}){0,2}", fullmatch=True))
port = st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}"))
plain = st.text(alphabet=string.ascii_lowercase + string.digits + "-_.", min_size=1, max_size=10)
secret_name = st.builds(lambda pre, part, post, upper: (pre + part + post).upper() if upper else pre + part + post,
                        st.sampled_from(["", "x-", "api_", "stream"]),
                        st.sampled_from(["passphrase", "key", "token", "password", "secret", "auth", "sig", "pwd"]),
                        st.sampled_from(["", "_id", "nature", "1"]), st.booleans())
safe_name = st.sampled_from(["latency", "mode", "width", "fps", "a", "transport"])


@st.composite
def secret_urls(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A valid stream URL holding 1-4 secrets in user info, an RTMP key and secret-named query parameters."""
    scheme = draw(st.sampled_from(NETWORK_SCHEMES))
    secrets: list[str] = []
    userinfo = ""
    if draw(st.booleans()):
        password = draw(secret)
        secrets.append(password)
        user = draw(st.one_of(st.just(""), plain))
        userinfo = f"{user}:{password}@" if user or draw(st.booleans()) else f"{password}@"
    path = "/" + draw(plain)
    if scheme in ("rtmp", "rtmps"):
        key = draw(secret)
        secrets.append(key)
        path += "/" + key
    else:
        path += draw(st.sampled_from(["", "/x.m3u8", "/stream1"]))
    params = []
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            value = draw(secret)
            secrets.append(value)
            params.append(f"{draw(secret_name)}={value}")
        else:
            params.append(f"{draw(safe_name)}={draw(plain)}")
    if not secrets:
        value = draw(secret)
        secrets.append(value)
        params.append(f"token={value}")
    query = ("?" + draw(st.sampled_from(["&", ";"])).join(params)) if params else ""
    needs_port = scheme in ("srt", "udp", "tcp")
    port_text = draw(st.integers(1, 65535).map(lambda p: f":{p}")) if needs_port else draw(port)
    return f"{scheme}://{userinfo}{draw(host)}{port_text}{path}{query}", secrets


@BOUNDED
@given(secret_urls())
def test_no_secret_survives_redaction(case: tuple[str, list[str]]) -> None:
    url, secrets = case
    parse_stream_url(url)  # the generator builds valid URLs: redaction must keep their shape
    shown = redact_url(url)
    assert shown.split("://")[0] == url.split("://")[0] and "***" in shown
    assert redact_url(shown) == shown  # showing a shown URL again changes nothing
    embedded = scrub_urls(f"cannot open '{url}': refused; retrying {url}")
    assert embedded == f"cannot open '{shown}': refused; retrying {shown}"
    for value in secrets:
        assert value not in shown, (url, shown)
        assert value not in embedded


# -- stream configs -----------------------------------------------------------------------------------

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=30), url_like),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)
fields = st.sampled_from([*StreamConfig.model_fields, "recrod", ""])
stream_dicts = st.one_of(
    st.dictionaries(fields, json_values, max_size=6),
    st.fixed_dictionaries({"name": st.one_of(st.just("cam"), st.text(max_size=10)), "url": url_like},
                          optional={"loop": json_values, "mode": st.sampled_from(["realtime", "fast", "x"]),
                                    "buffer": json_values, "infer_fps": json_values, "reconnect": json_values}),
)


@BOUNDED
@given(st.one_of(stream_dicts, json_values))
def test_any_stream_entry_validates_or_is_a_config_error(data: object) -> None:
    media_root = Path(tempfile.gettempdir()) / "sightline-property-media"  # need not exist
    try:
        stream = validate(data, StreamConfig, "stream")
    except ConfigError as exc:
        assert all(line.startswith("stream") for line in str(exc).splitlines())
        assert len(str(exc)) < MESSAGE_LIMIT * 4
        return
    assert isinstance(stream.loop, bool) and isinstance(stream.record, bool)
    assert sum((stream.is_file, stream.is_device, stream.is_network, stream.is_webrtc)) == 1
    assert stream.capacity >= 1
    redact_url(stream.url)
    problem = check_source(stream, media_root)  # the disk checks: a reason or None, never an exception
    assert problem is None or (isinstance(problem, str) and len(problem) < MESSAGE_LIMIT)


@BOUNDED
@given(st.one_of(st.text(max_size=200), st.dictionaries(st.text(max_size=10), json_values, max_size=4),
                 st.builds(lambda s: {"streams": s}, st.lists(stream_dicts, max_size=3))))
def test_any_config_file_loads_or_is_a_config_error(data: object) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.yaml"
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
        try:
            config = load_run_config(path)
        except ConfigError as exc:
            assert str(exc).startswith(str(path))
            return
        assert isinstance(config, RunConfig)


# -- labels.csv -------------------------------------------------------------------------------------------

csv_cells = st.one_of(st.text(max_size=12), st.sampled_from(["video", "start_s", "end_s", "label", "1:02.5", "0",
                                                             "1e400", "9" * 400, ".5", "-1", "nan", "#x", "\"", ""]))
csv_text = st.one_of(
    st.text(max_size=300),
    st.lists(st.lists(csv_cells, min_size=1, max_size=5), max_size=6).map(
        lambda rows: "video,start_s,end_s,label\n" + "\n".join(",".join(r) for r in rows)),
)


@BOUNDED
@given(st.one_of(csv_text, st.binary(max_size=200)))
def test_any_labels_csv_reads_or_is_a_labels_error(content: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "labels.csv"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", errors="surrogatepass")
        try:
            segments = read_labels(path)
        except LabelsError as exc:
            assert str(exc).startswith(str(path))
            return
    for video, segs in segments.items():
        assert video and segs
        for seg in segs:
            assert 0 <= seg.start_s < seg.end_s and seg.label


@pytest.mark.parametrize("url", ["rtsp://u:p@cam/x", "rtmp://h/live/key", "webrtc://door", "/dev/video0", "a.mp4"])
def test_valid_examples_round_trip(url: str) -> None:
    assert parse_stream_url(url).kind in ("network", "webrtc", "device", "file")
