"""A simulated Twilio call reaching the user's own agent server through the `websocket` pipeline."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from app.simulator.audio import speech_like
from app.simulator.carrier import CallScript
from app.simulator.twilio import FakeTwilio
from tests.conftest import RunningServer, ended, events_of, wait_for

pytestmark = pytest.mark.e2e

AgentHandler = Callable[[ServerConnection], Awaitable[None]]


async def native_echo(ws: ServerConnection) -> None:
    """A native-protocol agent that says back every bit of PCM it hears."""
    try:
        async for message in ws:
            if isinstance(message, bytes):
                await ws.send(message)
    except ConnectionClosed:
        pass


async def twilio_echo(ws: ServerConnection) -> None:
    """A Twilio-Media-Streams bot (as pipecat's serializer speaks it) that echoes media and marks."""
    stream_sid = ""
    try:
        async for raw in ws:
            message = orjson.loads(raw)
            if message["event"] == "start":
                stream_sid = message["start"]["streamSid"]
            elif message["event"] == "media":
                payload = message["media"]["payload"]
                await ws.send(
                    orjson.dumps(
                        {"event": "media", "streamSid": stream_sid, "media": {"payload": payload}}
                    ).decode()
                )
            elif message["event"] == "stop":
                return
    except ConnectionClosed:
        pass


@pytest.fixture
async def agent_server() -> AsyncIterator[Callable[[AgentHandler], Awaitable[str]]]:
    servers = []

    async def start(handler: AgentHandler) -> str:
        server = await serve(handler, "127.0.0.1", 0)
        servers.append(server)
        return f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/agent"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(("framing", "handler"), [("native", native_echo), ("twilio", twilio_echo)])
async def test_a_call_round_trips_through_the_users_agent(
    server: RunningServer, twilio: FakeTwilio, make_agent, agent_server, framing: str, handler: AgentHandler
) -> None:
    url = await agent_server(handler)
    options = {"url": url, "framing": framing} | ({"sampleRate": 8000} if framing == "native" else {})
    agent = await make_agent(pipeline={"websocket": options})
    report = await twilio.call(agent, CallScript(audio=speech_like(2.0)))
    assert report.round_trip is not None and report.round_trip.correlation >= 0.9
    call = await ended(server, report.call_id)
    assert call["endReason"] == "hangup"


async def test_an_unreachable_agent_ends_the_call_with_connection_error(
    server: RunningServer, twilio: FakeTwilio, make_agent
) -> None:
    agent = await make_agent(
        pipeline={"websocket": {"url": "ws://127.0.0.1:9/nobody", "connectTimeout": "1s"}}
    )
    report = await twilio.call(agent, CallScript(audio=speech_like(1.0)))
    assert report.ended_by == "callbridge"
    call = await ended(server, report.call_id)
    assert call["endReason"] == "connection_error"
    errors = [e for e in await events_of(server, report.call_id) if e["type"] == "pipeline_error"]
    assert "could not connect" in errors[0]["text"]


async def test_the_bridge_tells_a_native_agent_when_to_speak_and_what_keys_were_pressed(
    server: RunningServer, twilio: FakeTwilio, make_agent, agent_server
) -> None:
    received: list[dict] = []

    async def recording_echo(ws: ServerConnection) -> None:
        async for message in ws:  # ends when the bridge closes
            if isinstance(message, str):
                received.append(orjson.loads(message))
            else:
                with contextlib.suppress(ConnectionClosed):  # the bridge may close while we echo
                    await ws.send(message)

    url = await agent_server(recording_echo)
    agent = await make_agent(
        pipeline={"websocket": {"url": url, "sampleRate": 8000}},
        firstSpeakerSettings={"agent": {"text": "Welcome to the bakery."}},
    )
    report = await twilio.call(agent, CallScript(audio=speech_like(2.0), dtmf=[(0.4, "1"), (0.6, "2")]))
    await ended(server, report.call_id)

    async def call_ended_arrived() -> bool:
        return bool(received) and received[-1]["type"] == "call_ended"

    await wait_for(call_ended_arrived, 5)
    types = [m["type"] for m in received]
    assert types[:2] == ["call_started", "forced_agent_message"]
    assert received[1]["content"] == "Welcome to the bakery."
    assert [m["digit"] for m in received if m["type"] == "dtmf"] == ["1", "2"]
    assert [m["text"] for m in received if m["type"] == "user_text_message"] == ["12"]
    assert types[-1] == "call_ended" and received[-1]["reason"] == "hangup"
