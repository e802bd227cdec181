"""Which deliveries a call's events queue (a running Services on SQLite): webhooks by event and agent,
the call's own callbacks, the body, and SIP billing deferred until it is final."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.schemas.calls import EndReason, StartAgentCallRequest, StartCallRequest
from app.services import Services
from app.store.tables import AgentRow, CallRow, WebhookRow, utcnow
from app.webhooks import outbox as outbox_module
from tests.conftest import make_settings
from tests.webhook_receiver import WebhookReceiver, signature_verifies

ALL_EVENTS = ["call.started", "call.joined", "call.ended", "call.billed"]
#: Nothing listens here: deliveries fail and stay in the outbox, which is what these tests read.
NOWHERE = "http://127.0.0.1:9/hooks"


@pytest.fixture
async def services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Services]:
    monkeypatch.setattr(outbox_module, "POLL_S", 3600.0)
    running = Services.build(make_settings(tmp_path, webhook_retry_base_s=3600))
    await running.start()
    yield running
    await running.stop()


async def add_webhook(services: Services, events: list[str], agent_id: str | None = None) -> str:
    assert services.webhooks is not None
    row = WebhookRow(
        id=f"w-{len(await services.webhooks.repository.all())}",
        created=utcnow(),
        url=NOWHERE,
        events=events,
        agent_id=agent_id,
        secrets=["webhook-secret"],
        status="normal",
        recent_failures=[],
    )
    await services.webhooks.repository.add(row)
    return row.id


async def add_agent(services: Services, name: str) -> AgentRow:
    now = utcnow()
    row = AgentRow(id=f"agent-{name}", name=name, call_template={}, created=now, updated=now)
    return await services.agents.add(row)


async def queued(services: Services, call_id: str) -> list[tuple[str, str | None]]:
    """(event, webhook id or None for a callback) of each delivery queued for the call."""
    assert services.webhooks is not None
    rows = await services.webhooks.deliveries.of_call(call_id)
    return [(row.event, row.webhook_id) for row in rows]


async def call(services: Services, **request: Any) -> CallRow:
    row, _ = await services.calls.create_call(StartCallRequest.model_validate(request))
    return row


async def run_through(services: Services, row: CallRow) -> None:
    await services.calls.mark_joined(row, "stream-1", None)
    await services.calls.end(row, EndReason.HANGUP, "done")


async def test_a_webhook_for_every_event_gets_each_in_order(services: Services) -> None:
    webhook = await add_webhook(services, ALL_EVENTS)
    row = await call(services)
    await run_through(services, row)
    assert await queued(services, row.id) == [(event, webhook) for event in ALL_EVENTS]


async def test_a_webhook_gets_only_the_events_it_subscribed_to(services: Services) -> None:
    webhook = await add_webhook(services, ["call.ended"])
    row = await call(services)
    await run_through(services, row)
    assert await queued(services, row.id) == [("call.ended", webhook)]


async def test_an_unjoined_call_ends_and_is_billed_without_a_join(services: Services) -> None:
    await add_webhook(services, ALL_EVENTS)
    row = await call(services)
    await services.calls.end(row, EndReason.UNJOINED, "nobody came")
    assert [event for event, _ in await queued(services, row.id)] == [
        "call.started",
        "call.ended",
        "call.billed",
    ]


async def test_a_webhook_for_an_agent_gets_only_that_agents_calls(services: Services) -> None:
    mine, other = await add_agent(services, "mine"), await add_agent(services, "other")
    webhook = await add_webhook(services, ["call.started"], agent_id=mine.id)
    calls = {
        agent.id: (await services.calls.create_agent_call(agent, StartAgentCallRequest()))[0]
        for agent in (mine, other)
    }
    agentless = await call(services)
    assert await queued(services, calls[mine.id].id) == [("call.started", webhook)]
    assert await queued(services, calls[other.id].id) == []
    assert await queued(services, agentless.id) == []


async def test_the_body_is_the_call_as_get_shows_it_when_the_event_happened(services: Services) -> None:
    await add_webhook(services, ["call.joined", "call.ended"])
    row = await call(services, metadata={"k": "v"})
    await run_through(services, row)
    assert services.webhooks is not None
    joined, ended = await services.webhooks.deliveries.of_call(row.id)
    current = await services.calls_repo.get(row.id)
    assert current is not None
    assert orjson.loads(ended.body) == {
        "event": "call.ended",
        "call": services.calls.to_schema(current).to_json(),
    }
    joined_call = orjson.loads(joined.body)["call"]
    assert joined_call["joined"] is not None and joined_call["ended"] is None


async def test_a_calls_callbacks_get_its_events_signed_with_their_secrets(services: Services) -> None:
    async with WebhookReceiver() as receiver:
        callbacks = {
            kind: {"url": receiver.url, "secrets": [f"{kind}-secret"]} for kind in ("joined", "ended")
        }
        row = await call(services, callbacks=callbacks)
        await run_through(services, row)
        got = [await asyncio.wait_for(receiver.received.get(), 10) for _ in range(2)]
    by_event = {orjson.loads(body)["event"]: (headers, body) for headers, body in got}
    assert set(by_event) == {"call.joined", "call.ended"}
    assert signature_verifies("joined-secret", *by_event["call.joined"])
    assert signature_verifies("ended-secret", *by_event["call.ended"])
    assert await queued(services, row.id) == [("call.joined", None), ("call.ended", None)]


async def test_a_webhook_and_a_callback_both_get_the_event(services: Services) -> None:
    webhook = await add_webhook(services, ["call.billed"])
    row = await call(services, callbacks={"billed": {"url": NOWHERE}})
    await services.calls.end(row, EndReason.HANGUP, "done")
    assert await queued(services, row.id) == [("call.billed", webhook), ("call.billed", None)]


async def test_a_deferred_calls_billing_is_queued_only_once_it_is_final(services: Services) -> None:
    await add_webhook(services, ["call.ended", "call.billed"])
    row = await call(services)
    services.calls.defer_billing(row.id)
    await services.calls.end(row, EndReason.HANGUP, "the agent's part ended; a bridge is still up")
    assert [event for event, _ in await queued(services, row.id)] == ["call.ended"]
    await services.calls.billing_final(row)
    assert [event for event, _ in await queued(services, row.id)] == ["call.ended", "call.billed"]


async def test_no_webhook_and_no_callback_queue_nothing(services: Services) -> None:
    row = await call(services)
    await run_through(services, row)
    assert await queued(services, row.id) == []


async def test_deleting_a_webhook_drops_what_it_had_still_to_deliver(services: Services) -> None:
    webhook = await add_webhook(services, ["call.started"])
    row = await call(services)
    assert services.webhooks is not None
    assert await services.webhooks.repository.delete(webhook)
    assert await queued(services, row.id) == []
