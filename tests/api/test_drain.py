"""While the service drains (SIGTERM), new calls are refused; readiness says so."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from starlette.testclient import TestClient

from tests.api.refused_calls import post_webhook, twilio_agent


@pytest.fixture
def agent_id(client: TestClient) -> str:
    return twilio_agent(client)


@pytest.fixture
def draining(client: TestClient) -> TestClient:
    client.app.state.services.draining = True  # type: ignore[attr-defined]
    return client


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
