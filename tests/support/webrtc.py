"""WebRTC test peers that stay on loopback.

The service restricts its own ICE (stream/ice.py: no STUN server by default, host candidates on
127.0.0.1 for a loopback-bound service). A test's client peer is an ordinary aiortc peer, so it gets
the same treatment here: no ICE servers (aiortc would otherwise use Google's public STUN server) and
host candidates on 127.0.0.1 only.
"""

from __future__ import annotations

import aioice.ice
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from sightline.stream.ice import host_candidates

LOOPBACK = ("127.0.0.1",)


def loopback_peer() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


async def make_offer(peer: RTCPeerConnection) -> None:
    """createOffer + setLocalDescription (which gathers), gathering on loopback only."""
    with host_candidates(LOOPBACK):
        await peer.setLocalDescription(await peer.createOffer())


def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Process-wide: every aioice user gathers on 127.0.0.1 (masks the service's own policy: prefer make_offer)."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
