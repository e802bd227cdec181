"""Telephony timing the bridge owns for every agent: who speaks first, DTMF batching, inactivity messages.

The agent only gets asked (`Pipeline.speak`, `Pipeline.send_user_text`); when and whether is decided here,
so every pipeline behaves the same on the phone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from app.pipeline.base import Pipeline
from app.schemas.call_definition import CallDefinition
from app.schemas.calls import EndReason, EventSeverity
from app.schemas.durations import parse_duration

log = logging.getLogger(__name__)

#: Keys pressed within this long of each other reach the agent as one message.
DTMF_BATCH_S = 0.8
#: After an inactivity message that ends the call, the agent counts as done speaking after this much quiet.
AGENT_DONE_QUIET_S = 1.0
#: ...or after this long at most.
AGENT_DONE_MAX_S = 30.0

Record = Callable[[str, str, EventSeverity, dict[str, Any] | None], None]
Finish = Callable[[EndReason, str], None]


@dataclass(frozen=True, slots=True)
class TimingPlan:
    """The call's timing settings, from its definition and medium."""

    first_speaker: dict[str, Any] = field(default_factory=lambda: {"agent": {}})
    dtmf_handling: dict[str, Any] = field(default_factory=dict)
    inactivity: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of_call(cls, definition: CallDefinition, medium_kind: str) -> TimingPlan:
        return cls(
            first_speaker=definition.first_speaker_settings or {"agent": {}},
            dtmf_handling=definition.medium_options(medium_kind).get("dtmfHandling") or {},
            inactivity=definition.inactivity_messages,
        )

    @property
    def user_fallback(self) -> dict[str, Any] | None:
        user = self.first_speaker.get("user")
        return user.get("fallback") if isinstance(user, dict) else None

    @property
    def needs_voice_activity(self) -> bool:
        """Whether the caller's speech must be detected (costs a little CPU per frame)."""
        return self.user_fallback is not None or bool(self.inactivity)


class ConversationTiming:
    """One call's timers. The session reports what happens; this asks the agent to act at the right time."""

    def __init__(self, plan: TimingPlan, pipeline: Pipeline, record: Record, finish: Finish) -> None:
        self.plan = plan
        self.pipeline = pipeline
        self._record = record
        self._finish = finish
        self._tasks: set[asyncio.Task[None]] = set()
        self._caller_spoke = asyncio.Event()
        self._user_acted = asyncio.Event()
        self._user_activity = 0  # counts caller speech starts and keys
        self._last_activity = 0.0
        self._last_agent_audio = 0.0
        self._caller_speaking = False
        self._digits = ""
        self._dtmf_flush: asyncio.TimerHandle | None = None

    @property
    def needs_voice_activity(self) -> bool:
        return self.plan.needs_voice_activity

    @property
    def running_timers(self) -> int:
        """Timers still waiting (first speaker, fallback, inactivity, DTMF sends)."""
        return len(self._tasks)

    @property
    def pending_digits(self) -> str:
        """Keys pressed and not yet sent to the agent (batched)."""
        return self._digits

    def start(self) -> None:
        """The stream joined: start the first-speaker and inactivity timers."""
        now = asyncio.get_running_loop().time()
        self._last_activity = self._last_agent_audio = now
        if "user" in self.plan.first_speaker:
            if self.plan.user_fallback is not None:
                self._spawn(self._user_fallback(self.plan.user_fallback))
        else:
            self._spawn(self._agent_first(self.plan.first_speaker.get("agent") or {}))
        if self.plan.inactivity:
            self._spawn(self._inactivity(self.plan.inactivity))

    async def stop(self) -> None:
        if self._dtmf_flush is not None:
            self._dtmf_flush.cancel()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # --- what the session reports -------------------------------------------------------------

    def caller_speaking(self, speaking: bool) -> None:
        """The voice detector's verdict for the latest caller frame."""
        if speaking:
            self._last_activity = asyncio.get_running_loop().time()
            if not self._caller_speaking:
                self._user_activity += 1
                self._caller_spoke.set()
                self._user_acted.set()
        self._caller_speaking = speaking

    def agent_audio(self) -> None:
        """The agent produced audio (it is speaking)."""
        if not self.plan.inactivity:  # only inactivity messages care when the agent last spoke
            return
        now = asyncio.get_running_loop().time()
        self._last_agent_audio = self._last_activity = now

    def caller_dtmf(self, digit: str) -> bool:
        """A key was pressed. True when the digit itself should reach the agent (not `ignore`d)."""
        self._user_activity += 1
        self._last_activity = asyncio.get_running_loop().time()
        self._caller_spoke.set()
        self._user_acted.set()
        if self.plan.dtmf_handling.get("ignore"):
            return False
        self._digits += digit
        if self._dtmf_flush is not None:
            self._dtmf_flush.cancel()
        self._dtmf_flush = asyncio.get_running_loop().call_later(DTMF_BATCH_S, self._flush_digits)
        return True

    # --- timers ---------------------------------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("call timing task failed", exc_info=task.exception())

    def _flush_digits(self) -> None:
        digits, self._digits, self._dtmf_flush = self._digits, "", None
        template = (self.plan.dtmf_handling.get("userTextMessage") or {}).get("text")
        text = template.replace("{digits}", digits) if template else digits
        self._spawn(self._send_user_text(text, digits))

    async def _send_user_text(self, text: str, digits: str) -> None:
        taken = await self.pipeline.send_user_text(text)
        severity = EventSeverity.INFO if taken else EventSeverity.DEBUG
        note = "" if taken else " (this agent takes no text messages)"
        self._record(
            "dtmf_message", f"keys {digits} sent to the agent as {text!r}{note}", severity, {"digits": digits}
        )

    async def _ask_to_speak(self, why: str, settings: dict[str, Any]) -> None:
        text, prompt = settings.get("text"), settings.get("prompt")
        taken = await self.pipeline.speak(text=text, prompt=prompt)
        what = f"say {text!r}" if text else f"respond to {prompt!r}" if prompt else "start"
        note = "" if taken else " (this agent cannot be asked)"
        self._record(
            why, f"agent asked to {what}{note}", EventSeverity.INFO if taken else EventSeverity.DEBUG, None
        )

    async def _agent_first(self, agent: dict[str, Any]) -> None:
        delay = parse_duration(agent.get("delay") or 0)
        if delay:
            await asyncio.sleep(delay)
        await self._ask_to_speak("first_speaker", agent)

    async def _user_fallback(self, fallback: dict[str, Any]) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._caller_spoke.wait(), parse_duration(fallback["delay"]))
            return  # the caller spoke first: no fallback
        await self._ask_to_speak("first_speaker_fallback", fallback)

    async def _inactivity(self, messages: list[dict[str, Any]]) -> None:
        loop = asyncio.get_running_loop()
        index, seen_activity = 0, self._user_activity
        anchor = self._last_activity
        while True:
            if self._user_activity != seen_activity:  # the caller did something: start over
                index, seen_activity = 0, self._user_activity
            if index >= len(messages):  # all said: wait for the caller to do something
                self._user_acted.clear()
                await self._user_acted.wait()
                continue
            message = messages[index]
            due = max(anchor, self._last_activity) + parse_duration(message["duration"])
            if loop.time() < due or self._caller_speaking:
                await asyncio.sleep(max(0.05, due - loop.time()))
                continue
            await self._ask_to_speak("inactivity_message", {"text": message["message"]})
            behavior = message.get("endBehavior", "END_BEHAVIOR_UNSPECIFIED")
            if behavior != "END_BEHAVIOR_UNSPECIFIED":
                activity_before = self._user_activity
                await self._agent_done_speaking()
                if behavior == "END_BEHAVIOR_HANG_UP_STRICT" or self._user_activity == activity_before:
                    self._finish(EndReason.AGENT_HANGUP, "the caller did not respond (inactivity)")
                    return
                self._record(
                    "inactivity_end_called_off",
                    "the caller answered the inactivity message: the call goes on",
                    EventSeverity.INFO,
                    None,
                )
            index += 1
            anchor = loop.time()

    async def _agent_done_speaking(self) -> None:
        """Wait until the agent has been quiet for a moment (its last words played), or give up."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.sleep(AGENT_DONE_QUIET_S)
        while True:
            now = loop.time()
            quiet_at = self._last_agent_audio + AGENT_DONE_QUIET_S
            if now >= quiet_at or now - started >= AGENT_DONE_MAX_S:
                return
            await asyncio.sleep(quiet_at - now)
