"""The `serverWebSocket` medium: a server of yours joins the call's joinUrl directly (no telephony provider).

Binary frames carry s16le mono PCM: the caller's audio at `inputSampleRate` in, the agent's at
`outputSampleRate` out. Text frames carry JSON data messages modelled on Ultravox's: `call_started`,
`state`, `transcript`, `playback_clear_buffer` and `pong` to the client; `user_text_message`, `hang_up`
and `ping` from it. There are no marks: callbridge keeps at most `clientBufferSizeMs` of agent audio ahead
of real time.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from app.media.formats import pcm16
from app.providers.base import (
    DataChannelFraming,
    OutboundRules,
    StreamAudio,
    StreamEvent,
    StreamFraming,
    StreamIgnored,
    StreamPing,
    StreamProvider,
    StreamStart,
    StreamStop,
    StreamUserText,
)
from app.providers.frames import load_message
from app.schemas.durations import parse_duration

DEFAULT_CLIENT_BUFFER_MS = 60
#: A shorter `mediaIdleTimeout` is taken as this (as Ultravox does).
MIN_MEDIA_IDLE_TIMEOUT_S = 10.0

_CLEAR = orjson.dumps({"type": "playback_clear_buffer"}).decode()


class ServerWebSocketFraming(StreamFraming, DataChannelFraming):
    """Raw PCM both ways plus JSON data messages; the stream starts when the client connects."""

    def __init__(
        self,
        input_rate: int,
        output_rate: int,
        client_buffer_ms: float = DEFAULT_CLIENT_BUFFER_MS,
        media_idle_timeout_s: float | None = None,
    ) -> None:
        self.input_format = pcm16(input_rate)
        self.output_format = pcm16(output_rate)
        self.rules = OutboundRules(marks=False, clear_returns_marks=False, lead_ms=float(client_buffer_ms))
        self.data_channel = self
        self.media_idle_timeout_s = (
            max(MIN_MEDIA_IDLE_TIMEOUT_S, media_idle_timeout_s) if media_idle_timeout_s else None
        )
        self.stream_id = str(uuid.uuid4())

    def opening(self) -> StreamStart:
        return StreamStart(self.stream_id, None, self.input_format, output_format=self.output_format)

    def joined_messages(self, call_id: str) -> list[str | bytes]:
        return [orjson.dumps({"type": "call_started", "callId": call_id}).decode()]

    def decode(self, message: str | bytes) -> StreamEvent:
        if isinstance(message, bytes):
            return StreamAudio(message)
        event, msg = load_message(message, key="type")
        if event == "user_text_message" and isinstance(msg.get("text"), str):
            return StreamUserText(msg["text"])
        if event == "hang_up":
            return StreamStop("the client hung up")
        if event == "ping":
            stamp = msg.get("timestamp")
            return StreamPing(float(stamp) if isinstance(stamp, int | float) else None)
        return StreamIgnored(event)

    def encode_audio(self, payload: bytes) -> bytes:
        return payload

    def encode_mark(self, name: str) -> str:
        raise RuntimeError("serverWebSocket has no marks")

    def encode_clear(self) -> str:
        return _CLEAR

    def encode_transcript(self, role: str, text: str, final: bool) -> str:
        message = {"type": "transcript", "role": role, "medium": "voice", "text": text, "final": final}
        return orjson.dumps(message).decode()

    def encode_pong(self, timestamp: float | None) -> str:
        return orjson.dumps({"type": "pong", "timestamp": timestamp}).decode()

    def encode_state(self, state: str) -> str:
        return orjson.dumps({"type": "state", "state": state}).decode()


class ServerWebSocketProvider(StreamProvider):
    """The serverWebSocket medium (a stream side only)."""

    name = "serverWebSocket"

    def new_framing(self, options: Mapping[str, Any]) -> StreamFraming:
        input_rate = int(options["inputSampleRate"])
        idle = options.get("mediaIdleTimeout")
        return ServerWebSocketFraming(
            input_rate,
            int(options.get("outputSampleRate") or input_rate),
            float(options.get("clientBufferSizeMs") or DEFAULT_CLIENT_BUFFER_MS),
            parse_duration(idle) if idle else None,
        )
