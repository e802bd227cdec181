"""`/api/webhooks`: CRUD, validation (each bad input its own code), secrets generated and sealed at rest;
and `callbacks` on templates and calls (secrets write-only there, sealed at rest)."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from starlette.testclient import TestClient

URL = "https://hooks.example.com/callbridge"


def db_text(client: TestClient, sql: str) -> str:
    path = client.app.state.services.settings.data_dir / "callbridge.db"  # type: ignore[attr-defined]
    with sqlite3.connect(path) as db:
        return repr(db.execute(sql).fetchall())


def create(client: TestClient, **fields: Any) -> dict[str, Any]:
    response = client.post("/api/webhooks", json={"url": URL, "events": ["call.ended"], **fields})
    assert response.status_code == 201, response.text
    return response.json()


def refused(client: TestClient, body: dict[str, Any], status: int = 400) -> dict[str, str]:
    response = client.post("/api/webhooks", json=body)
    assert response.status_code == status, response.text
    return response.json()


@pytest.fixture
def agent_id(client: TestClient) -> str:
    response = client.post("/api/agents", json={"name": "a", "callTemplate": {"systemPrompt": "hi"}})
    return response.json()["agentId"]


def test_a_new_webhook_is_normal_with_no_failures_and_a_generated_secret(client: TestClient) -> None:
    webhook = create(client)
    assert webhook["status"] == "normal" and webhook["recentFailures"] == []
    assert webhook["lastStatusChange"] is None and webhook["agentId"] is None
    assert len(webhook["secrets"]) == 1 and len(webhook["secrets"][0]) >= 40


def test_an_empty_secrets_list_gets_a_generated_secret_too(client: TestClient) -> None:
    assert len(create(client, secrets=[])["secrets"]) == 1


def test_get_returns_the_webhook_with_its_secrets(client: TestClient) -> None:
    webhook = create(client, secrets=["s1", "s2"])
    assert client.get(f"/api/webhooks/{webhook['webhookId']}").json() == webhook
    assert webhook["secrets"] == ["s1", "s2"]


def test_secrets_are_sealed_at_rest(client: TestClient) -> None:
    create(client, secrets=["plain-webhook-secret"])
    assert "plain-webhook-secret" not in db_text(client, "SELECT secrets FROM webhooks")


def test_webhooks_are_listed_newest_first_in_pages(client: TestClient) -> None:
    first, second = create(client), create(client)
    page = client.get("/api/webhooks?pageSize=1").json()
    assert page["total"] == 2 and [w["webhookId"] for w in page["results"]] == [second["webhookId"]]
    rest = client.get(page["next"]).json()
    assert [w["webhookId"] for w in rest["results"]] == [first["webhookId"]]


def test_patch_changes_only_the_fields_given(client: TestClient) -> None:
    webhook = create(client, secrets=["kept"])
    response = client.patch(f"/api/webhooks/{webhook['webhookId']}", json={"events": ["call.billed"]})
    assert response.status_code == 200
    assert response.json() == {**webhook, "events": ["call.billed"]}


def test_put_replaces_the_webhook_and_a_get_body_can_be_sent_back(client: TestClient) -> None:
    webhook = create(client)
    changed = {**webhook, "url": "http://other.example/x", "events": ["call.started", "call.joined"]}
    response = client.put(f"/api/webhooks/{webhook['webhookId']}", json=changed)
    assert response.status_code == 200 and response.json() == changed


def test_delete_removes_the_webhook(client: TestClient) -> None:
    webhook = create(client)
    assert client.delete(f"/api/webhooks/{webhook['webhookId']}").status_code == 204
    response = client.get(f"/api/webhooks/{webhook['webhookId']}")
    assert response.status_code == 404 and response.json()["code"] == "webhook_not_found"


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_an_unknown_webhook_is_404(client: TestClient, method: str) -> None:
    body = {"url": URL, "events": ["call.ended"]}
    response = client.request(method, "/api/webhooks/nope", json=body if method in ("PUT", "PATCH") else None)
    assert response.status_code == 404 and response.json()["code"] == "webhook_not_found"


def test_a_webhook_for_an_agent_keeps_its_agent_id(client: TestClient, agent_id: str) -> None:
    assert create(client, agentId=agent_id)["agentId"] == agent_id


def test_an_unknown_agent_is_refused(client: TestClient) -> None:
    error = refused(client, {"url": URL, "events": ["call.ended"], "agentId": "no-such-agent"})
    assert error == {"detail": "agentId: no agent with id no-such-agent", "code": "agent_not_found"}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"url": "ftp://hooks.example.com/x", "events": ["call.ended"]}, "invalid_url"),
        ({"url": "hooks.example.com", "events": ["call.ended"]}, "invalid_url"),
        ({"url": "https://h.example/" + "x" * 200, "events": ["call.ended"]}, "invalid_url"),
        ({"url": URL, "events": []}, "invalid_events"),
        ({"url": URL, "events": ["call.exploded"]}, "invalid_events"),
        ({"url": URL, "events": ["call.ended"], "secrets": ["x" * 121]}, "invalid_secret"),
        ({"url": URL, "events": ["call.ended"], "secrets": [""]}, "invalid_secret"),
        ({"url": URL, "events": ["call.ended"], "secrets": ["s"] * 11}, "invalid_secret"),
        ({"events": ["call.ended"]}, "invalid_request"),
        ({"url": URL}, "invalid_request"),
        ({"url": URL, "events": ["call.ended"], "colour": "red"}, "invalid_request"),
    ],
)
def test_a_bad_field_is_refused_with_its_own_code(
    client: TestClient, body: dict[str, Any], code: str
) -> None:
    assert refused(client, body)["code"] == code


def test_a_bad_patch_is_refused_and_changes_nothing(client: TestClient) -> None:
    webhook = create(client)
    response = client.patch(f"/api/webhooks/{webhook['webhookId']}", json={"events": []})
    assert response.status_code == 400 and response.json()["code"] == "invalid_events"
    assert client.get(f"/api/webhooks/{webhook['webhookId']}").json() == webhook


# --- callbacks ------------------------------------------------------------------------------------


def test_a_calls_callbacks_show_secret_prefixes_only(client: TestClient) -> None:
    callbacks = {"ended": {"url": URL, "secrets": ["callback-secret"]}}
    call = client.post("/api/calls", json={"callbacks": callbacks}).json()
    assert call["callbacks"] == {"ended": {"url": URL, "secretPrefixes": ["call"]}}
    assert "callback-secret" not in db_text(client, "SELECT definition FROM calls")


def test_a_template_callbacks_are_sealed_and_shown_as_prefixes(client: TestClient) -> None:
    template = {"callbacks": {"joined": {"url": URL, "secrets": ["template-secret"]}}}
    agent = client.post("/api/agents", json={"name": "a", "callTemplate": template}).json()
    assert agent["callTemplate"]["callbacks"] == {"joined": {"url": URL, "secretPrefixes": ["temp"]}}
    assert "template-secret" not in db_text(client, "SELECT call_template FROM agents")


def test_an_agent_call_takes_the_template_callbacks_and_the_requests_win_per_kind(client: TestClient) -> None:
    template = {
        "callbacks": {"joined": {"url": URL + "/t-joined"}, "ended": {"url": URL + "/t-ended"}},
    }
    agent = client.post("/api/agents", json={"name": "a", "callTemplate": template}).json()
    body = {"callbacks": {"ended": {"url": URL + "/r-ended"}, "billed": {"url": URL + "/r-billed"}}}
    call = client.post(f"/api/agents/{agent['agentId']}/calls", json=body).json()
    assert {kind: c["url"] for kind, c in call["callbacks"].items()} == {
        "joined": URL + "/t-joined",
        "ended": URL + "/r-ended",
        "billed": URL + "/r-billed",
    }


def test_a_callback_with_a_bad_url_is_refused(client: TestClient) -> None:
    response = client.post("/api/calls", json={"callbacks": {"ended": {"url": "mailto:x@example.com"}}})
    assert response.status_code == 400 and response.json()["detail"].startswith("callbacks.ended.url")
