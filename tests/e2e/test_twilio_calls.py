"""Simulated Twilio calls through a real callbridge server, as Twilio would place them."""

from __future__ import annotations

import asyncio
import base64

import httpx
import orjson
import pytest
import websockets

from app.media.codecs import encode_from_pcm16
from app.media.formats import PCMU_8K
from app.simulator.audio import speech_like
from app.simulator.twilio import CallScript, FakeTwilio, WebhookRejected, parse_connect_stream
from tests.conftest import RunningServer, wait_for

pytestmark = pytest.mark.e2e


async def get_call(server: RunningServer, call_id: str) -> dict:
    async with server.api() as api:
        return (await api.get(f"/api/calls/{call_id}")).json()


async def events_of(server: RunningServer, call_id: str, minimum: str = "debug") -> list[dict]:
    async with server.api() as api:
        page = await api.get(f"/api/calls/{call_id}/events?minimum_severity={minimum}&pageSize=200")
        return page.json()["results"]


async def ended(server: RunningServer, call_id: str, within: float = 10) -> dict:
    async def check() -> dict | None:
        call = await get_call(server, call_id)
        return call if call["ended"] else None

    return await wait_for(check, within)


async def new_stream(twilio: FakeTwilio, agent_id: str) -> tuple[str, dict[str, str], str]:
    """Webhook only: (stream URL, parameters, CallSid), leaving the stream to the test."""
    call_sid = "CA" + "7" * 32
    response = await twilio.voice_webhook(agent_id, twilio.incoming_params(CallScript(b""), call_sid))
    assert response.status_code == 200, response.text
    url, params = parse_connect_stream(response.text)
    return url, params, call_sid


async def test_audio_round_trips_through_the_echo_agent(server, twilio, make_agent) -> None:
    agent = await make_agent()
    report = await twilio.call(agent, CallScript(audio=speech_like(2.0), tail_seconds=1.0))
    assert report.round_trip is not None
    trip = report.round_trip
    print(f"\necho round trip: lag {trip.lag_ms:.0f} ms, correlation {trip.correlation:.4f}")
    assert report.round_trip.correlation >= 0.9
    call = await ended(server, report.call_id)
    assert call["endReason"] == "hangup"
    assert call["billedDuration"] == "6s"


async def test_audio_round_trips_through_a_16khz_agent_via_the_resampler(server, twilio, make_agent) -> None:
    agent = await make_agent(pipeline={"echo": {"sampleRate": 16000}})
    report = await twilio.call(agent, CallScript(audio=speech_like(2.0), tail_seconds=1.0))
    assert report.round_trip is not None
    print(
        f"\n16 kHz echo round trip: lag {report.round_trip.lag_ms:.0f} ms, "
        f"correlation {report.round_trip.correlation:.4f}"
    )
    assert report.round_trip.correlation >= 0.9


async def test_dtmf_reaches_the_call_events(server, twilio, make_agent) -> None:
    agent = await make_agent()
    report = await twilio.call(agent, CallScript(audio=speech_like(1.0), dtmf=[(0.2, "4"), (0.4, "#")]))
    await ended(server, report.call_id)
    digits = [e["extras"]["digit"] for e in await events_of(server, report.call_id) if e["type"] == "dtmf"]
    assert digits == ["4", "#"]


async def test_marks_come_back_after_the_audio_before_them_played(server, twilio, make_agent) -> None:
    agent = await make_agent()
    report = await twilio.call(agent, CallScript(audio=speech_like(2.5), tail_seconds=1.0))
    assert report.marks_received >= 2 and report.marks_returned == report.marks_received
    await ended(server, report.call_id)
    marks = [e for e in await events_of(server, report.call_id) if e["type"] == "mark"]
    assert len(marks) == report.marks_received
    played = [m["extras"]["playedMs"] for m in marks]
    heard_ms = len(report.played) / 16  # s16le at 8 kHz
    assert played == sorted(played) and 0 < played[-1] <= heard_ms


async def test_an_agent_barge_in_clears_the_providers_buffer(server, twilio, make_agent) -> None:
    agent = await make_agent(pipeline={"echo": {"delay": "0.6s", "clearOnDtmf": True}})
    report = await twilio.call(agent, CallScript(audio=speech_like(2.0), dtmf=[(1.0, "1")], tail_seconds=1.0))
    assert report.clears == 1
    await ended(server, report.call_id)
    types = [e["type"] for e in await events_of(server, report.call_id)]
    assert "clear" in types


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


async def test_a_forged_webhook_is_refused(server, make_agent, twilio) -> None:
    agent = await make_agent()
    forger = FakeTwilio(server.base_url, twilio.account_sid, "not-the-real-token")
    with pytest.raises(WebhookRejected) as info:
        await forger.call(agent, CallScript(audio=speech_like(0.5)))
    assert info.value.status == 403


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


async def test_malformed_frames_are_tolerated_and_touch_no_other_call(server, twilio, make_agent) -> None:
    agent = await make_agent()
    healthy = asyncio.create_task(twilio.call(agent, CallScript(audio=speech_like(2.0))))
    url, params, call_sid = await new_stream(twilio, agent)
    headers = {"X-Twilio-Signature": twilio.validator.compute_signature(url, {})}
    async with websockets.connect(url, additional_headers=headers) as ws:
        start = {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": "MZ1",
            "start": {
                "streamSid": "MZ1",
                "callSid": call_sid,
                "accountSid": twilio.account_sid,
                "tracks": ["inbound"],
                "customParameters": params,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
        await ws.send(orjson.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}).decode())
        await ws.send(orjson.dumps(start).decode())
        for garbage in [
            "{not json",
            '{"event": "media"}',
            '{"event":"media","media":{"payload":"@@@"}}',
            '{"event":"dtmf","dtmf":{"digit":"Z"}}',
            '{"event":"brand-new-event"}',
            b"\x00\x01",
        ]:
            await ws.send(garbage)
        frame = base64.b64encode(encode_from_pcm16(speech_like(0.02), PCMU_8K)).decode()
        await ws.send(
            orjson.dumps(
                {"event": "media", "streamSid": "MZ1", "media": {"track": "inbound", "payload": frame}}
            ).decode()
        )
        reply = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert reply["event"] == "media" and reply["streamSid"] == "MZ1"
        await ws.send(orjson.dumps({"event": "stop", "streamSid": "MZ1", "stop": {}}).decode())
    report = await healthy
    assert report.round_trip is not None and report.round_trip.correlation >= 0.9
    call = await ended(server, params["callId"])
    assert call["endReason"] == "hangup"
    events = await events_of(server, params["callId"])
    assert sum(e["type"] == "provider_error" for e in events) == 5
    assert any(e["type"] == "provider_event_ignored" for e in events)


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
    await asyncio.sleep(0.3)
    assert (await get_call(server, params["callId"]))["ended"] is None
    call = await ended(server, params["callId"], within=5)
    assert call["endReason"] == "unjoined"
