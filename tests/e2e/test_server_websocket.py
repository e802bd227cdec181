"""The serverWebSocket medium: a server joins the call's joinUrl with raw PCM and data messages."""

from __future__ import annotations

import asyncio

import numpy as np
import orjson
import pytest
import websockets

from app.simulator.audio import measure_round_trip, speech_like
from tests.conftest import RunningServer, ended, events_of

pytestmark = pytest.mark.e2e


async def new_call(server: RunningServer, medium: dict, **template: object) -> dict:
    async with server.api() as api:
        body = {"name": "sws", "callTemplate": template}
        agent = (await api.post("/api/agents", json=body)).json()["agentId"]
        response = await api.post(f"/api/agents/{agent}/calls", json={"medium": {"serverWebSocket": medium}})
        assert response.status_code == 201, response.text
        return response.json()


async def next_json(ws: websockets.ClientConnection) -> dict:
    while True:
        message = await asyncio.wait_for(ws.recv(), 5)
        if isinstance(message, str):
            return orjson.loads(message)


async def test_pcm_round_trips_at_the_declared_rates(server: RunningServer) -> None:
    call = await new_call(server, {"inputSampleRate": 16000, "outputSampleRate": 24000})
    sent = speech_like(1.0, 16000)
    received = bytearray()
    async with websockets.connect(call["joinUrl"]) as ws:
        assert await next_json(ws) == {"type": "call_started", "callId": call["callId"]}
        assert await next_json(ws) == {"type": "state", "state": "listening"}
        for i in range(0, len(sent), 640):  # 20 ms frames, in real time
            await ws.send(sent[i : i + 640])
            await asyncio.sleep(0.02)
        deadline = asyncio.get_running_loop().time() + 1.0
        while asyncio.get_running_loop().time() < deadline:
            try:
                message = await asyncio.wait_for(ws.recv(), 0.3)
            except TimeoutError:
                break
            if isinstance(message, bytes):
                received += message
    out = np.frombuffer(bytes(received), "<i2").astype(np.float64)
    at_16k = np.interp(np.arange(len(out) * 2 // 3) * 1.5, np.arange(len(out)), out)  # 24 kHz → 16 kHz
    trip = measure_round_trip(sent, at_16k.astype("<i2").tobytes(), 16000)
    assert trip is not None and trip.correlation >= 0.8
    assert len(received) >= len(sent) * 3 // 2 * 0.9  # 24 kHz out: 1.5x the bytes


async def test_ping_is_answered_and_hang_up_ends_the_call(server: RunningServer) -> None:
    call = await new_call(server, {"inputSampleRate": 8000})
    async with websockets.connect(call["joinUrl"]) as ws:
        await next_json(ws)  # call_started
        await next_json(ws)  # state
        await ws.send(orjson.dumps({"type": "ping", "timestamp": 12.5}).decode())
        assert await next_json(ws) == {"type": "pong", "timestamp": 12.5}
        await ws.send(orjson.dumps({"type": "user_text_message", "text": "hello"}).decode())
        await ws.send(orjson.dumps({"type": "hang_up", "message": "bye"}).decode())
        await asyncio.wait_for(ws.wait_closed(), 5)
    finished = await ended(server, call["callId"])
    assert finished["endReason"] == "hangup"
    types = [e["type"] for e in await events_of(server, call["callId"])]
    assert "user_text_message" in types


async def test_no_audio_for_the_media_idle_timeout_is_a_connection_error(server: RunningServer) -> None:
    call = await new_call(server, {"inputSampleRate": 8000, "mediaIdleTimeout": "1s"})  # taken as 10 s
    async with websockets.connect(call["joinUrl"]) as ws:
        await next_json(ws)
        await ws.send(bytes(320))
        await asyncio.wait_for(ws.wait_closed(), 15)
    finished = await ended(server, call["callId"])
    assert finished["endReason"] == "connection_error"
