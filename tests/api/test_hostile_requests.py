"""Request bodies are bounded before they are read: by `Content-Length`, while streaming, and in time."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from starlette.testclient import TestClient

from app.api.body_limit import BodyLimit, BodyLimitMiddleware, RouteBodyLimits
from app.settings import Settings
from tests.conftest import TWILIO_CONFIG

WEBHOOK = "/api/agents/a1/telephony_xml"


def chunks(total: int, size: int = 16 * 1024) -> Iterator[bytes]:
    """A chunked body (no Content-Length) of `total` bytes."""
    for start in range(0, total, size):
        yield b"x" * min(size, total - start)


def test_a_webhook_declaring_more_than_64_kib_is_413_before_anything_else(
    client: TestClient, settings: Settings
) -> None:
    response = client.post(WEBHOOK, content=b"x" * (settings.max_webhook_body_bytes + 1))
    assert response.status_code == 413 and response.json()["code"] == "body_too_large"
    assert response.headers["connection"] == "close"


def test_a_chunked_webhook_is_cut_at_64_kib(client: TestClient, settings: Settings) -> None:
    assert client.post("/api/telephony_configs/twilio", json=TWILIO_CONFIG).status_code == 201
    response = client.post(
        "/api/calls/c1/telephony/status",
        content=chunks(settings.max_webhook_body_bytes + 1),
        headers={"X-Twilio-Signature": "read-after-the-body"},
    )
    assert response.status_code == 413 and response.json()["code"] == "body_too_large"


def test_an_api_body_over_1_mib_is_413_whether_declared_or_streamed(
    client: TestClient, settings: Settings
) -> None:
    declared = client.post("/api/agents", content=b"{" * (settings.max_body_bytes + 1))
    streamed = client.post("/api/agents", content=chunks(settings.max_body_bytes + 1))
    assert [declared.status_code, streamed.status_code] == [413, 413]
    assert declared.json()["code"] == streamed.json()["code"] == "body_too_large"


def test_an_api_body_over_the_webhook_limit_but_under_its_own_is_read(client: TestClient) -> None:
    response = client.post("/api/agents", content=b"[" + b" " * 100_000 + b"]")
    assert response.status_code == 400 and response.json()["code"] == "invalid_json"


def test_a_route_can_have_a_larger_limit_than_the_default() -> None:
    batch = BodyLimit(32 * 2**20, 60)
    limits = RouteBodyLimits(BodyLimit(2**20, 10), {"/api/agents/{agent_id}/batches": batch})
    assert limits.for_path("/api/agents/a1/batches") is batch
    assert limits.for_path("/api/agents/a1/calls") is limits.default


async def test_a_body_that_does_not_arrive_in_time_is_408() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        from starlette.requests import Request

        await Request(scope, receive).body()
        raise AssertionError("the body never arrives")

    async def trickle() -> dict[str, Any]:
        await asyncio.Event().wait()  # a sender that never sends the rest
        raise AssertionError("unreachable")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    middleware = BodyLimitMiddleware(app, RouteBodyLimits(BodyLimit(1024, 0.05), {}))
    scope = {"type": "http", "method": "POST", "path": "/api/agents", "headers": [(b"content-length", b"10")]}
    await middleware(scope, trickle, send)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 408
    assert b'"code":"body_timeout"' in sent[1]["body"]
