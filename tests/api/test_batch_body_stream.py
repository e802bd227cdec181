"""Batch creation reads its body as a stream (spooled, then parsed twice with ijson): what that must not
change, on bodies shaped the way only a streamed parse sees differently."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from app.api.batches import BATCH_MAX_BODY_BYTES

DIALLED = {"twilio": {"outgoing": {"to": "+15550001", "from": "+15550002"}}}
WEBHOOK = "https://dialer.example.com/connect"


def call(n: int, medium: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"medium": medium or DIALLED, "metadata": {"n": str(n)}}


@pytest.fixture
def batches(client: TestClient) -> str:
    response = client.post("/api/agents", json={"name": "reminders"})
    assert response.status_code == 201
    return f"/api/agents/{response.json()['agentId']}/scheduled_batches"


def post(client: TestClient, batches: str, content: bytes | Iterator[bytes]) -> Any:
    return client.post(batches, content=content, headers={"Content-Type": "application/json"})


def stored_batches(client: TestClient, batches: str) -> int:
    return client.get(batches).json()["total"]


def test_fields_after_calls_in_the_body_are_honoured(client: TestClient, batches: str) -> None:
    body = {"calls": [call(0), call(1, {"twilio": {}})], "webhookUrl": WEBHOOK, "maxConcurrency": 3}
    response = post(client, batches, orjson.dumps(body))
    assert response.status_code == 201, response.text
    batch = response.json()
    assert (batch["totalCount"], batch["webhookUrl"], batch["maxConcurrency"]) == (2, WEBHOOK, 3)


def test_a_bad_call_deep_in_a_large_batch_stores_nothing_and_names_its_index(
    client: TestClient, batches: str
) -> None:
    calls = [call(n) for n in range(5000)]
    calls[4321] = call(4321, {"twilio": {}, "plivo": {}})
    response = post(client, batches, orjson.dumps({"calls": calls}))
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"
    assert response.json()["detail"].startswith("calls.4321: ")
    assert stored_batches(client, batches) == 0


def test_malformed_json_midway_through_calls_is_a_400_and_stores_nothing(
    client: TestClient, batches: str
) -> None:
    good = orjson.dumps([call(n) for n in range(2000)])[1:-1]
    body = b'{"calls": [' + good + b', {"medium": nope}, ' + good + b"]}"
    response = post(client, batches, body)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_json"
    assert response.json()["detail"].startswith("request body is not valid JSON")
    assert stored_batches(client, batches) == 0


def test_a_streamed_body_over_the_limit_is_refused_and_stores_nothing(
    client: TestClient, batches: str
) -> None:
    piece = orjson.dumps([call(n) for n in range(10_000)])[1:-1] + b","
    pieces = BATCH_MAX_BODY_BYTES // len(piece) + 1

    def body() -> Iterator[bytes]:  # no Content-Length: only the bytes that arrive tell
        yield b'{"calls": ['
        for _ in range(pieces):
            yield piece
        yield orjson.dumps(call(0)) + b"]}"

    response = post(client, batches, body())
    assert response.status_code == 413
    assert response.json()["code"] == "body_too_large"
    assert stored_batches(client, batches) == 0


def test_the_last_of_two_calls_keys_counts_as_before(client: TestClient, batches: str) -> None:
    body = b'{"calls": [{"medium": 1}, 2], "calls": {"item": 3}, "calls": [' + orjson.dumps(call(7)) + b"]}"
    response = post(client, batches, body)
    assert response.status_code == 201, response.text
    listed = client.get(f"{batches}/{response.json()['batchId']}/scheduled_calls").json()
    assert [c["metadata"] for c in listed["results"]] == [{"n": "7"}]


def test_a_call_that_is_not_an_object_is_named_by_its_index(client: TestClient, batches: str) -> None:
    response = post(client, batches, orjson.dumps({"calls": [call(0), call(1), [call(2)]]}))
    assert response.status_code == 400
    assert response.json() == {
        "detail": "calls.2: Input should be a valid dictionary",
        "code": "invalid_request",
    }


def test_calls_that_are_not_a_list_are_refused_as_before(client: TestClient, batches: str) -> None:
    response = post(client, batches, orjson.dumps({"calls": {"item": call(0)}}))
    assert response.status_code == 400
    assert response.json() == {"detail": "calls: Input should be a valid list", "code": "invalid_request"}


def test_an_empty_body_is_a_batch_without_calls(client: TestClient, batches: str) -> None:
    response = post(client, batches, b"  \n")
    assert response.status_code == 400 and response.json()["code"] == "no_calls"


def test_a_body_that_is_not_an_object_is_refused(client: TestClient, batches: str) -> None:
    response = post(client, batches, orjson.dumps([call(0)]))
    assert response.status_code == 400
    assert response.json() == {"detail": "request body must be a JSON object", "code": "invalid_json"}
