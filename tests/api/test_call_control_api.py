"""Call creation limits and `send_data_message` validation, in-process (no provider involved)."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from app.main import create_app
from tests.conftest import API_KEY, make_settings


@pytest.fixture
def limited(tmp_path: Path) -> TestClient:
    settings = make_settings(tmp_path, max_concurrent_calls=2)
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as test_client:
        yield test_client


def test_calls_beyond_max_concurrent_calls_get_429_with_retry_after(limited: TestClient) -> None:
    for _ in range(2):
        assert limited.post("/api/calls", json={}).status_code == 201
    response = limited.post("/api/calls", json={})
    assert response.status_code == 429 and response.json()["code"] == "too_many_calls"
    assert int(response.headers["retry-after"]) > 0


def test_an_ended_call_frees_its_slot(limited: TestClient) -> None:
    calls = [limited.post("/api/calls", json={}).json() for _ in range(2)]
    hung_up = limited.post(f"/api/calls/{calls[0]['callId']}/send_data_message", json={"type": "hang_up"})
    assert hung_up.status_code == 204
    assert limited.get(f"/api/calls/{calls[0]['callId']}").json()["endReason"] == "unjoined"
    assert limited.post("/api/calls", json={}).status_code == 201


def test_an_idempotency_key_must_be_printable_and_short(client: TestClient) -> None:
    response = client.post("/api/calls", json={}, headers={"Idempotency-Key": "x" * 300})
    assert response.status_code == 400 and response.json()["code"] == "invalid_idempotency_key"


def test_a_replayed_idempotency_key_returns_the_same_call_without_creating_another(
    client: TestClient,
) -> None:
    first = client.post("/api/calls", json={}, headers={"Idempotency-Key": "k-1"})
    again = client.post("/api/calls", json={}, headers={"Idempotency-Key": "k-1"})
    assert first.json()["callId"] == again.json()["callId"]
    assert again.headers["idempotent-replayed"] == "true"
    assert client.get("/api/calls").json()["total"] == 1


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"type": "play_dtmf_sounds", "digits": "12x"}, "'x' is not a DTMF digit"),
        ({"type": "play_dtmf_sounds", "digits": ""}, "digits"),
        ({"type": "play_dtmf_sounds", "digits": "1", "toneDuration": "0.01s"}, "toneDuration"),
        ({"type": "cold_transfer", "target": "555-1234"}, "E.164"),
        ({"type": "dance"}, "type"),
    ],
)
def test_a_malformed_data_message_is_a_400_naming_the_problem(
    client: TestClient, message: dict, field: str
) -> None:
    call = client.post("/api/calls", json={}).json()
    response = client.post(f"/api/calls/{call['callId']}/send_data_message", json=message)
    assert response.status_code == 400 and field in response.json()["detail"]


def test_acting_on_a_call_nobody_joined_is_422(client: TestClient) -> None:
    call = client.post("/api/calls", json={}).json()
    response = client.post(
        f"/api/calls/{call['callId']}/send_data_message",
        json={"type": "cold_transfer", "target": "+15550001111"},
    )
    assert response.status_code == 422 and response.json()["code"] == "call_not_active"


def test_a_data_message_to_an_unknown_call_is_404(client: TestClient) -> None:
    response = client.post("/api/calls/nope/send_data_message", json={"type": "hang_up"})
    assert response.status_code == 404
