"""Issue #11 row 10: WebRTC ICE only from the config (no public STUN by default), host candidates on the
configured interfaces (loopback for a loopback service), a malformed SDP is 422 and its peer is closed."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import aioice.ice
import aiortc.rtcicetransport
import httpx
import pytest
import sightline.stream.sources.webrtc_ingest
from aiortc import RTCPeerConnection
from sightline.stream.config import ServerConfig
from sightline.stream.ice import IcePolicy, host_candidates, keep_reachable_candidates
from sightline.stream.pipeline.pipeline import Pipeline

from tests.stream.sources.test_webrtc import Camera
from tests.support.service import make_service
from tests.support.webrtc import loopback_peer, make_offer

pytestmark = pytest.mark.timeout(90)


def candidate_hosts(sdp: str) -> list[str]:
    return [line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")]


def candidate_types(sdp: str) -> set[str]:
    return {line.split()[7] for line in sdp.splitlines() if line.startswith("a=candidate:")}


@pytest.fixture
async def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Pipeline, httpx.AsyncClient,
                                                                                            list[dict[str, object]]]]:
    created: list[dict[str, object]] = []  # the keyword arguments of every aioice Connection aiortc makes
    original = aiortc.rtcicetransport.Connection

    def recording(*args: object, **kwargs: object) -> object:
        created.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(aiortc.rtcicetransport, "Connection", recording)
    pipeline, app = make_service(tmp_path, ("cam", "idle"))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
            yield pipeline, client, created
    finally:
        await asyncio.to_thread(pipeline.shutdown)


async def test_a_loopback_service_answers_with_loopback_host_candidates_and_no_stun_server(service) -> None:
    pipeline, client, created = service
    peer = loopback_peer()
    peer.addTrack(Camera())
    await make_offer(peer)
    created.clear()  # the client's own connection is not the service's
    r = await client.post("/api/streams/cam/webrtc", json={"sdp": peer.localDescription.sdp, "type": "offer"})
    try:
        assert r.status_code == 200, r.text
        answer = r.json()["sdp"]
        hosts = candidate_hosts(answer)
        assert hosts and all(ipaddress.ip_address(h).is_loopback for h in hosts), hosts
        assert candidate_types(answer) == {"host"}  # no server-reflexive (STUN) or relay candidates
        assert created, "the service made no ICE connection"
        for kwargs in created:
            assert kwargs.get("stun_server") is None and kwargs.get("turn_server") is None, kwargs
    finally:
        await peer.close()


async def test_a_malformed_offer_is_422_and_its_peer_is_closed(service, monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline, client, _ = service
    source = pipeline.get("idle").source
    made: list[RTCPeerConnection] = []  # every peer the service makes for these offers

    def peer_factory(*args: object, **kwargs: object) -> RTCPeerConnection:
        made.append(RTCPeerConnection(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(sightline.stream.sources.webrtc_ingest, "RTCPeerConnection", peer_factory)
    bad = ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\n"
           "a=rtpmap:96 VP8/90000\r\na=mid:0\r\na=sendonly\r\n")  # no ICE credentials: aiortc refuses it
    for sdp in (bad, bad + "a=candidate:1 1 udp 1 127.0.0.1 notaport typ host\r\n", "v=0\r\nm=video x\r\n"):
        r = await client.post("/api/streams/idle/webrtc", json={"sdp": sdp, "type": "offer"})
        assert r.status_code == 422, (sdp, r.status_code, r.text)
        assert "Traceback" not in r.text and len(r.json()["detail"]) < 400
        assert source._peer is None  # closed, not left half-open
    assert len(made) == 3 and all(p.connectionState == "closed" for p in made)
    assert (await client.get("/api/streams/idle")).json()["state"] == "connecting"  # still waiting for a publisher


def test_ice_policy_follows_the_bind_address_and_the_config() -> None:
    default = IcePolicy.from_server(ServerConfig())
    assert default.addresses == ("127.0.0.1",) and default.loopback_only
    assert default.configuration().iceServers == []  # a list: aiortc adds its public STUN server only for None
    assert IcePolicy.from_server(ServerConfig(host="::1")).addresses == ("::1",)
    assert IcePolicy.from_server(ServerConfig(host="192.168.7.2", token="t")).addresses == ("192.168.7.2",)
    assert IcePolicy.from_server(ServerConfig(host="0.0.0.0", token="t")).addresses is None  # every interface
    configured = IcePolicy.from_server(ServerConfig(webrtc={
        "interfaces": ["10.0.0.5"], "ice_servers": [{"urls": ["turn:turn.internal:3478"], "username": "u",
                                                     "credential": "c"}]}))
    assert configured.addresses == ("10.0.0.5",) and not configured.loopback_only
    (server,) = configured.configuration().iceServers
    assert server.urls == ["turn:turn.internal:3478"] and server.username == "u"
    with pytest.raises(ValueError, match="not an IP address"):
        ServerConfig(webrtc={"interfaces": ["eth0"]})
    with pytest.raises(ValueError, match="stun:"):
        ServerConfig(webrtc={"ice_servers": [{"urls": ["http://stun.example"]}]})


def test_a_loopback_service_ignores_remote_candidates_it_must_not_check() -> None:
    offer = ("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
             "a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host\r\n"
             "a=candidate:2 1 udp 2122260223 192.168.1.9 50001 typ host\r\n"
             "a=candidate:3 1 udp 2122260223 a1b2c3.local 50002 typ host\r\n"
             "a=candidate:4 1 udp 1686052607 203.0.113.7 50003 typ srflx raddr 0.0.0.0 rport 0\r\n"
             "a=candidate:bad\r\n")
    kept = keep_reachable_candidates(offer, IcePolicy())
    assert candidate_hosts(kept) == ["127.0.0.1"]
    assert "m=video" in kept
    lan = IcePolicy(addresses=("192.168.1.2",))
    assert keep_reachable_candidates(offer, lan) == offer  # a LAN service checks what the publisher offers


async def test_a_loopback_ice_socket_ignores_datagrams_from_other_addresses() -> None:
    received: list[bytes] = []

    class Receiver:
        def data_received(self, data: bytes, component: int) -> None:
            received.append(data)

    with host_candidates(("127.0.0.1",)):
        guarded = aioice.ice.StunProtocol(Receiver())
    with host_candidates(None):  # aioice's own choice of interfaces: no such filter
        open_socket = aioice.ice.StunProtocol(Receiver())
    for proto in (guarded, open_socket):
        proto.local_candidate = SimpleNamespace(component=1)
    guarded.datagram_received(b"not stun", ("192.168.1.9", 5000))
    guarded.datagram_received(b"not stun", ("::ffff:10.0.0.1", 5000, 0, 0))
    assert received == []
    guarded.datagram_received(b"from loopback", ("127.0.0.1", 5000))
    open_socket.datagram_received(b"from the lan", ("192.168.1.9", 5000))
    assert received == [b"from loopback", b"from the lan"]
