"""`/api/sip/registrations`: create, list (paged), read, change, delete; the password never shown; clear
errors for bad input, unknown ids and transports this server does not listen on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from app.main import create_app
from tests.conftest import API_KEY, make_settings

BODY = {"username": "bot", "password": "botpass", "proxy": "pbx.example.com"}
PATH = "/api/sip/registrations"


def created(client: TestClient, **overrides: Any) -> dict[str, Any]:
    response = client.post(PATH, json={**BODY, **overrides})
    assert response.status_code == 201, response.text
    return response.json()


def refused(client: TestClient, body: dict[str, Any], status: int = 400) -> dict[str, str]:
    response = client.post(PATH, json=body)
    assert response.status_code == status, response.text
    return response.json()


def test_a_created_registration_shows_every_field_but_the_password(client: TestClient) -> None:
    shown = created(client, outboundProxy="edge.example.com:5080;transport=tcp", authUser="1001")
    assert set(shown) == {
        "registrationId", "created", "username", "proxy", "outboundProxy", "authUser", "tlsVerify",
        "successful", "lastError", "expiresAt",
    }  # fmt: skip
    assert shown["outboundProxy"] == "edge.example.com:5080;transport=tcp" and shown["authUser"] == "1001"
    assert (shown["successful"], shown["lastError"], shown["expiresAt"]) == (None, None, None)
    assert shown["tlsVerify"] is True


def test_the_password_is_never_shown(client: TestClient) -> None:
    registration_id = created(client)["registrationId"]
    assert "botpass" not in client.get(f"{PATH}/{registration_id}").text
    assert "botpass" not in client.get(PATH).text


def test_the_list_is_paged_newest_first(client: TestClient) -> None:
    first, second = created(client, username="a"), created(client, username="b")
    page = client.get(PATH, params={"pageSize": 1}).json()
    assert page["total"] == 2 and [r["registrationId"] for r in page["results"]] == [second["registrationId"]]
    following = client.get(page["next"]).json()
    assert [r["registrationId"] for r in following["results"]] == [first["registrationId"]]


def test_patch_changes_the_fields_given_and_keeps_the_rest(client: TestClient) -> None:
    registration_id = created(client, authUser="1001")["registrationId"]
    response = client.patch(
        f"{PATH}/{registration_id}", json={"proxy": "sip:pbx2.example.com", "tlsVerify": False}
    )
    assert response.status_code == 200, response.text
    shown = response.json()
    assert (shown["proxy"], shown["tlsVerify"], shown["authUser"], shown["username"]) == (
        "sip:pbx2.example.com", False, "1001", "bot",
    )  # fmt: skip
    assert client.get(f"{PATH}/{registration_id}").json() == shown


def test_patch_with_null_clears_the_outbound_proxy(client: TestClient) -> None:
    registration_id = created(client, outboundProxy="edge.example.com")["registrationId"]
    shown = client.patch(f"{PATH}/{registration_id}", json={"outboundProxy": None}).json()
    assert shown["outboundProxy"] is None


def test_patch_with_null_for_a_required_field_is_refused(client: TestClient) -> None:
    registration_id = created(client)["registrationId"]
    response = client.patch(f"{PATH}/{registration_id}", json={"username": None})
    assert response.status_code == 400 and response.json()["detail"].startswith("username: may not be null")


def test_delete_is_204_and_the_registration_is_gone(client: TestClient) -> None:
    registration_id = created(client)["registrationId"]
    assert client.delete(f"{PATH}/{registration_id}").status_code == 204
    assert client.get(f"{PATH}/{registration_id}").status_code == 404


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_an_unknown_registration_is_404(client: TestClient, method: str) -> None:
    response = client.request(method, f"{PATH}/nope", json={} if method == "PATCH" else None)
    assert response.status_code == 404
    assert response.json() == {
        "detail": "no SIP registration with id nope",
        "code": "sip_registration_not_found",
    }


def test_a_proxy_with_a_user_part_is_refused(client: TestClient) -> None:
    error = refused(client, {**BODY, "proxy": "sip:bot@pbx.example.com"})
    assert error["code"] == "invalid_sip_uri" and "user part" in error["detail"]


def test_a_proxy_with_an_unknown_transport_is_refused(client: TestClient) -> None:
    error = refused(client, {**BODY, "proxy": "pbx.example.com;transport=sctp"})
    assert error["code"] == "invalid_sip_uri" and "'sctp'" in error["detail"]


def test_a_username_with_a_domain_is_refused_saying_where_the_domain_goes(client: TestClient) -> None:
    error = refused(client, {**BODY, "username": "bot@pbx.example.com"})
    assert error == {
        "detail": "username: 'bot@pbx.example.com': the user part only (the domain goes in proxy)",
        "code": "invalid_username",
    }


def test_a_username_over_60_characters_is_refused(client: TestClient) -> None:
    error = refused(client, {**BODY, "username": "u" * 61})
    assert error["code"] == "invalid_request" and error["detail"].startswith("username:")


def test_a_registration_without_a_password_is_refused(client: TestClient) -> None:
    error = refused(client, {"username": "bot", "proxy": "pbx.example.com"})
    assert error["detail"] == "password: Field required"


@pytest.fixture
def udp_only(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, sip_listen="udp:127.0.0.1:0", rtp_ports="43000-43010")
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
        yield client


def test_a_transport_this_server_does_not_listen_on_is_422(udp_only: TestClient) -> None:
    error = refused(udp_only, {**BODY, "proxy": "pbx.example.com;transport=tcp"}, status=422)
    assert error == {
        "detail": "proxy: tcp is not among CALLBRIDGE_SIP_LISTEN's transports",
        "code": "transport_not_listening",
    }
