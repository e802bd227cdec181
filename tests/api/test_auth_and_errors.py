"""API keys guard every /api route except the provider-facing ones; errors are JSON with a code."""

from __future__ import annotations

from starlette.testclient import TestClient

from app.cli import new_api_key
from app.settings import Settings
from tests.conftest import API_KEY


def test_no_api_key_is_401(client: TestClient) -> None:
    client.headers.pop("X-API-Key")
    response = client.get("/api/agents")
    assert response.status_code == 401
    assert response.json() == {"detail": "this endpoint needs an X-API-Key header", "code": "missing_api_key"}


def test_a_wrong_api_key_is_401(client: TestClient) -> None:
    response = client.get("/api/agents", headers={"X-API-Key": API_KEY + "x"})
    assert response.status_code == 401 and response.json()["code"] == "invalid_api_key"


def test_a_key_from_the_environment_works(client: TestClient) -> None:
    assert client.get("/api/agents").status_code == 200


def test_a_key_created_with_the_cli_works(client: TestClient, settings: Settings) -> None:
    import asyncio

    from app.store.db import Database
    from app.store.repositories import ApiKeyRepository

    prefix, key = new_api_key()

    async def create() -> None:
        db = Database(settings.resolved_database_url)
        await ApiKeyRepository(db).add("cli", prefix, key)
        await db.dispose()

    asyncio.run(create())
    assert client.get("/api/agents", headers={"X-API-Key": key}).status_code == 200
    assert client.get("/api/agents", headers={"X-API-Key": key[:-1] + "?"}).status_code == 401


def test_health_endpoints_need_no_key(client: TestClient) -> None:
    client.headers.pop("X-API-Key")
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ready"
    assert "callbridge_calls_created" in client.get("/metrics").text


def test_unknown_resources_are_404_json(client: TestClient) -> None:
    response = client.get("/api/calls/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404
    assert response.json() == {
        "detail": "no call with id 00000000-0000-0000-0000-000000000000",
        "code": "call_not_found",
    }


def test_malformed_json_is_400(client: TestClient) -> None:
    response = client.post("/api/agents", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["code"] == "invalid_json"


def test_bad_page_size_is_400(client: TestClient) -> None:
    assert client.get("/api/calls?pageSize=0").json()["code"] == "invalid_page_size"
    assert client.get("/api/calls?cursor=garbage").json()["code"] == "invalid_cursor"
