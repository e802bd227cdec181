"""The stream end of a call session, as CallSession sees it (a provider WebSocket, later a SIP leg)."""

from __future__ import annotations

from typing import Protocol

from app.providers.base import StreamFraming


class TransportClosed(Exception):
    """The other side closed the stream (or the connection dropped)."""


class StreamTransport(Protocol):
    framing: StreamFraming

    async def receive(self) -> str | bytes:
        """The next message; raises TransportClosed when the stream is gone."""
        ...

    async def send(self, message: str | bytes) -> None:
        """Send one message; raises TransportClosed when the stream is gone."""
        ...

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the stream (no-op when already closed)."""
        ...
