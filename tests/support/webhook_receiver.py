"""A real HTTP receiver for webhook tests: ``http.server`` on 127.0.0.1 in a thread.

It records every request (headers, body, whether its HMAC signature checks out) and answers with the
next status from ``statuses`` (then 200), optionally after a delay.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    signature_ok: bool | None  # None: no secret configured on the receiver
    at: float


def signature_ok(secret: bytes, headers: dict[str, str], body: bytes, max_skew_s: float = 300) -> bool:
    """The check a receiver does: HMAC-SHA256 of '<timestamp>.<body>', compared in constant time."""
    timestamp = headers.get("x-sightline-timestamp", "")
    given = headers.get("x-sightline-signature", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > max_skew_s:
        return False
    expected = "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given)


class WebhookReceiver:
    def __init__(self, port: int = 0, secret: bytes | None = None, statuses: list[int] | None = None,
                 delays_s: list[float] | None = None) -> None:
        self.secret = secret
        self.statuses = list(statuses or [])
        self.delays_s = list(delays_s or [])
        self.received: list[Received] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                ok = None if receiver.secret is None else signature_ok(receiver.secret, headers, body)
                with receiver.lock:
                    receiver.received.append(Received(self.path, headers, body, ok, time.monotonic()))
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    delay = receiver.delays_s.pop(0) if receiver.delays_s else 0.0
                if delay:
                    time.sleep(delay)
                if ok is False:
                    status = 401
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the client gave up (timeout test)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def requests(self) -> list[Received]:
        with self.lock:
            return list(self.received)
