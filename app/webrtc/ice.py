"""Which local addresses ICE offers as host candidates (CALLBRIDGE_WEBRTC_HOST_ADDRESSES).

aioice gathers a host candidate on every interface address except loopback, and has no setting to change
that. A server whose clients reach it at known addresses (a loopback-only test machine, a host with a
public address beside private ones) names them; the whole process then offers exactly those. Empty keeps
aioice's own choice.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence

#: aioice's own choice, kept when replaced (aioice is imported only when ICE is first set up).
_discovered: Callable[[bool, bool], list[str]] | None = None


def parse_host_addresses(value: str) -> list[str]:
    """`127.0.0.1, ::1` → the addresses; ValueError for anything that is not an IP address."""
    addresses = [item.strip() for item in value.split(",") if item.strip()]
    for address in addresses:
        ipaddress.ip_address(address)  # raises ValueError
    return addresses


def use_host_addresses(addresses: Sequence[str]) -> None:
    """Offer exactly `addresses` as ICE host candidates from now on (empty: aioice's own choice)."""
    global _discovered
    import aioice.ice

    if _discovered is None:
        _discovered = aioice.ice.get_host_addresses
    if not addresses:
        aioice.ice.get_host_addresses = _discovered
        return
    chosen = list(addresses)

    def configured(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (use_ipv4 if ipaddress.ip_address(a).version == 4 else use_ipv6)]

    aioice.ice.get_host_addresses = configured
