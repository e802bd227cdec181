"""Scheduled batches dialled by a real `callbridge serve` through the fake provider REST APIs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from app.simulator.audio import speech_like
from app.simulator.carrier import CallScript
from app.simulator.plivo_api import FakePlivoApi
from app.simulator.provider_api import FakeProviderApi, most_live_at_once
from app.simulator.telnyx_api import FakeTelnyxApi
from app.simulator.twilio_api import FakeTwilioApi
from app.webhooks.signing import signature
from tests.conftest import (
    PLIVO_AUTH_ID,
    PLIVO_AUTH_TOKEN,
    PLIVO_CONFIG,
    TELNYX_ACCOUNT_SID,
    TELNYX_API_KEY,
    TELNYX_CONFIG,
    TELNYX_KEY,
    TWILIO_ACCOUNT_SID,
    TWILIO_AUTH_TOKEN,
    TWILIO_CONFIG,
    RunningServer,
    import_config,
    run_server,
    wait_for,
)
from tests.e2e.conftest import TELNYX_APPLICATION_SID
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.slow

FROM = "+15550009999"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """This module's own server: its batches and the calls they make touch no other test. Its scheduler
    ticks every 0.2 s, so a batch's pace is not held back by the tick."""
    with run_server(tmp_path_factory.mktemp("batch-server"), CALLBRIDGE_SCHEDULER_INTERVAL="0.2") as running:
        yield running


@pytest.fixture(scope="module")
async def provider_apis(server: RunningServer) -> AsyncIterator[dict[str, FakeProviderApi]]:
    """Fake Twilio, Telnyx and Plivo REST APIs of this module's own, imported as the server's configs."""
    apis: dict[str, FakeProviderApi] = {
        "twilio": FakeTwilioApi(TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN),
        "telnyx": FakeTelnyxApi(TELNYX_API_KEY, TELNYX_KEY, account_sid=TELNYX_ACCOUNT_SID),
        "plivo": FakePlivoApi(PLIVO_AUTH_ID, PLIVO_AUTH_TOKEN),
    }
    configs = {
        "twilio": TWILIO_CONFIG,
        "telnyx": {**TELNYX_CONFIG, "applicationSid": TELNYX_APPLICATION_SID},
        "plivo": PLIVO_CONFIG,
    }
    for name, api in apis.items():
        api.callee = CallScript(audio=speech_like(0.5, 8000), tail_seconds=0.5)
        await api.start()
        await import_config(server, name, {**configs[name], "apiBaseUrl": api.base_url})
    yield apis
    for api in apis.values():
        await api.stop()


@pytest.fixture(scope="module")
def twilio_api(provider_apis: dict[str, FakeProviderApi]) -> FakeProviderApi:
    return provider_apis["twilio"]


async def new_agent(server: RunningServer) -> str:
    async with server.api() as api:
        response = await api.post("/api/agents", json={"name": "batch", "callTemplate": {}})
        assert response.status_code == 201, response.text
        return response.json()["agentId"]


def scheduled(to: str, provider: str = "twilio") -> dict[str, Any]:
    return {"medium": {provider: {"outgoing": {"to": to, "from": FROM}}}}


async def post_batch(server: RunningServer, agent_id: str, body: dict[str, Any]) -> dict[str, Any]:
    async with server.api() as api:
        response = await api.post(f"/api/agents/{agent_id}/scheduled_batches", json=body)
        assert response.status_code == 201, response.text
        return response.json()


async def finished(server: RunningServer, agent_id: str, batch_id: str, within: float) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        async with server.api() as api:
            batch = (await api.get(f"/api/agents/{agent_id}/scheduled_batches/{batch_id}")).json()
        return batch if batch.get("endedAt") else None

    return await wait_for(check, within=within, interval=0.25)


async def scheduled_statuses(server: RunningServer, agent_id: str, batch_id: str) -> list[str]:
    async with server.api() as api:
        path = f"/api/agents/{agent_id}/scheduled_batches/{batch_id}/scheduled_calls"
        page = (await api.get(path, params={"pageSize": 200})).json()
    return [call["status"] for call in page["results"]]


async def test_a_batch_is_dialled_to_the_end_without_passing_its_concurrency(
    server: RunningServer, twilio_api: FakeProviderApi
) -> None:
    agent = await new_agent(server)
    numbers = [f"+1555100{n:04d}" for n in range(30)]
    batch = await post_batch(
        server,
        agent,
        {"calls": [scheduled(to) for to in numbers], "maxConcurrency": 5, "callsPerMinute": 600},
    )
    done = await finished(server, agent, batch["batchId"], within=120)
    dialled = [call for call in twilio_api.calls.values() if call.to in numbers]
    assert done["completedCount"] == 30
    assert sorted(call.to for call in dialled) == sorted(numbers)  # each number exactly once
    assert most_live_at_once(dialled) <= 5
    assert set(await scheduled_statuses(server, agent, batch["batchId"])) == {"SUCCESS"}


def noon_somewhere() -> str:
    """A timezone where it is about noon now (Etc/GMT+N is N hours behind UTC)."""
    behind = datetime.now(UTC).hour - 12
    return f"Etc/GMT{behind:+d}"


async def test_a_batch_s_events_show_each_dial_inside_its_calling_hours_and_its_end(
    server: RunningServer, twilio_api: FakeProviderApi
) -> None:
    agent = await new_agent(server)
    numbers = [f"+1555300{n:04d}" for n in range(3)]
    calls = [{**scheduled(to), "timezone": noon_somewhere()} for to in numbers]
    hours = {"start": "09:00", "end": "16:00"}
    batch = await post_batch(server, agent, {"calls": calls, "callingHours": hours, "callsPerMinute": 600})
    await finished(server, agent, batch["batchId"], within=60)
    async with server.api() as api:
        path = f"/api/agents/{agent}/scheduled_batches/{batch['batchId']}/events"
        events = (await api.get(path)).json()["results"]
    types = [event["type"] for event in events]
    assert types[0] == "batch_created" and types[-1] == "batch_ended"
    dialled = [event for event in events if event["type"] == "call_dialled"]
    assert len(dialled) == 3 and all(event["callId"] and event["scheduledCallId"] for event in dialled)
    assert events[-1]["extras"] == {"SUCCESS": 3, "ERROR": 0, "EXPIRED": 0}


async def test_five_hundred_calls_over_three_providers_never_pass_max_concurrency(
    server: RunningServer, provider_apis: dict[str, FakeProviderApi]
) -> None:
    agent = await new_agent(server)
    providers = list(provider_apis)
    numbers = {f"+1555400{n:04d}": providers[n % 3] for n in range(500)}
    for provider in numbers.values():  # each callee rings 0.1 s, then is busy: no media, a short call
        provider_apis[provider].queue_outcome("busy")
    calls = [scheduled(to, provider) for to, provider in numbers.items()]
    batch = await post_batch(server, agent, {"calls": calls, "maxConcurrency": 20, "callsPerMinute": 100_000})
    done = await finished(server, agent, batch["batchId"], within=240)
    dialled = [call for api in provider_apis.values() for call in api.calls.values() if call.to in numbers]
    assert done["completedCount"] == 500
    assert sorted(call.to for call in dialled) == sorted(numbers)  # each number once, by its provider
    assert all(
        numbers[call.to] == api.provider
        for api in provider_apis.values()
        for call in api.calls.values()
        if call.to in numbers
    )
    assert most_live_at_once(dialled) <= 20


async def test_a_busy_callee_is_dialled_again_after_the_backoff_as_a_new_call(
    server: RunningServer, twilio_api: FakeProviderApi
) -> None:
    agent = await new_agent(server)
    number = "+15552000001"
    twilio_api.queue_outcome("busy")
    batch = await post_batch(
        server,
        agent,
        {"calls": [scheduled(number)], "retry": {"maxAttempts": 2, "backoff": "1s"}},
    )
    batch_id = batch["batchId"]

    async def two_calls() -> list[dict[str, Any]] | None:
        async with server.api() as api:
            path = f"/api/agents/{agent}/scheduled_batches/{batch_id}/created_calls"
            calls = (await api.get(path)).json()["results"]
        return calls if len(calls) == 2 and all(call["ended"] for call in calls) else None

    calls = await wait_for(two_calls, within=60, interval=0.25)
    assert sorted(call["endReason"] for call in calls) == ["hangup", "unjoined"]
    assert [call.to for call in twilio_api.calls.values()].count(number) == 2


async def test_a_call_without_an_outgoing_medium_is_handed_to_the_signed_batch_webhook(
    server: RunningServer, twilio_api: FakeProviderApi
) -> None:
    agent = await new_agent(server)
    secret = "batch-webhook-secret-0123"
    async with WebhookReceiver(200) as receiver:
        batch = await post_batch(
            server,
            agent,
            {"calls": [{"medium": {"twilio": {}}}], "webhookUrl": receiver.url, "webhookSecret": secret},
        )
        headers, body = await asyncio.wait_for(receiver.received.get(), 30)
    message = json.loads(body)
    timestamp = headers["x-callbridge-webhook-timestamp"]
    assert message["event"] == "call.started" and message["call"]["joinUrl"].startswith("ws")
    assert headers["x-callbridge-webhook-signature"] == signature(secret, timestamp, body)
    done = await finished(server, agent, batch["batchId"], within=30)
    assert done["completedCount"] == 1
    assert await scheduled_statuses(server, agent, batch["batchId"]) == ["SUCCESS"]


async def test_a_webhook_that_refuses_the_call_ends_it_and_marks_it_error(
    server: RunningServer, twilio_api: FakeProviderApi
) -> None:
    agent = await new_agent(server)
    async with WebhookReceiver(500) as receiver:
        batch = await post_batch(
            server, agent, {"calls": [{"medium": {"twilio": {}}}], "webhookUrl": receiver.url}
        )
        await asyncio.wait_for(receiver.received.get(), 30)
        await finished(server, agent, batch["batchId"], within=30)
    assert await scheduled_statuses(server, agent, batch["batchId"]) == ["ERROR"]
