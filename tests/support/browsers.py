"""Finding headless Chromium and its WebDriver on PATH (no hard-coded install paths), and a minimal
W3C WebDriver client over chromedriver's HTTP API."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx

from tests.support.processes import stop_process
from tests.support.rtsp import free_tcp_port

# Headless and quiet: no background networking, no component updates, no sync (only loopback is reached)
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run")

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium() -> str | None:
    """The first Chromium-family browser on PATH (Debian: /usr/bin/chromium), or None."""
    return next((path for name in BROWSER_NAMES if (path := shutil.which(name))), None)


def chromedriver() -> str | None:
    return shutil.which("chromedriver")


class WebDriver:
    """The W3C WebDriver calls the tests need: a session, open a page, run a script, close.

    "eager" page loading: the pages keep fetching snapshots, so the load event is not waited for."""

    def __init__(self, url: str, profile: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.http = httpx.Client(base_url=url, timeout=30)
        options = {"binary": chromium(), "args": [*CHROMIUM_ARGS, *extra_args, f"--user-data-dir={profile}"]}
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "pageLoadStrategy": "eager",
                                                 "goog:chromeOptions": options}}}
        r = self.http.post("/session", json=caps)
        assert r.status_code == 200, r.text
        self.session = f"/session/{r.json()['value']['sessionId']}"

    def open(self, url: str) -> None:
        assert self.http.post(f"{self.session}/url", json={"url": url}).status_code == 200

    def run(self, script: str) -> object:
        r = self.http.post(f"{self.session}/execute/sync", json={"script": script, "args": []})
        assert r.status_code == 200, r.text
        return r.json()["value"]

    def close(self) -> None:
        self.http.delete(self.session)
        self.http.close()


def start_chromedriver() -> tuple[subprocess.Popen[bytes], str]:
    """chromedriver on a free loopback port, once it answers: (its process, its URL). Callers check first that
    ``chromium()`` and ``chromedriver()`` are there (CI installs both)."""
    driver = chromedriver()
    if driver is None:
        raise FileNotFoundError("chromedriver is not on PATH")
    port = free_tcp_port()
    proc = subprocess.Popen([driver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/status", timeout=1).json()["value"]["ready"]:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
    stop_process(proc)
    raise TimeoutError("chromedriver did not start")
