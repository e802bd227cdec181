"""One call's audio both ways: wire ⇄ agent conversion, playout to the caller, the caller's speech."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from app.calls.playout import DEFAULT_MAX_QUEUED_MS, PendingMark, Playout
from app.calls.transport import CallTransport
from app.media.codecs import decode_to_pcm16, encode_from_pcm16
from app.media.dtmf import DtmfTiming, dtmf_tones
from app.media.formats import AudioFormat
from app.media.levels import CallLevels
from app.media.path import build_converter, negotiate
from app.media.voice_activity import VoiceActivity
from app.providers.base import StreamStart


class CallMedia:
    """Built when the stream starts: negotiates the agent's format, converts, and paces the agent's audio."""

    def __init__(
        self,
        start: StreamStart,
        accepted: Sequence[AudioFormat] | None,
        transport: CallTransport,
        lead_ms: float,
        on_segment_end: Callable[[], Awaitable[None]] | None = None,
        max_queued_ms: int = DEFAULT_MAX_QUEUED_MS,
    ) -> None:
        self.wire = start.audio_format
        wire_out = start.output_format or self.wire
        self.agent_format = negotiate(self.wire, accepted)
        self._inbound = build_converter(self.wire, self.agent_format)
        self._outbound = build_converter(self.agent_format, wire_out)
        rules = transport.rules
        self.playout = Playout(
            transport, wire_out, rules, rules.lead_ms or lead_ms, on_segment_end, max_queued_ms
        )
        self._voice: VoiceActivity | None = None
        self._wire_out = wire_out
        #: The meters of whoever watches the call's levels (none: the media path skips metering).
        self._watchers: tuple[CallLevels, ...] = ()
        self.frames_in = 0

    def describe(self) -> dict[str, Any]:
        """The path chosen, for the `joined` event."""
        return {
            "wireFormat": str(self.wire),
            "agentFormat": str(self.agent_format),
            "resampled": self.wire.sample_rate != self.agent_format.sample_rate,
        }

    def detect_speech(self) -> None:
        """Watch the caller's audio for speech (costs a little CPU per frame: only when timing needs it)."""
        self._voice = VoiceActivity()

    # --- caller → agent -----------------------------------------------------------------------

    def from_caller(self, wire_audio: bytes) -> bytes:
        """Caller audio in the agent's format. Raises MediaError on audio that cannot be decoded."""
        audio = self._inbound.convert(wire_audio)
        self.frames_in += 1
        if self._watchers:
            pcm = decode_to_pcm16(wire_audio, self.wire)
            for levels in self._watchers:
                levels.caller_to_agent.feed(pcm)
        return audio

    def caller_speaking(self, wire_audio: bytes) -> bool | None:
        """Whether the caller is speaking, after this frame; None when speech is not watched."""
        if self._voice is None:
            return None
        pcm = decode_to_pcm16(wire_audio, self.wire)
        return self._voice.feed(pcm, self.wire.duration_ms(len(wire_audio)))

    # --- levels, while watched ---------------------------------------------------------------

    def watch_levels(self) -> CallLevels:
        """Meters fed from now on with the caller's audio and the agent's as it is sent (until unwatched)."""
        levels = CallLevels()
        self._watchers = (*self._watchers, levels)
        self.playout.on_frame_sent = self._agent_frame_sent
        return levels

    def unwatch_levels(self, levels: CallLevels) -> None:
        self._watchers = tuple(w for w in self._watchers if w is not levels)
        if not self._watchers:
            self.playout.on_frame_sent = None

    def _agent_frame_sent(self, wire_frame: bytes) -> None:
        pcm = decode_to_pcm16(wire_frame, self._wire_out)
        for levels in self._watchers:
            levels.agent_to_caller.feed(pcm)

    # --- agent → caller -----------------------------------------------------------------------

    def to_caller(self, agent_audio: bytes) -> float:
        """Queue agent audio for the caller; returns ms dropped because the agent ran too far ahead."""
        if self.playout.full:  # not worth converting
            return self.agent_format.duration_ms(len(agent_audio))
        return self.playout.enqueue(self._outbound.convert(agent_audio))

    def clear(self) -> None:
        """Barge-in: drop the agent audio not yet heard."""
        self.playout.clear()
        self._outbound.reset()

    def play_tones(self, digits: str, timing: DtmfTiming) -> float:
        """Queue DTMF tones after the agent audio already queued (never over speech: talk-off).

        Returns ms dropped (the whole tones) when the queue is full, else 0."""
        wire = self.playout.wire_format
        return self.playout.enqueue(encode_from_pcm16(dtmf_tones(digits, wire.sample_rate, timing), wire))

    def mark_returned(self, name: str) -> PendingMark | None:
        return self.playout.mark_returned(name)

    async def run(self) -> None:
        """Send the agent's audio until cancelled (raises TransportClosed when the far end goes)."""
        await self.playout.run()
