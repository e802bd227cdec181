"""Playout: agent audio goes out in 20 ms frames, paced, with marks at segment ends; clear flushes."""

from __future__ import annotations

import asyncio
import base64
import contextlib

import orjson
import pytest

from app.calls.framed_stream import FramedStream
from app.calls.playout import Playout
from app.media.formats import PCMU_8K
from app.media.pacing import PlayoutClock
from app.providers.twilio import TwilioFraming
from tests.conftest import TWILIO_START as START
from tests.conftest import wait_for
from tests.unit.scripted_stream import ScriptedSocket


@pytest.fixture
async def playout():
    framing = TwilioFraming()
    framing.decode(orjson.dumps(START))
    stream = FramedStream(ScriptedSocket([]), framing)
    playout = Playout(stream, PCMU_8K, stream.rules, lead_ms=60)
    task = asyncio.create_task(playout.run())
    yield playout, stream.socket
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def sent_after_last_clear(socket: ScriptedSocket) -> list[str]:
    events = socket.events()
    return events[len(events) - events[::-1].index("clear") :]


async def test_audio_is_cut_into_20ms_frames_and_followed_by_a_mark(playout) -> None:
    player, transport = playout
    player.enqueue(b"\x01" * 400)  # 50 ms

    async def segment_marked() -> bool:
        return transport.events()[-1:] == ["mark"]

    await wait_for(segment_marked, within=2)
    sizes = [len(base64.b64decode(m["media"]["payload"])) for m in transport.sent if m["event"] == "media"]
    assert sizes == [160, 160, 80]
    assert transport.events()[-1] == "mark"
    mark = player.mark_returned(transport.sent[-1]["mark"]["name"])
    assert mark is not None and mark.position_ms == pytest.approx(50)


def test_the_clock_lets_audio_run_at_most_one_frame_past_the_lead() -> None:
    clock = PlayoutClock(lead_ms=60)
    now = 10.0
    for _ in range(4):  # 0, 20, 40, 60 ms ahead: each may still go
        assert clock.wait_before_sending(now) == 0
        clock.sent(now, 20)
    assert clock.wait_before_sending(now) == pytest.approx(0.02)  # 80 ms ahead: wait one frame
    assert clock.queued_ms(now + 0.05) == pytest.approx(30)
    clock.reset(now + 0.05)
    assert clock.queued_ms(now + 0.05) == 0 and clock.wait_before_sending(now + 0.05) == 0


async def test_clear_drops_queued_audio_and_nothing_is_sent_after_it(playout) -> None:
    player, transport = playout
    player.enqueue(b"\x01" * 8000)  # one second at once

    async def playing() -> bool:
        return "media" in transport.events()

    await wait_for(playing, within=2)
    player.clear()

    async def cleared() -> bool:
        return "clear" in transport.events()

    await wait_for(cleared, within=2)
    player.enqueue(b"\x02" * 160)  # a new 20 ms segment: all that may follow the clear

    async def new_segment_marked() -> bool:
        return transport.events()[-1:] == ["mark"]

    await wait_for(new_segment_marked, within=2)
    assert sent_after_last_clear(transport) == ["media", "mark"]
    assert transport.events().count("media") < 50  # the rest of the second was dropped, not sent


async def test_marks_pending_at_a_clear_come_back_flagged_cleared(playout) -> None:
    player, transport = playout
    player.enqueue(b"\x01" * 160)

    async def segment_marked() -> bool:
        return transport.events()[-1:] == ["mark"]

    await wait_for(segment_marked, within=2)
    name = transport.sent[-1]["mark"]["name"]
    player.clear()

    async def cleared() -> bool:
        return "clear" in transport.events()

    await wait_for(cleared, within=2)
    mark = player.mark_returned(name)
    assert mark is not None and mark.cleared


def test_audio_beyond_the_queue_limit_is_dropped_and_counted() -> None:
    player = Playout(
        FramedStream(ScriptedSocket([]), TwilioFraming()), PCMU_8K, TwilioFraming.rules, 60, None, 100
    )
    assert player.enqueue(b"\x01" * 800) == 0  # 100 ms: the limit
    assert player.enqueue(b"\x01" * 160) == pytest.approx(20)  # dropped, reported in ms
    assert player.queued_ms == pytest.approx(100)
    player.clear()
    assert player.enqueue(b"\x01" * 160) == 0  # room again once the queue is cleared
