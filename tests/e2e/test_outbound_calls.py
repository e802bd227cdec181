"""Calls callbridge dials, end to end: a real server, fake provider REST APIs, and the callee's stream."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from app.simulator.audio import speech_like
from app.simulator.carrier import CallScript
from app.simulator.provider_api import FakeCall, FakeProviderApi
from tests.conftest import RunningServer, ended, events_of, get_call, wait_for
from tests.e2e.conftest import TELNYX_APPLICATION_SID
from tests.goertzel import detect_dtmf

TO, FROM = "+15550001111", "+15550002222"
PROVIDERS = ["twilio", "telnyx", "plivo"]


@pytest.fixture(params=PROVIDERS)
def provider(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def fake(provider: str, provider_apis: dict[str, FakeProviderApi]) -> FakeProviderApi:
    api = provider_apis[provider]
    api.callee = CallScript(audio=speech_like(1.0, 8000), tail_seconds=1.0)
    return api


def outgoing(provider: str, **extra: Any) -> dict[str, Any]:
    return {"medium": {provider: {"outgoing": {"to": TO, "from": FROM, **extra}}}}


async def dial(server: RunningServer, agent_id: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    async with server.api() as api:
        return await api.post(f"/api/agents/{agent_id}/calls", json=body, headers=headers)


async def dial_ok(server: RunningServer, agent_id: str, provider: str, **extra: Any) -> dict[str, Any]:
    response = await dial(server, agent_id, outgoing(provider, **extra))
    assert response.status_code == 201, response.text
    return response.json()


async def joined(server: RunningServer, call_id: str) -> dict:
    async def check() -> dict | None:
        call = await get_call(server, call_id)
        return call if call["joined"] else None

    return await wait_for(check, 10)


async def send(server: RunningServer, call_id: str, message: dict[str, Any]) -> httpx.Response:
    async with server.api() as api:
        return await api.post(f"/api/calls/{call_id}/send_data_message", json=message)


async def finished(call: FakeCall) -> FakeCall:
    await asyncio.wait_for(call.ended.wait(), 20)
    return call


def hang_up_requests(fake: FakeProviderApi, call: FakeCall) -> list[str]:
    """The REST requests that asked the provider to end `call` (each provider's own verb)."""
    ids = {call.sid, *call.ids.values()}
    found = []
    for r in fake.requests:
        about = any(i in r.path for i in ids)
        if about and (
            (r.method == "POST" and r.params.get("Status") in ("completed", "canceled"))
            or r.path.endswith("/actions/hangup")
            or r.method == "DELETE"
        ):
            found.append(f"{r.method} {r.path}")
    return found


async def hung_up(fake: FakeProviderApi, call: FakeCall) -> list[str]:
    """The hang-up requests for `call`, once there is one (for a leg whose end callbridge hears of from no
    stream: a ringing call, or one whose instance died)."""

    async def sent() -> list[str]:
        return hang_up_requests(fake, call)

    return await wait_for(sent)


def long_callee(fake: FakeProviderApi, seconds: float = 6.0) -> None:
    fake.callee = CallScript(audio=speech_like(seconds, 8000), tail_seconds=1.0)


# --- dialling -----------------------------------------------------------------------------------


async def test_a_dialled_call_asks_the_provider_for_the_documented_fields(
    server: RunningServer, make_agent: Any, fake: FakeProviderApi, provider: str
) -> None:
    agent = await make_agent()
    created = await dial_ok(server, agent, provider)
    call = await fake.wait_for_call()
    status_url = f"{server.base_url}/api/calls/{created['callId']}/telephony/status"
    answer_url = f"{server.base_url}/api/calls/{created['callId']}/telephony/answer"
    params = call.params
    if provider == "twilio":
        assert (params["To"], params["From"], params["StatusCallback"]) == (TO, FROM, status_url)
        assert created["joinUrl"] in params["Twiml"] and "<Connect><Stream" in params["Twiml"]
        assert set(params["StatusCallbackEvent"]) == {"initiated", "ringing", "answered", "completed"}
    elif provider == "telnyx":
        assert (params["To"], params["From"], params["Url"]) == (TO, FROM, answer_url)
        assert call.ids["connection_id"] == TELNYX_APPLICATION_SID  # the application-scoped create
        assert params["StatusCallback"] == status_url
    else:
        assert (params["to"], params["from"], params["answer_url"]) == (TO, FROM, answer_url)
        assert params["hangup_url"] == status_url and params["ring_url"] == status_url
    await finished(call)


async def test_the_callee_is_connected_to_the_agent_and_audio_round_trips(
    server: RunningServer, make_agent: Any, fake: FakeProviderApi, provider: str
) -> None:
    agent = await make_agent()
    created = await dial_ok(server, agent, provider)
    call = await finished(await fake.wait_for_call())
    assert call.error is None and call.report is not None
    trip = call.report.round_trip
    print(f"{provider} outbound echo: lag {trip.lag_ms if trip else None} ms")
    assert trip is not None and trip.correlation > 0.9
    done = await ended(server, created["callId"])
    assert done["endReason"] == "hangup" and done["billedDuration"] != "0s"
    types = [e["type"] for e in await events_of(server, created["callId"])]
    assert {"dialled", "answered", "joined", "provider_status"} <= set(types)


async def test_additional_params_are_merged_into_the_providers_request(
    server: RunningServer, make_agent: Any, fake: FakeProviderApi, provider: str
) -> None:
    agent = await make_agent()
    extra = {
        "twilio": {"record": True},
        "telnyx": {"record": "record-from-answer"},
        "plivo": {"caller_name": "Desk"},
    }
    await dial_ok(server, agent, provider, additionalParams=extra[provider])
    call = await fake.wait_for_call()
    expected = {
        "twilio": ("Record", "True"),
        "telnyx": ("Record", "record-from-answer"),
        "plivo": ("caller_name", "Desk"),
    }
    key, value = expected[provider]
    assert str(call.params[key]) in (value, "true")
    await finished(call)


async def test_a_dialled_call_defaults_to_the_callee_speaking_first(
    server: RunningServer, make_agent: Any, fake: FakeProviderApi
) -> None:
    agent = await make_agent()
    created = await dial_ok(server, agent, fake.provider)
    assert created["firstSpeakerSettings"] == {"user": {}}
    await finished(await fake.wait_for_call())


# --- how a dial can end ---------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["busy", "no-answer"])
async def test_an_unanswered_call_ends_unjoined_with_the_providers_status(
    server: RunningServer, make_agent: Any, fake: FakeProviderApi, outcome: str
) -> None:
    agent = await make_agent()
    fake.queue_outcome(outcome)  # type: ignore[arg-type]
    created = await dial_ok(server, agent, fake.provider)
    await finished(await fake.wait_for_call())
    done = await ended(server, created["callId"])
    assert done["endReason"] == "unjoined" and done["billedDuration"] == "0s"
    statuses = [
        e["extras"] for e in await events_of(server, created["callId"]) if e["type"] == "provider_status"
    ]
    assert statuses[-1]["status"] == outcome


async def test_a_429_is_retried_after_the_providers_retry_after(
    server: RunningServer, make_agent: Any, fake: FakeProviderApi
) -> None:
    agent = await make_agent()
    fake.fail_next(429, retry_after="1")
    before = len(fake.requests)
    await dial_ok(server, agent, fake.provider)
    creates = [r for r in fake.requests[before:] if r.method == "POST"][:2]
    assert len(creates) == 2 and creates[1].received_at - creates[0].received_at >= 0.95
    await finished(await fake.wait_for_call())


async def test_a_provider_500_ends_only_that_call_with_a_clear_error(
    server: RunningServer, make_agent: Any, fake: FakeProviderApi
) -> None:
    agent = await make_agent()
    long_callee(fake, 3)
    live = await dial_ok(server, agent, fake.provider)
    live_call = await fake.wait_for_call()
    fake.fail_next(500)
    response = await dial(server, agent, outgoing(fake.provider))
    assert response.status_code == 502 and response.json()["code"] == "provider_outcome_unknown"
    assert "500" in response.json()["detail"]
    async with server.api() as api:
        failed = (await api.get("/api/calls?pageSize=1")).json()["results"][0]
    assert failed["endReason"] == "unjoined"
    errors = [e for e in await events_of(server, failed["callId"]) if e["type"] == "provider_error"]
    assert errors and errors[0]["extras"]["httpStatus"] == 500
    await finished(live_call)
    assert live_call.report is not None and live_call.report.round_trip is not None
    assert (await ended(server, live["callId"]))["endReason"] == "hangup"


async def test_the_same_idempotency_key_gives_the_same_call_and_dials_once(
    server: RunningServer, make_agent: Any, fake: FakeProviderApi
) -> None:
    agent = await make_agent()
    key = str(uuid.uuid4())
    first = await dial(server, agent, outgoing(fake.provider), **{"Idempotency-Key": key})
    again = await dial(server, agent, outgoing(fake.provider), **{"Idempotency-Key": key})
    assert first.status_code == again.status_code == 201
    assert first.json()["callId"] == again.json()["callId"]
    assert again.headers["idempotent-replayed"] == "true"
    call = await fake.wait_for_call()
    other = await dial(server, agent, outgoing(fake.provider, to="+15550009999"), **{"Idempotency-Key": key})
    assert other.status_code == 409 and other.json()["code"] == "idempotency_key_reused"
    await finished(call)
    with pytest.raises(TimeoutError):
        await fake.wait_for_call(timeout=0.5)


async def test_two_requests_racing_with_one_idempotency_key_dial_once(
    server: RunningServer, make_agent: Any, fake: FakeProviderApi
) -> None:
    agent = await make_agent()
    key = str(uuid.uuid4())
    both = await asyncio.gather(
        *(dial(server, agent, outgoing(fake.provider), **{"Idempotency-Key": key}) for _ in range(2))
    )
    assert [r.status_code for r in both] == [201, 201]
    assert both[0].json()["callId"] == both[1].json()["callId"]
    await finished(await fake.wait_for_call())
    with pytest.raises(TimeoutError):
        await fake.wait_for_call(timeout=0.5)


# --- call control --------------------------------------------------------------------------------


async def test_hang_up_through_the_api_ends_the_provider_leg(
    server: RunningServer, make_agent: Any, fake: FakeProviderApi
) -> None:
    agent = await make_agent()
    long_callee(fake)
    created = await dial_ok(server, agent, fake.provider)
    call = await fake.wait_for_call()
    await joined(server, created["callId"])
    assert (await send(server, created["callId"], {"type": "hang_up"})).status_code == 204
    await finished(call)
    # The leg ends: when callbridge closes the stream the provider ends the call itself (its status
    # callback can then come before callbridge would ask), else callbridge's hang-up request ends it.
    assert call.end_status == "completed"
    assert (await ended(server, created["callId"]))["endReason"] == "agent_hangup"


async def test_the_agents_hang_up_ends_the_provider_leg(
    server: RunningServer, make_agent: Any, fake: FakeProviderApi
) -> None:
    agent = await make_agent(pipeline={"echo": {"hangUpOnDigit": "9"}})
    fake.callee = CallScript(audio=speech_like(6.0, 8000), dtmf=[(1.0, "9")])
    created = await dial_ok(server, agent, fake.provider)
    call = await finished(await fake.wait_for_call())
    assert call.end_status == "completed"
    assert (await ended(server, created["callId"]))["endReason"] == "agent_hangup"


async def test_hanging_up_a_ringing_call_cancels_it(
    server: RunningServer, make_agent: Any, fake: FakeProviderApi
) -> None:
    agent = await make_agent()
    fake.ring_seconds = 3.0
    try:
        created = await dial_ok(server, agent, fake.provider)
        call = await fake.wait_for_call()
        assert (await send(server, created["callId"], {"type": "hang_up"})).status_code == 204
        await finished(call)
        assert call.report is None and call.hangups >= 1 and await hung_up(fake, call)
    finally:
        fake.ring_seconds = 0.1
    assert (await ended(server, created["callId"]))["endReason"] == "unjoined"


@pytest.mark.parametrize("target", ["+15557654321", "sip:desk@pbx.example.com"])
async def test_a_cold_transfer_reaches_the_provider_and_the_agent_leaves(
    server: RunningServer, make_agent: Any, fake: FakeProviderApi, target: str
) -> None:
    agent = await make_agent()
    long_callee(fake)
    created = await dial_ok(server, agent, fake.provider)
    call = await fake.wait_for_call()
    await joined(server, created["callId"])
    response = await send(server, created["callId"], {"type": "cold_transfer", "target": target})
    assert response.status_code == 204, response.text
    await finished(call)
    assert call.transfers == [target]
    done = await ended(server, created["callId"])
    assert done["endReason"] == "agent_hangup"
    outcomes = [
        e["extras"].get("outcome")
        for e in await events_of(server, created["callId"])
        if e["type"] == "transfer"
    ]
    assert outcomes[-1] == "transferred"


async def test_dtmf_goes_out_of_band_where_the_provider_has_an_api_and_in_band_on_twilio(
    server: RunningServer, make_agent: Any, fake: FakeProviderApi
) -> None:
    agent = await make_agent()
    fake.callee = CallScript(audio=b"", tail_seconds=4.0)  # silence: the echo adds nothing to the tones
    created = await dial_ok(server, agent, fake.provider)
    call = await fake.wait_for_call()
    await joined(server, created["callId"])
    assert (
        await send(server, created["callId"], {"type": "play_dtmf_sounds", "digits": "12#"})
    ).status_code == 204
    await finished(call)
    sent = [e["extras"] for e in await events_of(server, created["callId"]) if e["type"] == "play_dtmf"]
    if fake.provider == "twilio":
        assert sent == [{"digits": "12#", "method": "in-band"}]
        assert call.report is not None
        assert detect_dtmf(call.report.played, call.report.audio_format.sample_rate) == "12#"
    else:
        assert sent == [{"digits": "12#", "method": "out-of-band"}] and call.dtmf == ["12#"]


async def test_data_messages_to_a_call_that_is_not_live_are_refused(
    server: RunningServer, make_agent: Any, fake: FakeProviderApi
) -> None:
    agent = await make_agent()
    fake.queue_outcome("busy")
    created = await dial_ok(server, agent, fake.provider)
    await finished(await fake.wait_for_call())
    await ended(server, created["callId"])
    response = await send(server, created["callId"], {"type": "play_dtmf_sounds", "digits": "1"})
    assert response.status_code == 422 and response.json()["code"] == "call_not_active"
