"""Webhooks through a real `callbridge serve`: a receiver that fails at first, the server restarted
(SIGTERM, then started again on the same database) meanwhile, and still every event of the call arrives
signed with the webhook's secret once the receiver recovers (the outbox kept what was not delivered)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import websockets

from tests.conftest import RunningServer, ended, fresh_postgres_database, run_server, wait_for
from tests.webhook_receiver import WebhookReceiver, signature_verifies

pytestmark = pytest.mark.e2e

ALL_EVENTS = {"call.started", "call.joined", "call.ended", "call.billed"}
SERVER_ENV = {"CALLBRIDGE_WEBHOOK_RETRY_BASE_S": "0.2"}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_env(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, str]]:
    """The server's database settings: its own SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield {}
        return
    async with fresh_postgres_database() as url:
        yield {"CALLBRIDGE_DATABASE_URL": url}


class Collected:
    """The receiver's requests as (event, callId, headers, body), in arrival order."""

    def __init__(self, receiver: WebhookReceiver) -> None:
        self.receiver = receiver
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []

    def drain(self) -> None:
        while not self.receiver.received.empty():
            headers, body = self.receiver.received.get_nowait()
            payload = orjson.loads(body)
            self.requests.append((payload["event"], payload["call"]["callId"], headers, body))

    def events_since(self, mark: int, call_id: str) -> set[str]:
        self.drain()
        return {event for event, call, _, _ in self.requests[mark:] if call == call_id}


async def joined_and_hung_up(server: RunningServer) -> str:
    """A serverWebSocket call, joined and then hung up by its client; its id once it has ended."""
    async with server.api() as api:
        response = await api.post(
            "/api/calls", json={"medium": {"serverWebSocket": {"inputSampleRate": 8000}}}
        )
        assert response.status_code == 201, response.text
        call = response.json()
    async with websockets.connect(call["joinUrl"]) as ws:
        first = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert first["type"] == "call_started"
        await ws.send(orjson.dumps({"type": "hang_up"}).decode())
        with contextlib.suppress(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.wait_closed(), 5)
    await ended(server, call["callId"])
    return call["callId"]


async def test_every_event_arrives_signed_after_failures_and_a_restart(
    tmp_path: Path, database_env: dict[str, str]
) -> None:
    env = {**SERVER_ENV, **database_env}
    async with WebhookReceiver(status=500) as receiver:
        collected = Collected(receiver)
        with run_server(tmp_path, **env) as server:
            async with server.api() as api:
                response = await api.post(
                    "/api/webhooks", json={"url": receiver.url, "events": sorted(ALL_EVENTS)}
                )
            assert response.status_code == 201, response.text
            webhook = response.json()
            call_id = await joined_and_hung_up(server)

            async def every_event_failed_once() -> bool:
                return collected.events_since(0, call_id) == ALL_EVENTS

            await wait_for(every_event_failed_once, within=20)
        collected.drain()
        recovered_from = len(collected.requests)
        receiver.status = 204
        with run_server(tmp_path, **env) as server:

            async def every_event_delivered() -> bool:
                return collected.events_since(recovered_from, call_id) == ALL_EVENTS

            await wait_for(every_event_delivered, within=30)

            async def healthy_again() -> dict | None:
                async with server.api() as api:
                    shown = (await api.get(f"/api/webhooks/{webhook['webhookId']}")).json()
                return shown if shown["status"] == "normal" and shown["lastStatusChange"] else None

            shown = await wait_for(healthy_again, within=10)
    secret = webhook["secrets"][0]
    assert all(signature_verifies(secret, headers, body) for _, _, headers, body in collected.requests)
    assert {event for event, _, _, _ in collected.requests[recovered_from:]} == ALL_EVENTS
    assert shown["recentFailures"] and shown["recentFailures"][-1]["failure"] == "answered HTTP 500"
