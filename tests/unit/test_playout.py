"""Playout: agent audio goes out in 20 ms frames, paced, with marks at segment ends; clear flushes."""

from __future__ import annotations

import asyncio
import base64
import contextlib

import orjson
import pytest

from app.calls.playout import Playout
from app.media.formats import PCMU_8K
from app.media.pacing import PlayoutClock
from app.providers.twilio import TwilioFraming
from tests.conftest import TWILIO_START as START
from tests.conftest import wait_for


class RecordingTransport:
    def __init__(self) -> None:
        self.framing = TwilioFraming()
        self.framing.decode(orjson.dumps(START))
        self.sent: list[dict] = []

    async def send(self, message: str) -> None:
        self.sent.append(orjson.loads(message))

    async def receive(self) -> str:
        raise NotImplementedError

    async def close(self, code: int = 1000, reason: str = "") -> None:
        pass

    def events(self) -> list[str]:
        return [m["event"] for m in self.sent]


@pytest.fixture
async def playout():
    transport = RecordingTransport()
    playout = Playout(transport, PCMU_8K, lead_ms=60)
    task = asyncio.create_task(playout.run())
    yield playout, transport
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_audio_is_cut_into_20ms_frames_and_followed_by_a_mark(playout) -> None:
    player, transport = playout
    player.enqueue(b"\x01" * 400)  # 50 ms
    await asyncio.sleep(0.3)
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
    await asyncio.sleep(0.05)
    player.clear()

    async def cleared() -> bool:
        return "clear" in transport.events()

    await wait_for(cleared, within=2)
    sent_before = len(transport.sent)
    await asyncio.sleep(0.1)
    events = transport.events()
    assert len(transport.sent) == sent_before and events[-1] == "clear"
    assert events.count("media") < 50  # the rest of the second was dropped, not sent
    assert player.sent_ms <= 20 * events.count("media")


async def test_marks_pending_at_a_clear_come_back_flagged_cleared(playout) -> None:
    player, transport = playout
    player.enqueue(b"\x01" * 160)
    await asyncio.sleep(0.2)  # segment ends → mark
    name = transport.sent[-1]["mark"]["name"]
    player.clear()
    await asyncio.sleep(0.05)
    mark = player.mark_returned(name)
    assert mark is not None and mark.cleared
