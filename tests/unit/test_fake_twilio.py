"""The fake Twilio refuses what real Twilio would refuse, instead of hiding it in a report."""

from __future__ import annotations

import orjson
import pytest
import websockets

from app.simulator.audio import speech_like
from app.simulator.twilio import CallScript, FakeTwilio, ProtocolViolation


async def test_an_event_twilio_does_not_know_fails_the_call() -> None:
    async def bridge(ws) -> None:  # type: ignore[no-untyped-def]
        await ws.recv()  # connected
        start = orjson.loads(await ws.recv())
        await ws.send(orjson.dumps({"event": "playAudio", "streamSid": start["streamSid"]}).decode())
        await ws.wait_closed()

    async with websockets.serve(bridge, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        fake = FakeTwilio(f"http://127.0.0.1:{port}", "AC1", "token")
        with pytest.raises(ProtocolViolation, match="playAudio"):
            await fake.stream(f"ws://127.0.0.1:{port}/s", {}, "CA1", CallScript(audio=speech_like(0.5)))
