"""ConversationTiming: first speaker, user-first fallback, DTMF batching and inactivity messages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.calls import timing as timing_module
from app.calls.timing import ConversationTiming, TimingPlan
from app.media.formats import AudioFormat
from app.pipeline.base import CallInfo, Pipeline, PipelineEvent
from app.schemas.calls import EndReason
from tests.conftest import wait_for


class AskablePipeline(Pipeline):
    """Records what the bridge asks of it."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, Any]] = []

    async def start(self, info: CallInfo, audio_format: AudioFormat) -> None: ...

    async def send_audio(self, audio: bytes) -> None: ...

    async def send_dtmf(self, digit: str) -> None: ...

    async def send_user_text(self, text: str) -> bool:
        self.asked.append(("user_text", text))
        return True

    async def speak(self, text: str | None = None, prompt: str | None = None) -> bool:
        self.asked.append(("speak", text or prompt))
        return True

    async def events(self) -> AsyncIterator[PipelineEvent]:  # pragma: no cover - unused
        if False:
            yield

    async def close(self, reason: str | None = None) -> None: ...


class Harness:
    def __init__(self, **plan: Any) -> None:
        self.pipeline = AskablePipeline()
        self.events: list[tuple[str, str]] = []
        self.finished: list[EndReason] = []
        self.timing = ConversationTiming(
            TimingPlan(**plan),
            self.pipeline,
            lambda type, text, severity, extras: self.events.append((type, text)),
            lambda reason, text: self.finished.append(reason),
        )


@pytest.fixture(autouse=True)
def quick_timers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timing_module, "DTMF_BATCH_S", 0.05)
    monkeypatch.setattr(timing_module, "AGENT_DONE_QUIET_S", 0.05)


def asked(h: Harness, count: int = 1):  # type: ignore[no-untyped-def]
    """A predicate for `wait_for`: the agent was asked `count` things."""

    async def check() -> list[tuple[str, Any]] | None:
        return h.pipeline.asked if len(h.pipeline.asked) >= count else None

    return check


async def test_by_default_the_agent_is_asked_to_start_at_once() -> None:
    h = Harness()
    h.timing.start()
    await wait_for(asked(h), within=2)
    assert h.pipeline.asked == [("speak", None)]
    await h.timing.stop()


async def test_agent_first_text_is_said_after_its_delay() -> None:
    h = Harness(first_speaker={"agent": {"text": "Hello!", "delay": "0.3s"}})
    h.timing.start()
    await asyncio.sleep(0)  # the timer task has run up to its first wait: without a delay it would speak now
    assert h.pipeline.asked == []
    await wait_for(asked(h), within=2)
    assert h.pipeline.asked == [("speak", "Hello!")]
    await h.timing.stop()


async def test_user_first_fallback_fires_when_the_caller_stays_silent() -> None:
    h = Harness(first_speaker={"user": {"fallback": {"delay": "0.05s", "text": "Hello?"}}})
    h.timing.start()
    await wait_for(asked(h), within=2)
    assert h.pipeline.asked == [("speak", "Hello?")]
    await h.timing.stop()


async def test_user_first_fallback_does_not_fire_once_the_caller_spoke() -> None:
    h = Harness(first_speaker={"user": {"fallback": {"delay": "0.1s", "text": "Hello?"}}})
    h.timing.start()
    h.timing.caller_speaking(True)

    async def timers_done() -> bool:
        return h.timing.running_timers == 0

    await wait_for(timers_done, within=2)  # the fallback timer ended without asking
    assert h.pipeline.asked == []
    await h.timing.stop()


async def test_keys_pressed_in_quick_succession_become_one_user_text_message() -> None:
    h = Harness(first_speaker={"user": {}})
    for digit in "12#":
        assert h.timing.caller_dtmf(digit)
    await wait_for(asked(h), within=2)
    assert h.pipeline.asked == [("user_text", "12#")]

    async def recorded() -> bool:
        return bool(h.events) and h.events[-1][0] == "dtmf_message"

    await wait_for(recorded, within=2)


async def test_a_dtmf_template_fills_in_the_digits() -> None:
    h = Harness(
        first_speaker={"user": {}}, dtmf_handling={"userTextMessage": {"text": "Caller typed {digits}."}}
    )
    h.timing.caller_dtmf("7")
    await wait_for(asked(h), within=2)
    assert h.pipeline.asked == [("user_text", "Caller typed 7.")]


async def test_ignored_dtmf_reaches_the_agent_in_no_form() -> None:
    h = Harness(first_speaker={"user": {}}, dtmf_handling={"ignore": True})
    assert h.timing.caller_dtmf("7") is False
    assert h.timing.pending_digits == ""  # nothing batched, so nothing will be sent
    assert h.pipeline.asked == []


async def test_inactivity_messages_follow_each_other_then_strict_hangs_up() -> None:
    messages = [
        {"duration": "0.05s", "message": "Still there?"},
        {"duration": "0.05s", "message": "Goodbye.", "endBehavior": "END_BEHAVIOR_HANG_UP_STRICT"},
    ]
    h = Harness(first_speaker={"user": {}}, inactivity=messages)
    h.timing.start()

    async def finished() -> list[EndReason]:
        return h.finished

    await wait_for(finished, within=3)
    assert h.pipeline.asked == [("speak", "Still there?"), ("speak", "Goodbye.")]
    assert h.finished == [EndReason.AGENT_HANGUP]
    await h.timing.stop()


async def test_a_soft_end_is_called_off_when_the_caller_answers() -> None:
    messages = [{"duration": "0.05s", "message": "Still there?", "endBehavior": "END_BEHAVIOR_HANG_UP_SOFT"}]
    h = Harness(first_speaker={"user": {}}, inactivity=messages)
    h.timing.start()
    await wait_for(asked(h), within=2)
    h.timing.caller_speaking(True)  # answers while the message plays
    h.timing.caller_speaking(False)

    async def called_off() -> bool:
        return any(type == "inactivity_end_called_off" for type, _ in h.events)

    await wait_for(called_off, within=2)
    assert h.finished == []
    await h.timing.stop()


async def test_a_soft_end_hangs_up_when_the_caller_stays_silent() -> None:
    messages = [{"duration": "0.05s", "message": "Still there?", "endBehavior": "END_BEHAVIOR_HANG_UP_SOFT"}]
    h = Harness(first_speaker={"user": {}}, inactivity=messages)
    h.timing.start()

    async def finished() -> list[EndReason]:
        return h.finished

    assert await wait_for(finished, within=2) == [EndReason.AGENT_HANGUP]
    await h.timing.stop()


async def test_caller_activity_restarts_the_inactivity_clock() -> None:
    messages = [{"duration": "0.5s", "message": "Still there?"}]
    h = Harness(first_speaker={"user": {}}, inactivity=messages)
    h.timing.start()
    for _ in range(4):  # active every 0.2 s for 0.8 s: without restarts the message would come at 0.5 s
        await asyncio.sleep(0.2)
        h.timing.caller_speaking(True)
        h.timing.caller_speaking(False)
        h.events.append(("caller_spoke", ""))
    await wait_for(asked(h), within=3)
    order = [type for type, _ in h.events]
    assert order.count("caller_spoke") == 4 and order.index("inactivity_message") > order.index(
        "caller_spoke"
    )
    assert order[-1] == "inactivity_message"  # after the last activity, not between two
    await h.timing.stop()
