"""`/api/agents/{agentId}/scheduled_batches`: creating, reading, changing and deleting batches of calls."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from app.api.batches import BATCH_MAX_BODY_BYTES

DIALLED = {"twilio": {"outgoing": {"to": "+15550001", "from": "+15550002"}}}
WEBHOOK = "https://dialer.example.com/connect"


def call(medium: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    return {"medium": medium or DIALLED, **fields}


def in_minutes(minutes: float) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()


@pytest.fixture
def agent_id(client: TestClient) -> str:
    response = client.post("/api/agents", json={"name": "reminders"})
    assert response.status_code == 201
    return response.json()["agentId"]


@pytest.fixture
def batches(agent_id: str) -> str:
    return f"/api/agents/{agent_id}/scheduled_batches"


def create(client: TestClient, batches: str, **body: Any) -> dict[str, Any]:
    response = client.post(batches, json={"calls": [call()], **body})
    assert response.status_code == 201, response.text
    return response.json()


def refused(client: TestClient, batches: str, body: dict[str, Any], status: int = 400) -> dict[str, str]:
    response = client.post(batches, json=body)
    assert response.status_code == status, response.text
    return response.json()


def test_creating_a_batch_answers_201_with_its_counts(
    client: TestClient, batches: str, agent_id: str
) -> None:
    batch = create(client, batches, calls=[call(), call(metadata={"n": "2"})], maxConcurrency=5)
    assert batch["totalCount"] == 2
    assert (batch["completedCount"], batch["endedAt"], batch["paused"]) == (0, None, False)
    assert (batch["agentId"], batch["maxConcurrency"], batch["callsPerMinute"]) == (agent_id, 5, None)
    assert "calls" not in batch


def test_a_batch_shows_how_many_of_its_calls_are_live(client: TestClient, batches: str) -> None:
    batch = create(client, batches)
    assert batch["liveCount"] == 0
    assert client.get(f"{batches}/{batch['batchId']}").json()["liveCount"] == 0
    assert client.get(batches).json()["results"][0]["liveCount"] == 0


def test_the_webhook_secret_is_write_only(client: TestClient, batches: str) -> None:
    secret = "a-webhook-secret-0123"
    batch = create(client, batches, calls=[call({"twilio": {}})], webhookUrl=WEBHOOK, webhookSecret=secret)
    shown = client.get(f"{batches}/{batch['batchId']}").json()
    assert batch["webhookUrl"] == WEBHOOK
    assert secret not in str(batch) and secret not in str(shown)


def test_a_batch_reads_back_as_created(client: TestClient, batches: str) -> None:
    batch = create(client, batches, windowEnd=in_minutes(60), retry={"maxAttempts": 3, "backoff": "120s"})
    assert client.get(f"{batches}/{batch['batchId']}").json() == batch
    assert batch["retry"] == {"maxAttempts": 3, "backoff": "120s"}


def test_batches_are_listed_newest_first(client: TestClient, batches: str) -> None:
    first, second = create(client, batches), create(client, batches)
    listed = client.get(batches).json()
    assert [b["batchId"] for b in listed["results"]] == [second["batchId"], first["batchId"]]
    assert listed["total"] == 2


def test_patch_pauses_and_resumes_and_changes_the_pace(client: TestClient, batches: str) -> None:
    url = f"{batches}/{create(client, batches)['batchId']}"
    paused = client.patch(url, json={"paused": True, "callsPerMinute": 10})
    assert paused.status_code == 200
    assert (paused.json()["paused"], paused.json()["callsPerMinute"]) == (True, 10)
    resumed = client.patch(url, json={"paused": False}).json()
    assert (resumed["paused"], resumed["callsPerMinute"]) == (False, 10)


def test_patch_refuses_a_window_ending_before_it_starts(client: TestClient, batches: str) -> None:
    url = f"{batches}/{create(client, batches, windowStart=in_minutes(30))['batchId']}"
    response = client.patch(url, json={"windowEnd": in_minutes(10)})
    assert response.status_code == 400 and response.json()["code"] == "invalid_window"


def test_a_deleted_batch_is_gone(client: TestClient, batches: str) -> None:
    url = f"{batches}/{create(client, batches)['batchId']}"
    assert client.delete(url).status_code == 204
    assert client.get(url).status_code == 404
    assert client.get(batches).json()["total"] == 0


def test_scheduled_calls_are_listed_in_order_and_filtered_by_status(client: TestClient, batches: str) -> None:
    batch = create(client, batches, calls=[call(metadata={"n": str(n)}) for n in range(3)])
    url = f"{batches}/{batch['batchId']}/scheduled_calls"
    listed = client.get(url).json()
    assert [c["metadata"]["n"] for c in listed["results"]] == ["0", "1", "2"]
    assert listed["results"][0] == {
        "medium": {"twilio": {"outgoing": {**DIALLED["twilio"]["outgoing"], "additionalParams": {}}}},
        "templateContext": {},
        "metadata": {"n": "0"},
        "timezone": None,
        "callingHours": None,
        "status": "FUTURE",
        "batchId": batch["batchId"],
        "callId": None,
        "error": None,
        "attempts": 0,
    }
    assert client.get(url, params={"status": "FUTURE"}).json()["total"] == 3
    assert client.get(url, params={"status": "SUCCESS"}).json()["total"] == 0


def test_an_unknown_status_filter_is_refused(client: TestClient, batches: str) -> None:
    url = f"{batches}/{create(client, batches)['batchId']}/scheduled_calls"
    response = client.get(url, params={"status": "DONE"})
    assert response.status_code == 400 and response.json()["code"] == "invalid_status"


def test_a_new_batch_has_created_no_calls(client: TestClient, batches: str) -> None:
    response = client.get(f"{batches}/{create(client, batches)['batchId']}/created_calls")
    assert response.status_code == 200
    assert response.json() == {"results": [], "next": None, "previous": None, "total": 0}


def test_a_batch_without_calls_is_refused(client: TestClient, batches: str) -> None:
    assert refused(client, batches, {"calls": []})["code"] == "no_calls"
    assert refused(client, batches, {})["code"] == "no_calls"


def test_a_call_without_outgoing_needs_a_webhook(client: TestClient, batches: str) -> None:
    error = refused(client, batches, {"calls": [call(), call({"twilio": {}})]})
    assert error["code"] == "webhook_url_required" and error["detail"].startswith("calls.1: ")


def test_a_call_of_the_template_medium_without_outgoing_needs_a_webhook(
    client: TestClient, batches: str
) -> None:
    assert refused(client, batches, {"calls": [{"templateContext": {}}]})["code"] == "webhook_url_required"


def test_a_webhook_is_refused_when_every_call_is_dialled(client: TestClient, batches: str) -> None:
    error = refused(client, batches, {"calls": [call()], "webhookUrl": WEBHOOK})
    assert error["code"] == "webhook_url_not_allowed"


def test_a_window_ending_before_it_starts_is_refused(client: TestClient, batches: str) -> None:
    body = {"calls": [call()], "windowStart": in_minutes(60), "windowEnd": in_minutes(30)}
    assert refused(client, batches, body)["code"] == "invalid_window"


def test_a_window_too_short_is_refused_with_the_shortest_window_that_fits(
    client: TestClient, batches: str
) -> None:
    body = {"calls": [call()] * 1000, "callsPerMinute": 30, "windowEnd": in_minutes(10)}
    error = refused(client, batches, body)
    assert error["code"] == "window_too_short"
    assert "1000 calls need at least 34 minutes at 30 calls per minute" in error["detail"]


def test_without_its_own_pace_a_batch_is_checked_at_the_service_default(
    client: TestClient, batches: str
) -> None:
    body = {"calls": [call()] * 120, "windowEnd": in_minutes(1)}
    assert "need at least 2 minutes at 60 calls per minute" in refused(client, batches, body)["detail"]


def test_a_sip_password_in_a_scheduled_call_is_refused(client: TestClient, batches: str) -> None:
    medium = {"sip": {"outgoing": {"to": "sip:bob@pbx.example.com", "from": "alice", "password": "pw"}}}
    error = refused(client, batches, {"calls": [call(medium)]})
    assert error["code"] == "sip_password_unsupported" and error["detail"].startswith("calls.0: ")


def test_an_invalid_call_is_refused_with_its_index(client: TestClient, batches: str) -> None:
    error = refused(client, batches, {"calls": [call(), call({"twilio": {}, "plivo": {}})]})
    assert error["code"] == "invalid_request" and error["detail"].startswith("calls.1: ")


def test_a_batch_for_an_unknown_agent_is_404(client: TestClient) -> None:
    error = refused(client, "/api/agents/no-such-agent/scheduled_batches", {"calls": [call()]}, 404)
    assert error["code"] == "agent_not_found"


def test_an_unknown_batch_is_404(client: TestClient, batches: str) -> None:
    response = client.get(f"{batches}/no-such-batch")
    assert response.status_code == 404 and response.json()["code"] == "batch_not_found"


def test_a_batch_body_over_the_normal_limit_is_accepted(client: TestClient, batches: str) -> None:
    padding = "x" * 40_000
    body = {"calls": [call(templateContext={"note": padding}) for _ in range(50)]}  # about 2 MB
    response = client.post(batches, json=body)
    assert response.status_code == 201 and response.json()["totalCount"] == 50


def test_other_routes_keep_the_normal_body_limit(client: TestClient) -> None:
    response = client.post("/api/agents", json={"name": "big", "callTemplate": {"systemPrompt": "x" * 2**21}})
    assert response.status_code == 413


def test_a_batch_body_over_32_mib_is_refused(client: TestClient, batches: str) -> None:
    headers = {"Content-Type": "application/json", "Content-Length": str(BATCH_MAX_BODY_BYTES + 1)}
    response = client.post(batches, content=b"{}", headers=headers)
    assert response.status_code == 413
