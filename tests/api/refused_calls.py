"""What the tests of refused calls (draining, Redis unreachable) share: an agent Twilio may call, and
Twilio's signed webhook for a new call to it."""

from __future__ import annotations

import httpx
from starlette.testclient import TestClient
from twilio.request_validator import RequestValidator

from tests.conftest import TWILIO_AUTH_TOKEN, TWILIO_CONFIG

PUBLIC = "https://bridge.example.com"
WEBHOOK = {"CallSid": "CA" + "1" * 32, "From": "+15551230000", "To": "+15559870000", "CallStatus": "ringing"}


def twilio_agent(client: TestClient) -> str:
    """Twilio's credentials imported (every agent allowed) and an agent: its id."""
    config = {**TWILIO_CONFIG, "callCreationAllowAllAgents": True}
    assert client.post("/api/telephony_configs/twilio", json=config).status_code == 201
    return client.post("/api/agents", json={"name": "a", "callTemplate": {}}).json()["agentId"]


def post_webhook(client: TestClient, agent_id: str, signature: str | None = None) -> httpx.Response:
    """Twilio's webhook for a new call to the agent, signed (or with `signature`)."""
    path = f"/api/agents/{agent_id}/telephony_xml"
    signature = signature or RequestValidator(TWILIO_AUTH_TOKEN).compute_signature(PUBLIC + path, WEBHOOK)
    return client.post(path, data=WEBHOOK, headers={"X-Twilio-Signature": signature})
