"""Where the service's WebRTC (ICE) traffic may go: servers from the config only, host candidates on chosen addresses.

aiortc's defaults are wrong for a service: ``RTCPeerConnection()`` without a configuration sends STUN
to Google's public server, and aioice offers every non-loopback address of the host as a candidate.
Here:

- ``RTCConfiguration(iceServers=...)`` comes from ``server.webrtc.ice_servers`` and is empty by default;
  an empty list (not None) is what keeps aiortc from adding its default STUN server.
- Host candidates: ``server.webrtc.interfaces`` when set; else 127.0.0.1 (or ::1) when the server binds
  a loopback address, the bind address when it binds one address, and aioice's own choice (every
  non-loopback address) only when it binds a wildcard (0.0.0.0, ::).
- A service whose candidates are all loopback ignores the publisher's non-loopback candidates (it could
  not reach them from a loopback socket; checking them would only send packets off loopback), and its
  ICE sockets drop datagrams from non-loopback sources, so it never answers one (a peer-reflexive
  candidate learnt from such a datagram would be a non-loopback destination).

aioice has no interface filter: ``gather_candidates`` calls the module function
``aioice.ice.get_host_addresses`` and makes its sockets with the module class ``StunProtocol``.
``host_candidates`` sets a context variable; a small wrapper around that function and a subclass of
that class (installed once, idempotently) apply the chosen addresses inside that context only; every
other aioice user in the process keeps the original behaviour.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer
from sightline.stream.config import ServerConfig

_HOST_ADDRESSES: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "sightline_ice_host_addresses", default=None)
_LOOPBACK_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("sightline_ice_loopback_only", default=False)
WILDCARDS = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class IcePolicy:
    servers: tuple[RTCIceServer, ...] = ()
    addresses: tuple[str, ...] | None = ("127.0.0.1",)  # None: aioice's choice (every non-loopback address)

    @classmethod
    def from_server(cls, server: ServerConfig) -> IcePolicy:
        webrtc = server.webrtc
        servers = tuple(RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
                        for s in webrtc.ice_servers)
        if webrtc.interfaces is not None:
            return cls(servers, tuple(webrtc.interfaces))
        return cls(servers, default_addresses(server.host))

    @property
    def loopback_only(self) -> bool:
        return self.addresses is not None and all(ipaddress.ip_address(a).is_loopback for a in self.addresses)

    def configuration(self) -> RTCConfiguration:
        return RTCConfiguration(iceServers=list(self.servers))  # a list, even empty: never aiortc's default STUN


def default_addresses(bind_host: str) -> tuple[str, ...] | None:
    host = bind_host.strip("[]")
    if host == "localhost":
        return ("127.0.0.1",)
    if host in WILDCARDS:
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return ("127.0.0.1",)  # a host name: no interface to infer; stay on loopback (set server.webrtc.interfaces)
    if address.is_loopback:
        return ("::1",) if address.version == 6 else ("127.0.0.1",)
    return (str(address),)


@contextlib.contextmanager
def host_candidates(addresses: Sequence[str] | None) -> Iterator[None]:
    """Inside this block (and tasks started from it) aioice gathers host candidates on ``addresses`` only."""
    _install()
    chosen = None if addresses is None else tuple(addresses)
    token = _HOST_ADDRESSES.set(chosen)
    loopback = _LOOPBACK_ONLY.set(bool(chosen) and all(_is_loopback(a) for a in chosen))
    try:
        yield
    finally:
        _LOOPBACK_ONLY.reset(loopback)
        _HOST_ADDRESSES.reset(token)


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def _install() -> None:
    _install_address_hook()
    _install_protocol_hook()


def _install_protocol_hook() -> None:
    base = aioice.ice.StunProtocol
    if getattr(base, "_sightline", False):
        return

    class ScopedStunProtocol(base):  # type: ignore[misc,valid-type]
        """An ICE socket made in a loopback-only context answers loopback sources only."""

        _sightline = True

        def __init__(self, receiver: aioice.ice.Connection) -> None:
            super().__init__(receiver)
            self.loopback_only = _LOOPBACK_ONLY.get()

        def datagram_received(self, data: bytes | str, addr: tuple[Any, ...]) -> None:
            if self.loopback_only and not _is_loopback(str(addr[0])):
                return
            super().datagram_received(data, addr)

    aioice.ice.StunProtocol = ScopedStunProtocol


def _install_address_hook() -> None:
    current: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses
    if getattr(current, "_sightline", False):
        return

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        chosen = _HOST_ADDRESSES.get()
        if chosen is None:
            return current(use_ipv4, use_ipv6)
        return [a for a in chosen if (use_ipv4 if ipaddress.ip_address(a).version == 4 else use_ipv6)]

    get_host_addresses._sightline = True  # type: ignore[attr-defined]
    aioice.ice.get_host_addresses = get_host_addresses


def keep_reachable_candidates(sdp: str, policy: IcePolicy) -> str:
    """Drop the remote candidates a loopback-only service must not check (anything not on loopback,
    including mDNS ``.local`` names, whose resolution would multicast on the LAN)."""
    if not policy.loopback_only:
        return sdp
    lines = sdp.splitlines()
    kept = [line for line in lines if not line.startswith("a=candidate:") or _loopback_candidate(line)]
    return "\r\n".join(kept) + "\r\n"


def _loopback_candidate(line: str) -> bool:
    fields = line.split()
    if len(fields) < 8:
        return False  # malformed: leave it out rather than let aioice choke on it
    try:
        return ipaddress.ip_address(fields[4]).is_loopback
    except ValueError:
        return False
