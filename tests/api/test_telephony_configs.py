"""Imported Twilio credentials: write-only secrets, partial updates, one config per provider."""

from __future__ import annotations

import uuid

from starlette.testclient import TestClient

CONFIG = {
    "accountSid": "AC123",
    "authToken": "0123456789abcdef",
    "callCreationAllowAllAgents": True,
    "requestContextMapping": {"From": "user.phone_number"},
}


def test_secrets_are_write_only_and_shown_as_a_prefix(client: TestClient) -> None:
    response = client.post("/api/telephony_configs/twilio", json=CONFIG)
    assert response.status_code == 201
    body = response.json()
    assert body["authTokenPrefix"] == "0123" and "authToken" not in body
    assert body["accountSid"] == "AC123" and body["callCreationAllowAllAgents"] is True
    assert "0123456789abcdef" not in client.get("/api/telephony_configs/twilio").text


def test_a_second_create_is_409(client: TestClient) -> None:
    client.post("/api/telephony_configs/twilio", json=CONFIG)
    response = client.post("/api/telephony_configs/twilio", json=CONFIG)
    assert response.status_code == 409 and response.json()["code"] == "telephony_config_exists"


def test_patch_keeps_the_token_when_not_given(client: TestClient) -> None:
    client.post("/api/telephony_configs/twilio", json=CONFIG)
    agent_id = str(uuid.uuid4())
    response = client.patch(
        "/api/telephony_configs/twilio",
        json={
            "callCreationAllowAllAgents": False,
            "callCreationAllowedAgentIds": [agent_id],
            "apiBaseUrl": "http://127.0.0.1:9999",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["authTokenPrefix"] == "0123" and body["callCreationAllowedAgentIds"] == [agent_id]
    assert body["apiBaseUrl"] == "http://127.0.0.1:9999/"


def test_allow_all_and_an_allow_list_together_are_refused(client: TestClient) -> None:
    response = client.post(
        "/api/telephony_configs/twilio", json={**CONFIG, "callCreationAllowedAgentIds": [str(uuid.uuid4())]}
    )
    assert response.status_code == 400 and "not both" in response.json()["detail"]


def test_missing_required_fields_are_400(client: TestClient) -> None:
    response = client.post("/api/telephony_configs/twilio", json={"accountSid": "AC1"})
    assert response.status_code == 400 and response.json()["detail"] == "authToken: Field required"


def test_delete_then_get_is_404(client: TestClient) -> None:
    client.post("/api/telephony_configs/twilio", json=CONFIG)
    assert client.delete("/api/telephony_configs/twilio").status_code == 204
    assert client.get("/api/telephony_configs/twilio").status_code == 404
    assert client.patch("/api/telephony_configs/twilio", json={}).status_code == 404


def test_an_unknown_provider_is_404(client: TestClient) -> None:
    response = client.get("/api/telephony_configs/acme")
    assert response.status_code == 404 and response.json()["code"] == "unknown_provider"
