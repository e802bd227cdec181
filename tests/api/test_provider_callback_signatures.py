"""Provider-facing routes check the signature before anything else: an unsigned or forged request gets the
same 403 whether its agent or call exists or not, and only a signed one learns (404) that it does not."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import urlencode

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.testclient import TestClient

from app.providers.plivo import PlivoProvider
from app.providers.telnyx import TelnyxProvider
from app.providers.twilio import TwilioProvider
from app.simulator.carrier import CallScript
from app.simulator.telnyx import FakeTelnyx

PUBLIC = "https://bridge.example.com"
TELNYX = FakeTelnyx(PUBLIC, Ed25519PrivateKey.from_private_bytes(b"t" * 32))
MISSING = "00000000-0000-0000-0000-000000000000"
FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.fixture
def agent_id(client: TestClient) -> str:
    return client.post("/api/agents", json={"name": "a", "callTemplate": {}}).json()["agentId"]


@pytest.fixture
def telnyx_call(client: TestClient, agent_id: str) -> str:
    """A call created by a signed Telnyx webhook."""
    config = {"apiKey": "KEY0123", "publicKey": TELNYX.public_key, "callCreationAllowAllAgents": True}
    assert client.post("/api/telephony_configs/telnyx", json=config).status_code == 201
    response = signed_post(client, f"/api/agents/{agent_id}/telephony_xml")
    assert response.status_code == 200, response.text
    return client.get("/api/calls").json()["results"][0]["callId"]


def signed_post(client: TestClient, path: str):  # type: ignore[no-untyped-def]
    params = TELNYX.incoming_params(CallScript(b""), TELNYX.new_call_id())
    body = urlencode(params).encode()
    return client.post(path, content=body, headers={**FORM, **TELNYX.sign(PUBLIC + path, body, params)})


FORGED = {
    "unsigned": {},
    "forged twilio": {"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"},
    "forged telnyx": {"telnyx-signature-ed25519": "AAAA", "telnyx-timestamp": "1"},
}


@pytest.mark.parametrize("headers", FORGED.values(), ids=FORGED.keys())
@pytest.mark.parametrize(
    "route", ["telephony/status", "telephony/answer", "telephony/transfer?target=%2B15551230000"]
)
@pytest.mark.usefixtures("telnyx_call")
def test_an_unsigned_callback_is_refused_alike_for_a_call_that_exists_and_one_that_does_not(
    client: TestClient, telnyx_call: str, route: str, headers: dict[str, str]
) -> None:
    answers = [
        client.post(f"/api/calls/{call_id}/{route}", content=b"CallSid=x", headers={**FORM, **headers})
        for call_id in (telnyx_call, MISSING)
    ]
    assert [a.status_code for a in answers] == [403, 403]
    assert answers[0].json() == answers[1].json()


@pytest.mark.parametrize("headers", FORGED.values(), ids=FORGED.keys())
@pytest.mark.usefixtures("telnyx_call")
def test_an_unsigned_incoming_webhook_is_refused_alike_for_an_agent_that_exists_and_one_that_does_not(
    client: TestClient, agent_id: str, headers: dict[str, str]
) -> None:
    answers = [
        client.post(f"/api/agents/{agent}/telephony_xml", content=b"CallSid=x", headers={**FORM, **headers})
        for agent in (agent_id, MISSING)
    ]
    assert [a.status_code for a in answers] == [403, 403]
    assert answers[0].json() == answers[1].json()


@pytest.mark.usefixtures("telnyx_call")
def test_a_signed_webhook_learns_that_an_agent_does_not_exist(client: TestClient) -> None:
    response = signed_post(client, f"/api/agents/{MISSING}/telephony_xml")
    assert response.status_code == 404 and response.json()["code"] == "agent_not_found"


@pytest.mark.usefixtures("telnyx_call")
def test_a_signed_callback_learns_that_a_call_does_not_exist(client: TestClient) -> None:
    response = signed_post(client, f"/api/calls/{MISSING}/telephony/status")
    assert response.status_code == 404 and response.json()["code"] == "call_not_found"


@pytest.mark.parametrize(("target", "element"), [("+15551230000", "Number"), ("sip:desk@example.com", "Sip")])
def test_a_signed_telnyx_transfer_request_gets_texml_that_dials_the_target(
    client: TestClient, telnyx_call: str, target: str, element: str
) -> None:
    response = signed_post(
        client, f"/api/calls/{telnyx_call}/telephony/transfer?{urlencode({'target': target})}"
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/xml")
    dialled = ET.fromstring(response.text).find(f"./Dial/{element}")
    assert dialled is not None and dialled.text == target


def test_an_answer_callback_for_an_ended_call_gets_the_providers_hang_up(
    client: TestClient, telnyx_call: str
) -> None:
    hung_up = client.post(f"/api/calls/{telnyx_call}/send_data_message", json={"type": "hang_up"})
    assert hung_up.status_code == 204
    response = signed_post(client, f"/api/calls/{telnyx_call}/telephony/answer")
    assert response.status_code == 200
    assert [child.tag for child in ET.fromstring(response.text)] == ["Hangup"]


@pytest.mark.parametrize(
    "provider", [TwilioProvider(), TelnyxProvider(), PlivoProvider()], ids=lambda p: p.name
)
def test_every_webhook_provider_hangs_up_with_a_lone_hangup_verb(provider) -> None:  # type: ignore[no-untyped-def]
    response = ET.fromstring(provider.hangup_xml())
    assert response.tag == "Response" and [child.tag for child in response] == ["Hangup"]
