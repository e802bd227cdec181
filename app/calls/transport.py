"""A call's far end, as CallSession sees it: typed events in; audio, marks, clear and DTMF out.

Today's transports are a provider's media stream and the serverWebSocket medium (both `FramedStream`: a
WebSocket plus the provider's framing); a SIP dialog with its RTP stream implements the same interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from app.providers.base import OutboundRules, StreamEvent, StreamStart


class TransportClosed(Exception):
    """The other side closed the stream (or the connection dropped)."""


class MessageTooLarge(TransportClosed):
    """The far end sent a message over the stream's limit: the stream was closed (a broken far end)."""


@dataclass(frozen=True, slots=True)
class BadMessage:
    """A message from the far end that could not be understood: recorded, then skipped."""

    reason: str


TransportEvent = StreamEvent | BadMessage


class CallDataChannel(Protocol):
    """Data messages for a far end that takes them (serverWebSocket's client)."""

    async def send_joined(self, call_id: str) -> None: ...

    async def send_transcript(self, role: str, text: str, final: bool) -> None: ...

    async def send_pong(self, timestamp: float | None) -> None: ...

    async def send_state(self, state: str) -> None: ...


class CallTransport(Protocol):
    """One call's far end. Every method raises TransportClosed once the far end is gone.

    A transport that can hand events over as they arrive, without waking the task waiting in `receive`,
    also has `handle_events_now(handler)` (`app.handoff.HandleNow`): while that task waits with nothing
    queued, each event goes to `handler`, and what it passes back is what `receive` returns next
    (`handle_events_now(None)`: no more; the ended session lets go of its handler so)."""

    #: How the far end takes agent audio (chunks, padding, marks, lead).
    rules: OutboundRules
    #: End the call when no caller audio arrives for this long (None: never). A transport may set it to
    #: None while the call runs (a SIP hold): the wait is suspended until it is set again.
    media_idle_timeout_s: float | None
    #: The far end's data messages, when it has any.
    data: CallDataChannel | None

    def opening(self) -> StreamStart | None:
        """The start of a stream that starts on connect; None: wait for a StreamStart from `receive`."""
        ...

    async def receive(self) -> TransportEvent | None:
        """The next event from the far end; None when a message produced none (held back, reordered)."""
        ...

    async def send_audio(self, payload: bytes) -> None:
        """Play one chunk of audio (wire format, `rules.chunk_bytes` long)."""
        ...

    async def send_mark(self, name: str) -> None:
        """Ask the far end to report when everything sent so far has played."""
        ...

    async def send_clear(self) -> None:
        """Drop everything sent and not yet played."""
        ...

    async def send_dtmf(self, digits: str, tone_ms: int) -> bool:
        """Send DTMF as the transport's own events (RFC 4733); False when it has none (tones instead)."""
        ...

    async def close(self) -> None:
        """Close the far end (no-op when already closed)."""
        ...
