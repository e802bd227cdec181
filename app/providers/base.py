"""The small interface every telephony provider implements, and the typed stream events.

A provider has up to three sides, kept in separate objects:
- stream side (`StreamProvider.new_framing` → `StreamFraming`): one framing per call turns each WebSocket
  message into a typed event and builds outbound messages, knowing the wire audio format and chunk rules;
- webhook side (`WebhookProvider`): verify a signed incoming-call webhook, parse it, render the XML that
  opens the stream. Exotel has no webhook side: its calls are created through the API;
- REST side (`WebhookProvider.call_control` → `control.CallControl`): dial, hang up, transfer, DTMF, for
  one account's credentials; the webhook side parses the status callbacks those calls send back.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import httpx

from app.media.formats import AudioFormat
from app.providers.control import CallControl, LegStatus, StatusUpdate
from app.providers.rest import RetryPolicy
from app.schemas.telephony import TelephonyConfigBase


class FormFields(Protocol):
    """A multi-valued form (Starlette's FormData satisfies it)."""

    def getlist(self, key: str) -> list[Any]: ...

    def __iter__(self) -> Any: ...


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
    #: The format sent back, when it differs from what arrives (serverWebSocket's outputSampleRate).
    output_format: AudioFormat | None = None


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


@dataclass(frozen=True, slots=True)
class StreamUserText:
    """The client injects text as if the caller had said it (serverWebSocket `user_text_message`)."""

    text: str


@dataclass(frozen=True, slots=True)
class StreamPing:
    """The client checks the connection; answer with `encode_pong`."""

    timestamp: float | None


@dataclass(frozen=True, slots=True)
class StreamProviderError:
    """The provider reports a problem on the stream (Telnyx `error` frames)."""

    code: str
    detail: str


StreamEvent = (
    StreamConnected
    | StreamStart
    | StreamAudio
    | StreamDtmf
    | StreamMark
    | StreamStop
    | StreamIgnored
    | StreamProviderError
    | StreamUserText
    | StreamPing
)

DTMF_DIGITS = frozenset("0123456789*#ABCD")


class FrameError(ValueError):
    """A stream message that cannot be understood (bad JSON, missing fields, bad base64...)."""


@dataclass(frozen=True, slots=True)
class OutboundRules:
    """How a provider takes agent audio: chunk size, padding, marks, and how far ahead it may be sent."""

    #: Each outbound chunk carries this much audio...
    chunk_ms: int = 20
    #: ...but at least this many bytes, rounded up to a multiple of `chunk_multiple` (Exotel's rules).
    min_chunk_bytes: int = 0
    chunk_multiple: int = 1
    #: Every chunk must be whole: a segment's last partial chunk is padded with silence (Telnyx refuses
    #: chunks under 20 ms; Exotel wants multiples of 320 bytes).
    pad_partial_chunks: bool = False
    #: False when the other side has no marks (callbridge then paces without them).
    marks: bool = True
    #: True when the provider answers `clear` by returning every pending mark.
    clear_returns_marks: bool = True
    #: How far ahead of real time outbound audio may run (None: the server's CALLBRIDGE_PLAYOUT_LEAD_MS).
    lead_ms: float | None = None

    def chunk_bytes(self, wire: AudioFormat) -> int:
        """Size of each outbound chunk in the wire format."""
        size = max(self.min_chunk_bytes, wire.bytes_for_ms(self.chunk_ms))
        return -(-size // self.chunk_multiple) * self.chunk_multiple


class DataChannelFraming(ABC):
    """Data messages of a stream that talks back to its client (serverWebSocket); optional for a framing."""

    @abstractmethod
    def joined_messages(self, call_id: str) -> list[str | bytes]:
        """Messages sent once the call is joined (serverWebSocket's `call_started`)."""

    @abstractmethod
    def encode_transcript(self, role: str, text: str, final: bool) -> str:
        """A transcript for the client."""

    @abstractmethod
    def encode_pong(self, timestamp: float | None) -> str:
        """The answer to a StreamPing."""

    @abstractmethod
    def encode_state(self, state: str) -> str:
        """The agent's state (`listening`, `speaking`)."""


class StreamFraming(ABC):
    """One call's provider framing: inbound messages → events, outbound audio/mark/clear → messages."""

    #: The provider's rules for outbound audio.
    rules: OutboundRules = OutboundRules()
    #: End the call when no caller audio arrives for this long (None: never).
    media_idle_timeout_s: float | None = None
    #: The stream's data messages, when it has any (None for every telephony provider).
    data_channel: DataChannelFraming | None = None

    def opening(self) -> StreamStart | None:
        """The start of a stream that has no start message (it starts on connect); None: wait for one."""
        return None

    @abstractmethod
    def decode(self, message: str | bytes) -> StreamEvent | None:
        """Parse one inbound WebSocket message; None when it is held back (reordering).

        Raises FrameError when the message is malformed.
        """

    @abstractmethod
    def encode_audio(self, payload: bytes) -> str | bytes:
        """Build the message that plays `payload` (wire format) to the caller."""

    @abstractmethod
    def encode_mark(self, name: str) -> str:
        """Build the message asking the provider to report when audio so far has played."""

    @abstractmethod
    def encode_clear(self) -> str:
        """Build the message that drops every queued, unplayed outbound audio."""


class StreamProvider(ABC):
    """A provider whose media stream can land on a joinUrl."""

    name: ClassVar[str]
    #: True when the provider signs the stream's WebSocket handshake (checked for webhook-created calls).
    signs_streams: ClassVar[bool] = False

    @abstractmethod
    def new_framing(self, options: Mapping[str, Any]) -> StreamFraming:
        """A fresh framing for one call's stream.

        `options` are the stream options stored when the call was created (`stream_options`), over the
        query parameters of the URL the provider connected to.
        """

    def verify_stream(self, url: str, headers: Mapping[str, str], config: TelephonyConfigBase) -> bool:
        """True when the WebSocket handshake is signed by the provider (only asked if `signs_streams`)."""
        return False


ConfigT = TypeVar("ConfigT", bound=TelephonyConfigBase)


@dataclass(frozen=True, slots=True)
class CallbackFields:
    """Where a provider's webhooks put what callbridge reads (form field names, status words)."""

    #: The provider's id for the call.
    call_id: str
    #: Status callbacks: the provider's word for the leg's state, and what the words mean.
    status: str
    statuses: Mapping[str, LegStatus]
    duration: str
    #: Fields that explain a failed or ended leg, most useful first.
    status_details: tuple[str, ...] = ()


class WebhookProvider(StreamProvider, Generic[ConfigT]):
    """A provider that calls `telephony_xml` with a signed webhook and takes XML back."""

    #: The provider's imported-credentials model (`/api/telephony_configs/{name}`).
    config_model: ClassVar[type[TelephonyConfigBase]]
    #: Lower-case headers that, all present, say a webhook comes from this provider.
    signature_headers: ClassVar[tuple[str, ...]]

    #: The names of the provider's webhook fields (incoming calls and status callbacks).
    fields: ClassVar[CallbackFields]

    @abstractmethod
    def verify(self, request: WebhookRequest, config: ConfigT) -> bool:
        """True when the request carries a valid signature made with the imported credentials."""

    def parse_incoming(self, request: WebhookRequest) -> IncomingCall:
        """Read the incoming-call webhook's form fields (all three providers post From/To forms)."""
        fields = form_fields(request.form)
        return IncomingCall(
            provider_call_id=text_field(fields, self.fields.call_id),
            from_number=text_field(fields, "From"),
            to_number=text_field(fields, "To"),
            fields=fields,
        )

    @abstractmethod
    def connect_xml(self, join_url: str, call_id: str, config: ConfigT) -> str:
        """The XML that connects the call to a bidirectional stream on `join_url`."""

    def stream_options(self, config: ConfigT) -> dict[str, Any]:
        """Stream options chosen by the config (codec, byte order), kept with the call for its framing."""
        return {}

    # --- calls callbridge dials -------------------------------------------------------------------

    @abstractmethod
    def call_control(self, config: ConfigT, client: httpx.AsyncClient, policy: RetryPolicy) -> CallControl:
        """The account's REST client (at the config's `apiBaseUrl` when set)."""

    def dial_problem(self, config: ConfigT) -> str | None:
        """Why these credentials cannot place calls (a missing field), or None."""
        return None

    def parse_status(self, request: WebhookRequest) -> StatusUpdate | None:
        """A status callback's news about the leg; None when it carries no status callbridge knows."""
        names = self.fields
        fields = form_fields(request.form)
        word = text_field(fields, names.status)
        status = names.statuses.get(word.lower()) if word else None
        if word is None or status is None:
            return None
        duration = text_field(fields, names.duration)
        details = (text_field(fields, k) for k in names.status_details)
        detail = next((d for d in details if d), None)
        return StatusUpdate(
            status=status,
            provider_status=word,
            provider_call_id=text_field(fields, names.call_id),
            duration_s=float(duration) if duration and duration.replace(".", "", 1).isdigit() else None,
            detail=detail,
        )

    def transfer_xml(self, target: str) -> str | None:
        """The XML that dials `target` (E.164 or `sip:`) in place of the agent; None when there is none."""
        return None

    def hangup_xml(self) -> str:
        """The XML that hangs up a call callbridge will not take (`<Hangup/>` in TwiML, TeXML and Plivo)."""
        return '<?xml version="1.0" encoding="UTF-8"?><Response><Hangup/></Response>'


def form_fields(form: FormFields | None) -> dict[str, Any]:
    """A webhook's form as a dict: one value as itself, repeated keys as a list."""
    fields: dict[str, Any] = {}
    if form is not None:
        for key in form:
            values = form.getlist(key)
            fields[key] = values[0] if len(values) == 1 else values
    return fields


def text_field(fields: Mapping[str, Any], key: str) -> str | None:
    """`fields[key]` when it is a non-empty string."""
    value = fields.get(key)
    return value if isinstance(value, str) and value else None
