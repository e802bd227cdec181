"""Each call stream's own WebSocket message limit: a larger message closes the socket with 1009 and ends
the stream with a clear error (MessageTooLarge), not a crash."""

from __future__ import annotations

import time

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from app.api.websocket_transport import MESSAGE_TOO_BIG, WebSocketMessages
from app.calls.transport import MessageTooLarge
from app.settings import Settings

LIMIT = 1024


def echo_app(received: list[str | bytes], errors: list[Exception]) -> Starlette:
    """Echoes every message within LIMIT; records what it took and the error that ended it."""

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        messages = WebSocketMessages(websocket, max_message_bytes=LIMIT)
        try:
            while True:
                message = await messages.receive()
                received.append(message)
                await messages.send(message)
        except MessageTooLarge as exc:
            errors.append(exc)

    return Starlette(routes=[WebSocketRoute("/stream", endpoint)])


@pytest.mark.parametrize(
    "oversized",
    [b"\0" * (LIMIT + 1), "x" * (LIMIT + 1), "é" * (LIMIT // 2 + 1)],
    ids=["binary", "ascii", "utf-8"],
)
def test_a_message_over_the_limit_closes_the_stream_with_1009(oversized: str | bytes) -> None:
    received: list[str | bytes] = []
    errors: list[Exception] = []
    with TestClient(echo_app(received, errors)) as client, client.websocket_connect("/stream") as ws:
        ws.send_bytes(b"\0" * LIMIT)  # at the limit: taken
        assert ws.receive_bytes() == b"\0" * LIMIT
        if isinstance(oversized, bytes):
            ws.send_bytes(oversized)
        else:
            ws.send_text(oversized)
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_bytes()
    assert closed.value.code == MESSAGE_TOO_BIG
    assert received == [b"\0" * LIMIT]
    assert [str(e) for e in errors] == [f"the far end sent a message over this stream's {LIMIT}-byte limit"]


def test_the_server_websocket_medium_takes_larger_messages_than_provider_streams() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.stream_message_limit("twilio") == settings.max_stream_message_bytes == 64 * 1024
    assert settings.stream_message_limit("serverWebSocket") == settings.max_medium_message_bytes == 256 * 1024


def test_an_oversized_stream_message_ends_its_call_as_a_connection_error(client: TestClient) -> None:
    call = client.post("/api/calls", json={"medium": {"serverWebSocket": {"inputSampleRate": 8000}}}).json()
    with client.websocket_connect(call["joinUrl"]) as ws:
        assert ws.receive_json()["type"] == "call_started"
        ws.send_bytes(b"\0" * (256 * 1024 + 2))  # the serverWebSocket medium's limit is 256 KiB
        message = ws.receive()
        while message["type"] != "websocket.close":  # the `state` messages sent before the close
            message = ws.receive()
        # Still inside the client's context: leaving it would cancel the app's task mid-shutdown.
        deadline = time.monotonic() + 5
        while (ended := client.get(f"/api/calls/{call['callId']}").json())["ended"] is None:
            assert time.monotonic() < deadline, "the call did not end"
    assert message["code"] == MESSAGE_TOO_BIG
    assert ended["endReason"] == "connection_error"
