"""telephony_xml for Telnyx and Plivo, provider detection, and their imported credentials."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import urlencode

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.testclient import TestClient

from app.simulator.carrier import CallScript
from app.simulator.plivo import FakePlivo
from app.simulator.telnyx import FakeTelnyx

PUBLIC = "https://bridge.example.com"
TELNYX = FakeTelnyx(PUBLIC, Ed25519PrivateKey.from_private_bytes(b"t" * 32))
PLIVO = FakePlivo(PUBLIC, "MA123", "plivo-token")


@pytest.fixture
def agent_id(client: TestClient) -> str:
    template = {
        "systemPrompt": "Caller {{user.phone}}",
        "contextSchema": {"type": "object", "properties": {"user": {"type": "object"}}},
    }
    return client.post("/api/agents", json={"name": "inbound", "callTemplate": template}).json()["agentId"]


@pytest.fixture
def configs(client: TestClient) -> None:
    common = {"callCreationAllowAllAgents": True, "requestContextMapping": {"From": "user.phone"}}
    telnyx = {"apiKey": "KEY0123", "publicKey": TELNYX.public_key, **common}
    plivo = {"authId": "MA123", "authToken": "plivo-token", **common}
    assert client.post("/api/telephony_configs/telnyx", json=telnyx).status_code == 201
    assert client.post("/api/telephony_configs/plivo", json=plivo).status_code == 201


def post(client: TestClient, fake: FakeTelnyx | FakePlivo, agent_id: str, query: str = ""):  # type: ignore[no-untyped-def]
    params = fake.incoming_params(CallScript(b"", from_number="+15551230000"), fake.new_call_id())
    path = f"/api/agents/{agent_id}/telephony_xml" + (f"?{query}" if query else "")
    body = urlencode(params).encode()
    headers = fake.sign(PUBLIC + path, body, params)
    return client.post(
        path, content=body, headers={"content-type": "application/x-www-form-urlencoded", **headers}
    )


@pytest.mark.usefixtures("configs")
def test_a_signed_telnyx_webhook_gets_texml_and_a_telnyx_call(client: TestClient, agent_id: str) -> None:
    response = post(client, TELNYX, agent_id)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/xml")
    stream = ET.fromstring(response.text).find("./Connect/Stream")
    assert stream is not None and stream.get("bidirectionalMode") == "rtp"
    call = client.get("/api/calls").json()["results"][0]
    assert call["medium"] == {"telnyx": {}} and call["systemPrompt"] == "Caller +15551230000"


@pytest.mark.usefixtures("configs")
def test_a_signed_plivo_webhook_gets_a_stream_and_plivos_fields_map_to_context(
    client: TestClient, agent_id: str
) -> None:
    response = post(client, PLIVO, agent_id)
    assert response.status_code == 200
    stream = ET.fromstring(response.text).find("./Stream")
    assert stream is not None and (stream.text or "").startswith("wss://bridge.example.com/calls/")
    call = client.get("/api/calls").json()["results"][0]
    assert call["medium"] == {"plivo": {}} and call["templateContext"] == {"user": {"phone": "15551230000"}}


@pytest.mark.usefixtures("configs")
def test_the_provider_override_names_the_provider_to_verify_with(client: TestClient, agent_id: str) -> None:
    assert post(client, PLIVO, agent_id, query="provider=plivo").status_code == 200
    assert post(client, PLIVO, agent_id, query="provider=telnyx").status_code == 403


def test_exotel_has_no_incoming_webhook(client: TestClient, agent_id: str) -> None:
    response = client.post(f"/api/agents/{agent_id}/telephony_xml?provider=exotel", data={})
    assert response.status_code == 400 and response.json()["code"] == "no_incoming_webhook"


def test_an_unknown_provider_override_is_400(client: TestClient, agent_id: str) -> None:
    response = client.post(f"/api/agents/{agent_id}/telephony_xml?provider=nexmo", data={})
    assert response.status_code == 400 and response.json()["code"] == "unknown_provider"


def test_telnyx_secrets_are_write_only(client: TestClient) -> None:
    body = {
        "accountSid": "AC1",
        "apiKey": "KEY0123456",
        "publicKey": TELNYX.public_key,
        "applicationSid": "app1",
    }
    created = client.post("/api/telephony_configs/telnyx", json=body).json()
    assert "apiKey" not in created and "publicKey" not in created
    assert created["apiKeyPrefix"] == "KEY0" and created["publicKeyPrefix"] == TELNYX.public_key[:4]
    assert created["streamCodec"] == "L16" and created["l16ByteOrder"] == "big"


def test_plivo_secrets_are_write_only_and_the_stream_format_is_chosen_per_config(client: TestClient) -> None:
    body = {"authId": "MA123", "authToken": "plivo-token", "streamContentType": "audio/x-mulaw;rate=8000"}
    created = client.post("/api/telephony_configs/plivo", json=body).json()
    assert "authToken" not in created and created["authTokenPrefix"] == "pliv"
    assert created["streamContentType"] == "audio/x-mulaw;rate=8000"


def test_a_telnyx_key_that_is_not_ed25519_is_400(client: TestClient) -> None:
    response = client.post("/api/telephony_configs/telnyx", json={"apiKey": "k", "publicKey": "bm9wZQ=="})
    assert response.status_code == 400 and "publicKey" in response.json()["detail"]
