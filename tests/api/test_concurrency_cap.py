"""CALLBRIDGE_MAX_CONCURRENT_CALLS holds against bursts: ten creations at once with a cap of 4 make 4 calls.

Each test sends its requests concurrently to the in-process app (one event loop, as one instance serves
them), on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from twilio.request_validator import RequestValidator

from app.main import create_app
from tests.conftest import (
    API_KEY,
    TWILIO_ACCOUNT_SID,
    TWILIO_AUTH_TOKEN,
    fresh_postgres_database,
    make_settings,
)

CAP = 4
BURST = 10
PUBLIC = "https://bridge.example.com"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A SQLite file, or a PostgreSQL database of the test's own (dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'capped.db'}"
        return
    async with fresh_postgres_database() as url:
        yield url


@pytest.fixture
async def api(database_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The app with a cap of CAP live calls, its lifespan running, reached in-process."""
    app: Starlette = create_app(make_settings(tmp_path, database_url=database_url, max_concurrent_calls=CAP))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url=PUBLIC, headers={"X-API-Key": API_KEY}
        ) as client:
            yield client


async def new_agent(api: httpx.AsyncClient) -> str:
    response = await api.post("/api/agents", json={"name": "capped"})
    assert response.status_code == 201, response.text
    return str(response.json()["agentId"])


async def burst(*requests: Any) -> list[httpx.Response]:
    return list(await asyncio.gather(*requests))


def assert_cap_held(responses: list[httpx.Response], created: int = 201) -> None:
    """CAP requests made a call (`created`), the others were refused with 429 and a Retry-After."""
    statuses = sorted(response.status_code for response in responses)
    assert statuses == sorted([created] * CAP + [429] * (BURST - CAP)), statuses
    for refused in (r for r in responses if r.status_code == 429):
        assert refused.json()["code"] == "too_many_calls" and int(refused.headers["Retry-After"]) > 0


async def live_calls(api: httpx.AsyncClient) -> int:
    return int((await api.get("/api/calls")).json()["total"])


async def test_a_burst_of_api_creations_makes_exactly_cap_calls(api: httpx.AsyncClient) -> None:
    agent_id = await new_agent(api)
    body = {"medium": {"exotel": {}}}
    responses = await burst(*(api.post(f"/api/agents/{agent_id}/calls", json=body) for _ in range(BURST)))
    assert_cap_held(responses)
    assert await live_calls(api) == CAP


async def test_a_burst_of_signed_webhooks_makes_exactly_cap_calls(api: httpx.AsyncClient) -> None:
    agent_id = await new_agent(api)
    config = {
        "accountSid": TWILIO_ACCOUNT_SID,
        "authToken": TWILIO_AUTH_TOKEN,
        "callCreationAllowAllAgents": True,
    }
    assert (await api.post("/api/telephony_configs/twilio", json=config)).status_code == 201
    path = f"/api/agents/{agent_id}/telephony_xml"

    def webhook(n: int) -> Any:
        params = {"CallSid": f"CA{n:032d}", "AccountSid": TWILIO_ACCOUNT_SID, "From": "+15550000000"}
        signature = RequestValidator(TWILIO_AUTH_TOKEN).compute_signature(PUBLIC + path, params)
        return api.post(path, data=params, headers={"X-Twilio-Signature": signature})

    responses = await burst(*(webhook(n) for n in range(BURST)))
    assert_cap_held(responses, created=200)
    assert await live_calls(api) == CAP


async def test_requests_racing_with_one_idempotency_key_make_one_call_even_at_the_cap(
    api: httpx.AsyncClient,
) -> None:
    body = {"medium": {"exotel": {}}}
    fill = await burst(*(api.post("/api/calls", json=body) for _ in range(CAP - 1)))
    assert [r.status_code for r in fill] == [201] * (CAP - 1)
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    responses = await burst(*(api.post("/api/calls", json=body, headers=headers) for _ in range(BURST)))
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["callId"] for r in responses}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == BURST - 1
    assert await live_calls(api) == CAP


async def test_a_call_ending_frees_its_slot(api: httpx.AsyncClient) -> None:
    body = {"medium": {"exotel": {}}}
    calls = await burst(*(api.post("/api/calls", json=body) for _ in range(CAP)))
    assert (await api.post("/api/calls", json=body)).status_code == 429
    hang_up = {"type": "hang_up"}
    ended = await api.post(f"/api/calls/{calls[0].json()['callId']}/send_data_message", json=hang_up)
    assert ended.status_code == 204, ended.text
    assert (await api.post("/api/calls", json=body)).status_code == 201
