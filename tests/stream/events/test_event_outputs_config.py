"""The events.outputs config: URLs validated whole, clear-text secrets refused unless on purpose, secrets hidden."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sightline.model.errors import ConfigError
from sightline.model.yamlconfig import validate
from sightline.stream.event_config import EventOutputsConfig
from sightline.stream.events.notifiers.mqtt import topic_part

SECRET = "0123456789abcdef-secret"


def webhook(url: str, **extra) -> dict:
    return {"webhooks": [{"name": "ops", "url": url, **extra}]}


@pytest.mark.parametrize("url", [
    "https://hooks.example.com/sightline", "http://127.0.0.1:9000/in", "http://localhost/in", "http://[::1]:80/",
    "http://10.0.0.5/in",  # plain http off loopback only with insecure (below)
])
def test_accepted_webhook_urls(url: str) -> None:
    extra = {"insecure": True} if "10.0.0.5" in url else {}
    config = EventOutputsConfig.model_validate(webhook(url, **extra))
    assert config.webhooks[0].url == url


@pytest.mark.parametrize(("url", "why"), [
    ("ftp://example.com/x", "http:// or https://"),
    ("file:///etc/passwd", "http:// or https://"),
    ("https://user:pw@example.com/", "user name or password"),
    ("https://exa mple.com/", "white space"),
    ("https://example.com/#frag", "fragment"),
    ("http://169.254.169.254/latest/meta-data", "link-local"),
    ("https://[fe80::1]/", "link-local"),
    ("https://0.0.0.0/", "unspecified"),
    # 169.254.169.254 as the resolver also reads it: hex, dotted hex, octal, IPv4-mapped IPv6
    ("https://0xa9fea9fe/latest/meta-data", "link-local"),
    ("https://0xa9.0xfe.0xa9.0xfe/latest/meta-data", "link-local"),
    ("https://0251.0376.0251.0376/latest/meta-data", "not a valid IPv4 address"),  # refused by the URL check
    ("https://[::ffff:169.254.169.254]/latest/meta-data", "link-local"),
    ("https://[::ffff:a9fe:a9fe]/latest/meta-data", "link-local"),
    ("http://10.0.0.5/in", "clear text"),
    ("http://hooks.example.com/in", "clear text"),
    ("https://example.com:99999/", "port"),
])
def test_refused_webhook_urls_never_echo_the_url(url: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:  # as the config loader reports it
        validate(webhook(url), EventOutputsConfig, "run.yaml")
    text = str(info.value)
    assert why in text and "webhooks[0]" in text
    assert "pw@" not in text and "meta-data" not in text


def test_mqtt_credentials_need_tls_off_loopback_and_are_never_shown() -> None:
    plain = {"host": "broker.lan", "username": "cam", "password": SECRET}
    with pytest.raises(ValidationError, match="clear text"):
        EventOutputsConfig.model_validate({"mqtt": plain})
    for ok in ({**plain, "tls": {}}, {**plain, "insecure": True}, {**plain, "host": "127.0.0.1"}):
        config = EventOutputsConfig.model_validate({"mqtt": ok})
        assert SECRET not in repr(config) and SECRET not in config.model_dump_json()
    assert EventOutputsConfig.model_validate({"mqtt": {**plain, "tls": {}}}).mqtt.effective_port == 8883
    assert EventOutputsConfig.model_validate({"mqtt": {"host": "::1"}}).mqtt.effective_port == 1883


def test_webhook_secret_is_never_shown_and_must_be_long_enough() -> None:
    config = EventOutputsConfig.model_validate(webhook("https://example.com/", secret=SECRET))
    assert SECRET not in repr(config) and SECRET not in config.model_dump_json()
    with pytest.raises(ValidationError, match="at least 16"):
        EventOutputsConfig.model_validate(webhook("https://example.com/", secret="short"))


@pytest.mark.parametrize("bad", [
    {"mqtt": {"host": "b", "topic_prefix": "a/#"}},
    {"mqtt": {"host": "b", "topic_prefix": "/a"}},
    {"mqtt": {"host": "b/c"}},
    {"mqtt": {"host": "224.0.0.1"}},
    {"mqtt": {"host": "0xa9fea9fe"}},
    {"mqtt": {"host": "0xe0.0.0.1"}},
    {"mqtt": {"host": "::ffff:169.254.169.254"}},
    {"mqtt": {"host": "b", "password": SECRET}},
    {"mqtt": {"host": "b", "tls": {"cert_file": "/c.pem"}}},
    {"mqtt": {"host": "b", "qos": 3}},
    {"mqtt": {"host": "b", "hostname": "typo"}},
    {"webhooks": [{"name": "a", "url": "https://x.org/"}, {"name": "a", "url": "https://y.org/"}]},
    {"webhooks": [{"name": "a b", "url": "https://x.org/"}]},
    {"webhooks": [{"name": "a", "url": "https://x.org/", "types": ["begin"]}]},
    {"webhooks": [{"name": "a", "url": "https://x.org/", "backoff": {"initial_s": 5, "max_s": 1}}]},
])
def test_config_errors(bad: dict) -> None:
    with pytest.raises(ValidationError):
        EventOutputsConfig.model_validate(bad)


def test_topic_levels_are_safe() -> None:
    assert topic_part("golden retriever") == "golden_retriever"
    assert topic_part("a/b+#c") == "a_b__c"
    assert topic_part("") == "_"


def test_every_key_is_documented_with_its_default() -> None:
    from pathlib import Path

    from pydantic import BaseModel
    from sightline.stream.event_config import MqttOutputConfig, WebhookOutputConfig

    doc = (Path(__file__).resolve().parents[3] / "docs" / "events-outputs.md").read_text()

    def keys(model: type[BaseModel], prefix: str = "") -> list[str]:
        out = []
        for name, field in model.model_fields.items():
            nested = field.annotation if isinstance(field.annotation, type) else None
            if nested is not None and issubclass(nested, BaseModel):
                out += keys(nested, f"{prefix}{name}.")
            else:
                out.append(f"{prefix}{name}")
        return out

    missing = [k for m in (MqttOutputConfig, WebhookOutputConfig) for k in keys(m) if f"`{k}`" not in doc]
    assert not missing, missing


def test_the_documented_example_is_valid() -> None:
    import re
    from pathlib import Path

    import yaml

    doc = (Path(__file__).resolve().parents[3] / "docs" / "events-outputs.md").read_text()
    example = yaml.safe_load(re.search(r"```yaml\n(.*?)```", doc, re.S).group(1).replace("rules: [...]", "rules: []"))
    config = EventOutputsConfig.model_validate(example["events"]["outputs"])
    assert config.mqtt is not None and config.mqtt.effective_port == 8883
    assert config.webhooks[0].types == ["start", "end"]


def test_a_host_name_is_checked_again_against_what_it_resolves_to_at_delivery(monkeypatch) -> None:
    import socket

    from sightline.stream.event_config import resolved_target_problem

    answers = {"metadata.example": "169.254.169.254", "hooks.example": "192.0.2.10"}

    def resolve(host, port, *args, **kwargs):  # no DNS in tests: the resolver's answer, as a rebinding name gives it
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    assert resolved_target_problem("metadata.example", 443) == (
        "metadata.example resolves to 169.254.169.254: a link-local, multicast or unspecified address is not a "
        "delivery target")
    assert resolved_target_problem("hooks.example", 443) is None
    assert resolved_target_problem("0xa9fea9fe", 80) is not None and resolved_target_problem("127.0.0.1", 80) is None
