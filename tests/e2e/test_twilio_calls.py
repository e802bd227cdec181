"""Twilio-specific and session-lifecycle scenarios (the shared per-provider ones are in tests/conformance)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import httpx
import orjson
import pytest
import websockets

from app.simulator.audio import speech_like
from app.simulator.twilio import CallScript, FakeTwilio, parse_connect_stream
from tests.conftest import RunningServer, ended, events_of, get_call, wait_for

pytestmark = pytest.mark.e2e


async def new_stream(twilio: FakeTwilio, agent_id: str) -> tuple[str, dict[str, str], str]:
    """Webhook only: (stream URL, parameters, CallSid), leaving the stream to the test."""
    call_sid = "CA" + "7" * 32
    response = await twilio.voice_webhook(agent_id, twilio.incoming_params(CallScript(b""), call_sid))
    assert response.status_code == 200, response.text
    url, params = parse_connect_stream(response.text)
    return url, params, call_sid


async def test_audio_round_trips_through_a_16khz_agent_via_the_resampler(server, twilio, make_agent) -> None:
    agent = await make_agent(pipeline={"echo": {"sampleRate": 16000}})
    report = await twilio.call(agent, CallScript(audio=speech_like(2.0), tail_seconds=1.0))
    assert report.round_trip is not None
    print(
        f"\n16 kHz echo round trip: lag {report.round_trip.lag_ms:.0f} ms, "
        f"correlation {report.round_trip.correlation:.4f}"
    )
    assert report.round_trip.correlation >= 0.9


async def test_the_agent_hanging_up_ends_the_call_and_closes_the_stream(server, twilio, make_agent) -> None:
    agent = await make_agent(pipeline={"echo": {"hangUpOnDigit": "9"}})
    report = await twilio.call(agent, CallScript(audio=speech_like(3.0), dtmf=[(0.5, "9")]))
    assert report.ended_by == "callbridge"
    call = await ended(server, report.call_id)
    assert call["endReason"] == "agent_hangup"


async def test_max_duration_ends_the_call_with_timeout(server, twilio, make_agent) -> None:
    agent = await make_agent(maxDuration="1s")
    report = await twilio.call(agent, CallScript(audio=speech_like(4.0)))
    assert report.ended_by == "callbridge" and report.frames_sent < 150
    call = await ended(server, report.call_id)
    assert call["endReason"] == "timeout"


async def test_a_call_nobody_joins_ends_unjoined(server, make_agent) -> None:
    agent = await make_agent(joinTimeout="0.5s")
    async with server.api() as api:
        call = (await api.post(f"/api/agents/{agent}/calls", json={})).json()
    ended_call = await ended(server, call["callId"], within=5)
    assert ended_call["endReason"] == "unjoined" and ended_call["billedDuration"] == "0s"
    events = await events_of(server, call["callId"])
    assert events[-1]["type"] == "ended" and events[-1]["extras"] == {"endReason": "unjoined"}


async def test_a_join_with_a_wrong_credential_is_refused_and_leaves_the_call_alone(
    server, twilio, make_agent
):
    agent = await make_agent()
    url, params, call_sid = await new_stream(twilio, agent)
    forged_url = url.rsplit("/", 1)[0] + "/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    with pytest.raises(websockets.InvalidStatus) as info:
        await twilio.stream(forged_url, params, call_sid, CallScript(audio=b""))
    assert info.value.response.status_code == 403
    report = await twilio.stream(url, params, call_sid, CallScript(audio=speech_like(1.0)))
    assert report.round_trip is not None and report.round_trip.correlation >= 0.9


async def test_an_unsigned_handshake_is_refused_for_webhook_calls(server, twilio, make_agent) -> None:
    agent = await make_agent()
    url, params, call_sid = await new_stream(twilio, agent)
    with pytest.raises(websockets.InvalidStatus):
        await twilio.stream(url, params, call_sid, CallScript(audio=b""), sign=False)
    assert (await get_call(server, params["callId"]))["ended"] is None


async def test_a_second_join_is_refused_while_the_first_goes_on(server, twilio, make_agent) -> None:
    agent = await make_agent()
    url, params, call_sid = await new_stream(twilio, agent)
    first = asyncio.create_task(twilio.stream(url, params, call_sid, CallScript(audio=speech_like(2.0))))
    await wait_for(lambda: _joined(server, params["callId"]))
    with pytest.raises(websockets.InvalidStatus):
        await twilio.stream(url, params, call_sid, CallScript(audio=b""))
    report = await first
    assert report.round_trip is not None and report.round_trip.correlation >= 0.9


async def _joined(server: RunningServer, call_id: str) -> bool:
    return (await get_call(server, call_id))["joined"] is not None


async def test_two_concurrent_calls_do_not_disturb_each_other(server, twilio, make_agent) -> None:
    agent = await make_agent()
    a, b = speech_like(2.0, seed=1), speech_like(2.0, seed=2)
    report_a, report_b = await asyncio.gather(
        twilio.call(agent, CallScript(audio=a)), twilio.call(agent, CallScript(audio=b))
    )
    for report in (report_a, report_b):
        assert report.round_trip is not None and report.round_trip.correlation >= 0.9
    assert report_a.call_id != report_b.call_id


async def test_a_stream_for_an_ended_call_is_refused(server, twilio, make_agent) -> None:
    agent = await make_agent()
    url, params, call_sid = await new_stream(twilio, agent)
    await twilio.stream(url, params, call_sid, CallScript(audio=speech_like(0.3), tail_seconds=0.1))
    await ended(server, params["callId"])
    with pytest.raises(websockets.InvalidStatus):
        await twilio.stream(url, params, call_sid, CallScript(audio=b""))


async def test_the_server_reports_live_sessions_in_metrics(server) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        text = (await client.get("/metrics")).text
    assert "callbridge_active_sessions" in text and "callbridge_provider_webhooks_total" in text


async def test_a_stream_that_drops_before_start_leaves_the_call_to_its_join_deadline(
    server, twilio, make_agent
):
    agent = await make_agent(joinTimeout="1.5s")
    url, params, _ = await new_stream(twilio, agent)
    headers = {"X-Twilio-Signature": twilio.validator.compute_signature(url, {})}
    async with websockets.connect(url, additional_headers=headers) as ws:
        await ws.send(orjson.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}).decode())
    call = await ended(server, params["callId"], within=5)
    assert call["endReason"] == "unjoined" and call["joined"] is None
    # Not ended by the drop: only at the deadline (a lower bound; a loaded machine can only make it later).
    lived = datetime.fromisoformat(call["ended"]) - datetime.fromisoformat(call["created"])
    assert lived >= timedelta(seconds=1.5)
