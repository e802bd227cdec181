"""Scheduled batches beyond Ultravox: calling hours in each call's timezone, and the batch's event log."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

DIALLED = {"twilio": {"outgoing": {"to": "+15550001", "from": "+15550002"}}}
HOURS = {"start": "09:00", "end": "20:00"}


def call(**fields: Any) -> dict[str, Any]:
    return {"medium": DIALLED, **fields}


@pytest.fixture
def batches(client: TestClient) -> str:
    agent = client.post("/api/agents", json={"name": "reminders"}).json()["agentId"]
    return f"/api/agents/{agent}/scheduled_batches"


def post(client: TestClient, batches: str, status: int = 201, **body: Any) -> dict[str, Any]:
    response = client.post(batches, json={"calls": [call()], **body})
    assert response.status_code == status, response.text
    return response.json()


def event_types(client: TestClient, batches: str, batch_id: str, **params: str) -> list[str]:
    response = client.get(f"{batches}/{batch_id}/events", params=params)
    assert response.status_code == 200, response.text
    return [event["type"] for event in response.json()["results"]]


def test_a_batch_shows_its_calling_hours_and_timezone(client: TestClient, batches: str) -> None:
    batch = post(client, batches, callingHours=HOURS, timezone="Europe/Paris")
    assert (batch["callingHours"], batch["timezone"]) == (HOURS, "Europe/Paris")
    assert client.get(f"{batches}/{batch['batchId']}").json() == batch


def test_a_call_keeps_its_own_timezone_and_calling_hours(client: TestClient, batches: str) -> None:
    own = {"timezone": "America/Chicago", "callingHours": {"start": "10:00", "end": "18:30"}}
    batch = post(client, batches, calls=[call(**own)])
    listed = client.get(f"{batches}/{batch['batchId']}/scheduled_calls").json()["results"]
    assert listed[0]["timezone"] == "America/Chicago"
    assert listed[0]["callingHours"] == {"start": "10:00", "end": "18:30"}


def test_calling_hours_without_any_timezone_are_refused_naming_the_call(
    client: TestClient, batches: str
) -> None:
    refused = post(client, batches, 400, calls=[call(timezone="Asia/Tokyo"), call()], callingHours=HOURS)
    assert refused["code"] == "timezone_required"
    assert refused["detail"].startswith("calls.1: ")


def test_an_unknown_timezone_is_refused(client: TestClient, batches: str) -> None:
    refused = post(client, batches, 400, calls=[call(timezone="Mars/Olympus_Mons")])
    assert refused["code"] == "invalid_timezone"
    assert "Mars/Olympus_Mons" in refused["detail"]


@pytest.mark.parametrize(
    ("hours", "code"),
    [
        ({"start": "9:00", "end": "20:00"}, "invalid_calling_hours"),
        ({"start": "20:00", "end": "09:00"}, "invalid_calling_hours"),
        ({"start": "09:00"}, "invalid_request"),
    ],
)
def test_calling_hours_must_be_hh_mm_and_end_after_they_start(
    client: TestClient, batches: str, hours: dict[str, str], code: str
) -> None:
    refused = post(client, batches, 400, callingHours=hours, timezone="UTC")
    assert refused["code"] == code, refused


def test_calling_hours_cannot_be_patched(client: TestClient, batches: str) -> None:
    batch = post(client, batches)
    response = client.patch(f"{batches}/{batch['batchId']}", json={"callingHours": HOURS})
    assert response.status_code == 400


def test_creating_pausing_resuming_and_changing_a_batch_are_its_events(
    client: TestClient, batches: str
) -> None:
    batch_id = post(client, batches)["batchId"]
    url = f"{batches}/{batch_id}"
    client.patch(url, json={"paused": True})
    client.patch(url, json={"paused": False, "callsPerMinute": 30})
    assert event_types(client, batches, batch_id) == [
        "batch_created",
        "batch_paused",
        "batch_resumed",
        "batch_updated",
    ]


def test_a_batch_event_says_what_changed(client: TestClient, batches: str) -> None:
    batch_id = post(client, batches)["batchId"]
    client.patch(f"{batches}/{batch_id}", json={"callsPerMinute": 30, "maxConcurrency": 4})
    updated = client.get(f"{batches}/{batch_id}/events").json()["results"][-1]
    assert updated["extras"] == {"callsPerMinute": 30.0, "maxConcurrency": 4}
    assert (updated["batchId"], updated["scheduledCallId"], updated["severity"]) == (batch_id, None, "info")


def test_batch_events_filter_by_minimum_severity(client: TestClient, batches: str) -> None:
    batch_id = post(client, batches)["batchId"]
    assert event_types(client, batches, batch_id, minimumSeverity="warning") == []
    response = client.get(f"{batches}/{batch_id}/events", params={"minimumSeverity": "loud"})
    assert response.status_code == 400 and response.json()["code"] == "invalid_severity"


def test_the_events_of_an_unknown_batch_are_404(client: TestClient, batches: str) -> None:
    response = client.get(f"{batches}/00000000-0000-0000-0000-000000000000/events")
    assert response.status_code == 404 and response.json()["code"] == "batch_not_found"
