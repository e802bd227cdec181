"""`cold_transfer`'s SIP options (sipVerb, extraHeaders, fallbackToBridge): checked before sending."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"sipVerb": "BYE"}, "sipVerb"),
        ({"extraHeaders": {"Via": "SIP/2.0/UDP evil"}}, "'Via' cannot be set"),
        ({"extraHeaders": {"Refer-To": "<sip:elsewhere@x>"}}, "'Refer-To' cannot be set"),
        ({"extraHeaders": {"X Bad": "1"}}, "'X Bad' cannot be set"),
        ({"extraHeaders": {"X-Note": "one\r\nInjected: yes"}}, "extraHeaders.X-Note: one line"),
        ({"extraHeaders": {f"X-{n}": "1" for n in range(21)}}, "at most 20"),
        ({"fallbackToBridge": "sometimes"}, "fallbackToBridge"),
    ],
)
def test_a_transfer_with_bad_sip_options_is_a_400_naming_the_problem(
    client: TestClient, options: dict, problem: str
) -> None:
    call = client.post("/api/calls", json={}).json()
    message = {"type": "cold_transfer", "target": "sip:desk@pbx.example.com", **options}
    response = client.post(f"/api/calls/{call['callId']}/send_data_message", json=message)
    assert response.status_code == 400 and problem in response.json()["detail"], response.json()


def test_a_transfer_with_valid_sip_options_gets_past_validation(client: TestClient) -> None:
    call = client.post("/api/calls", json={}).json()
    message = {
        "type": "cold_transfer",
        "target": "sip:desk@pbx.example.com",
        "sipVerb": "INVITE",
        "extraHeaders": {"X-Note": "vip"},
        "fallbackToBridge": True,
    }
    response = client.post(f"/api/calls/{call['callId']}/send_data_message", json=message)
    assert response.status_code == 422 and response.json()["code"] == "call_not_active"
