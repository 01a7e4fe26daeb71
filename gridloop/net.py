"""Client addresses: who is on the other end of a request, and the key rate limits count it under.

A service behind a reverse proxy sees the proxy as its peer. The forwarded address (X-Forwarded-For)
is believed only when the peer is a trusted proxy (`GRIDLOOP_TRUSTED_PROXIES`, CIDRs, none by
default): anyone else can write that header. Walking X-Forwarded-For from the right, every hop our
own proxies appended is skipped; the first address no proxy of ours vouches for is the client.

An IPv6 client usually holds a whole /64 (privacy addresses rotate inside it), so limits key IPv6
by its /64 and IPv4 by the address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(value: str | Iterable[str] | None) -> tuple[IPNetwork, ...]:
    """CIDRs (or plain addresses) from a comma-separated setting or a list; ValueError on a bad one."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in items if item.strip())


def _address(text: str) -> IPAddress | None:
    """An address from a header hop or a peer: brackets and an IPv4 port dropped; None when not one."""
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [2001:db8::1]:443
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # 203.0.113.7:5555
        text = text.split(":")[0]
    try:
        found = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(found, ipaddress.IPv6Address) and found.ipv4_mapped is not None:
        return found.ipv4_mapped
    return found


def _trusted(address: IPAddress, proxies: Sequence[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in proxies)


def _peer_and_forwarded(scope_or_request: Any) -> tuple[str | None, list[str]]:
    """The peer address and the X-Forwarded-For values (in order) of an ASGI scope or a request."""
    scope: Mapping[str, Any] = getattr(scope_or_request, "scope", scope_or_request)
    client = scope.get("client")
    peer = str(client[0]) if client else None
    forwarded = [
        value.decode("latin-1")
        for name, value in scope.get("headers") or ()
        if name.lower() == b"x-forwarded-for"
    ]
    return peer, forwarded


def client_address(scope_or_request: Any, trusted_proxies: Sequence[IPNetwork] = ()) -> str | None:
    """The client's address: the peer, or, when the peer is a trusted proxy, the rightmost address in
    X-Forwarded-For that is not a trusted proxy itself (None when the peer is unknown)."""
    peer, forwarded = _peer_and_forwarded(scope_or_request)
    if peer is None:
        return None
    peer_address = _address(peer)
    if peer_address is None or not trusted_proxies or not _trusted(peer_address, trusted_proxies):
        return str(peer_address) if peer_address is not None else peer
    hops = [hop for value in forwarded for hop in value.split(",") if hop.strip()]
    client = peer_address
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break  # garbage written by the client: the last hop our proxies vouch for stands
        client = address
        if not _trusted(address, trusted_proxies):
            break
    return str(client)


def address_key(address: str | None) -> str | None:
    """What limits count an address under: IPv4 by the address, IPv6 by its /64 network."""
    if not address:
        return None
    found = _address(address)
    if found is None:
        return address
    if isinstance(found, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(found) >> 64 << 64, 64)))
    return str(found)
