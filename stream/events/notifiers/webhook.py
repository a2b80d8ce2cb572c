"""Webhook output: each event message POSTed as JSON, retried with backoff, signed when a secret is set.

Signature (when ``secret`` is set): ``X-Sightline-Signature: sha256=<hex>``, the HMAC-SHA256 with the
secret as key of ``<X-Sightline-Timestamp>.<body>`` (the timestamp in whole Unix seconds, a dot, the
raw body bytes). A receiver recomputes it over the bytes it got, compares in constant time, and
refuses a timestamp far from its clock (replays). A retry is signed afresh with its own timestamp.

Redirects are not followed, proxy settings from the environment are not used (the request goes
where the URL points and nowhere else), and the URL is shown only redacted. Before each attempt the host
is resolved and refused if any address is link-local, multicast or unspecified; the answer's body is
never read, only its status.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from typing import Any

import httpx
from sightline.stream.event_config import WebhookOutputConfig, resolved_target_problem
from sightline.stream.events.notifiers.metrics import BoundOutputMetrics
from sightline.stream.events.notifiers.worker import GiveUp, RateLimitedLog, Stopped
from sightline.stream.urls import redact_url, scrub_urls

SIGNATURE_HEADER = "X-Sightline-Signature"
TIMESTAMP_HEADER = "X-Sightline-Timestamp"
RETRYABLE_STATUS = frozenset({408, 425, 429})


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def encode(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def backoff_s(initial_s: float, max_s: float, attempt: int) -> float:
    return min(max_s, initial_s * (2 ** min(attempt, 30)))


class WebhookDelivery:
    def __init__(self, config: WebhookOutputConfig, metrics: BoundOutputMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.shown_url = redact_url(config.url)
        url = httpx.URL(config.url)
        self._host, self._port = url.host, url.port or (443 if url.scheme == "https" else 80)
        self._secret = config.secret.get_secret_value().encode() if config.secret is not None else None
        self._client: httpx.Client | None = None
        self._log = RateLimitedLog()

    def start(self) -> None:
        self._client = httpx.Client(timeout=httpx.Timeout(self.config.timeout_s), follow_redirects=False,
                                    trust_env=False, headers={"User-Agent": "sightline-events"})
        self.metrics.up.set(1)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def deliver(self, msg: dict[str, Any], abort: threading.Event) -> None:
        assert self._client is not None, "start() first"
        body = encode(msg)
        delivery_id = uuid.uuid4().hex
        event_id = str(msg.get("event", {}).get("id", ""))
        for attempt in range(self.config.retries + 1):
            if abort.is_set():
                raise Stopped
            headers = {"Content-Type": "application/json", "X-Sightline-Delivery": delivery_id,
                       "X-Sightline-Event-Type": str(msg.get("type", "")), "X-Sightline-Event-Id": event_id,
                       "X-Sightline-Attempt": str(attempt + 1)}
            if self._secret is not None:
                timestamp = str(int(time.time()))
                headers[TIMESTAMP_HEADER] = timestamp
                headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, body)
            reason, detail, retry = self._attempt(body, headers)
            if reason is None:
                self.metrics.up.set(1)
                return
            self.metrics.failures[reason].inc()
            self.metrics.up.set(0)
            self._log.warning(f"attempt-{reason}", "event output %s: POST to %s failed (attempt %d of %d): %s",
                              self.config.name, self.shown_url, attempt + 1, self.config.retries + 1, detail)
            if not retry:
                raise GiveUp("rejected", detail)
            if attempt < self.config.retries and abort.wait(
                    backoff_s(self.config.backoff.initial_s, self.config.backoff.max_s, attempt)):
                raise Stopped
        raise GiveUp("retries_exhausted", f"{self.config.retries + 1} attempts failed")

    def _attempt(self, body: bytes, headers: dict[str, str]) -> tuple[str | None, str, bool]:
        """(failure reason or None, what happened, whether a retry may pass)."""
        assert self._client is not None
        problem = resolved_target_problem(self._host, self._port)
        if problem is not None:
            return "rejected", problem, False
        try:  # the status is all that counts: the body is never read (a 400 MB answer would be held whole)
            with self._client.stream("POST", self.config.url, content=body, headers=headers) as response:
                status = response.status_code
        except httpx.TimeoutException:
            return "timeout", f"no answer within {self.config.timeout_s:g} s", True
        except httpx.TransportError as exc:
            return "connect", scrub_urls(f"{type(exc).__name__}: {exc}")[:200], True
        if 200 <= status < 300:
            return None, "", False
        retry = status in RETRYABLE_STATUS or status >= 500
        return "rejected", f"HTTP {status}", retry
