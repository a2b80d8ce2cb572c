"""The ``events:`` section of the config: rules (which streams, labels, how sure, how long), the clips' shape,
and ``events.outputs`` (MQTT and webhooks, each optional). Documented in docs/events.md and
docs/events-outputs.md.

It sits in the kernel beside ``config.py`` because the run config's root (``RunConfig.events``) composes it,
and the kernel imports no stage; the event stage (stream/events/) reads it.

Output destinations are set by the operator (the config file), never through the API. The policy follows
docs/security.md: URLs are validated whole, secrets never shown, and a relaxation is a key set on
purpose: credentials or a signature sent in clear text to a host that is not loopback need
``insecure: true``; link-local, multicast and unspecified addresses (cloud metadata endpoints, typos)
are refused outright.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from sightline.model.echo import bounded
from sightline.model.yamlconfig import StrictModel
from sightline.stream.urls import NAME_PATTERN, UrlError, parse_stream_url

MESSAGE_TYPES = ("start", "update", "end")
MessageType = Literal["start", "update", "end"]


MIN_TIMEOUT_S = 0.1  # below this a timeout only fires spuriously (an RTSP read of 6.5e-173 s "failed" the file)
MIN_BACKOFF_S = 0.01


class BackoffConfig(StrictModel):
    initial_s: float = Field(0.5, ge=MIN_BACKOFF_S, le=3600, description="first wait after a failure")
    max_s: float = Field(30.0, ge=MIN_BACKOFF_S, le=3600, description="the wait doubles up to this")

    @model_validator(mode="after")
    def _ordered(self) -> BackoffConfig:
        if self.max_s < self.initial_s:
            raise ValueError("max_s must be at least initial_s")
        return self


class MqttTlsConfig(StrictModel):
    ca_file: Path | None = Field(None, description="CA bundle to verify the broker (default: the system's)")
    cert_file: Path | None = Field(None, description="client certificate (mutual TLS)")
    key_file: Path | None = Field(None, description="the client certificate's private key")

    @model_validator(mode="after")
    def _pair(self) -> MqttTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class MqttOutputConfig(StrictModel):
    name: str = Field("mqtt", pattern=NAME_PATTERN, description="the output's label in metrics and logs")
    host: str = Field(description="broker host name or IP address")
    port: int | None = Field(None, ge=1, le=65535, description="default 1883, or 8883 with tls")
    topic_prefix: str = Field("sightline", min_length=1, max_length=128,
                              description="<prefix>/events gets every message, <prefix>/<stream>/<label> the "
                                          "retained state, <prefix>/status online/offline (retained, last will)")
    client_id: str | None = Field(None, max_length=64, description="default sightline-<random>")
    username: str | None = Field(None, max_length=256)
    password: SecretStr | None = Field(None, description="never logged or shown")
    tls: MqttTlsConfig | None = Field(None, description="connect with TLS (certificates verified)")
    qos: Literal[0, 1, 2] = 1
    retain_state: bool = Field(True, description="publish the retained <prefix>/<stream>/<label> state")
    keepalive_s: int = Field(30, ge=5, le=3600)
    publish_timeout_s: float = Field(10.0, ge=MIN_TIMEOUT_S, le=600,
                                     description="a publish not acknowledged in this time counts as a failure (it "
                                                 "is still retried)")
    reconnect: BackoffConfig = Field(default_factory=lambda: BackoffConfig(initial_s=1.0, max_s=30.0))
    queue_size: int = Field(1000, ge=1, le=100_000, description="messages waiting; more are dropped and counted")
    types: list[MessageType] = Field(list(MESSAGE_TYPES), description="message types sent to <prefix>/events")
    insecure: bool = Field(False, description="allow a user name/password without TLS to a non-loopback broker")

    @field_validator("host")
    @classmethod
    def _host(cls, host: str) -> str:
        check_host(host)
        return host

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, prefix: str) -> str:
        if any(ch in prefix for ch in "+#\0") or prefix.startswith("/") or prefix.endswith("/") or "$" in prefix:
            raise ValueError("must not hold '+', '#', '$' or NUL, nor start or end with '/'")
        return prefix

    @model_validator(mode="after")
    def _clear_text(self) -> MqttOutputConfig:
        if self.username is not None and self.tls is None and not self.insecure and not is_loopback_host(self.host):
            raise ValueError("a user name without tls would cross the network in clear text: set tls, or "
                             "insecure: true to do it on purpose")
        if self.password is not None and self.username is None:
            raise ValueError("password needs a username")
        return self

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else (8883 if self.tls is not None else 1883)


class WebhookOutputConfig(StrictModel):
    name: str = Field(pattern=NAME_PATTERN, description="the output's label in metrics and logs")
    url: str = Field(description="http(s) URL the JSON is POSTed to (validated whole; shown redacted)")
    secret: SecretStr | None = Field(None, min_length=16, description="HMAC-SHA256 key: signs each request in "
                                                                      "X-Sightline-Signature; never logged")
    timeout_s: float = Field(5.0, ge=MIN_TIMEOUT_S, le=300, description="per attempt (connect, send, answer)")
    retries: int = Field(3, ge=0, le=20, description="attempts after the first for a failure that may pass "
                                                     "(no connection, timeout, 408, 429, 5xx)")
    backoff: BackoffConfig = Field(default_factory=BackoffConfig)
    queue_size: int = Field(1000, ge=1, le=100_000, description="messages waiting; more are dropped and counted")
    types: list[MessageType] = Field(list(MESSAGE_TYPES), description="message types sent")
    insecure: bool = Field(False, description="allow plain http to a host that is not loopback")

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        if not url.lower().startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        try:
            parsed = parse_stream_url(url)
        except UrlError as exc:
            raise ValueError(f"invalid URL: {exc}") from None
        if parsed.scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL")
        if parsed.has_userinfo:
            raise ValueError("must not hold a user name or password (sign requests with secret instead)")
        check_host(parsed.host)
        return url

    @model_validator(mode="after")
    def _clear_text(self) -> WebhookOutputConfig:
        parsed = parse_stream_url(self.url)
        if parsed.scheme == "http" and not self.insecure and not is_loopback_host(parsed.host):
            raise ValueError("plain http to a host that is not loopback sends events in clear text: use https, "
                             "or insecure: true to do it on purpose")
        return self


class EventOutputsConfig(StrictModel):
    mqtt: MqttOutputConfig | None = Field(None, description="publish events to an MQTT broker")
    webhooks: list[WebhookOutputConfig] = Field(default_factory=list, max_length=32,
                                                description="POST events to these URLs")

    @model_validator(mode="after")
    def _unique(self) -> EventOutputsConfig:
        names = [w.name for w in self.webhooks] + ([self.mqtt.name] if self.mqtt is not None else [])
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"output names must be unique: {twice}")
        return self


def ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host string names without DNS, read as the resolver reads it: inet_aton's forms too
    (``0xa9fea9fe``, ``0251.0376.0251.0376``, ``2852039166`` are 169.254.169.254), and an IPv4-mapped IPv6
    address (``::ffff:169.254.169.254``) as the IPv4 address it reaches."""
    text = host[1:-1].split("%25", 1)[0] if host.startswith("[") else host
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(text)
    except ValueError:
        if not re.fullmatch(r"[0-9a-fA-FxX.]+", text) or not text[:1].isdigit():
            return None  # a host name (names never start with a digit-only numeric form the resolver takes)
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def refused_target(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Never a delivery target: link-local (cloud metadata endpoints), multicast, unspecified."""
    return address.is_link_local or address.is_multicast or address.is_unspecified


REFUSED_TARGET = "a link-local, multicast or unspecified address is not a delivery target"


def resolved_target_problem(host: str, port: int) -> str | None:
    """At delivery: None when every address ``host`` resolves to may receive events, else why not. A name is
    checked again here because it can resolve to 169.254.169.254 whatever it looked like in the config."""
    literal = ip_literal(host)
    if literal is not None:
        return f"{host}: {REFUSED_TARGET}" if refused_target(literal) else None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return None  # unresolvable now: the connection attempt fails and says so
    for *_, sockaddr in infos:
        address = ip_literal(str(sockaddr[0]))
        if address is not None and refused_target(address):
            return f"{host} resolves to {address}: {REFUSED_TARGET}"
    return None


def is_loopback_host(host: str) -> bool:
    """Loopback by its literal form only: a name other than localhost is never resolved here."""
    if host.rstrip(".").lower() == "localhost":
        return True
    address = ip_literal(host)
    return address is not None and address.is_loopback


def check_host(host: str) -> None:
    """A host name or IP literal (IPv6 bare or in brackets) that may receive events."""
    if not host or any(ch in "/?#@" for ch in host):
        raise ValueError("is not a valid host name or IP address")
    address = ip_literal(host)
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    try:
        parse_stream_url(f"tcp://{shown}:1")
    except UrlError as exc:
        raise ValueError(str(exc)) from None
    if address is not None and refused_target(address):
        raise ValueError(REFUSED_TARGET)


# In the schema, so that what the OpenAPI document lets a client send is what the service takes (a validator's
# refusal is invisible there).
StreamOrAny = Annotated[str, Field(pattern=rf"^(\*|{NAME_PATTERN[1:-1]})$", description="a stream name, or '*'")]
Label = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$",
                             description="1-200 characters, no control characters")]


class EventRule(StrictModel):
    """One rule: an event starts when a matching stream's smoothed label is one of ``labels`` with at
    least ``min_prob`` for ``min_duration_s``, and ends when it has been gone for ``end_after_s``."""

    name: str = Field(pattern=NAME_PATTERN)
    streams: list[StreamOrAny] = Field(default_factory=lambda: ["*"], min_length=1,
                                       description="stream names, or '*' for every stream")
    labels: list[Label] = Field(min_length=1, description="class names (as the model names them), or '*' for any")
    min_prob: float = Field(0.5, ge=0, le=1, description="smallest smoothed probability that counts as seen")
    min_duration_s: float = Field(1.0, ge=0, le=3600, description="seen this long before the event starts")
    end_after_s: float = Field(2.0, ge=0, le=3600, description="gone this long before the event ends")
    cooldown_s: float = Field(10.0, ge=0, le=86400,
                              description="after an event ends, no new event of this rule, stream and label "
                                          "for this long (from the event's end)")

    def matches_stream(self, stream: str) -> bool:
        return "*" in self.streams or stream in self.streams

    def matches_label(self, label: str) -> bool:
        return "*" in self.labels or label in self.labels


def label_problem(rule: EventRule, class_names: Sequence[str]) -> str | None:
    """None when every label of ``rule`` is one the model can produce ('*' matches any), else one line naming
    the unknown labels with the closest class of each: a rule on a label the model lacks would never fire."""
    known = set(class_names)
    missing = [label for label in rule.labels if label != "*" and label not in known]
    if not missing:
        return None
    named = []
    for label in missing:
        close = difflib.get_close_matches(label, class_names, n=1, cutoff=0.6) or [
            c for c in class_names if label.lower() in c.lower()][:1]
        named.append(f"{bounded(label, 80)!r} (closest: {close[0]!r})" if close else repr(bounded(label, 80)))
    classes = (", ".join(class_names) if len(class_names) <= 12
               else f"{len(class_names)} classes, listed by `sightline info MODEL`")
    return f"rule {rule.name!r}: {', '.join(named)} not among the model's classes ({classes})"


class EventsConfig(StrictModel):
    enabled: bool | None = Field(None, description="run the event engine; default: on when rules are configured "
                                                   "(turn it on with no rules to add rules through the API)")
    rules: list[EventRule] = Field(default_factory=list)
    max_rules: int = Field(256, ge=1, le=10_000,
                           description="rules in force at most, configured plus added through the API (429 "
                                       "beyond): each rule costs work on every classified frame")
    preroll_s: float = Field(3.0, ge=0, le=30, description="seconds of video kept before each event's start")
    postroll_s: float = Field(3.0, ge=0, le=60, description="seconds of video after each event's end")
    max_clip_s: float = Field(300.0, gt=0, le=3600, description="a clip is closed after this long (the event goes on)")
    clip_height: int = Field(480, ge=0, le=4320,
                             description="clips and the pre-roll are scaled down to at most this many lines "
                                         "(0: the source's size)")
    jpeg_quality: int = Field(75, ge=10, le=100, description="JPEG quality of snapshots and of pre-roll frames")
    preroll_max_mb: float = Field(32.0, gt=0, le=4096,
                                  description="pre-roll memory per stream at most (oldest frames go first)")
    max_open_clips: int = Field(4, ge=1, le=64, description="clips written at once per stream (an event beyond "
                                                            "gets a snapshot, no clip)")
    log: bool = Field(True, description="append every event message to output_dir/events.jsonl")
    history: int = Field(10_000, ge=10, le=1_000_000,
                         description="events kept for GET /api/events (read back from events.jsonl at start)")
    outputs: EventOutputsConfig = Field(default_factory=EventOutputsConfig,
                                        description="MQTT and webhooks (docs/events-outputs.md)")
    update_every_s: float = Field(5.0, gt=0, le=3600,
                                  description="an ongoing event's peak probability is published (type 'update') "
                                              "at most this often, when it rose")

    @model_validator(mode="after")
    def _unique_rules(self) -> EventsConfig:
        names = [r.name for r in self.rules]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"rules: duplicate rule name(s) {dup}")
        if len(self.rules) > self.max_rules:
            raise ValueError(f"rules: {len(self.rules)} rules, over max_rules ({self.max_rules})")
        return self

    @property
    def active(self) -> bool:
        return self.enabled if self.enabled is not None else bool(self.rules)
