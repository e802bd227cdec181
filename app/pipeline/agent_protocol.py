"""The protocol callbridge speaks to a user's agent server: the framing interface and the native framing.

A framing turns the bridge's side of a call (caller audio, keys, playback positions) into websocket
messages for the agent, and the agent's messages into pipeline events. It does no I/O: the `websocket`
pipeline owns the connection. The message formats are documented in docs/agent-protocol.md.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from app.media.formats import AudioFormat
from app.pipeline.base import (
    AgentAudio,
    AgentClear,
    CallInfo,
    ColdTransfer,
    HangUp,
    PipelineEvent,
    PlayDtmf,
    Transcript,
)

log = logging.getLogger(__name__)

#: One websocket message: text (JSON) or binary.
Message = str | bytes

#: The sixteen DTMF keys.
DTMF_KEYS = frozenset("0123456789*#ABCD")

# Ignored messages are logged (at debug) cut to this many characters.
_LOGGED_CHARS = 200


@dataclass(frozen=True, slots=True)
class Decoded:
    """What one agent message means: events for the call, and replies to send straight back."""

    events: tuple[PipelineEvent, ...] = ()
    replies: tuple[Message, ...] = ()


NOTHING = Decoded()


def ignored(message: Message, why: str) -> Decoded:
    """Log (at debug) an agent message the bridge does not act on, and act on nothing."""
    if log.isEnabledFor(logging.DEBUG):
        shown = message[:_LOGGED_CHARS] if isinstance(message, str) else f"<{len(message)} bytes>"
        log.debug("ignored agent message (%s): %r", why, shown)
    return NOTHING


def parse_json_object(message: Message) -> dict[str, Any] | None:
    """The JSON object in a text message, or None when the message is not one."""
    if not isinstance(message, str):
        return None
    try:
        data = orjson.loads(message)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def dump(data: dict[str, Any]) -> str:
    """A JSON text message (values JSON cannot hold, e.g. datetimes, become strings)."""
    return orjson.dumps(data, default=str).decode()


class AgentFraming(ABC):
    """One call's message format towards the agent server (native or Twilio Media Streams)."""

    #: The one audio format the agent hears and speaks.
    audio_format: AudioFormat

    @abstractmethod
    def opening(self, info: CallInfo) -> list[Message]:
        """The messages sent right after connecting, before any audio."""

    @abstractmethod
    def encode_audio(self, audio: bytes) -> list[Message]:
        """Caller audio (in `audio_format`) as messages; may be none while a partial frame is held."""

    @abstractmethod
    def encode_dtmf(self, digit: str) -> Message:
        """A key the caller pressed."""

    def encode_user_text(self, text: str) -> Message | None:
        """Text to inject as if the user had said it; None when the framing has no such message."""
        return None

    def encode_speak(self, text: str | None, prompt: str | None) -> Message | None:
        """Asking the agent to take its turn now; None when the framing has no such message."""
        return None

    @abstractmethod
    def playback_position(self, played_ms: float) -> list[Message]:
        """The caller has heard `played_ms` of agent audio: the messages (if any) that tell the agent."""

    @abstractmethod
    def decode(self, message: Message) -> Decoded:
        """One message from the agent. Never raises: what it cannot use is ignored."""

    @abstractmethod
    def closing(self, reason: str) -> list[Message]:
        """The last messages before the bridge closes the connection."""


class NativeFraming(AgentFraming):
    """callbridge's own protocol: binary s16le PCM both ways, JSON messages modelled on Ultravox's."""

    def __init__(self, audio_format: AudioFormat) -> None:
        self.audio_format = audio_format
        self._odd_byte = b""  # an agent frame of odd length leaves half a sample for the next one
        self._handlers: dict[str, Callable[[dict[str, Any]], PipelineEvent | None]] = {
            "playback_clear_buffer": self._clear,
            "hang_up": self._hang_up,
            "cold_transfer": self._cold_transfer,
            "play_dtmf_sounds": self._play_dtmf,
            "transcript": self._transcript,
        }

    def opening(self, info: CallInfo) -> list[Message]:
        rate = self.audio_format.sample_rate
        return [
            dump(
                {
                    "type": "call_started",
                    "callId": info.call_id,
                    "agentId": info.agent_id,
                    "systemPrompt": info.system_prompt,
                    "templateContext": info.template_context,
                    "metadata": info.metadata,
                    "medium": info.medium,
                    "from": info.from_number,
                    "to": info.to_number,
                    "inputSampleRate": rate,
                    "outputSampleRate": rate,
                }
            )
        ]

    def encode_audio(self, audio: bytes) -> list[Message]:
        return [audio] if audio else []

    def encode_dtmf(self, digit: str) -> Message:
        return dump({"type": "dtmf", "digit": digit})

    def encode_user_text(self, text: str) -> Message:
        return dump({"type": "user_text_message", "text": text})

    def encode_speak(self, text: str | None, prompt: str | None) -> Message:
        if text:
            return dump({"type": "forced_agent_message", "content": text})
        return dump({"type": "agent_prompt", "prompt": prompt})

    def playback_position(self, played_ms: float) -> list[Message]:
        return [dump({"type": "playback_position", "playedMs": round(played_ms)})]

    def closing(self, reason: str) -> list[Message]:
        return [dump({"type": "call_ended", "reason": reason})]

    def decode(self, message: Message) -> Decoded:
        if isinstance(message, bytes):
            return self._audio(message)
        data = parse_json_object(message)
        if data is None:
            return ignored(message, "not a JSON object")
        kind = data.get("type")
        handler = self._handlers.get(kind) if isinstance(kind, str) else None
        if handler is None:
            return ignored(message, "unknown type")
        event = handler(data)
        if event is None:
            return ignored(message, "malformed")
        return Decoded(events=(event,))

    def _audio(self, data: bytes) -> Decoded:
        if self._odd_byte:
            data = self._odd_byte + data
        whole = len(data) - len(data) % 2
        self._odd_byte = data[whole:]
        return Decoded(events=(AgentAudio(data[:whole]),)) if whole else NOTHING

    @staticmethod
    def _clear(data: dict[str, Any]) -> PipelineEvent:
        return AgentClear()

    @staticmethod
    def _hang_up(data: dict[str, Any]) -> PipelineEvent:
        message = data.get("message")
        return HangUp(message if isinstance(message, str) and message else None)

    @staticmethod
    def _cold_transfer(data: dict[str, Any]) -> PipelineEvent | None:
        target = data.get("target")
        if not isinstance(target, str) or not target:
            return None
        verb, headers = data.get("sipVerb", "REFER"), data.get("extraHeaders", {})
        if not isinstance(verb, str) or not isinstance(headers, dict):
            return None
        if not all(isinstance(value, str) for value in headers.values()):
            return None
        # The verb and the header names are checked by the transfer, which records why it refused them.
        return ColdTransfer(
            target,
            sip_verb=verb,
            extra_headers=headers,
            fallback_to_bridge=data.get("fallbackToBridge") is True,
        )

    @staticmethod
    def _play_dtmf(data: dict[str, Any]) -> PipelineEvent | None:
        digits = data.get("digits")
        if not isinstance(digits, str) or not digits or not set(digits) <= DTMF_KEYS:
            return None
        return PlayDtmf(digits)

    @staticmethod
    def _transcript(data: dict[str, Any]) -> PipelineEvent | None:
        role, text, final = data.get("role"), data.get("text"), data.get("final", True)
        if role not in ("user", "agent") or not isinstance(text, str) or not isinstance(final, bool):
            return None
        return Transcript(role=role, text=text, final=final)
