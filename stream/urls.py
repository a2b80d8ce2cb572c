"""Stream URLs: parsed and validated whole before a stream is accepted; redacted wherever one is shown.

``parse_stream_url`` is the one parser: a config entry and ``POST /api/streams`` both go through it
(via ``StreamConfig``), so nothing that FFmpeg, the status JSON or a log line would later choke on
is ever stored. Its error messages never quote the URL's parts (a malformed URL often has a
password where the parser expects a port).

``redact_url`` is the one way a URL is shown. It never raises, whatever it is given; a URL that
does not parse as a valid stream URL is shown as ``scheme://***`` because its parts cannot be told
apart. ``scrub_urls`` applies it to every URL inside a text (log lines, tracebacks).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, unquote_plus

from sightline.model.echo import HIDDEN_CATEGORIES, bounded, printable

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # streams, rules, outputs: safe in URLs, topics, file names
NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "srt", "udp", "tcp")
WEBRTC_SCHEME = "webrtc"  # webrtc://<label>: a WebRTC peer publishes through POST /api/streams/{name}/webrtc
FILE_SCHEME = "file"
KNOWN_SCHEMES = (FILE_SCHEME, WEBRTC_SCHEME, *NETWORK_SCHEMES)
PORT_REQUIRED = ("srt", "udp", "tcp")  # FFmpeg has no default port for these
RTMP_SCHEMES = ("rtmp", "rtmps")
MAX_URL_LENGTH = 4096

# Query parameter names (case-insensitive, substring) whose values are secrets.
SECRET_NAME_PARTS = ("pass", "pwd", "key", "token", "secret", "auth", "sig", "credential", "session",
                     "streamid", "jwt", "cookie", "bearer", "private")
HIDDEN = "***"

SchemeRe = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
ProtocolPrefix = re.compile(r"([A-Za-z0-9+.-]+):|(subfile),")  # FFmpeg reads 'name:' as a protocol
DriveLetter = re.compile(r"[A-Za-z]:[\\/]")
Device = re.compile(r"/dev/video(0|[1-9][0-9]{0,2})")
HostLabel = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
WebRtcLabel = re.compile(r"[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*")
BadPercent = re.compile(r"%(?![0-9A-Fa-f]{2})")
# A URL inside text: up to white space or a quote, and not its trailing punctuation ("(url, mode)").
UrlInText = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,31}://(?:[^\s'\"<>`]*[^\s'\"<>`.,;:!?)\]}])?")
REFUSED_CATEGORIES = HIDDEN_CATEGORIES  # refused anywhere in a URL: they break log lines and FFmpeg's strings
ENCODING_HINT = " (percent-encode special characters in a user name or password, e.g. '@' as %40, '#' as %23)"

Kind = Literal["file", "device", "network", "webrtc"]


class UrlError(ValueError):
    """A stream URL that is refused. The message never quotes the URL (it may hold a password)."""


@dataclass(frozen=True)
class StreamUrl:
    """A validated stream URL, split into what the pipeline and ``redact_url`` need."""

    kind: Kind
    scheme: str  # lower case; "" for a plain path or device
    host: str = ""  # network only, as typed (IPv6 in brackets)
    port: int | None = None
    has_userinfo: bool = False
    path: str = ""  # network: the URL path; file/device: the file system path; webrtc: the label
    query: str = ""  # network only, without the '?'
    port_text: str = ""  # the port as typed (shown by redact_url), "" when none

    @property
    def is_network(self) -> bool:
        return self.kind == "network"


def parse_stream_url(url: str) -> StreamUrl:
    """The URL split and checked whole, or UrlError saying what is wrong (without quoting it)."""
    if not isinstance(url, str):
        raise UrlError(f"must be a string, not {type(url).__name__}")
    if not url:
        raise UrlError("must not be empty")
    if len(url) > MAX_URL_LENGTH:
        raise UrlError(f"is {len(url)} characters long; at most {MAX_URL_LENGTH} are allowed")
    for i, ch in enumerate(url):
        if unicodedata.category(ch) in REFUSED_CATEGORIES:
            raise UrlError(f"contains a control or invisible character (U+{ord(ch):04X}) at position {i}")
    scheme_match = SchemeRe.match(url)
    if scheme_match is None:
        return _parse_path(url)
    scheme = scheme_match.group(1).lower()
    rest = url[scheme_match.end():]
    if scheme not in KNOWN_SCHEMES:
        raise UrlError(f"unsupported scheme {bounded(scheme, 32)!r} (use a file path, webrtc:// or one of "
                       f"{', '.join(NETWORK_SCHEMES)})")
    if scheme == FILE_SCHEME:
        return _parse_file_url(rest)
    if scheme == WEBRTC_SCHEME:
        if not WebRtcLabel.fullmatch(rest):
            raise UrlError("webrtc:// needs a label of letters, digits, '.', '_', '~', '-' and '/' "
                           "(webrtc://door)")
        return StreamUrl("webrtc", scheme, path=rest)
    return _parse_network(scheme, rest)


def _parse_path(url: str) -> StreamUrl:
    if url.startswith("/dev/video"):
        if not Device.fullmatch(url):
            raise UrlError("a camera device is /dev/videoN (N a number); other paths under /dev are not devices")
        return StreamUrl("device", "", path=url)
    if DriveLetter.match(url):
        return StreamUrl("file", "", path=url)
    prefix = ProtocolPrefix.match(url)
    if prefix is not None:
        name = (prefix.group(1) or prefix.group(2)).lower()
        if name in KNOWN_SCHEMES:
            raise UrlError(f"'{name}:' must be followed by '//' ({name}://...)")
        raise UrlError(f"a file path must not start with '{bounded(name, 32)}:' (FFmpeg would read it as a "
                       f"protocol); write ./{bounded(name, 32)}:... or file:///absolute/path")
    return StreamUrl("file", "", path=url)


def _parse_file_url(rest: str) -> StreamUrl:
    host, slash, path = rest.partition("/")
    if not slash:
        raise UrlError("a file URL is file:///absolute/path")
    if host not in ("", "localhost"):
        raise UrlError("a file URL names no host other than localhost (file:///absolute/path)")
    return StreamUrl("file", FILE_SCHEME, path="/" + path)


def _parse_network(scheme: str, rest: str) -> StreamUrl:
    if "#" in rest:
        raise UrlError("a '#' fragment is not allowed" + ENCODING_HINT)
    if any(ch.isspace() for ch in rest):
        raise UrlError("contains white space (percent-encode a space as %20)")
    if BadPercent.search(rest):
        raise UrlError("has a '%' that is not followed by two hex digits (write a literal '%' as %25)")
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    path, _, query = tail.partition("?")
    userinfo, at, hostport = authority.rpartition("@")
    if "@" in userinfo:
        raise UrlError("the user name or password holds an unencoded '@'" + ENCODING_HINT)
    host, port_text = _split_host_port(hostport)
    _check_host(host)
    port = None
    if port_text or hostport.endswith(":"):
        if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5
                and 1 <= int(port_text) <= 65535):
            raise UrlError("invalid port: it must be a whole number from 1 to 65535" + ENCODING_HINT)
        port = int(port_text)
    elif scheme in PORT_REQUIRED:
        raise UrlError(f"{scheme}:// needs a port ({scheme}://host:port)")
    return StreamUrl("network", scheme, host=host, port=port, has_userinfo=bool(at), path=path, query=query,
                     port_text=port_text)


def _split_host_port(hostport: str) -> tuple[str, str]:
    if hostport.startswith("["):
        inner, bracket, after = hostport[1:].partition("]")
        if not bracket:
            raise UrlError("an IPv6 address needs its closing ']'")
        if after and not after.startswith(":"):
            raise UrlError("only ':port' may follow an IPv6 address in brackets")
        address = inner.split("%25", 1)[0] if "%25" in inner else inner  # an RFC 6874 zone: fe80::1%25eth0
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            raise UrlError("the address in brackets is not an IPv6 address") from None
        return f"[{inner}]", after[1:]
    if hostport.count(":") > 1:
        raise UrlError("an IPv6 address must be written in brackets ([::1]:554)" + ENCODING_HINT)
    host, _, port_text = hostport.partition(":")
    return host, port_text


def _check_host(host: str) -> None:
    if not host:
        raise UrlError("has no host" + ENCODING_HINT)
    if host.startswith("["):
        return
    if not host.isascii():
        raise UrlError("the host name must be ASCII (write an international name in its xn-- form)")
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise UrlError("the host is not a valid IPv4 address") from None
        return
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253 or not all(HostLabel.fullmatch(label) for label in name.split(".")):
        raise UrlError("the host is not a valid host name (letters, digits, '-' and '_' in dot-separated labels)"
                       + ENCODING_HINT)


# -- showing URLs ------------------------------------------------------------------------------------


def is_secret_name(name: str) -> bool:
    decoded = unquote_plus(name).lower()
    return any(part in decoded for part in SECRET_NAME_PARTS)


def redact_query(query: str, depth: int = 0) -> str:
    """Values of parameters whose names carry secrets hidden; bare values (``?TOKEN``) hidden too."""
    shown = []
    for part in re.split(r"([&;])", query):
        if part in ("&", ";", ""):
            shown.append(part)
            continue
        name, eq, value = part.partition("=")
        if not eq:
            shown.append(HIDDEN)
        elif is_secret_name(name):
            shown.append(f"{name}={HIDDEN}" if value else f"{name}=")
        elif "://" in value:
            shown.append(f"{name}={redact_url(value, depth + 1)}")
        elif "://" in unquote(value):
            shown.append(f"{name}={HIDDEN}")
        else:
            shown.append(part)
    return "".join(shown)


def redact_path(scheme: str, path: str) -> str:
    """RTMP(S): everything after the application name is the stream key (rtmp://host/live/KEY)."""
    if scheme not in RTMP_SCHEMES:
        return path
    segments = path.split("/")  # ['', 'live', 'KEY', ...]
    if len(segments) <= 2 or not any(segments[2:]):
        return path
    return "/".join(segments[:2]) + "/" + HIDDEN


def redact_url(url: object, depth: int = 0) -> str:
    """The URL with its secrets hidden: user info, RTMP stream keys, secret query values. Never raises."""
    if not isinstance(url, str):
        return f"<{type(url).__name__}>"
    shown_scheme = SchemeRe.match(url)
    if shown_scheme is None:
        prefix = ProtocolPrefix.match(url)
        if prefix is not None and (prefix.group(1) or "").lower() in KNOWN_SCHEMES:
            return f"{prefix.group(1)}:{HIDDEN}"  # 'rtsp:user:pw@host': not a path, not a URL
        return printable(url)
    scheme_text = bounded(shown_scheme.group(1), 32)
    try:
        parsed = parse_stream_url(url)
    except UrlError:
        return f"{scheme_text}://{HIDDEN}"
    if parsed.kind != "network":
        return printable(url)
    if depth > 3:
        return f"{scheme_text}://{HIDDEN}"
    netloc = (f"{HIDDEN}@" if parsed.has_userinfo else "") + parsed.host
    if parsed.port_text:
        netloc += f":{parsed.port_text}"
    query = f"?{redact_query(parsed.query, depth)}" if parsed.query or url.endswith("?") else ""
    return printable(f"{scheme_text}://{netloc}{redact_path(parsed.scheme, parsed.path)}{query}")


def shown_url(url: object, limit: int = 200) -> str:
    """A URL as an error message or log line echoes it: redacted, then bounded."""
    return bounded(redact_url(url), limit)


def scrub_urls(text: str) -> str:
    """Every URL inside ``text`` redacted (for log lines and tracebacks that quote one)."""
    if "://" not in text:
        return text
    return UrlInText.sub(lambda m: redact_url(m.group(0)), text)


class RedactingLogFilter(logging.Filter):
    """Installed on the log handlers: no URL secret reaches a log line, a traceback included."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError, KeyError):  # a malformed logging call: show its format, not its args
            message = f"{record.msg} (log arguments did not match the format)"
        record.msg, record.args = scrub_urls(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = scrub_urls(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = scrub_urls(record.stack_info)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Add the redacting filter to every handler of ``logger`` (the root logger by default)."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingLogFilter) for f in handler.filters):
            handler.addFilter(RedactingLogFilter())
