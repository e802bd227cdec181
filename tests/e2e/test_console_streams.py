"""The console's live views as server-sent events: calls as they change, a call's events and audio levels."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from app.simulator.audio import speech_like
from app.simulator.twilio import CallScript, FakeTwilio
from tests.conftest import RunningServer
from tests.live_call import live_call, server_events

pytestmark = pytest.mark.e2e


async def test_the_calls_stream_shows_a_call_live_then_ended(
    server: RunningServer, twilio: FakeTwilio, make_agent
) -> None:
    agent = await make_agent()
    seen: list[dict] = []

    async def follow() -> None:
        async with server.api() as api:
            async for event, call in server_events(api, "/api/calls/stream"):
                if event == "call" and call["agentId"] == agent:
                    seen.append(call)
                    if call["ended"]:
                        return

    following = asyncio.create_task(follow())  # opened after the call: its first event shows it live
    async with live_call(server, twilio, agent, CallScript(audio=speech_like(1.0))):
        pass
    await asyncio.wait_for(following, 10)
    assert seen[0]["ended"] is None
    assert seen[-1]["ended"] is not None and seen[-1]["endReason"] == "hangup"


async def test_the_events_stream_gives_the_events_so_far_then_new_ones_and_ends_with_the_call(
    server: RunningServer, twilio: FakeTwilio, make_agent
) -> None:
    agent = await make_agent()
    script = CallScript(audio=speech_like(2.0), dtmf=[(1.0, "5")])
    async with live_call(server, twilio, agent, script) as call, server.api() as api:
        stream = [e async for e in server_events(api, f"/api/calls/{call.call_id}/events/stream")]
    types = [data["type"] for event, data in stream if event == "call_event"]
    assert types.index("joined") < types.index("dtmf") < types.index("ended")
    assert stream[-1][0] == "ended" and stream[-1][1]["callId"] == call.call_id


async def test_a_watched_live_call_reports_its_levels_both_ways(
    server: RunningServer, twilio: FakeTwilio, make_agent
) -> None:
    agent = await make_agent(pipeline={"echo": {}})
    async with (
        live_call(server, twilio, agent, CallScript(audio=speech_like(3.0))) as call,
        server.api() as api,
    ):
        levels = [
            data
            async for event, data in server_events(api, f"/api/calls/{call.call_id}/events/stream")
            if event == "levels" and data["available"]
        ]
    caller = [level["callerToAgent"] for level in levels if level["callerToAgent"] is not None]
    agent_side = [level["agentToCaller"] for level in levels if level["agentToCaller"] is not None]
    assert caller and all(-40 < dbfs < 0 for dbfs in caller)  # speech_like: about -25 dBFS RMS
    assert agent_side and all(-40 < dbfs < 0 for dbfs in agent_side)  # the echo of it


async def test_the_events_stream_of_an_unknown_call_is_not_found(server: RunningServer) -> None:
    async with server.api() as api:
        response = await api.get("/api/calls/no-such-call/events/stream")
    assert response.status_code == 404 and response.json()["code"] == "call_not_found"


@pytest.mark.parametrize("path", ["/api/calls/stream", "/api/calls/some-call/events/stream"])
async def test_the_streams_need_an_api_key(server: RunningServer, path: str) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as anonymous:
        response = await anonymous.get(path)
    assert response.status_code == 401 and response.json()["code"] == "missing_api_key"
