"""The same call scenarios for every provider, through a real server and each provider's fake carrier.

Each test runs for Twilio, Telnyx, Plivo and Exotel (see `conftest.py`), on the best audio the provider
offers with the default config: μ-law 8 kHz for Twilio, L16 16 kHz for the others.
"""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
import websockets

from app.simulator.audio import speech_like
from app.simulator.carrier import CallScript
from tests.conformance.conftest import ProviderUnderTest
from tests.conftest import RunningServer, ended, events_of

pytestmark = pytest.mark.e2e


def script(provider: ProviderUnderTest, seconds: float, **kwargs: object) -> CallScript:
    """Speech-like caller audio at the stream's own rate."""
    rate = provider.sample_rate
    return CallScript(audio=speech_like(seconds, rate), sample_rate=rate, **kwargs)  # type: ignore[arg-type]


def echo(provider: ProviderUnderTest, **options: object) -> dict[str, object]:
    """An echo agent computing at the stream's rate (so nothing is resampled)."""
    return {"pipeline": {"echo": {"sampleRate": provider.sample_rate, **options}}}


async def call_count(server: RunningServer) -> int:
    async with server.api() as api:
        return (await api.get("/api/calls?pageSize=1")).json()["total"]


async def test_audio_round_trips_through_the_echo_agent(provider, make_agent) -> None:
    agent = await make_agent(**echo(provider))
    report = await provider.call(agent, script(provider, 2.0))
    trip = report.round_trip
    assert trip is not None
    print(
        f"\n{provider.name} {report.audio_format}: "
        f"lag {trip.lag_ms:.0f} ms, correlation {trip.correlation:.4f}"
    )
    assert trip.correlation >= 0.9
    assert report.audio_format.sample_rate == provider.sample_rate


async def test_the_media_path_does_not_resample_when_the_agent_takes_the_stream_rate(
    provider, make_agent
) -> None:
    agent = await make_agent(**echo(provider))
    report = await provider.call(agent, script(provider, 0.5, tail_seconds=0.3))
    joined = [e for e in await events_of(provider.server, report.call_id) if e["type"] == "joined"]
    assert joined[0]["extras"]["resampled"] is False


async def test_dtmf_reaches_the_call_events(provider, make_agent) -> None:
    agent = await make_agent(**echo(provider))
    report = await provider.call(agent, script(provider, 1.5, dtmf=[(0.3, "4"), (0.6, "#")]))
    await ended(provider.server, report.call_id)
    events = await events_of(provider.server, report.call_id)
    assert [e["extras"]["digit"] for e in events if e["type"] == "dtmf"] == ["4", "#"]


async def test_marks_come_back_only_after_the_audio_before_them_played(provider, make_agent) -> None:
    agent = await make_agent(**echo(provider))
    report = await provider.call(agent, script(provider, 2.5))
    assert report.marks_received >= 2 and report.marks_returned == report.marks_received
    await ended(provider.server, report.call_id)
    marks = [e for e in await events_of(provider.server, report.call_id) if e["type"] == "mark"]
    assert len(marks) == report.marks_received
    heard_ms = len(report.played) / 2 / provider.sample_rate * 1000
    played = [e["extras"]["playedMs"] for e in marks]
    assert played == sorted(played) and played[-1] <= heard_ms


async def test_a_barge_in_clears_the_providers_buffer(provider, make_agent) -> None:
    agent = await make_agent(**echo(provider, delay="0.5s", clearOnDtmf=True))
    report = await provider.call(agent, script(provider, 2.0, dtmf=[(1.0, "1")], tail_seconds=1.0))
    assert report.clears == 1
    await ended(provider.server, report.call_id)
    types = [e["type"] for e in await events_of(provider.server, report.call_id)]
    assert "clear" in types


async def test_the_end_of_the_stream_ends_the_call_with_hangup(provider, make_agent) -> None:
    agent = await make_agent(**echo(provider))
    report = await provider.call(agent, script(provider, 0.5, tail_seconds=0.2))
    assert report.ended_by == "carrier"
    call = await ended(provider.server, report.call_id)
    assert call["endReason"] == "hangup"


async def test_malformed_frames_and_unknown_events_are_tolerated(provider, make_agent) -> None:
    agent = await make_agent(**echo(provider))
    setup = await provider.new_stream(agent)
    wire = provider.wire(setup)
    frame = wire.audio_format.silence(wire.audio_format.bytes_for_ms(wire.inbound_frame_ms))
    async with websockets.connect(setup.url, additional_headers=setup.headers) as ws:
        for message in wire.opening():
            await ws.send(orjson.dumps(message).decode())
        for garbage in [
            "{not json",
            '{"event": "media"}',
            '{"event":"media","media":{"payload":"@@@"}}',
            b"\x00",
        ]:
            await ws.send(garbage)
        await ws.send('{"event":"brand-new-event"}')
        for chunk in range(1, 4):
            await ws.send(orjson.dumps(wire.media(chunk, frame)).decode())
        reply = await asyncio.wait_for(ws.recv(), 5)
        assert wire.parse(orjson.loads(reply)) is not None  # a message the provider accepts
    call = await ended(provider.server, setup_call_id(setup))
    assert call["endReason"] == "hangup"
    events = await events_of(provider.server, call["callId"])
    assert sum(e["type"] == "provider_error" for e in events) == 4
    assert any(e["type"] == "provider_event_ignored" for e in events)


def setup_call_id(setup) -> str:  # type: ignore[no-untyped-def]
    from app.simulator.carrier import call_id_of

    call_id = call_id_of(setup.url)
    assert call_id is not None
    return call_id


async def test_a_forged_signature_is_403_and_creates_no_call(signing_provider, make_agent) -> None:
    agent = await make_agent()
    before = await call_count(signing_provider.server)
    response = await signing_provider.webhook(agent, signing_provider.forger)
    assert response.status_code == 403 and response.json()["code"] == "invalid_signature"
    assert await call_count(signing_provider.server) == before


async def test_a_missing_signature_is_403_and_creates_no_call(signing_provider, make_agent) -> None:
    agent = await make_agent()
    before = await call_count(signing_provider.server)
    unsigned = await signing_provider.webhook(agent, signing_provider.fake, headers={})
    named = await signing_provider.webhook(
        agent, signing_provider.fake, headers={}, query=f"provider={signing_provider.name}"
    )
    assert unsigned.status_code == 403 and unsigned.json()["code"] == "signature_missing"
    assert named.status_code == 403 and named.json()["code"] == "invalid_signature"
    assert await call_count(signing_provider.server) == before


async def test_a_webhook_signed_for_other_fields_is_403(signing_provider, make_agent) -> None:
    agent = await make_agent()
    fake = signing_provider.fake
    params = fake.incoming_params(CallScript(b""), fake.new_call_id())
    headers = fake.sign(fake.webhook_url(agent), b"From=%2B15550000000", {**params, "From": "+15550000000"})
    response = await fake.webhook(agent, params, headers=headers)
    assert response.status_code == 403


async def test_an_agent_not_allowed_is_403(signing_provider, make_agent, server) -> None:
    agent = await make_agent()
    other = await make_agent()
    name = signing_provider.name
    async with server.api() as api:
        patch = {"callCreationAllowAllAgents": False, "callCreationAllowedAgentIds": [other]}
        assert (await api.patch(f"/api/telephony_configs/{name}", json=patch)).status_code == 200
        try:
            response = await signing_provider.webhook(agent, signing_provider.fake)
        finally:
            restore = {"callCreationAllowedAgentIds": [], "callCreationAllowAllAgents": True}
            await api.patch(f"/api/telephony_configs/{name}", json=restore)
    assert response.status_code == 403 and response.json()["code"] == "agent_not_allowed"


async def test_a_join_with_a_wrong_credential_is_refused(provider, make_agent) -> None:
    agent = await make_agent(**echo(provider))
    setup = await provider.new_stream(agent)
    path, _, query = setup.url.partition("?")
    forged = path.rsplit("/", 1)[0] + "/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" + (f"?{query}" if query else "")
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(forged, additional_headers=setup.headers):
            pass
    assert info.value.response.status_code == 403


async def test_a_stale_telnyx_signature_is_403(provider, make_agent) -> None:
    if provider.name != "telnyx":
        pytest.skip("only Telnyx timestamps its signatures")
    agent = await make_agent()
    fake = provider.fake
    params = fake.incoming_params(CallScript(b""), fake.new_call_id())
    from urllib.parse import urlencode

    headers = fake.signature_headers(urlencode(params).encode(), timestamp=int(time.time()) - 301)
    response = await fake.webhook(agent, params, headers=headers)
    assert response.status_code == 403 and response.json()["code"] == "invalid_signature"
