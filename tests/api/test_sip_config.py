"""`GET/PATCH /api/sip`: the account SIP config, validated field by field, applied to the next INVITE."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from app.main import create_app
from app.schemas.sip import MAX_PATTERN_LENGTH
from tests.conftest import API_KEY, make_settings


@pytest.fixture
def agent_id(client: TestClient) -> str:
    response = client.post("/api/agents", json={"name": "sip"})
    assert response.status_code == 201
    return response.json()["agentId"]


def refused(client: TestClient, body: dict[str, object]) -> dict[str, str]:
    """The error body of a PATCH that must be refused with 400."""
    response = client.patch("/api/sip", json=body)
    assert response.status_code == 400, response.text
    return response.json()


def test_a_fresh_install_allows_no_source_and_no_agent(client: TestClient) -> None:
    response = client.get("/api/sip")
    assert response.status_code == 200
    assert response.json() == {
        "allowedCidrRanges": [],
        "allowAllAgents": False,
        "allowedAgents": [],
        "fallbackHandler": None,
        "domain": "bridge.example.com",
    }


def test_patch_changes_only_the_fields_given(client: TestClient, agent_id: str) -> None:
    client.patch("/api/sip", json={"allowedAgents": [{"agentId": agent_id, "toUserPattern": "^sales$"}]})
    response = client.patch("/api/sip", json={"allowAllAgents": True})
    assert response.status_code == 200
    body = response.json()
    assert body["allowAllAgents"] is True
    assert body["allowedAgents"] == [{"agentId": agent_id, "toUserPattern": "^sales$"}]
    assert client.get("/api/sip").json() == body


def test_cidr_ranges_are_normalized(client: TestClient) -> None:
    response = client.patch(
        "/api/sip", json={"allowedCidrRanges": ["10.0.0.7", "192.168.0.0/16", "10.0.0.7"]}
    )
    assert response.status_code == 200
    assert response.json()["allowedCidrRanges"] == ["10.0.0.7/32", "192.168.0.0/16"]


def test_a_cidr_range_with_host_bits_set_is_refused_with_the_network_meant(client: TestClient) -> None:
    error = refused(client, {"allowedCidrRanges": ["10.1.2.3/8"]})
    assert error["code"] == "invalid_cidr"
    assert (
        error["detail"] == "allowedCidrRanges.0: '10.1.2.3/8' has host bits set; did you mean '10.0.0.0/8'?"
    )


def test_a_malformed_cidr_range_is_refused(client: TestClient) -> None:
    error = refused(client, {"allowedCidrRanges": ["10.0.0.0/33"]})
    assert error["code"] == "invalid_cidr" and "'10.0.0.0/33'" in error["detail"]


def test_an_ipv6_range_is_refused(client: TestClient) -> None:
    error = refused(client, {"allowedCidrRanges": ["2001:db8::/32"]})
    assert error["code"] == "invalid_cidr" and "only IPv4" in error["detail"]


def test_an_agent_without_a_pattern_gets_the_agent_user_default(client: TestClient, agent_id: str) -> None:
    response = client.patch("/api/sip", json={"allowedAgents": [{"agentId": agent_id}]})
    assert response.json()["allowedAgents"] == [{"agentId": agent_id, "toUserPattern": f"^agent_{agent_id}$"}]


def test_an_invalid_pattern_is_refused_naming_it_and_the_regex_error(
    client: TestClient, agent_id: str
) -> None:
    error = refused(client, {"allowedAgents": [{"agentId": agent_id, "toUserPattern": "^(sales$"}]})
    assert error["code"] == "invalid_pattern"
    assert error["detail"] == (
        "allowedAgents.0.toUserPattern: '^(sales$' is not a valid regular expression: "
        "missing ), unterminated subpattern at position 1"
    )


def test_an_overlong_pattern_is_refused(client: TestClient, agent_id: str) -> None:
    pattern = "a" * (MAX_PATTERN_LENGTH + 1)
    error = refused(client, {"allowedAgents": [{"agentId": agent_id, "toUserPattern": pattern}]})
    assert error["code"] == "invalid_request" and "toUserPattern" in error["detail"]


def test_more_than_twenty_allowed_agents_are_refused(client: TestClient, agent_id: str) -> None:
    agents = [{"agentId": agent_id, "toUserPattern": f"^{n}$"} for n in range(21)]
    error = refused(client, {"allowedAgents": agents})
    assert error["code"] == "invalid_request" and "at most 20" in error["detail"]


def test_an_unknown_agent_is_refused(client: TestClient) -> None:
    error = refused(client, {"allowedAgents": [{"agentId": "no-such-agent", "toUserPattern": "^x$"}]})
    assert error == {"detail": "allowedAgents: no agent with id no-such-agent", "code": "agent_not_found"}


HANDLER_URL = "https://handler.example.com/sip"


def test_a_fallback_handlers_secrets_are_write_only(client: TestClient) -> None:
    given = {"url": HANDLER_URL, "secrets": ["first-secret", "second-secret"]}
    response = client.patch("/api/sip", json={"fallbackHandler": given})
    assert response.status_code == 200
    shown = {"url": HANDLER_URL, "secretPrefixes": ["firs", "seco"]}
    assert response.json()["fallbackHandler"] == shown
    assert client.get("/api/sip").json()["fallbackHandler"] == shown


def test_a_fallback_handler_without_secrets_gets_one_generated_and_shown_once(client: TestClient) -> None:
    response = client.patch("/api/sip", json={"fallbackHandler": {"url": HANDLER_URL}})
    handler = response.json()["fallbackHandler"]
    [secret] = handler["secrets"]
    assert len(secret) >= 32 and handler["secretPrefixes"] == [secret[:4]]
    assert "secrets" not in client.get("/api/sip").json()["fallbackHandler"]


def test_a_fallback_handler_patched_without_secrets_keeps_the_ones_it_has(client: TestClient) -> None:
    client.patch("/api/sip", json={"fallbackHandler": {"url": HANDLER_URL, "secrets": ["kept-secret"]}})
    response = client.patch("/api/sip", json={"fallbackHandler": {"url": "https://other.example.com/x"}})
    assert response.json()["fallbackHandler"] == {
        "url": "https://other.example.com/x",
        "secretPrefixes": ["kept"],
    }
    policy = client.app.state.services.sip_policy.current()  # type: ignore[attr-defined]
    assert policy.fallback.secrets == ["kept-secret"]


def test_a_null_fallback_handler_removes_it(client: TestClient) -> None:
    client.patch("/api/sip", json={"fallbackHandler": {"url": HANDLER_URL}})
    response = client.patch("/api/sip", json={"fallbackHandler": None})
    assert response.status_code == 200 and response.json()["fallbackHandler"] is None
    assert client.app.state.services.sip_policy.current().fallback is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("handler", "path"),
    [
        ({"url": HANDLER_URL, "secrets": []}, "fallbackHandler.secrets"),
        ({"url": HANDLER_URL, "secrets": [f"s{n}" for n in range(11)]}, "fallbackHandler.secrets"),
        ({"url": HANDLER_URL, "secrets": ["x" * 121]}, "fallbackHandler.secrets.0"),
        ({"url": "ftp://handler.example.com/sip"}, "fallbackHandler.url"),
        ({"secrets": ["a-secret"]}, "fallbackHandler.url"),
    ],
    ids=["no-secrets", "eleven-secrets", "a-secret-over-120", "not-http", "no-url"],
)
def test_a_malformed_fallback_handler_is_refused_naming_the_field(
    client: TestClient, handler: dict[str, object], path: str
) -> None:
    error = refused(client, {"fallbackHandler": handler})
    assert error["code"] == "invalid_request" and error["detail"].startswith(f"{path}: ")


def test_a_fallback_handlers_secrets_are_sealed_at_rest(client: TestClient) -> None:
    client.patch("/api/sip", json={"fallbackHandler": {"url": HANDLER_URL, "secrets": ["plain-secret"]}})
    with sqlite3.connect(client.app.state.services.settings.data_dir / "callbridge.db") as db:  # type: ignore[attr-defined]
        (stored,) = db.execute("SELECT fallback_handler FROM sip_config").fetchone()
    assert HANDLER_URL in stored and "plain-secret" not in stored


def test_a_get_body_with_a_fallback_handler_sent_back_keeps_its_secrets(client: TestClient) -> None:
    client.patch("/api/sip", json={"fallbackHandler": {"url": HANDLER_URL, "secrets": ["kept-secret"]}})
    shown = client.get("/api/sip").json()
    response = client.patch("/api/sip", json=shown)
    assert response.status_code == 200 and response.json() == shown
    policy = client.app.state.services.sip_policy.current()  # type: ignore[attr-defined]
    assert policy.fallback.secrets == ["kept-secret"]


def test_a_new_domain_is_refused_as_read_only(client: TestClient) -> None:
    error = refused(client, {"domain": "sip.other.example"})
    assert error["code"] == "read_only"


def test_a_get_body_sent_back_unchanged_is_accepted(client: TestClient, agent_id: str) -> None:
    client.patch(
        "/api/sip", json={"allowedAgents": [{"agentId": agent_id}], "allowedCidrRanges": ["10.0.0.0/8"]}
    )
    shown = client.get("/api/sip").json()
    response = client.patch("/api/sip", json=shown)
    assert response.status_code == 200 and response.json() == shown


def test_a_refused_patch_changes_nothing(client: TestClient) -> None:
    client.patch("/api/sip", json={"allowedCidrRanges": ["10.0.0.0/8"]})
    refused(client, {"allowedCidrRanges": ["192.168.0.0/16"], "allowedAgents": [{"agentId": "gone"}]})
    assert client.get("/api/sip").json()["allowedCidrRanges"] == ["10.0.0.0/8"]


def test_unknown_fields_are_refused(client: TestClient) -> None:
    assert refused(client, {"allowedCidrs": []})["code"] == "invalid_request"


def test_the_domain_comes_from_the_setting(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, sip_domain="sip.example.net")
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
        assert client.get("/api/sip").json()["domain"] == "sip.example.net"


def test_without_a_public_url_the_domain_is_the_listen_host(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, public_url="", host="10.1.2.3")
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
        assert client.get("/api/sip").json()["domain"] == "10.1.2.3"


def test_a_patch_applies_to_the_policy_at_once(client: TestClient, agent_id: str) -> None:
    policy_store = client.app.state.services.sip_policy  # type: ignore[attr-defined]
    assert not policy_store.current().source_allowed("10.0.0.9")
    client.patch(
        "/api/sip",
        json={
            "allowedCidrRanges": ["10.0.0.0/24"],
            "allowedAgents": [{"agentId": agent_id, "toUserPattern": "sales"}],
        },
    )
    policy = policy_store.current()
    assert policy.source_allowed("10.0.0.9") and policy.route("sales") == agent_id


def test_the_stored_config_is_loaded_at_startup(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
        client.patch("/api/sip", json={"allowedCidrRanges": ["10.0.0.0/24"]})
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
        policy = client.app.state.services.sip_policy.current()  # type: ignore[attr-defined]
        assert policy.source_allowed("10.0.0.9")


@pytest.mark.parametrize("method", ["GET", "PATCH"])
def test_the_api_key_is_required(client: TestClient, method: str) -> None:
    client.headers.pop("X-API-Key")
    response = client.request(method, "/api/sip", json={} if method == "PATCH" else None)
    assert response.status_code == 401 and response.json()["code"] == "missing_api_key"
