"""What an agent is to the bridge: audio and DTMF in; audio, barge-in and actions out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.handoff import HandleNow
from app.media.formats import AudioFormat


@dataclass(frozen=True, slots=True)
class CallInfo:
    """Call metadata handed to the agent when the call starts."""

    call_id: str
    agent_id: str | None
    system_prompt: str
    template_context: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    medium: dict[str, Any] = field(default_factory=dict)
    from_number: str | None = None
    to_number: str | None = None
    provider_call_id: str | None = None


# --- what a pipeline emits --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentAudio:
    """Agent speech in the negotiated pipeline format."""

    audio: bytes


@dataclass(frozen=True, slots=True)
class AgentClear:
    """Barge-in: drop every bit of agent audio not yet heard."""


@dataclass(frozen=True, slots=True)
class Transcript:
    role: str  # "user" | "agent"
    text: str
    final: bool = True


@dataclass(frozen=True, slots=True)
class HangUp:
    """The agent ends the call."""

    message: str | None = None


@dataclass(frozen=True, slots=True)
class ColdTransfer:
    target: str
    #: SIP calls (`ColdTransferMessage`): REFER or INVITE, headers for it, bridge when REFER is refused.
    sip_verb: str = "REFER"
    extra_headers: dict[str, str] = field(default_factory=dict)
    fallback_to_bridge: bool = False


@dataclass(frozen=True, slots=True)
class PlayDtmf:
    digits: str


@dataclass(frozen=True, slots=True)
class AgentAudioDropped:
    """The agent's audio arrived faster than the call could take it: the oldest was dropped."""

    dropped_bytes: int  # in the negotiated pipeline format


PipelineEvent = AgentAudio | AgentClear | Transcript | HangUp | ColdTransfer | PlayDtmf | AgentAudioDropped


class PipelineError(Exception):
    """The agent failed (could not start, crashed, dropped its connection)."""


class Pipeline(ABC):
    """One call's agent. Created per call; `start` → audio/DTMF in, `events()` out → `close`."""

    #: Formats the agent can take, best first; None = any (the stream's own format).
    accepted_formats: Sequence[AudioFormat] | None = None
    #: Takes caller audio without awaiting, for a pipeline that can: the bridge then hands each frame
    #: over as it arrives instead of waking a task for it. None: `send_audio` only.
    send_audio_now: Callable[[bytes], None] | None = None

    @abstractmethod
    async def start(self, info: CallInfo, audio_format: AudioFormat) -> None:
        """Begin the conversation. Audio both ways is in `audio_format` from now on."""

    @abstractmethod
    async def send_audio(self, audio: bytes) -> None:
        """Caller audio (hot path: called every 20 ms; must not block)."""

    @abstractmethod
    async def send_dtmf(self, digit: str) -> None:
        """A key the caller pressed."""

    async def playback_position(self, played_ms: float) -> None:  # noqa: B027 - optional hook
        """How much agent audio the caller has heard so far (from the provider's marks)."""

    async def send_user_text(self, text: str) -> bool:
        """Text as if the caller had said it (batched DTMF). False when the agent cannot take it."""
        return False

    async def speak(self, text: str | None = None, prompt: str | None = None) -> bool:
        """Ask the agent to take its turn now (the bridge owns first-speaker and inactivity timing).

        `text`: say exactly this; `prompt`: respond following this instruction; neither: start the
        conversation as the agent sees fit. False when the agent cannot be asked.
        """
        return False

    def handle_events_now(self, handler: HandleNow[PipelineEvent] | None) -> None:  # noqa: B027  # optional
        """Give each event to `handler` as it is made while `events()` waits with nothing queued (what
        it passes back is yielded next). A pipeline that cannot ignores it (the default): every event then
        comes through `events()`."""

    @abstractmethod
    def events(self) -> AsyncIterator[PipelineEvent]:
        """The agent's output, until the agent or the call ends."""

    @abstractmethod
    async def close(self, reason: str | None = None) -> None:
        """The call is over (`reason`: its endReason, when known): release everything. Safe to call twice."""
