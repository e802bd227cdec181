"""With CALLBRIDGE_REDIS_URL set and Redis unreachable, new calls are refused (503) and readiness says so;
nothing else about the API changes."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from app.main import create_app
from tests.api.refused_calls import post_webhook, twilio_agent
from tests.conftest import API_KEY, make_settings


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    """The app with a Redis URL nothing listens on."""
    settings = make_settings(tmp_path, redis_url=f"redis://127.0.0.1:{unused_port()}/0")
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as test_client:
        yield test_client


@pytest.fixture
def agent_id(client: TestClient) -> str:
    return twilio_agent(client)


def test_readyz_is_503_without_redis(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["detail"] == "redis: unreachable"


def test_call_creation_is_503_without_redis_with_retry_after(client: TestClient, agent_id: str) -> None:
    response = client.post(f"/api/agents/{agent_id}/calls", json={})
    assert response.status_code == 503 and response.json()["code"] == "cluster_unavailable"
    assert int(response.headers["retry-after"]) > 0
    assert client.get("/api/calls").json()["total"] == 0


def test_a_signed_webhook_is_503_without_redis_so_the_provider_tries_its_fallback(
    client: TestClient,
    agent_id: str,
) -> None:
    response = post_webhook(client, agent_id)
    assert response.status_code == 503 and response.json()["code"] == "cluster_unavailable"
    assert client.get("/api/calls").json()["total"] == 0


def test_the_rest_of_the_api_answers_without_redis(client: TestClient, agent_id: str) -> None:
    assert client.get(f"/api/agents/{agent_id}").status_code == 200
