"""Join credentials: compared as bytes, so a malformed one is a refusal (403 on the upgrade), not an error."""

from __future__ import annotations

import logging

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from app.calls.join_tokens import JoinTokens
from app.pipeline.secret_options import PipelineSecrets
from app.store.secret_box import SecretBox


def test_a_non_ascii_token_does_not_check() -> None:
    assert JoinTokens("secret").check("call-1", "éé") is False


def test_the_right_token_checks_and_a_near_miss_does_not() -> None:
    tokens = JoinTokens("secret")
    token = tokens.token_for("call-1")
    assert tokens.check("call-1", token) and not tokens.check("call-1", token[:-1] + "A")


def test_a_join_with_a_non_ascii_token_is_refused_and_logs_no_error(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    call_id = client.post("/api/calls", json={}).json()["callId"]
    with (
        caplog.at_level(logging.INFO),
        pytest.raises(WebSocketDisconnect) as closed,
        client.websocket_connect(f"/calls/{call_id}/stream/%C3%A9%C3%A9"),
    ):
        pass
    assert closed.value.code == 1008  # closed before accept: uvicorn answers the upgrade with HTTP 403
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_call_whose_pipeline_secrets_do_not_decrypt_is_refused_and_ended(client: TestClient) -> None:
    pipeline = {"websocket": {"url": "ws://127.0.0.1:9/agent", "secret": "s3cr3t"}}
    call = client.post("/api/calls", json={"medium": {"exotel": {}}, "pipeline": pipeline}).json()
    services = client.app.state.services  # type: ignore[attr-defined]
    services.pipeline_secrets = PipelineSecrets(SecretBox("another instance's key"))
    with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect(call["joinUrl"]):
        pass
    assert closed.value.code == 1008
    ended = client.get(f"/api/calls/{call['callId']}").json()
    assert ended["endReason"] == "system_error"
    events = client.get(f"/api/calls/{call['callId']}/events", params={"minimum_severity": "error"}).json()
    assert any("CALLBRIDGE_SECRET_KEY" in e["text"] for e in events["results"])
