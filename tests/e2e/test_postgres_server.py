"""The whole service on PostgreSQL: `serve` migrates a fresh database and a simulated call runs through it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.simulator.audio import speech_like
from app.simulator.twilio import CallScript, FakeTwilio
from tests.conftest import (
    TWILIO_ACCOUNT_SID,
    TWILIO_AUTH_TOKEN,
    RunningServer,
    fresh_postgres_database,
    run_server,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


@pytest.fixture(scope="module")
async def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningServer]:
    async with fresh_postgres_database() as url:
        with run_server(Path(tmp_path_factory.mktemp("pg-server")), CALLBRIDGE_DATABASE_URL=url) as running:
            yield running


async def test_a_call_runs_end_to_end_on_postgresql(postgres_server: RunningServer) -> None:
    async with postgres_server.api() as api:
        assert (
            await api.post(
                "/api/telephony_configs/twilio",
                json={
                    "accountSid": TWILIO_ACCOUNT_SID,
                    "authToken": TWILIO_AUTH_TOKEN,
                    "callCreationAllowAllAgents": True,
                },
            )
        ).status_code == 201
        agent = (await api.post("/api/agents", json={"name": "pg"})).json()["agentId"]
    twilio = FakeTwilio(postgres_server.base_url, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN)
    report = await twilio.call(agent, CallScript(audio=speech_like(1.5), dtmf=[(0.5, "5")]))
    assert report.round_trip is not None and report.round_trip.correlation >= 0.9

    async def ended_call() -> dict | None:
        async with postgres_server.api() as api:
            call = (await api.get(f"/api/calls/{report.call_id}")).json()
        return call if call["ended"] else None

    call = await wait_for(ended_call)
    assert call["endReason"] == "hangup"
    async with postgres_server.api() as api:
        events = (await api.get(f"/api/calls/{report.call_id}/events")).json()["results"]
    assert [e["type"] for e in events if e["type"] in ("joined", "dtmf", "ended")] == [
        "joined",
        "dtmf",
        "ended",
    ]
