"""`POST /api/agents/{agentId}/telephony_xml` for Twilio: signed webhooks create calls; nothing else does."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

import pytest
from starlette.testclient import TestClient
from twilio.request_validator import RequestValidator

from tests.conftest import TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN

PUBLIC = "https://bridge.example.com"
WEBHOOK = {
    "CallSid": "CA" + "1" * 32,
    "AccountSid": TWILIO_ACCOUNT_SID,
    "From": "+15551230000",
    "To": "+15559870000",
    "CallStatus": "ringing",
    "Direction": "inbound",
    "ApiVersion": "2010-04-01",
}


@pytest.fixture
def agent_id(client: TestClient) -> str:
    template = {
        "systemPrompt": "Caller {{user.phone_number}}",
        "contextSchema": {"type": "object", "properties": {"user": {"type": "object"}}},
    }
    return client.post("/api/agents", json={"name": "inbound", "callTemplate": template}).json()["agentId"]


@pytest.fixture
def twilio_config(client: TestClient) -> None:
    client.post(
        "/api/telephony_configs/twilio",
        json={
            "accountSid": TWILIO_ACCOUNT_SID,
            "authToken": TWILIO_AUTH_TOKEN,
            "callCreationAllowAllAgents": True,
            "requestContextMapping": {"From": "user.phone_number", "CallSid": "twilio.callSid"},
        },
    )


def post_webhook(
    client: TestClient,
    agent_id: str,
    params: dict[str, str],
    token: str = TWILIO_AUTH_TOKEN,
    query: str = "",
    signature: str | None = None,
):  # type: ignore[no-untyped-def]
    path = f"/api/agents/{agent_id}/telephony_xml" + (f"?{query}" if query else "")
    headers = {
        "X-Twilio-Signature": signature
        if signature is not None
        else RequestValidator(token).compute_signature(PUBLIC + path, params)
    }
    return client.post(path, data=params, headers=headers)


def call_count(client: TestClient) -> int:
    return client.get("/api/calls").json()["total"]


@pytest.mark.usefixtures("twilio_config")
def test_a_signed_webhook_gets_twiml_with_a_fresh_join_url(client: TestClient, agent_id: str) -> None:
    client.headers.pop("X-API-Key")  # providers send no API key
    response = post_webhook(client, agent_id, WEBHOOK)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/xml")
    stream = ET.fromstring(response.text).find("./Connect/Stream")
    assert stream is not None
    url = stream.get("url", "")
    assert url.startswith("wss://bridge.example.com/calls/") and "?" not in url
    call_id = stream.find("Parameter").get("value")  # type: ignore[union-attr]
    assert url.split("/")[4] == call_id


@pytest.mark.usefixtures("twilio_config")
def test_the_call_carries_the_mapped_request_context(client: TestClient, agent_id: str) -> None:
    post_webhook(client, agent_id, WEBHOOK)
    call = client.get("/api/calls").json()["results"][0]
    assert call["systemPrompt"] == "Caller +15551230000"
    assert call["templateContext"] == {
        "user": {"phone_number": "+15551230000"},
        "twilio": {"callSid": WEBHOOK["CallSid"]},
    }
    assert call["medium"] == {"twilio": {}}


@pytest.mark.usefixtures("twilio_config")
def test_the_signature_covers_the_query_string(client: TestClient, agent_id: str) -> None:
    assert post_webhook(client, agent_id, WEBHOOK, query="provider=twilio").status_code == 200


@pytest.mark.usefixtures("twilio_config")
@pytest.mark.parametrize("tamper", ["forged", "wrong-token", "edited-field", "missing"])
def test_unverified_webhooks_are_403_and_create_no_call(
    client: TestClient, agent_id: str, tamper: str
) -> None:
    if tamper == "forged":
        response = post_webhook(client, agent_id, WEBHOOK, signature="bm90IGEgc2lnbmF0dXJl")
    elif tamper == "wrong-token":
        response = post_webhook(client, agent_id, WEBHOOK, token="someone-elses-token")
    elif tamper == "edited-field":
        signature = RequestValidator(TWILIO_AUTH_TOKEN).compute_signature(
            f"{PUBLIC}/api/agents/{agent_id}/telephony_xml", WEBHOOK
        )
        response = post_webhook(client, agent_id, {**WEBHOOK, "From": "+19999999999"}, signature=signature)
    else:
        response = client.post(f"/api/agents/{agent_id}/telephony_xml", data=WEBHOOK)
    assert response.status_code == 403
    assert response.json()["code"] in {"invalid_signature", "signature_missing"}
    assert call_count(client) == 0


def test_without_imported_credentials_it_is_403(client: TestClient, agent_id: str) -> None:
    response = post_webhook(client, agent_id, WEBHOOK)
    assert response.status_code == 403 and response.json()["code"] == "telephony_config_missing"


def test_an_agent_not_allowed_is_403(client: TestClient, agent_id: str) -> None:
    client.post(
        "/api/telephony_configs/twilio",
        json={
            "accountSid": TWILIO_ACCOUNT_SID,
            "authToken": TWILIO_AUTH_TOKEN,
            "callCreationAllowedAgentIds": [str(uuid.uuid4())],
        },
    )
    response = post_webhook(client, agent_id, WEBHOOK)
    assert response.status_code == 403 and response.json()["code"] == "agent_not_allowed"
    assert call_count(client) == 0


@pytest.mark.usefixtures("twilio_config")
def test_an_unknown_agent_is_404(client: TestClient) -> None:
    response = post_webhook(client, str(uuid.uuid4()), WEBHOOK)
    assert response.status_code == 404


@pytest.mark.usefixtures("twilio_config")
def test_a_context_the_schema_refuses_is_400_and_creates_no_call(client: TestClient) -> None:
    template = {
        "contextSchema": {
            "type": "object",
            "properties": {"user": {"type": "object", "properties": {"phone_number": {"type": "integer"}}}},
        }
    }
    agent = client.post("/api/agents", json={"name": "strict", "callTemplate": template}).json()["agentId"]
    response = post_webhook(client, agent, WEBHOOK)
    assert response.status_code == 400 and response.json()["code"] == "invalid_template_context"
    assert call_count(client) == 0
