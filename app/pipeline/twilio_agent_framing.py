"""Twilio Media Streams towards the agent: callbridge plays Twilio, so Twilio-ready bots attach unchanged.

The bridge sends what Twilio would send (`connected`, `start`, 20 ms μ-law `media`, `dtmf`, `stop`) and
takes what Twilio takes (`media` of any length, `mark`, `clear`). A mark comes back once the caller has
heard the agent audio sent before it, as the bridge's playback positions report it, or at once on `clear`.
"""

from __future__ import annotations

import binascii
import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson

from app.media.formats import PCMU_8K
from app.media.framing import FrameSplitter
from app.pipeline.agent_protocol import (
    NOTHING,
    AgentFraming,
    Decoded,
    Message,
    dump,
    ignored,
    parse_json_object,
)
from app.pipeline.base import AgentAudio, AgentClear, CallInfo

FRAME_MS = 20
# Positions are sums of float durations on both sides: allow for rounding.
POSITION_TOLERANCE_MS = 1.0
# After a clear the bridge's position continues from what the caller heard, which this side can only
# estimate (by its own playout clock). The estimate is lowered by this much so that no later mark can wait
# forever for a position the bridge will never report; marks after a clear come back up to this much early.
CLEAR_MARGIN_MS = 100.0


def new_stream_sid() -> str:
    """A Twilio-shaped stream SID: `MZ` and 32 hex digits."""
    return "MZ" + secrets.token_hex(16)


def custom_parameters(info: CallInfo) -> dict[str, str]:
    """`start.customParameters`: the template context as strings, then callId, agentId, from and to.

    The numbers also go as `from_number`/`to_number`, the names pipecat's runner reads them from.
    """
    context = {str(key): _as_text(value) for key, value in info.template_context.items()}
    return {
        **context,
        "callId": info.call_id,
        "agentId": info.agent_id or "",
        "from": info.from_number or "",
        "to": info.to_number or "",
        "from_number": info.from_number or "",
        "to_number": info.to_number or "",
    }


def _as_text(value: Any) -> str:
    """A string as it is; anything else as its JSON (`5`, `true`, `{"a":1}`, `null`)."""
    return value if isinstance(value, str) else orjson.dumps(value, default=str).decode()


class MarkTracker:
    """Which of the agent's marks the caller has reached, from the bridge's playback positions.

    Positions count agent audio the bridge has played since the call began; audio dropped by a clear
    does not count. This tracker counts the agent audio received the same way.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._received_ms = 0.0  # agent audio received, on the bridge's position scale
        self._played_ms = 0.0  # the latest position the bridge reported
        self._plays_until = 0.0  # when (by `clock`) the audio received so far will have played
        self._pending: deque[tuple[str, float]] = deque()

    def audio(self, duration_ms: float) -> None:
        """The agent sent `duration_ms` of audio."""
        now = self._clock()
        self._received_ms += duration_ms
        self._plays_until = max(self._plays_until, now) + duration_ms / 1000.0

    def mark(self, name: str) -> list[str]:
        """The agent sent a mark: the names to return now (this one, if its audio has played)."""
        if self._received_ms <= self._played_ms + POSITION_TOLERANCE_MS:
            return [name]
        self._pending.append((name, self._received_ms))
        return []

    def played(self, played_ms: float) -> list[str]:
        """The bridge reports a position: the marks now reached, in order."""
        self._played_ms = max(self._played_ms, played_ms)
        reached: list[str] = []
        while self._pending and self._pending[0][1] <= self._played_ms + POSITION_TOLERANCE_MS:
            reached.append(self._pending.popleft()[0])
        return reached

    def clear(self) -> list[str]:
        """The agent cleared its audio: every pending mark returns now, as with Twilio."""
        now = self._clock()
        unplayed_ms = max(0.0, self._plays_until - now) * 1000.0
        heard_ms = self._received_ms - unplayed_ms - CLEAR_MARGIN_MS
        self._received_ms = max(self._played_ms, min(self._received_ms, heard_ms))
        self._plays_until = now
        names = [name for name, _ in self._pending]
        self._pending.clear()
        return names


class TwilioAgentFraming(AgentFraming):
    """Twilio Media Streams (bidirectional) as Twilio speaks it to a bot: μ-law 8 kHz in JSON."""

    audio_format = PCMU_8K

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream_sid = new_stream_sid()
        self._call_sid = ""
        self._sequence = 0
        self._chunks = 0
        self._splitter = FrameSplitter(PCMU_8K.bytes_for_ms(FRAME_MS))
        self._marks = MarkTracker(clock)

    def _next_sequence(self) -> str:
        self._sequence += 1
        return str(self._sequence)

    def opening(self, info: CallInfo) -> list[Message]:
        self._call_sid = info.provider_call_id or info.call_id
        return [
            dump({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
            dump(
                {
                    "event": "start",
                    "sequenceNumber": self._next_sequence(),
                    "start": {
                        "accountSid": "",
                        "streamSid": self.stream_sid,
                        "callSid": self._call_sid,
                        "tracks": ["inbound"],
                        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                        "customParameters": custom_parameters(info),
                    },
                    "streamSid": self.stream_sid,
                }
            ),
        ]

    def encode_audio(self, audio: bytes) -> list[Message]:
        return [self._media(frame) for frame in self._splitter.push(audio)]

    def _media(self, frame: bytes) -> str:
        timestamp = self._chunks * FRAME_MS
        self._chunks += 1
        return dump(
            {
                "event": "media",
                "sequenceNumber": self._next_sequence(),
                "media": {
                    "track": "inbound",
                    "chunk": str(self._chunks),
                    "timestamp": str(timestamp),
                    "payload": binascii.b2a_base64(frame, newline=False).decode(),
                },
                "streamSid": self.stream_sid,
            }
        )

    def encode_dtmf(self, digit: str) -> Message:
        return dump(
            {
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "sequenceNumber": self._next_sequence(),
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    def playback_position(self, played_ms: float) -> list[Message]:
        return [self._mark(name) for name in self._marks.played(played_ms)]

    def _mark(self, name: str) -> str:
        return dump(
            {
                "event": "mark",
                "sequenceNumber": self._next_sequence(),
                "streamSid": self.stream_sid,
                "mark": {"name": name},
            }
        )

    def closing(self, reason: str) -> list[Message]:
        return [
            dump(
                {
                    "event": "stop",
                    "sequenceNumber": self._next_sequence(),
                    "streamSid": self.stream_sid,
                    "stop": {"accountSid": "", "callSid": self._call_sid},
                }
            )
        ]

    def decode(self, message: Message) -> Decoded:
        data = parse_json_object(message)
        if data is None:
            return ignored(message, "not a JSON object")
        event = data.get("event")
        if event == "media":
            return self._agent_media(message, data.get("media"))
        if event == "mark":
            mark = data.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            if not isinstance(name, str):
                return ignored(message, "mark without a name")
            return Decoded(replies=tuple(self._mark(n) for n in self._marks.mark(name)))
        if event == "clear":
            return Decoded(events=(AgentClear(),), replies=tuple(self._mark(n) for n in self._marks.clear()))
        return ignored(message, "not media, mark or clear")

    def _agent_media(self, message: Message, media: Any) -> Decoded:
        payload = media.get("payload") if isinstance(media, dict) else None
        if not isinstance(payload, str):
            return ignored(message, "media without a payload")
        try:
            audio = binascii.a2b_base64(payload, strict_mode=True)
        except (binascii.Error, ValueError):
            return ignored(message, "payload is not base64")
        if not audio:
            return NOTHING
        self._marks.audio(PCMU_8K.duration_ms(len(audio)))
        return Decoded(events=(AgentAudio(audio),))
