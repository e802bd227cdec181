"""The `echo` agent: says back what the caller says. The embedded default; proves the media path."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

from pydantic import BaseModel, ConfigDict, Field

from app.handoff import HandleNow, Handoff
from app.media.formats import AudioFormat, pcm16
from app.pipeline.base import AgentAudio, AgentClear, CallInfo, HangUp, Pipeline, PipelineEvent
from app.schemas.durations import Duration

_CLOSED = object()


class EchoOptions(BaseModel):
    """`callTemplate.pipeline.echo`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    delay: Duration = Field(default=0.0, description="How long after hearing audio the echo plays it")
    sample_rate: int | None = Field(
        default=None,
        alias="sampleRate",
        description="Run the agent side as PCM at this rate (else the wire's)",
    )
    clear_on_dtmf: bool = Field(
        default=False, alias="clearOnDtmf", description="Any key drops pending echo and barges in (clear)"
    )
    hang_up_on_digit: str | None = Field(
        default=None, alias="hangUpOnDigit", description="This key makes the agent hang up"
    )


class EchoPipeline(Pipeline):
    """Returns the caller's audio after an optional delay."""

    def __init__(self, options: EchoOptions) -> None:
        self.options = options
        self.accepted_formats = (pcm16(options.sample_rate),) if options.sample_rate else None
        self._out: Handoff[PipelineEvent | object] = Handoff()
        self._delayed: deque[tuple[float, bytes]] = deque()
        self._wakeup = asyncio.Event()
        self._releaser: asyncio.Task[None] | None = None

    async def start(self, info: CallInfo, audio_format: AudioFormat) -> None:
        if self.options.delay > 0:
            self._releaser = asyncio.create_task(self._release_delayed(), name=f"echo-delay-{info.call_id}")

    async def send_audio(self, audio: bytes) -> None:
        self.send_audio_now(audio)

    def send_audio_now(self, audio: bytes) -> None:  # type: ignore[override]  # a method, not None
        if self._releaser is None:
            self._out.put(AgentAudio(audio))
            return
        self._delayed.append((asyncio.get_running_loop().time() + self.options.delay, audio))
        self._wakeup.set()

    def handle_events_now(self, handler: HandleNow[PipelineEvent] | None) -> None:
        self._out.handle_now(handler)  # type: ignore[arg-type]  # the end marker passes through it

    async def _release_delayed(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._delayed:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            due, audio = self._delayed[0]
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self._delayed.popleft()
            self._out.put(AgentAudio(audio))

    async def send_dtmf(self, digit: str) -> None:
        if self.options.hang_up_on_digit and digit == self.options.hang_up_on_digit:
            self._out.put(HangUp(f"caller pressed {digit}"))
        elif self.options.clear_on_dtmf:
            self._delayed.clear()
            self._out.put(AgentClear())

    async def events(self) -> AsyncIterator[PipelineEvent]:
        while True:
            item = await self._out.get()
            if item is _CLOSED:
                return
            yield item  # type: ignore[misc]

    async def close(self, reason: str | None = None) -> None:
        if self._releaser is not None:
            self._releaser.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._releaser
            self._releaser = None
        self._delayed.clear()
        self._out.put(_CLOSED)
