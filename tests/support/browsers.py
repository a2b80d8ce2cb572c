"""Finding headless Chromium and its WebDriver on PATH (no hard-coded install paths)."""

from __future__ import annotations

import shutil

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium() -> str | None:
    """The first Chromium-family browser on PATH (Debian: /usr/bin/chromium), or None."""
    return next((path for name in BROWSER_NAMES if (path := shutil.which(name))), None)


def chromedriver() -> str | None:
    return shutil.which("chromedriver")
