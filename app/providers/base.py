"""The small interface every telephony provider implements, and the typed stream events.

A provider has three sides, kept in separate objects:
- webhook side (`Provider`): verify a signed webhook, parse it, render the XML that opens the stream;
- stream side (`StreamFraming`): one per call, turns each WebSocket message into a typed event and
  builds outbound messages, knowing the wire audio format and chunk rules;
- REST side (dial, hang up, transfer, DTMF) lives in its own client classes (later issues).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from app.media.formats import AudioFormat


class FormFields(Protocol):
    """A multi-valued form (Starlette's FormData satisfies it)."""

    def getlist(self, key: str) -> list[Any]: ...

    def keys(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """A provider's HTTP request, as the provider saw it (public URL, not the proxy's)."""

    url: str
    method: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    form: FormFields | None = None


@dataclass(frozen=True, slots=True)
class IncomingCall:
    """What callbridge needs from an incoming-call webhook."""

    provider_call_id: str | None
    from_number: str | None
    to_number: str | None
    fields: dict[str, Any] = field(default_factory=dict)  # raw fields, for requestContextMapping


# --- stream events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamConnected:
    """The provider opened the stream (no call data yet)."""


@dataclass(frozen=True, slots=True)
class StreamStart:
    """The stream carries a call from now on."""

    stream_id: str
    provider_call_id: str | None
    audio_format: AudioFormat
    custom_parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StreamAudio:
    """Caller audio in the wire format."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class StreamDtmf:
    digit: str


@dataclass(frozen=True, slots=True)
class StreamMark:
    """The provider played everything queued before the mark with this name."""

    name: str


@dataclass(frozen=True, slots=True)
class StreamStop:
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class StreamIgnored:
    """A well-formed message callbridge has no use for (unknown event, outbound track...)."""

    event: str


StreamEvent = (
    StreamConnected | StreamStart | StreamAudio | StreamDtmf | StreamMark | StreamStop | StreamIgnored
)

DTMF_DIGITS = frozenset("0123456789*#ABCD")


class FrameError(ValueError):
    """A stream message that cannot be understood (bad JSON, missing fields, bad base64...)."""


class StreamFraming(ABC):
    """One call's provider framing: inbound messages → events, outbound audio/mark/clear → messages."""

    #: Outbound audio is sent in frames of this many milliseconds.
    frame_ms: ClassVar[int] = 20
    #: True when the provider answers `clear` by returning every pending mark.
    clear_returns_marks: ClassVar[bool] = True

    @abstractmethod
    def decode(self, message: str | bytes) -> StreamEvent:
        """Parse one inbound WebSocket message. Raises FrameError when it is malformed."""

    @abstractmethod
    def encode_audio(self, payload: bytes) -> str:
        """Build the message that plays `payload` (wire format) to the caller."""

    @abstractmethod
    def encode_mark(self, name: str) -> str:
        """Build the message asking the provider to report when audio so far has played."""

    @abstractmethod
    def encode_clear(self) -> str:
        """Build the message that drops every queued, unplayed outbound audio."""


class Provider(ABC):
    """Webhook side of one telephony provider."""

    name: ClassVar[str]
    #: The (lower-case) header whose presence says a webhook comes from this provider.
    signature_header: ClassVar[str]

    @abstractmethod
    def verify(self, request: WebhookRequest, credentials: Mapping[str, str]) -> bool:
        """True when the request carries a valid signature made with the imported credentials."""

    @abstractmethod
    def parse_incoming(self, request: WebhookRequest) -> IncomingCall:
        """Read the incoming-call webhook's fields."""

    @abstractmethod
    def connect_xml(self, join_url: str, call_id: str) -> str:
        """The XML that connects the call to a bidirectional stream on `join_url`."""

    @abstractmethod
    def verify_stream(self, url: str, headers: Mapping[str, str], credentials: Mapping[str, str]) -> bool:
        """True when the stream's WebSocket handshake is signed by the provider (where it signs)."""

    @abstractmethod
    def new_framing(self, options: Mapping[str, Any]) -> StreamFraming:
        """A fresh framing object for one call's stream (`options` come from the call's medium)."""
