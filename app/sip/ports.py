"""The RTP port range: an even port for RTP and the next one for RTCP (RFC 3550 §11), per call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

MIN_PORT = 1024
MAX_PORT = 65535


class RtpPortsExhausted(OSError):
    """No even port of the range could be bound together with its RTCP neighbour."""


class _Tracked(asyncio.DatagramProtocol):
    """Passes everything to the caller's protocol and says when the socket is really closed.

    asyncio closes a datagram socket a loop turn after `transport.close()`: the port goes back to the
    range only then, or the next bind of it would fail.
    """

    def __init__(self, inner: asyncio.DatagramProtocol, on_lost: Callable[[], None]) -> None:
        self._inner = inner
        self._on_lost = on_lost
        self.datagram_received = inner.datagram_received  # type: ignore[method-assign]  # no extra hop
        self.error_received = inner.error_received  # type: ignore[method-assign]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._inner.connection_lost(exc)
        self._on_lost()


@dataclass
class BoundPair:
    """An RTP transport on an even port and its RTCP transport on port + 1; close() frees the pair."""

    port: int
    rtp: asyncio.DatagramTransport
    rtcp: asyncio.DatagramTransport
    _closed: bool = field(default=False, repr=False)

    def close(self) -> None:
        """Close both transports; the port returns to the range once both sockets are closed."""
        if self._closed:
            return
        self._closed = True
        self.rtp.close()
        self.rtcp.close()


class RtpPortRange:
    """Even RTP ports `first`..`last` (RTCP on each + 1), handed out round-robin.

    A port is reserved before its bind is awaited, so concurrent calls never race for one port; ports
    another process holds are skipped.
    """

    def __init__(self, first: int, last: int) -> None:
        if not MIN_PORT <= first <= MAX_PORT or not MIN_PORT <= last <= MAX_PORT:
            raise ValueError(f"RTP ports must be {MIN_PORT}-{MAX_PORT}, got {first}-{last}")
        if first > last:
            raise ValueError(f"RTP port range starts after it ends: {first}-{last}")
        self.first = first + (first % 2)  # RTP takes the even port of each pair
        self.last = last
        if self.first + 1 > last:
            raise ValueError(f"RTP port range {first}-{last} holds no even port with its RTCP port above it")
        self._next = self.first
        self._reserved: set[int] = set()

    @classmethod
    def parse(cls, spec: str) -> RtpPortRange:
        """A range from "10000-20000" (ValueError with the reason when malformed)."""
        first_text, dash, last_text = spec.strip().partition("-")
        if not dash or not first_text.strip().isdigit() or not last_text.strip().isdigit():
            raise ValueError(f"RTP port range must look like 10000-20000, got {spec!r}")
        return cls(int(first_text), int(last_text))

    @property
    def pair_count(self) -> int:
        """How many RTP/RTCP pairs the range holds."""
        return (self.last - 1 - self.first) // 2 + 1

    @property
    def in_use(self) -> int:
        """Pairs handed out and not yet closed."""
        return len(self._reserved)

    async def bind_pair(
        self, host: str, rtp: asyncio.DatagramProtocol, rtcp: asyncio.DatagramProtocol
    ) -> BoundPair:
        """Bind `rtp` and `rtcp` on the next free even port and port + 1 of `host`.

        Raises RtpPortsExhausted after one full turn of the range without success.
        """
        loop = asyncio.get_running_loop()
        for _ in range(self.pair_count):
            port = self._take_next()
            if port is None:
                break
            release = _after_both(lambda port=port: self.release(port))
            try:
                rtp_transport = await _bind(loop, host, port, _Tracked(rtp, release))
            except OSError:
                self.release(port)
                continue
            try:
                rtcp_transport = await _bind(loop, host, port + 1, _Tracked(rtcp, release))
            except OSError:
                rtp_transport.close()  # its connection_lost is the first of the two calls
                release()
                continue
            return BoundPair(port, rtp_transport, rtcp_transport)
        raise RtpPortsExhausted(f"no free RTP port pair in {self.first}-{self.last} on {host}")

    def release(self, port: int) -> None:
        """Give `port` back (done when a pair's sockets have closed)."""
        self._reserved.discard(port)

    def _take_next(self) -> int | None:
        """Reserve the next unreserved even port, wrapping around; None when all are reserved."""
        for _ in range(self.pair_count):
            port = self._next
            self._next = port + 2 if port + 3 <= self.last else self.first
            if port not in self._reserved:
                self._reserved.add(port)
                return port
        return None

    def __repr__(self) -> str:
        return f"RtpPortRange({self.first}, {self.last})"


async def _bind(
    loop: asyncio.AbstractEventLoop, host: str, port: int, protocol: asyncio.DatagramProtocol
) -> asyncio.DatagramTransport:
    transport, _ = await loop.create_datagram_endpoint(lambda: protocol, local_addr=(host, port))
    return transport


def _after_both(callback: Callable[[], None]) -> Callable[[], None]:
    """A function that runs `callback` on its second call (both sockets of a pair closed)."""
    calls = 0

    def count() -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            callback()

    return count
