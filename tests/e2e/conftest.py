"""End-to-end fixtures: a real server with Twilio credentials imported, and a fake Twilio to call it."""

from __future__ import annotations

from typing import Any

import pytest

from app.simulator.twilio import FakeTwilio
from tests.conftest import TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, RunningServer


@pytest.fixture(scope="session")
async def twilio(server: RunningServer) -> FakeTwilio:
    async with server.api() as api:
        response = await api.post(
            "/api/telephony_configs/twilio",
            json={
                "accountSid": TWILIO_ACCOUNT_SID,
                "authToken": TWILIO_AUTH_TOKEN,
                "callCreationAllowAllAgents": True,
                "requestContextMapping": {"From": "user.phone_number"},
            },
        )
        assert response.status_code in (201, 409), response.text
    return FakeTwilio(server.base_url, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN)


@pytest.fixture
def make_agent(server: RunningServer):  # type: ignore[no-untyped-def]
    async def create(**template: Any) -> str:
        async with server.api() as api:
            response = await api.post("/api/agents", json={"name": "e2e", "callTemplate": template})
            assert response.status_code == 201, response.text
            return response.json()["agentId"]

    return create
