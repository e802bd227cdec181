"""Scheduled batches dialled by a real `callbridge serve` through the fake provider REST APIs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from app.simulator.audio import speech_like
from app.simulator.carrier import CallScript
from app.simulator.provider_api import FakeProviderApi, most_live_at_once
from app.simulator.twilio_api import FakeTwilioApi
from app.webhooks.signing import signature
from tests.conftest import (
    TWILIO_ACCOUNT_SID,
    TWILIO_AUTH_TOKEN,
    TWILIO_CONFIG,
    RunningServer,
    import_config,
    run_server,
    wait_for,
)
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.slow

FROM = "+15550009999"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """This module's own server: its batches and the calls they make touch no other test."""
    with run_server(tmp_path_factory.mktemp("batch-server")) as running:
        yield running


@pytest.fixture(scope="module")
async def twilio_api(server: RunningServer) -> AsyncIterator[FakeProviderApi]:
    """A fake Twilio REST API of this module's own, imported as the server's Twilio config."""
    api = FakeTwilioApi(TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN)
    api.callee = CallScript(audio=speech_like(0.5, 8000), tail_seconds=0.5)
    await api.start()
    config = {**TWILIO_CONFIG, "apiBaseUrl": api.base_url, "callCreationAllowAllAgents": True}
    await import_config(server, "twilio", config)
    yield api
    await api.stop()


async def new_agent(server: RunningServer) -> str:
    async with server.api() as api:
        response = await api.post("/api/agents", json={"name": "batch", "callTemplate": {}})
        assert response.status_code == 201, response.text
        return response.json()["agentId"]


def scheduled(to: str) -> dict[str, Any]:
    return {"medium": {"twilio": {"outgoing": {"to": to, "from": FROM}}}}


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
