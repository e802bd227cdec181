"""The agent event queue is bounded: an agent running ahead of real time loses its oldest audio, never
its other events, and each overrun is reported once, in the queue (AgentAudioDropped)."""

from __future__ import annotations

import pytest

from app.pipeline.agent_link import AgentEvents
from app.pipeline.base import (
    AgentAudio,
    AgentAudioDropped,
    AgentClear,
    PipelineError,
    PipelineEvent,
    Transcript,
)


async def drain(events: AgentEvents) -> list[PipelineEvent]:
    events.end()
    return [event async for event in events.iterate()]


async def test_audio_past_the_cap_drops_the_oldest_audio_and_keeps_other_events() -> None:
    events = AgentEvents(max_audio_bytes=300)
    events.put(AgentAudio(b"1" * 100))
    events.put(Transcript("agent", "hello"))
    for digit in b"2345":
        events.put(AgentAudio(bytes([digit]) * 100))
    assert await drain(events) == [
        Transcript("agent", "hello"),
        AgentAudio(b"3" * 100),
        AgentAudio(b"4" * 100),
        AgentAudioDropped(100),  # once, at the overrun's first drop
        AgentAudio(b"5" * 100),
    ]
    assert events.dropped_audio_bytes == 200


async def test_each_overrun_is_reported_once_the_reader_has_caught_up_in_between() -> None:
    events = AgentEvents(max_audio_bytes=100)
    reader = events.iterate()
    for _ in range(3):
        events.put(AgentAudio(b"a" * 100))
    assert [await anext(reader) for _ in range(2)] == [AgentAudioDropped(100), AgentAudio(b"a" * 100)]
    events.put(AgentAudio(b"b" * 100))
    events.put(AgentAudio(b"c" * 100))
    assert [await anext(reader) for _ in range(2)] == [AgentAudio(b"c" * 100), AgentAudioDropped(100)]
    assert events.dropped_audio_bytes == 300


async def test_audio_within_the_cap_is_all_delivered_in_order() -> None:
    events = AgentEvents(max_audio_bytes=1000)
    sent: list[PipelineEvent] = [AgentAudio(b"x" * 400), AgentClear(), AgentAudio(b"y" * 400)]
    for event in sent:
        events.put(event)
    assert await drain(events) == sent and events.dropped_audio_bytes == 0


async def test_the_end_error_reaches_every_reader() -> None:
    events = AgentEvents()
    events.end(PipelineError("agent gone"))
    for _ in range(2):
        with pytest.raises(PipelineError, match="agent gone"):
            [event async for event in events.iterate()]
