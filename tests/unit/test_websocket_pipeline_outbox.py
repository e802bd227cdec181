"""The websocket pipeline's outbox: caller audio for a slow agent is bounded, other messages are kept."""

from __future__ import annotations

import asyncio

from app.pipeline.agent_link import Outbox


async def test_messages_come_out_in_order() -> None:
    outbox = Outbox(max_audio=10)
    outbox.put(["start"])
    outbox.put([b"a1", b"a2"], audio=True)
    outbox.put(["dtmf"])

    assert [await outbox.get() for _ in range(4)] == ["start", b"a1", b"a2", "dtmf"]


async def test_past_the_bound_the_oldest_audio_is_dropped() -> None:
    outbox = Outbox(max_audio=2)

    outbox.put([b"a1"], audio=True)
    outbox.put(["dtmf"])
    outbox.put([b"a2", b"a3"], audio=True)

    assert [await outbox.get() for _ in range(3)] == ["dtmf", b"a2", b"a3"]
    assert outbox.dropped_audio == 1


async def test_control_messages_are_never_dropped() -> None:
    outbox = Outbox(max_audio=1)

    outbox.put([f"mark-{i}" for i in range(5)])
    outbox.put([b"a1", b"a2"], audio=True)

    assert [await outbox.get() for _ in range(6)] == [*(f"mark-{i}" for i in range(5)), b"a2"]


async def test_drained_once_the_sender_asks_for_more_and_nothing_is_left() -> None:
    outbox = Outbox()
    outbox.put(["last"])
    assert not outbox.drained.is_set()
    await outbox.get()
    assert not outbox.drained.is_set()  # "last" is still being written

    waiting = asyncio.create_task(outbox.get())
    await asyncio.sleep(0)

    assert outbox.drained.is_set()
    waiting.cancel()
