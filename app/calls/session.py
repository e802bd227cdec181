"""CallSession: where one call's transport meets its agent pipeline.

The session waits for the far end's start, joins the call, then runs the loops that carry the call — caller
events to the agent, agent events to the caller, the playout, the timers — in one task group until the call
ends. What each part does lives beside it: `call_media` (conversion and playout), `actions` (hang up,
transfer, DTMF, text), `timers`, `ending` (why the call ended), `call_log` (its events).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from app.calls import timers
from app.calls.actions import CallActions, LegControl, NoLegControl
from app.calls.call_log import CallRecorder
from app.calls.call_media import CallMedia
from app.calls.ending import CallEnding
from app.calls.playout import DEFAULT_MAX_QUEUED_MS
from app.calls.service import CallService
from app.calls.timing import ConversationTiming, TimingPlan
from app.calls.transport import (
    BadMessage,
    CallTransport,
    MessageTooLarge,
    TransportClosed,
    TransportEvent,
)
from app.media.codecs import MediaError
from app.metrics import ACTIVE_SESSIONS, FRAMES_IN, FRAMES_OUT
from app.pipeline.base import (
    AgentAudio,
    AgentAudioDropped,
    AgentClear,
    CallInfo,
    ColdTransfer,
    HangUp,
    Pipeline,
    PipelineError,
    PipelineEvent,
    PlayDtmf,
    Transcript,
)
from app.providers.base import (
    StreamAudio,
    StreamConnected,
    StreamDtmf,
    StreamIgnored,
    StreamMark,
    StreamPing,
    StreamProviderError,
    StreamStart,
    StreamStop,
    StreamUserText,
)
from app.schemas.calls import EndReason, EventSeverity
from app.store.tables import CallRow, utcnow

log = logging.getLogger(__name__)

STREAM_CLOSED = "the provider closed the stream"
#: How long a sender's sight of the close waits for the receive loop to see it too.
CLOSED_DRAIN_S = 0.5

Handler = Callable[[Any], Awaitable[None]]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SessionSettings:
    playout_lead_ms: float = 80.0
    #: Agent audio queued for the caller beyond this is dropped (an agent far ahead of real time).
    max_queued_agent_audio_ms: int = DEFAULT_MAX_QUEUED_MS


class CallSession:
    """Runs one call from the far end's start to the call's end. `run` returns when the call is over."""

    def __init__(
        self,
        call: CallRow,
        transport: CallTransport,
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
        self.ending = CallEnding()
        self.record = CallRecorder(calls.events, call)
        self.media: CallMedia | None = None
        #: What can be done to the call; None until it is joined.
        self.actions: CallActions | None = None
        self._timing: ConversationTiming | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._receiving = False
        self._closed_timer: asyncio.TimerHandle | None = None
        self._agent_state = ""
        self._dropping_agent_audio = False
        self._stream_handlers: dict[type, Handler] = {
            StreamAudio: self._caller_audio,
            StreamDtmf: self._caller_dtmf,
            StreamMark: self._mark_returned,
            StreamStop: self._stream_stopped,
            StreamUserText: self._client_text,
            StreamPing: self._client_ping,
            StreamProviderError: self._provider_error,
            StreamIgnored: self._ignored,
            BadMessage: self._bad_message,
            StreamStart: self._second_start,
            StreamConnected: self._nothing,
        }
        self._agent_handlers: dict[type, Handler] = {
            AgentAudio: self._agent_audio,
            AgentClear: self._agent_clear,
            HangUp: self._agent_hang_up,
            Transcript: self._agent_transcript,
            ColdTransfer: self._agent_transfer,
            PlayDtmf: self._agent_dtmf,
            AgentAudioDropped: self._agent_audio_backlog,
        }

    # --- lifecycle ----------------------------------------------------------------------------

    def finish(self, reason: EndReason, text: str) -> None:
        """Ask the session to end the call (the first reason given wins)."""
        self.ending.finish(reason, text)

    def hang_up(self, text: str) -> None:
        """The agent, or the API for it, ends the call (joined or joining); the leg is hung up after."""
        self.record("hang_up", text)
        self.ending.finish(EndReason.AGENT_HANGUP, text)

    def far_end_left(self, text: str) -> None:
        """The caller's side is gone (the provider reports the leg over): a hang-up, or a transfer done."""
        self.ending.far_end_left(text)

    @property
    def joined(self) -> bool:
        return self.actions is not None and not self.ending.over

    async def run(self) -> None:
        ACTIVE_SESSIONS.inc()
        try:
            start = await self._unless_over(self._await_start())
            if start is not None and await self._unless_over(self._join(start)):
                await self._run_joined()
        except asyncio.CancelledError:  # the server is going away under the call
            self.ending.finish(EndReason.SYSTEM_ERROR, "the call's session was stopped (server shutdown)")
            raise
        except Exception as exc:  # a bug in this call must end this call only
            log.exception("call %s failed", self.call.id)
            self.ending.finish(EndReason.SYSTEM_ERROR, f"internal error: {type(exc).__name__}")
        finally:
            try:
                await _finish_despite_cancellation(self._shutdown())
            finally:
                ACTIVE_SESSIONS.dec()
                self._let_go()

    def _let_go(self) -> None:
        """The call is over: drop the references that lead back to this session (its handler tables, the
        actions and media that call into it), so reference counting frees the call now. Left to the cycle
        collector, an ended call is found only by a full pass, which pauses every live call (loop_health)."""
        self._stream_handlers.clear()
        self._agent_handlers.clear()
        self.pipeline.handle_events_now(None)
        handle_events_now = getattr(self.transport, "handle_events_now", None)
        if handle_events_now is not None:
            handle_events_now(None)
        self.actions = None
        self.media = None
        self._timing = None

    async def _unless_over(self, work: Coroutine[Any, Any, T]) -> T | None:
        """`work`'s result, or None as soon as the call is ended from outside (a hang-up, the drain)."""
        waiting = asyncio.ensure_future(work)
        over = asyncio.ensure_future(self.ending.wait())
        try:
            await asyncio.wait((waiting, over), return_when=asyncio.FIRST_COMPLETED)
        finally:
            over.cancel()
            if not waiting.done():
                waiting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiting
        return waiting.result() if not waiting.cancelled() else None

    async def _run_joined(self) -> None:
        assert self.media is not None
        media = self.media
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                self._spawn(self._receive_loop(), "in")
                self._spawn(self._agent_loop(), "agent")
                self._spawn(media.run(), "out")
                self._spawn(timers.max_duration(self.call.definition.max_duration, self.ending), "timer")
                idle_s = self.transport.media_idle_timeout_s
                if idle_s:
                    idle = timers.media_idle(idle_s, lambda: media.frames_in, self.ending, self._idle_allowed)
                    self._spawn(idle, "idle")
                tasks.create_task(self._stop_when_over())
        finally:
            self._tasks = None

    def _idle_allowed(self) -> bool:
        """The transport dropped its idle timeout for now (a SIP call on hold)."""
        return self.transport.media_idle_timeout_s is None

    async def _stop_when_over(self) -> None:
        """Once the call is over, cancel everything that runs beside it (the task group then exits).

        Cancelling the siblings, rather than failing the group, leaves the session's own task uncancelled
        (Python 3.11's task group could leave a cancellation pending on it)."""
        await self.ending.wait()
        for task in list(self._running):
            task.cancel()

    def _spawn(self, work: Coroutine[Any, Any, object], name: str, *, ends_call: bool = True) -> None:
        """Run `work` beside the call's loops until the call ends. If it fails, the call ends
        (`ends_call`) or the failure is only logged (an action's)."""
        tasks = self._tasks
        if tasks is None or self.ending.over:  # the call is over: nothing more runs
            work.close()
            return
        try:
            task = tasks.create_task(self._guarded(work, name, ends_call), name=f"call-{self.call.id}-{name}")
        except RuntimeError:  # the group is shutting down (the session itself was cancelled)
            work.close()
            return
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    def _spawn_action(self, work: Coroutine[Any, Any, object], name: str) -> None:
        self._spawn(work, name, ends_call=False)

    async def _guarded(self, work: Coroutine[Any, Any, object], name: str, ends_call: bool) -> None:
        try:
            await work
        except MessageTooLarge as exc:
            self.record("provider_error", str(exc), EventSeverity.WARNING)
            self.ending.finish(EndReason.CONNECTION_ERROR, str(exc))
        except TransportClosed:
            self._far_end_closed(seen_by_receiver=name == "in")
        except PipelineError as exc:
            self._pipeline_failed(exc)
        except Exception as exc:
            log.error("call %s: %s failed", self.call.id, name, exc_info=exc)
            if ends_call:
                self.ending.finish(EndReason.SYSTEM_ERROR, f"internal error: {type(exc).__name__}")

    def _far_end_closed(self, seen_by_receiver: bool) -> None:
        """The far end closed the stream. A sender sees that as soon as the close arrives, but the receive
        loop may still hold what came just before it (a `stop` with its reason): it takes those and then
        ends the call itself. The timer covers only a transport whose receive never notices."""
        if seen_by_receiver or not self._receiving:
            self.ending.far_end_left(STREAM_CLOSED)
        elif self._closed_timer is None:
            loop = asyncio.get_running_loop()
            self._closed_timer = loop.call_later(CLOSED_DRAIN_S, self.ending.far_end_left, STREAM_CLOSED)

    async def _shutdown(self) -> None:
        if self._closed_timer is not None:
            self._closed_timer.cancel()
        if self._timing is not None:
            await self._timing.stop()
        ending = self.ending
        with contextlib.suppress(Exception):
            await self.pipeline.close(ending.reason.value if ending.reason else None)
        with contextlib.suppress(Exception):
            await self.transport.close()
        if self.media is not None:
            FRAMES_IN.inc(self.media.frames_in)
            FRAMES_OUT.inc(self.media.playout.frames_sent)
        if ending.owns_call:
            await self.calls.end(self.call, ending.reason or EndReason.HANGUP, ending.text or "stream closed")

    # --- joining ------------------------------------------------------------------------------

    async def _await_start(self) -> StreamStart | None:
        """The far end's start, or None when it goes away first or the join deadline passes."""
        opening = self.transport.opening()
        if opening is not None:  # a stream that starts on connect
            return opening
        deadline = self.call.join_deadline
        timeout = (deadline - utcnow()).total_seconds() if deadline else None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    event = await self.transport.receive()
                    if type(event) is StreamStart:
                        return event
                    if type(event) is StreamStop:
                        return None
                    if type(event) in (BadMessage, StreamIgnored):
                        await self._stream_handlers[type(event)](event)
        except TimeoutError:
            self.ending.owns_call = True
            self.ending.finish(EndReason.UNJOINED, "the stream did not start before the call's joinTimeout")
        except TransportClosed:
            pass
        return None

    async def _join(self, start: StreamStart) -> bool:
        """Join the call (first join wins), build the media path and start the agent."""
        if not await self.calls.mark_joined(self.call, start.stream_id, start.provider_call_id):
            return False  # joined elsewhere or ended meanwhile: not ours to end
        self.ending.owns_call = True
        settings = self.settings
        media = CallMedia(
            start,
            self.pipeline.accepted_formats,
            self.transport,
            settings.playout_lead_ms,
            self._agent_finished_speaking,
            settings.max_queued_agent_audio_ms,
        )
        self.record(
            "joined",
            f"stream {start.stream_id} started: {media.wire} on the wire, {media.agent_format} to the agent",
            extras={"streamId": start.stream_id, **media.describe()},
        )
        definition = self.call.definition
        try:
            await self.pipeline.start(
                CallInfo(
                    call_id=self.call.id,
                    agent_id=self.call.agent_id,
                    system_prompt=definition.system_prompt,
                    template_context=definition.template_context,
                    metadata=definition.metadata,
                    medium=definition.medium,
                    from_number=self.call.from_number,
                    to_number=self.call.to_number,
                    provider_call_id=start.provider_call_id or self.call.provider_call_id,
                ),
                media.agent_format,
            )
        except Exception as exc:
            self._pipeline_failed(exc)
            return False
        timing = ConversationTiming(
            TimingPlan.of_call(definition, self.call.medium_kind), self.pipeline, self.record, self.finish
        )
        if timing.needs_voice_activity:
            media.detect_speech()
        timing.start()
        self.media, self._timing = media, timing
        self.actions = CallActions(
            self.call.id,
            self.ending,
            self.record,
            self.transport,
            media,
            self.pipeline,
            self.legs,
            self._spawn_action,
        )
        try:
            if self.transport.data is not None:
                await self.transport.data.send_joined(self.call.id)
            await self._send_state("listening")
        except TransportClosed:
            self.ending.far_end_left("the client closed the stream as the call joined")
        return True

    # --- caller → agent -----------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        receive, handlers, ending = self.transport.receive, self._stream_handlers, self.ending
        self._take_caller_audio_now()
        self._receiving = True
        try:
            while not ending.over:
                event = await receive()
                if event is not None:
                    await handlers[type(event)](event)
        finally:
            self._receiving = False

    def _take_caller_audio_now(self) -> None:
        """When both the transport and the agent can, caller audio goes from the socket's callback to the
        agent as it arrives, with no task woken for it (the rest still comes through `receive`)."""
        handle_events_now = getattr(self.transport, "handle_events_now", None)
        send_audio_now = self.pipeline.send_audio_now
        if handle_events_now is None or send_audio_now is None:
            return

        def caller_audio_now(event: TransportEvent) -> TransportEvent | None:
            if type(event) is not StreamAudio or self.ending.over:
                return event
            audio = self._caller_audio_in(event)
            if audio is not None:
                send_audio_now(audio)
            return None

        handle_events_now(caller_audio_now)

    async def _caller_audio(self, event: StreamAudio) -> None:
        audio = self._caller_audio_in(event)
        if audio is not None:
            await self.pipeline.send_audio(audio)

    def _caller_audio_in(self, event: StreamAudio) -> bytes | None:
        """The caller's audio in the agent's format, speech watched; None (recorded) when undecodable."""
        assert self.media is not None and self._timing is not None
        try:
            audio = self.media.from_caller(event.payload)
        except MediaError as exc:
            self.record.bad_message(str(exc))
            return None
        speaking = self.media.caller_speaking(event.payload)
        if speaking is not None:
            self._timing.caller_speaking(speaking)
        return audio

    async def _caller_dtmf(self, event: StreamDtmf) -> None:
        assert self._timing is not None
        self.record("dtmf", f"caller pressed {event.digit}", extras={"digit": event.digit})
        if self._timing.caller_dtmf(event.digit):
            await self.pipeline.send_dtmf(event.digit)

    async def _mark_returned(self, event: StreamMark) -> None:
        assert self.media is not None
        name = event.name
        mark = self.media.mark_returned(name)
        if mark is None:
            return
        if mark.cleared:
            self.record(
                "mark",
                f"mark {name} returned after clear",
                EventSeverity.DEBUG,
                {"name": name, "cleared": True},
            )
            return
        self.record(
            "mark",
            f"agent audio played up to {mark.position_ms:.0f} ms",
            extras={"name": name, "playedMs": round(mark.position_ms)},
        )
        await self.pipeline.playback_position(mark.position_ms)

    async def _stream_stopped(self, event: StreamStop) -> None:
        self.ending.far_end_left(f"the provider ended the stream ({event.reason or 'stop'})")

    async def _client_text(self, event: StreamUserText) -> None:
        assert self.actions is not None
        await self.actions.send_user_text(event.text)

    async def _client_ping(self, event: StreamPing) -> None:
        if self.transport.data is not None:
            await self.transport.data.send_pong(event.timestamp)

    async def _provider_error(self, event: StreamProviderError) -> None:
        self.record(
            "provider_error",
            f"provider reported stream error {event.code}: {event.detail}",
            EventSeverity.WARNING,
            {"code": event.code},
        )

    async def _ignored(self, event: StreamIgnored) -> None:
        self.record.ignored_event(event.event)

    async def _bad_message(self, event: BadMessage) -> None:
        self.record.bad_message(event.reason)

    async def _second_start(self, event: StreamStart) -> None:
        self.record.bad_message("a second start on a started stream")

    async def _nothing(self, event: object) -> None:
        pass

    # --- agent → caller -----------------------------------------------------------------------

    async def _agent_loop(self) -> None:
        handlers = self._agent_handlers
        self.pipeline.handle_events_now(self._agent_audio_now)
        try:
            async for event in self.pipeline.events():
                await handlers[type(event)](event)
        except TransportClosed:
            raise
        except Exception as exc:
            self._pipeline_failed(exc)
            return
        self.ending.finish(EndReason.AGENT_HANGUP, "the agent ended the conversation")

    def _agent_audio_now(self, event: PipelineEvent) -> PipelineEvent | None:
        """Agent audio queued for the caller as the agent makes it, when no state message must be sent
        first (that needs awaiting); everything else goes to the agent loop."""
        state_to_send = self._agent_state != "speaking" and self.transport.data is not None
        if type(event) is not AgentAudio or self.ending.over or state_to_send:
            return event
        self._agent_audio_in(event)
        self._agent_state = "speaking"
        return None

    async def _agent_audio(self, event: AgentAudio) -> None:
        self._agent_audio_in(event)
        if self._agent_state != "speaking":
            await self._send_state("speaking")

    def _agent_audio_in(self, event: AgentAudio) -> None:
        assert self.media is not None and self._timing is not None
        dropped_ms = self.media.to_caller(event.audio)
        if dropped_ms:
            self._agent_audio_dropped(dropped_ms)
        elif self.media.playout.queued_ms < self.settings.max_queued_agent_audio_ms / 2:
            self._dropping_agent_audio = False  # well below the limit again: a new spell is reported anew
        self._timing.agent_audio()

    def _agent_audio_dropped(self, dropped_ms: float) -> None:
        """The agent runs so far ahead of real time that its audio no longer fits: recorded once per spell."""
        if self._dropping_agent_audio:
            return
        self._dropping_agent_audio = True
        queued_s = self.settings.max_queued_agent_audio_ms / 1000
        self.record.agent_audio_dropped(dropped_ms, f"{queued_s:g} s are queued for the caller")

    async def _agent_audio_backlog(self, event: AgentAudioDropped) -> None:
        assert self.media is not None
        dropped_ms = self.media.agent_format.duration_ms(event.dropped_bytes)
        self.record.agent_audio_dropped(dropped_ms, "the call could not take it as fast")

    async def _agent_clear(self, event: AgentClear) -> None:
        assert self.media is not None
        self.media.clear()
        self._dropping_agent_audio = False
        self.record("clear", "agent barged in: unplayed audio dropped")

    async def _agent_hang_up(self, event: HangUp) -> None:
        self.hang_up(event.message or "the agent hung up")

    async def _agent_transcript(self, event: Transcript) -> None:
        if self.transport.data is not None:
            await self.transport.data.send_transcript(event.role, event.text, event.final)
        self.record("transcript", event.text, EventSeverity.DEBUG, {"role": event.role, "final": event.final})

    async def _agent_transfer(self, event: ColdTransfer) -> None:
        assert self.actions is not None
        transfer = self.actions.transfer(
            event.target,
            sip_verb=event.sip_verb,
            extra_headers=event.extra_headers,
            fallback_to_bridge=event.fallback_to_bridge,
        )
        self._spawn_action(transfer, "transfer")

    async def _agent_dtmf(self, event: PlayDtmf) -> None:
        assert self.actions is not None
        self._spawn_action(self.actions.play_dtmf(event.digits), "dtmf")

    async def _send_state(self, state: str) -> None:
        """Tell a far end that takes data messages whether the agent speaks, once per change."""
        if state == self._agent_state:
            return
        self._agent_state = state
        if self.transport.data is not None:
            await self.transport.data.send_state(state)

    async def _agent_finished_speaking(self) -> None:
        await self._send_state("listening")

    def _pipeline_failed(self, exc: BaseException) -> None:
        reason = EndReason.CONNECTION_ERROR if isinstance(exc, PipelineError) else EndReason.SYSTEM_ERROR
        if reason is EndReason.SYSTEM_ERROR:
            log.error("pipeline of call %s crashed", self.call.id, exc_info=exc)
        self.record("pipeline_error", f"agent failed: {exc}", EventSeverity.ERROR)
        self.ending.finish(reason, f"the agent failed: {exc}")


async def _finish_despite_cancellation(work: Coroutine[Any, Any, None]) -> None:
    """Run `work` to its end even if the caller is cancelled meanwhile (once, re-armed by a task group, or
    at every await as under anyio's cancel scopes); the cancellation is raised after it."""
    task = asyncio.ensure_future(work)
    cancellation: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            cancellation = exc
    if cancellation is not None:
        raise cancellation
    task.result()
