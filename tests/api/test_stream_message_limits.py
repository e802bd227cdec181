"""Each call stream's own WebSocket message limit: a larger message closes the socket with 1009 and ends
the stream with a clear error (MessageTooLarge), not a crash."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from app.api.websocket_transport import MESSAGE_TOO_BIG, MessageTooLarge, WebSocketMessages
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
