"""Keep WebRTC test traffic on loopback.

aioice gathers host candidates from every interface except loopback; on a test machine the only
peer is on this host, so restrict gathering to 127.0.0.1 and nothing leaves the loopback range.
"""

from __future__ import annotations

import aioice.ice
import pytest


def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
