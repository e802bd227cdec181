"""Parsing shared by every provider's JSON stream frames (all four send JSON text with base64 audio)."""

from __future__ import annotations

import binascii
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import orjson

from app.media.formats import AudioFormat, ByteOrder, Encoding
from app.providers.base import (
    DTMF_DIGITS,
    FrameError,
    StreamAudio,
    StreamConnected,
    StreamDtmf,
    StreamEvent,
    StreamFraming,
    StreamIgnored,
    StreamMark,
    StreamStart,
    StreamStop,
)


def load_message(message: str | bytes, key: str = "event") -> tuple[str, dict[str, Any]]:
    """(name, message) of one JSON frame; the name is under `key` (`event`, or `type` for data messages)."""
    try:
        msg = orjson.loads(message)
    except orjson.JSONDecodeError as exc:
        raise FrameError(f"message is not JSON: {exc}") from None
    name = msg.get(key) if isinstance(msg, dict) else None
    if not isinstance(name, str):
        raise FrameError(f"message has no '{key}'")
    return name, msg


def require(obj: Any, key: str, what: str) -> Any:
    """`obj[key]`, or a FrameError naming what is missing."""
    if not isinstance(obj, dict) or key not in obj:
        raise FrameError(f"{what} has no '{key}'")
    return obj[key]


def require_object(obj: Any, key: str, what: str) -> dict[str, Any]:
    """`obj[key]` when it is a JSON object, or a FrameError."""
    value = require(obj, key, what)
    if not isinstance(value, dict):
        raise FrameError(f"{what}'s '{key}' is not an object")
    return value


def optional_object(obj: dict[str, Any], key: str) -> dict[str, Any]:
    """`obj[key]` when it is a JSON object, `{}` when it is absent or empty, else a FrameError."""
    value = obj.get(key) or {}
    if not isinstance(value, dict):
        raise FrameError(f"'{key}' is not an object")
    return value


def decode_base64(text: Any) -> bytes:
    """Strict base64 (a lenient decoder would silently turn garbage into noise)."""
    if not isinstance(text, str):
        raise FrameError("media payload is not a string")
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise FrameError(f"media payload is not valid base64: {exc}") from None


def encode_base64(payload: bytes) -> str:
    return binascii.b2a_base64(payload, newline=False).decode()


def json_string(value: str) -> str:
    """`value` as a JSON string literal (for messages built from precomputed pieces)."""
    return orjson.dumps(value).decode()


def dtmf_digit(dtmf: Any) -> str:
    """The key in a `dtmf` object, checked against the DTMF alphabet."""
    digit = str(require(dtmf, "digit", "dtmf"))
    if digit not in DTMF_DIGITS:
        raise FrameError(f"unknown DTMF digit {digit!r}")
    return digit


def string_map(value: Any) -> dict[str, str]:
    """A JSON object of custom parameters as strings (anything else: empty)."""
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def sequence_number(msg: dict[str, Any], key: str) -> int | None:
    """A frame's sequence number, sent as a number or a numeric string; None when absent or garbled."""
    value = msg.get(key)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


_ENCODING_NAMES = {
    "pcmu": Encoding.PCMU,
    "audio/x-mulaw": Encoding.PCMU,
    "mulaw": Encoding.PCMU,
    "ulaw": Encoding.PCMU,
    "pcma": Encoding.PCMA,
    "audio/x-alaw": Encoding.PCMA,
    "alaw": Encoding.PCMA,
    "l16": Encoding.L16,
    "audio/x-l16": Encoding.L16,
    "audio/l16": Encoding.L16,
    "audio/x-raw": Encoding.L16,
    "raw": Encoding.L16,
    "slin": Encoding.L16,
    "linear16": Encoding.L16,
}

#: Sample rates callbridge accepts on a provider stream.
STREAM_RATES = frozenset({8000, 16000, 24000})


def wire_format(encoding: Any, sample_rate: Any, byte_order: ByteOrder) -> AudioFormat:
    """The AudioFormat a provider names in its `start` (any of the spellings providers use).

    G.711 is 8 kHz only; L16 may be 8, 16 or 24 kHz and takes `byte_order`.
    """
    name = str(encoding).lower().split(";")[0].strip()
    found = _ENCODING_NAMES.get(name)
    try:
        rate = int(sample_rate)
    except (TypeError, ValueError):
        raise FrameError(f"sample rate {sample_rate!r} is not a number") from None
    if found is None:
        raise FrameError(f"unsupported audio encoding {encoding!r}")
    if found is Encoding.L16 and rate in STREAM_RATES:
        return AudioFormat(Encoding.L16, rate, byte_order)
    if found is not Encoding.L16 and rate == 8000:
        return AudioFormat(found, 8000)
    raise FrameError(f"unsupported sample rate {rate} for {encoding}")


def byte_order_option(options: Any, key: str, default: ByteOrder) -> ByteOrder:
    """An L16 byte order from stream options ("big" or "little"; anything else: `default`)."""
    value = options.get(key, default)
    return "big" if value == "big" else "little" if value == "little" else default


#: Marks the variable slot in an outbound message template.
HOLE = "@@callbridge-hole@@"


@dataclass(frozen=True, slots=True)
class OutboundMessages:
    """A provider's outbound messages as fixed text around the variable part (cheaper than JSON per frame)."""

    media: tuple[str, str]
    mark: tuple[str, str]
    clear: str

    @classmethod
    def build(cls, media: dict[str, Any], mark: dict[str, Any], clear: dict[str, Any]) -> OutboundMessages:
        """From example messages with `HOLE` where the base64 payload and the mark name go."""
        media_text = orjson.dumps(media).decode()
        mark_text = orjson.dumps(mark).decode()
        before, after = media_text.split(HOLE)
        mark_before, mark_after = mark_text.split(json_string(HOLE))
        return cls((before, after), (mark_before, mark_after), orjson.dumps(clear).decode())

    @classmethod
    def media_mark_clear(cls, stream_key: str | None = None, stream_id: str = "") -> OutboundMessages:
        """The Twilio-shaped `media`/`mark`/`clear` (Twilio, Telnyx, Exotel), naming the stream if asked."""
        stream = {stream_key: stream_id} if stream_key else {}
        return cls.build(
            media={"event": "media", **stream, "media": {"payload": HOLE}},
            mark={"event": "mark", **stream, "mark": {"name": HOLE}},
            clear={"event": "clear", **stream},
        )


#: Media tracks that carry the caller (Twilio and Telnyx say `inbound` or `inbound_track`).
INBOUND_TRACKS = frozenset({"inbound", "inbound_track"})


class JsonStreamFraming(StreamFraming):
    """A stream of JSON text frames. The events the providers share are parsed here, once; a provider
    overrides `decode_event` for its own non-media events (deferring to this one), `decode_audio` if it
    post-processes audio, and gives its `decode_start`. Outbound messages come from `outbound`, set once
    the stream starts.
    """

    outbound: OutboundMessages | None = None

    def decode(self, message: str | bytes) -> StreamEvent | None:
        event, msg = load_message(message)
        if event == "media":  # the hot path: 50 a second, so no further dispatch
            media = require_object(msg, "media", "media message")
            track = media.get("track", "inbound")
            if not isinstance(track, str):
                raise FrameError("media's 'track' is not a string")
            if track not in INBOUND_TRACKS:
                return StreamIgnored(f"media:{track}")
            return self.decode_audio(decode_base64(require(media, "payload", "media")), msg)
        return self.decode_event(event, msg)

    def decode_event(self, event: str, msg: dict[str, Any]) -> StreamEvent | None:
        """One parsed message other than `media` (`event` is its name)."""
        if event == "mark":
            return StreamMark(str(require(require(msg, "mark", "mark message"), "name", "mark")))
        if event == "dtmf":
            return StreamDtmf(dtmf_digit(require(msg, "dtmf", "dtmf message")))
        if event == "start":
            return self.decode_start(msg)
        if event == "connected":
            return StreamConnected()
        if event == "stop":
            stop = msg.get("stop")
            reason = stop.get("reason") if isinstance(stop, dict) else None
            return StreamStop(str(reason) if reason else "stop")
        return StreamIgnored(event)

    def decode_audio(self, payload: bytes, msg: dict[str, Any]) -> StreamEvent | None:
        """Caller audio from a `media` message (`msg`), as an event (None: held back)."""
        return StreamAudio(payload)

    @abstractmethod
    def decode_start(self, msg: dict[str, Any]) -> StreamStart:
        """The `start` message: stream id, call id, wire format; sets `outbound`."""

    def _outbound(self) -> OutboundMessages:
        if self.outbound is None:
            raise RuntimeError("no outbound messages before the stream's start")
        return self.outbound

    def encode_audio(self, payload: bytes) -> str:
        before, after = self._outbound().media
        return before + encode_base64(payload) + after

    def encode_mark(self, name: str) -> str:
        before, after = self._outbound().mark
        return before + json_string(name) + after

    def encode_clear(self) -> str:
        return self._outbound().clear
