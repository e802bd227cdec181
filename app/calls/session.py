"""CallSession: one live call. Binds the stream transport to the agent pipeline and owns the timers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from app.calls.playout import Playout
from app.calls.service import CallService
from app.calls.timing import ConversationTiming, TimingPlan
from app.calls.transport import StreamTransport, TransportClosed
from app.media.codecs import MediaError, decode_to_pcm16, encode_from_pcm16
from app.media.dtmf import DEFAULT_TIMING, DtmfTiming, dtmf_tones, valid_dtmf_digits
from app.media.path import AudioConverter, build_converter, negotiate
from app.media.voice_activity import VoiceActivity
from app.metrics import ACTIVE_SESSIONS, BAD_FRAMES, FRAMES_IN, FRAMES_OUT
from app.pipeline.base import (
    AgentAudio,
    AgentClear,
    CallInfo,
    ColdTransfer,
    HangUp,
    Pipeline,
    PipelineError,
    PlayDtmf,
    Transcript,
)
from app.providers.base import (
    FrameError,
    StreamAudio,
    StreamDtmf,
    StreamEvent,
    StreamIgnored,
    StreamMark,
    StreamPing,
    StreamProviderError,
    StreamStart,
    StreamStop,
    StreamUserText,
)
from app.schemas.calls import EndReason, EventSeverity
from app.schemas.data_messages import valid_transfer_target
from app.store.tables import CallRow, utcnow

log = logging.getLogger(__name__)

#: After a transfer the provider ends the stream; callbridge closes it itself after this long.
TRANSFER_GRACE_S = 5.0
# Bad frames recorded as call events per call; beyond this they are only counted (metrics).
MAX_RECORDED_BAD_FRAMES = 10


@dataclass(frozen=True, slots=True)
class SessionSettings:
    playout_lead_ms: float = 80.0


class LegControl(Protocol):
    """The provider leg's REST side, as a session uses it (`calls.legs.ProviderLegs`)."""

    async def transfer(self, call_id: str, target: str) -> str | None:
        """None when the provider took the transfer, else why not."""
        ...

    async def send_dtmf(self, call_id: str, digits: str, tone_ms: int) -> tuple[bool, str | None]:
        """(sent out-of-band, error of a failed attempt)."""
        ...


class NoLegControl:
    """A call without provider REST control: transfers fail, DTMF is played in-band."""

    async def transfer(self, call_id: str, target: str) -> str | None:
        return "this call's medium has no transfer"

    async def send_dtmf(self, call_id: str, digits: str, tone_ms: int) -> tuple[bool, str | None]:
        return False, None


class CallSession:
    """Runs one call from the stream's first message to its end. `run` returns when the call is over."""

    def __init__(
        self,
        call: CallRow,
        transport: StreamTransport,
        pipeline: Pipeline,
        calls: CallService,
        settings: SessionSettings,
        legs: LegControl | None = None,
    ) -> None:
        self.call = call
        self.transport = transport
        self.pipeline = pipeline
        self.calls = calls
        self.settings = settings
        self.legs = legs or NoLegControl()
        # While the agent hands the call over (transfer), a stream that stops ends the call this way.
        self._leaving: tuple[EndReason, str] | None = None
        self._actions: set[asyncio.Task[object]] = set()
        self._framing = transport.framing
        self._end_reason: EndReason | None = None
        self._end_text = ""
        # Only a session that joined the call, or saw its join deadline pass, may end it; any other failed
        # join leaves the call to whoever holds it (or to the unjoined-call sweeper).
        self._owns_call = False
        self._done = asyncio.Event()
        self._bad_frames = 0
        self._ignored_events: set[str] = set()
        self._frames_in = 0
        self._inbound: AudioConverter | None = None
        self._outbound: AudioConverter | None = None
        self._playout: Playout | None = None
        self._timing: ConversationTiming | None = None
        self._voice: VoiceActivity | None = None
        self._agent_state = ""
        self.start: StreamStart | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def finish(self, reason: EndReason, text: str) -> None:
        """Ask the session to end the call (the first reason given wins)."""
        if self._leaving is not None and reason is EndReason.HANGUP:
            reason, text = self._leaving
        if self._end_reason is None:
            self._end_reason, self._end_text = reason, text
            self._done.set()

    async def run(self) -> None:
        ACTIVE_SESSIONS.inc()
        tasks: list[asyncio.Task[None]] = []
        try:
            start = await self._await_start()
            if start is not None and await self._join(start):
                loops = {
                    "in": self._receive_loop(),
                    "agent": self._agent_loop(),
                    "out": self._playout_loop(),
                    "timer": self._max_duration_timer(),
                }
                if self._framing.media_idle_timeout_s:
                    loops["idle"] = self._media_idle_timer(self._framing.media_idle_timeout_s)
                for name, loop in loops.items():
                    task = asyncio.create_task(loop, name=f"call-{self.call.id}-{name}")
                    task.add_done_callback(self._loop_ended)
                    tasks.append(task)
                await self._done.wait()
        except Exception as exc:  # a bug in this call must end this call only
            log.exception("call %s failed", self.call.id)
            self.finish(EndReason.SYSTEM_ERROR, f"internal error: {type(exc).__name__}")
        finally:
            tasks.extend(self._actions)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            try:
                await self._shutdown()
            finally:
                ACTIVE_SESSIONS.dec()

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        """A loop that dies of an exception ends the call (instead of leaving it silent until maxDuration)."""
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        if isinstance(exc, PipelineError):
            self._pipeline_failed(exc)
        else:
            log.error("call %s: %s failed", self.call.id, task.get_name(), exc_info=exc)
            self.finish(EndReason.SYSTEM_ERROR, f"internal error: {type(exc).__name__}")

    async def _shutdown(self) -> None:
        if self._timing is not None:
            await self._timing.stop()
        with contextlib.suppress(Exception):
            await self.pipeline.close(self._end_reason.value if self._end_reason else None)
        with contextlib.suppress(Exception):
            await self.transport.close()
        FRAMES_IN.inc(self._frames_in)
        if self._playout is not None:
            FRAMES_OUT.inc(self._playout.frames_sent)
        if self._owns_call:
            reason = self._end_reason or EndReason.HANGUP
            await self.calls.end(self.call, reason, self._end_text or "stream closed")

    async def _await_start(self) -> StreamStart | None:
        """The provider's `start`, or None when the stream ends first or the join deadline passes."""
        opening = self._framing.opening()
        if opening is not None:  # a stream that starts on connect
            return opening
        deadline = self.call.join_deadline
        timeout = (deadline - utcnow()).total_seconds() if deadline else None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    event = self._decode(await self.transport.receive())
                    if isinstance(event, StreamStart):
                        return event
                    if isinstance(event, StreamStop):
                        return None
        except TimeoutError:
            self._owns_call = True
            self.finish(EndReason.UNJOINED, "the stream did not start before the call's joinTimeout")
        except TransportClosed:
            pass
        return None

    async def _join(self, event: StreamStart) -> bool:
        """Join the call (first join wins), build the media path and start the agent."""
        self.start = event
        if not await self.calls.mark_joined(self.call, event.stream_id, event.provider_call_id):
            return False  # joined elsewhere or ended meanwhile: not ours to end
        self._owns_call = True
        wire = event.audio_format
        wire_out = event.output_format or wire
        agent_format = negotiate(wire, self.pipeline.accepted_formats)
        self._inbound = build_converter(wire, agent_format)
        self._outbound = build_converter(agent_format, wire_out)
        self._record(
            "joined",
            f"stream {event.stream_id} started: {wire} on the wire, {agent_format} to the agent",
            extras={
                "streamId": event.stream_id,
                "wireFormat": str(wire),
                "agentFormat": str(agent_format),
                "resampled": wire.sample_rate != agent_format.sample_rate,
            },
        )
        lead_ms = self._framing.playout_lead_ms or self.settings.playout_lead_ms
        self._playout = Playout(self.transport, wire_out, lead_ms, self._agent_finished_speaking)
        definition = self.call.definition
        try:
            await self.pipeline.start(
                CallInfo(
                    call_id=self.call.id,
                    agent_id=self.call.agent_id,
                    system_prompt=definition.get("systemPrompt", ""),
                    template_context=definition.get("templateContext") or {},
                    metadata=definition.get("metadata") or {},
                    medium=definition.get("medium") or {},
                    from_number=self.call.from_number,
                    to_number=self.call.to_number,
                    provider_call_id=event.provider_call_id or self.call.provider_call_id,
                ),
                agent_format,
            )
        except Exception as exc:
            self._pipeline_failed(exc)
            return False
        self._timing = ConversationTiming(
            TimingPlan.of_call(definition, self.call.medium_kind), self.pipeline, self._record, self.finish
        )
        self._voice = VoiceActivity() if self._timing.needs_voice_activity else None
        self._timing.start()
        for message in self._framing.joined_messages(self.call.id):
            await self.transport.send(message)
        await self._send_state("listening")
        return True

    async def _send_state(self, state: str) -> None:
        """Tell the other side whether the agent speaks (serverWebSocket `state`), once per change."""
        if state == self._agent_state:
            return
        self._agent_state = state
        message = self._framing.encode_state(state)
        if message is not None:
            await self.transport.send(message)

    async def _agent_finished_speaking(self) -> None:
        await self._send_state("listening")

    async def _media_idle_timer(self, timeout_s: float) -> None:
        """End the call when no caller audio came for `timeout_s` (sampled, not timed per frame)."""
        loop = asyncio.get_running_loop()
        frames, since = self._frames_in, loop.time()
        while True:
            await asyncio.sleep(timeout_s / 10)
            if self._frames_in != frames:
                frames, since = self._frames_in, loop.time()
            elif loop.time() - since >= timeout_s:
                self.finish(EndReason.CONNECTION_ERROR, f"no audio from the client for {timeout_s:g}s")
                return

    async def _max_duration_timer(self) -> None:
        await asyncio.sleep(self.call.definition["maxDuration"])
        self.finish(EndReason.TIMEOUT, "the call reached its maxDuration")

    # --- caller → agent -----------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        assert self._inbound is not None and self._timing is not None
        inbound, pipeline, timing = self._inbound, self.pipeline, self._timing
        while True:
            try:
                message = await self.transport.receive()
            except TransportClosed:
                self.finish(EndReason.HANGUP, "the provider closed the stream")
                return
            event = self._decode(message)
            if isinstance(event, StreamAudio):
                try:
                    audio = inbound.convert(event.payload)
                except MediaError as exc:
                    self._bad_frame(str(exc))
                    continue
                self._frames_in += 1
                if self._voice is not None:
                    self._detect_speech(event.payload)
                await pipeline.send_audio(audio)
            elif isinstance(event, StreamDtmf):
                self._record("dtmf", f"caller pressed {event.digit}", extras={"digit": event.digit})
                if timing.caller_dtmf(event.digit):
                    await pipeline.send_dtmf(event.digit)
            elif isinstance(event, StreamMark):
                await self._mark_returned(event.name)
            elif isinstance(event, StreamStop):
                self.finish(EndReason.HANGUP, f"the provider ended the stream ({event.reason or 'stop'})")
                return
            elif isinstance(event, StreamUserText):
                await self.send_user_text(event.text)
            elif isinstance(event, StreamPing):
                pong = self._framing.encode_pong(event.timestamp)
                if pong is not None:
                    await self.transport.send(pong)
            elif isinstance(event, StreamProviderError):
                self._record(
                    "provider_error",
                    f"provider reported stream error {event.code}: {event.detail}",
                    EventSeverity.WARNING,
                    {"code": event.code},
                )

    def _detect_speech(self, wire_audio: bytes) -> None:
        assert self._voice is not None and self._timing is not None and self.start is not None
        wire = self.start.audio_format
        speaking = self._voice.feed(decode_to_pcm16(wire_audio, wire), wire.duration_ms(len(wire_audio)))
        self._timing.caller_speaking(speaking)

    def _decode(self, message: str | bytes) -> StreamEvent | None:
        try:
            event = self._framing.decode(message)
        except FrameError as exc:
            self._bad_frame(str(exc))
            return None
        if isinstance(event, StreamIgnored) and event.event not in self._ignored_events:
            self._ignored_events.add(event.event)
            self._record(
                "provider_event_ignored", f"ignored stream event {event.event!r}", EventSeverity.DEBUG
            )
        elif isinstance(event, StreamStart) and self.start is not None:
            self._bad_frame("a second start on a started stream")
            return None
        return event

    def _bad_frame(self, reason: str) -> None:
        self._bad_frames += 1
        BAD_FRAMES.inc()
        if self._bad_frames <= MAX_RECORDED_BAD_FRAMES:
            suffix = (
                " (further bad frames are only counted)"
                if self._bad_frames == MAX_RECORDED_BAD_FRAMES
                else ""
            )
            self._record(
                "provider_error", f"bad stream message ignored: {reason}{suffix}", EventSeverity.WARNING
            )

    async def _mark_returned(self, name: str) -> None:
        assert self._playout is not None
        mark = self._playout.mark_returned(name)
        if mark is None:
            return
        if mark.cleared:
            self._record(
                "mark",
                f"mark {name} returned after clear",
                EventSeverity.DEBUG,
                {"name": name, "cleared": True},
            )
            return
        self._record(
            "mark",
            f"agent audio played up to {mark.position_ms:.0f} ms",
            extras={"name": name, "playedMs": round(mark.position_ms)},
        )
        await self.pipeline.playback_position(mark.position_ms)

    # --- agent → caller -----------------------------------------------------------------------

    async def _agent_loop(self) -> None:
        assert self._outbound is not None and self._playout is not None and self._timing is not None
        outbound, playout, timing = self._outbound, self._playout, self._timing
        try:
            async for event in self.pipeline.events():
                if isinstance(event, AgentAudio):
                    playout.enqueue(outbound.convert(event.audio))
                    timing.agent_audio()
                    if self._agent_state != "speaking":
                        await self._send_state("speaking")
                elif isinstance(event, AgentClear):
                    playout.clear()
                    outbound.reset()
                    self._record("clear", "agent barged in: unplayed audio dropped")
                elif isinstance(event, HangUp):
                    self.hang_up(event.message or "the agent hung up")
                    return
                elif isinstance(event, Transcript):
                    message = self._framing.encode_transcript(event.role, event.text, event.final)
                    if message is not None:
                        await self.transport.send(message)
                    self._record(
                        "transcript",
                        event.text,
                        EventSeverity.DEBUG,
                        {"role": event.role, "final": event.final},
                    )
                elif isinstance(event, ColdTransfer):
                    self._spawn(self.transfer(event.target), "transfer")
                elif isinstance(event, PlayDtmf):
                    self._spawn(self.play_dtmf(event.digits), "dtmf")
        except Exception as exc:
            self._pipeline_failed(exc)
            return
        self.finish(EndReason.AGENT_HANGUP, "the agent ended the conversation")

    async def _playout_loop(self) -> None:
        assert self._playout is not None
        try:
            await self._playout.run()
        except TransportClosed:
            self.finish(EndReason.HANGUP, "the provider closed the stream")

    # --- call control (the agent's actions and `send_data_message`) --------------------------------

    def hang_up(self, text: str) -> None:
        """The agent (or the API on its behalf) ends the call; the provider leg is hung up after."""
        self._record("hang_up", text)
        self.finish(EndReason.AGENT_HANGUP, text)

    async def transfer(self, target: str) -> str | None:
        """Hand the caller to `target`; the agent leaves. None on success, else why it failed (the call
        then stays with the agent)."""
        try:
            target = valid_transfer_target(target)
        except ValueError as exc:
            self._record("transfer", f"transfer refused: {exc}", EventSeverity.WARNING, {"outcome": "failed"})
            return str(exc)
        if self._leaving is not None:
            return "a transfer is already under way"
        text = f"the caller was transferred to {target}"
        self._leaving = (EndReason.AGENT_HANGUP, text)
        self._record("transfer", f"transferring the caller to {target}", extras={"target": target})
        problem = await self.legs.transfer(self.call.id, target)
        if problem is not None:
            self._leaving = None
            self._record(
                "transfer",
                f"transfer to {target} failed: {problem}",
                EventSeverity.WARNING,
                {"target": target, "outcome": "failed"},
            )
            return problem
        self._record("transfer", text, extras={"target": target, "outcome": "transferred"})
        # The provider ends the stream itself once the transfer runs; closing it first could end the call
        # before the provider fetched the transfer's instructions (Plivo). A stream left open is closed later.
        self._spawn(self._leave_after(TRANSFER_GRACE_S), "transfer-grace")
        return None

    async def _leave_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if self._leaving is not None:
            self.finish(*self._leaving)

    async def play_dtmf(self, digits: str, timing: DtmfTiming = DEFAULT_TIMING) -> str:
        """Send DTMF: through the provider's API when it has one, else as tones in the agent's audio.

        Returns how it was sent: `out-of-band`, `in-band`, or `refused` (not DTMF digits).
        """
        try:
            digits = valid_dtmf_digits(digits)
        except ValueError as exc:
            self._record("play_dtmf", f"DTMF refused: {exc}", EventSeverity.WARNING)
            return "refused"
        sent, problem = await self.legs.send_dtmf(self.call.id, digits, timing.tone_ms)
        if problem is not None:
            self._record(
                "provider_error",
                f"DTMF through the provider failed, playing tones: {problem}",
                EventSeverity.WARNING,
            )
        method = "out-of-band" if sent else "in-band"
        if not sent:
            self._play_tones(digits, timing)
        self._record("play_dtmf", f"sent DTMF {digits} {method}", extras={"digits": digits, "method": method})
        return method

    def _play_tones(self, digits: str, timing: DtmfTiming) -> None:
        """Queue the tones after the agent audio already queued (never over speech: talk-off)."""
        assert self._playout is not None
        wire = self._playout.wire_format
        self._playout.enqueue(encode_from_pcm16(dtmf_tones(digits, wire.sample_rate, timing), wire))

    async def send_user_text(self, text: str) -> bool:
        """Text injected as if the caller said it (`user_text_message`)."""
        self._record("user_text_message", text, EventSeverity.DEBUG)
        return await self.pipeline.send_user_text(text)

    async def speak(self, text: str) -> bool:
        """Make the agent say `text` now (`forced_agent_message`)."""
        self._record("forced_agent_message", text, EventSeverity.DEBUG)
        return await self.pipeline.speak(text=text)

    @property
    def joined(self) -> bool:
        return self._playout is not None and self._end_reason is None

    def _spawn(self, action: Coroutine[Any, Any, object], name: str) -> None:
        task = asyncio.create_task(action, name=f"call-{self.call.id}-{name}")
        self._actions.add(task)
        task.add_done_callback(self._action_done)

    def _action_done(self, task: asyncio.Task[object]) -> None:
        self._actions.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("call %s: %s failed", self.call.id, task.get_name(), exc_info=task.exception())

    def _pipeline_failed(self, exc: BaseException) -> None:
        reason = EndReason.CONNECTION_ERROR if isinstance(exc, PipelineError) else EndReason.SYSTEM_ERROR
        if reason is EndReason.SYSTEM_ERROR:
            log.exception("pipeline of call %s crashed", self.call.id, exc_info=exc)
        self._record("pipeline_error", f"agent failed: {exc}", EventSeverity.ERROR)
        self.finish(reason, f"the agent failed: {exc}")

    def _record(
        self, type: str, text: str, severity: EventSeverity = EventSeverity.INFO, extras: dict | None = None
    ) -> None:
        self.calls.events.record(self.call.id, self.call.created, type, text, severity, extras)
