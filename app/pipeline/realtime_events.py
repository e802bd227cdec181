"""The OpenAI Realtime (GA) protocol as callbridge speaks it: client events, tools, and the audio timeline.

No I/O here: `app/pipeline/openai_realtime.py` owns the connection. Event shapes follow the GA schema
(`session.type = "realtime"`, nested `audio.input` / `audio.output`, `response.output_audio.*`); see
docs/openai-realtime.md.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import orjson

from app.media.formats import PCMA_8K, PCMU_8K, AudioFormat, pcm16
from app.pipeline.agent_protocol import DTMF_KEYS
from app.pipeline.base import ColdTransfer, HangUp, PipelineEvent, PlayDtmf

#: The one `session.update` callbridge sends; an `error` naming it means the endpoint rejected the session.
SESSION_UPDATE_ID = "callbridge-session"
#: `response.create` event ids start with this (an `error` naming one is about that request).
RESPONSE_ID_PREFIX = "callbridge-response-"

#: Error codes after which the session cannot go on (the endpoint closes the socket after most of them).
FATAL_ERROR_CODES = frozenset({"session_expired", "invalid_api_key", "insufficient_quota", "model_not_found"})
#: Errors a live call provokes routinely (a cancel racing the server's own, a response already running).
ROUTINE_ERROR_CODES = frozenset({"response_cancel_not_active", "conversation_already_has_active_response"})

HANG_UP = "hangUp"
COLD_TRANSFER = "coldTransfer"
PLAY_DTMF = "playDtmfSounds"

#: The built-in tools, as GA session function tools.
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": HANG_UP,
        "description": "End the phone call. Say goodbye to the caller before calling this.",
        "parameters": {
            "type": "object",
            "properties": {
                "message": {"type": "string", "description": "Why the call ends (for the call record)"}
            },
        },
    },
    {
        "type": "function",
        "name": COLD_TRANSFER,
        "description": "Transfer the caller to another phone number or SIP address; you leave the call.",
        "parameters": {
            "type": "object",
            "properties": {
                "target": {"type": "string", "description": "E.164 phone number or SIP URI to transfer to"}
            },
            "required": ["target"],
        },
    },
    {
        "type": "function",
        "name": PLAY_DTMF,
        "description": "Play touch-tone (DTMF) digits on the call, e.g. to navigate a phone menu.",
        "parameters": {
            "type": "object",
            "properties": {
                "digits": {
                    "type": "string",
                    "description": "Digits to play: 0-9, *, #, A-D",
                    "pattern": "^[0-9*#A-D]+$",
                }
            },
            "required": ["digits"],
        },
    },
]

PCM_24K = pcm16(24000)
#: What a GA Realtime session speaks, in the bridge's terms. G.711 wires pass through untouched; any other
#: wire is converted to PCM16 24 kHz, the model's native rate (so it comes first: the bridge falls back to
#: the first accepted format).
REALTIME_FORMATS = (PCM_24K, PCMU_8K, PCMA_8K)
_FORMAT_CONFIGS: dict[AudioFormat, dict[str, Any]] = {
    PCM_24K: {"type": "audio/pcm", "rate": 24000},
    PCMU_8K: {"type": "audio/pcmu"},
    PCMA_8K: {"type": "audio/pcma"},
}


def encode(event: dict[str, Any]) -> str:
    """One client event as a websocket text message."""
    return orjson.dumps(event).decode()


def audio_format_config(audio_format: AudioFormat) -> dict[str, Any]:
    """`audio.input.format` / `audio.output.format` for a negotiated bridge format."""
    config = _FORMAT_CONFIGS.get(audio_format)
    if config is None:
        raise ValueError(f"an OpenAI Realtime session speaks G.711 8 kHz or PCM16 24 kHz, not {audio_format}")
    return dict(config)


def session_update(
    *,
    model: str,
    instructions: str,
    voice: str,
    audio_format: AudioFormat,
    turn_detection: dict[str, Any],
    transcribe_model: str | None,
) -> dict[str, Any]:
    """The `session.update` that configures a call's session: prompt, audio both ways, server VAD, tools."""
    audio_input: dict[str, Any] = {
        "format": audio_format_config(audio_format),
        "turn_detection": turn_detection,
    }
    if transcribe_model:
        audio_input["transcription"] = {"model": transcribe_model}
    return {
        "type": "session.update",
        "event_id": SESSION_UPDATE_ID,
        "session": {
            "type": "realtime",
            "model": model,
            "instructions": instructions,
            "output_modalities": ["audio"],
            "audio": {
                "input": audio_input,
                "output": {"format": audio_format_config(audio_format), "voice": voice},
            },
            "tools": TOOLS,
            "tool_choice": "auto",
        },
    }


def append_audio(audio: bytes) -> str:
    """`input_audio_buffer.append`, already encoded (the hot path: one per 20 ms of caller audio)."""
    return '{"type":"input_audio_buffer.append","audio":"' + base64.b64encode(audio).decode() + '"}'


def user_text(text: str) -> dict[str, Any]:
    """A user message item carrying `text` as if the caller had said it."""
    return {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
    }


def function_output(call_id: str, output: dict[str, Any]) -> dict[str, Any]:
    """The result of a tool call, for the model."""
    return {
        "type": "conversation.item.create",
        "item": {"type": "function_call_output", "call_id": call_id, "output": encode(output)},
    }


def response_create(event_id: str, instructions: str | None = None) -> dict[str, Any]:
    """Ask for a response; `instructions` replace the session's for this response only."""
    event: dict[str, Any] = {"type": "response.create", "event_id": event_id}
    if instructions is not None:
        event["response"] = {"instructions": instructions}
    return event


def truncate(item_id: str, audio_end_ms: int) -> dict[str, Any]:
    """Cut an assistant audio item at what the caller heard of it."""
    return {
        "type": "conversation.item.truncate",
        "item_id": item_id,
        "content_index": 0,
        "audio_end_ms": audio_end_ms,
    }


RESPONSE_CANCEL: dict[str, Any] = {"type": "response.cancel"}


def say_exactly(instructions: str, text: str) -> str:
    """Response instructions that make the model say `text` verbatim (keeping the persona for its voice)."""
    return (
        f"{instructions}\n\nSay exactly the following to the caller, word for word, "
        f"adding nothing before or after it:\n{text}"
    )


def follow(instructions: str, prompt: str) -> str:
    """Response instructions for one turn: the session's, plus `prompt`."""
    return f"{instructions}\n\nFor this turn: {prompt}"


# --- tools ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What one tool call means: an event for the bridge (if any), the output for the model, and whether
    the model should speak again."""

    event: PipelineEvent | None
    output: dict[str, Any]
    respond: bool = True


def tool_call(name: str, arguments: str) -> ToolResult:
    """Interpret a function call from the model (bad arguments are reported back to it, not raised)."""
    try:
        args = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        args = None
    if not isinstance(args, dict):
        return _refused("the arguments must be a JSON object")
    if name == HANG_UP:
        message = args.get("message")
        return ToolResult(
            HangUp(message if isinstance(message, str) and message else None), {"ok": True}, False
        )
    if name == COLD_TRANSFER:
        target = args.get("target")
        if not isinstance(target, str) or not target.strip():
            return _refused("target is required")
        return ToolResult(ColdTransfer(target.strip()), {"ok": True})
    if name == PLAY_DTMF:
        digits = args.get("digits")
        if not isinstance(digits, str) or not digits or not set(digits) <= DTMF_KEYS:
            return _refused("digits must be one or more of 0-9, *, #, A-D")
        return ToolResult(PlayDtmf(digits), {"ok": True})
    return _refused(f"unknown tool {name!r}")


def _refused(error: str) -> ToolResult:
    return ToolResult(None, {"ok": False, "error": error})


# --- errors ---------------------------------------------------------------------------------------


def is_fatal(error: dict[str, Any]) -> bool:
    """Whether an `error` event's `error` ends the session: a fatal code, or the session itself refused."""
    return error.get("code") in FATAL_ERROR_CODES or error.get("event_id") == SESSION_UPDATE_ID


def describe(error: dict[str, Any]) -> str:
    """`code: message` for logs and PipelineError messages."""
    code = error.get("code") or error.get("type") or "error"
    return f"{code}: {error.get('message') or 'no message'}"


# --- agent audio timeline -------------------------------------------------------------------------


@dataclass(slots=True)
class _Item:
    item_id: str
    start_ms: float  # where the item's first audio sits in the agent audio sent to the bridge
    emitted_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class Cut:
    """Where barge-in cut an assistant audio item: `heard_ms` of it reached the caller."""

    item_id: str
    heard_ms: int


class AgentAudioTimeline:
    """Positions in the agent audio handed to the bridge, to tell how much of each item the caller heard.

    The bridge reports `played_ms` on the same timeline: agent audio since the call started, minus what a
    clear dropped. After a clear the bridge continues from what the caller heard, which can be a little
    more than the last report; when a report overtakes everything emitted, the timeline catches up.
    """

    def __init__(self) -> None:
        self.emitted_ms = 0.0
        self.played_ms = 0.0
        self._item: _Item | None = None

    @property
    def unheard_ms(self) -> float:
        """Agent audio emitted that the caller has not heard yet (as far as the reports tell)."""
        return max(0.0, self.emitted_ms - self.played_ms)

    def add(self, item_id: str, duration_ms: float) -> None:
        """Audio of `item_id` was emitted to the bridge."""
        if self._item is None or self._item.item_id != item_id:
            self._item = _Item(item_id, self.emitted_ms)
        self._item.emitted_ms += duration_ms
        self.emitted_ms += duration_ms

    def played(self, played_ms: float) -> None:
        """The bridge's latest playback position (monotonic)."""
        self.played_ms = max(self.played_ms, played_ms)
        ahead = self.played_ms - self.emitted_ms
        if ahead > 0:
            self.emitted_ms += ahead
            if self._item is not None:
                self._item.start_ms += ahead

    def interrupt(self) -> Cut | None:
        """Barge-in: the unheard audio is dropped. Returns where the current item was cut, if any."""
        item, self._item = self._item, None
        self.emitted_ms = min(self.emitted_ms, self.played_ms)
        if item is None:
            return None
        heard = min(max(self.played_ms - item.start_ms, 0.0), item.emitted_ms)
        return Cut(item.item_id, int(heard))
