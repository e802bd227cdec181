"""While the service drains (SIGTERM), new calls are refused; readiness says so."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from starlette.testclient import TestClient
from twilio.request_validator import RequestValidator

from tests.conftest import TWILIO_AUTH_TOKEN, TWILIO_CONFIG

PUBLIC = "https://bridge.example.com"
WEBHOOK = {"CallSid": "CA" + "1" * 32, "From": "+15551230000", "To": "+15559870000", "CallStatus": "ringing"}


@pytest.fixture
def agent_id(client: TestClient) -> str:
    config = {**TWILIO_CONFIG, "callCreationAllowAllAgents": True}
    assert client.post("/api/telephony_configs/twilio", json=config).status_code == 201
    return client.post("/api/agents", json={"name": "a", "callTemplate": {}}).json()["agentId"]


@pytest.fixture
def draining(client: TestClient) -> TestClient:
    client.app.state.services.draining = True  # type: ignore[attr-defined]
    return client


def post_webhook(client: TestClient, agent_id: str, signature: str | None = None):  # type: ignore[no-untyped-def]
    path = f"/api/agents/{agent_id}/telephony_xml"
    signature = signature or RequestValidator(TWILIO_AUTH_TOKEN).compute_signature(PUBLIC + path, WEBHOOK)
    return client.post(path, data=WEBHOOK, headers={"X-Twilio-Signature": signature})


def test_readyz_is_503_while_draining(draining: TestClient) -> None:
    response = draining.get("/readyz")
    assert response.status_code == 503 and response.json()["status"] == "draining"


@pytest.mark.parametrize("path", ["/api/calls", "agent"])
def test_api_call_creation_is_503_draining_with_retry_after(
    draining: TestClient, agent_id: str, path: str
) -> None:
    if path == "agent":
        path = f"/api/agents/{agent_id}/calls"
    response = draining.post(path, json={})
    assert response.status_code == 503 and response.json()["code"] == "draining"
    assert int(response.headers["retry-after"]) > 0
    assert draining.get("/api/calls").json()["total"] == 0


def test_a_signed_webhook_is_answered_with_a_hang_up_and_creates_no_call(
    draining: TestClient, agent_id: str
) -> None:
    response = post_webhook(draining, agent_id)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/xml")
    assert [child.tag for child in ET.fromstring(response.text)] == ["Hangup"]
    assert draining.get("/api/calls").json()["total"] == 0


def test_an_unsigned_webhook_is_still_refused_while_draining(draining: TestClient, agent_id: str) -> None:
    response = post_webhook(draining, agent_id, signature="forged")
    assert response.status_code == 403
