"""Join credentials: compared as bytes, so a malformed one is a refusal (403 on the upgrade), not an error."""

from __future__ import annotations

import logging

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from app.calls.join_tokens import JoinTokens


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
