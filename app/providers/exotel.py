"""Exotel AgentStream (Voicebot applet): raw 16-bit PCM at 8/16/24 kHz; no XML and no signatures.

A call is created through the API with medium `{"exotel": {}}` and its joinUrl goes into the Voicebot
applet, optionally with `?sample-rate=16000` (or 24000) to ask Exotel for wideband audio.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.providers.base import (
    FrameError,
    OutboundRules,
    StreamFraming,
    StreamProvider,
    StreamStart,
    text_field,
)
from app.providers.frames import (
    STREAM_RATES,
    JsonStreamFraming,
    OutboundMessages,
    optional_object,
    require_object,
    string_map,
    wire_format,
)

#: Exotel's outbound chunk rules: a multiple of 320 bytes, at least 3,200 bytes, at most 100 KB.
CHUNK_MULTIPLE = 320
MIN_CHUNK_BYTES = 3200
TARGET_CHUNK_MS = 100
#: The stream rates as they appear in URLs and in Exotel's `start` ("16000").
RATE_NAMES = frozenset(str(rate) for rate in STREAM_RATES)


def _stream_sid(msg: dict[str, Any], start: dict[str, Any]) -> Any:
    """Exotel's docs say `stream_sid`; its own bridge code sends `streamSid`: accept both."""
    for obj in (msg, start):
        for key in ("stream_sid", "streamSid"):
            if obj.get(key):
                return obj[key]
    return None


class ExotelFraming(JsonStreamFraming):
    """Exotel's bidirectional stream: `connected/start/media/dtmf/mark/stop` in; media/mark/clear out."""

    # Whether a clear returns marks is undocumented for Exotel: do not wait for them.
    rules = OutboundRules(
        chunk_ms=TARGET_CHUNK_MS,
        min_chunk_bytes=MIN_CHUNK_BYTES,
        chunk_multiple=CHUNK_MULTIPLE,
        pad_partial_chunks=True,
        clear_returns_marks=False,
    )

    def __init__(self, requested_rate: int = 8000) -> None:
        self.requested_rate = requested_rate
        self.stream_sid = ""

    def decode_start(self, msg: dict[str, Any]) -> StreamStart:
        start = require_object(msg, "start", "start message")
        sid = _stream_sid(msg, start)
        if not isinstance(sid, str) or not sid:
            raise FrameError("start has no stream_sid")
        media_format = optional_object(start, "media_format")
        # Field types drift between Exotel's pages ("8000" or 8000, "raw" or "audio/x-raw"): parse leniently,
        # and fall back to the rate asked for in the URL when the start does not name a usable one.
        rate = media_format.get("sample_rate")
        if str(rate) not in RATE_NAMES:
            rate = self.requested_rate
        audio_format = wire_format(media_format.get("encoding") or "audio/x-raw", rate, "little")
        self.stream_sid = sid
        self.outbound = OutboundMessages.media_mark_clear("stream_sid", sid)
        return StreamStart(
            stream_id=sid,
            provider_call_id=text_field(start, "call_sid") or text_field(start, "callSid"),
            audio_format=audio_format,
            custom_parameters=string_map(start.get("custom_parameters")),
        )


class ExotelProvider(StreamProvider):
    """Exotel: stream side only (no XML webhook, no signatures; the joinUrl's credential protects it)."""

    name = "exotel"

    def new_framing(self, options: Mapping[str, Any]) -> StreamFraming:
        requested = str(options.get("sample-rate", "8000"))
        rate = int(requested) if requested in RATE_NAMES else 8000
        return ExotelFraming(rate)
