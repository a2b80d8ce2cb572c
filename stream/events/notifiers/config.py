"""The ``events.outputs`` config section: MQTT and webhooks, each optional.

Destinations are set by the operator (the config file), never through the API. The policy follows
docs/security.md: URLs are validated whole, secrets never shown, and a relaxation is a key set on
purpose: credentials or a signature sent in clear text to a host that is not loopback need
``insecure: true``; link-local, multicast and unspecified addresses (cloud metadata endpoints, typos)
are refused outright.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from sightline.model.yamlconfig import StrictModel
from sightline.stream.urls import UrlError, parse_stream_url

OUTPUT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MESSAGE_TYPES = ("start", "update", "end")
MessageType = Literal["start", "update", "end"]


class BackoffConfig(StrictModel):
    initial_s: float = Field(0.5, gt=0, le=3600, description="first wait after a failure")
    max_s: float = Field(30.0, gt=0, le=3600, description="the wait doubles up to this")

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
    name: str = Field("mqtt", pattern=OUTPUT_NAME_PATTERN, description="the output's label in metrics and logs")
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
    publish_timeout_s: float = Field(10.0, gt=0, le=600, description="a publish not acknowledged in this time "
                                                                     "counts as a failure (it is still retried)")
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
    name: str = Field(pattern=OUTPUT_NAME_PATTERN, description="the output's label in metrics and logs")
    url: str = Field(description="http(s) URL the JSON is POSTed to (validated whole; shown redacted)")
    secret: SecretStr | None = Field(None, min_length=16, description="HMAC-SHA256 key: signs each request in "
                                                                      "X-Sightline-Signature; never logged")
    timeout_s: float = Field(5.0, gt=0, le=300, description="per attempt (connect, send, answer)")
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
    text = host[1:-1].split("%25", 1)[0] if host.startswith("[") else host
    try:
        return ipaddress.ip_address(text)
    except ValueError:
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
    shown = f"[{host}]" if address is not None and address.version == 6 and not host.startswith("[") else host
    try:
        parse_stream_url(f"tcp://{shown}:1")
    except UrlError as exc:
        raise ValueError(str(exc)) from None
    if address is not None and (address.is_link_local or address.is_multicast or address.is_unspecified):
        raise ValueError("a link-local, multicast or unspecified address is not a delivery target")
