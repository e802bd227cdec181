"""Playout: agent audio goes out in 20 ms frames, paced, with marks at segment ends; clear flushes."""

from __future__ import annotations

import asyncio
import base64
import contextlib

import orjson
import pytest

from app.calls.playout import Playout
from app.media.formats import PCMU_8K
from app.providers.twilio import TwilioFraming

START = {
    "event": "start",
    "streamSid": "MZ1",
    "start": {
        "streamSid": "MZ1",
        "callSid": "CA1",
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    },
}


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


async def test_sending_stays_within_the_lead_of_real_time(playout) -> None:
    player, transport = playout
    player.enqueue(b"\x01" * 8000)  # one second at once
    await asyncio.sleep(0.1)
    sent_ms = 20 * transport.events().count("media")
    assert sent_ms <= 60 + 100 + 20  # lead + elapsed + one frame


async def test_clear_drops_queued_audio_and_sends_clear(playout) -> None:
    player, transport = playout
    player.enqueue(b"\x01" * 8000)
    await asyncio.sleep(0.05)
    player.clear()
    await asyncio.sleep(0.2)
    events = transport.events()
    assert "clear" in events
    assert events.count("media") < 10
    assert player.sent_ms < 200


async def test_marks_pending_at_a_clear_come_back_flagged_cleared(playout) -> None:
    player, transport = playout
    player.enqueue(b"\x01" * 160)
    await asyncio.sleep(0.2)  # segment ends → mark
    name = transport.sent[-1]["mark"]["name"]
    player.clear()
    await asyncio.sleep(0.05)
    mark = player.mark_returned(name)
    assert mark is not None and mark.cleared
