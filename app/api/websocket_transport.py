"""Whole messages over a Starlette WebSocket: the socket under a call's `FramedStream`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from app.api.websocket_frames import MESSAGE_TOO_BIG
from app.api.websocket_protocol import DIRECT_MESSAGES
from app.calls.transport import MessageTooLarge, TransportClosed
from app.handoff import HandleNow


class WebSocketMessages:
    """A `MessageSocket` on a Starlette WebSocket (a provider's media stream or a serverWebSocket client).

    `max_message_bytes` is this stream's own limit (uvicorn's `ws_max_size` is one for the whole server):
    a larger message closes the socket with 1009 and raises MessageTooLarge.

    Made before the WebSocket is accepted. Served by `callbridge serve` (DirectMessagesProtocol), messages
    go straight between the socket and the call, past ASGI; under any other ASGI server, through ASGI.
    """

    #: Writes one message at once, False when it cannot now (the direct path only; None elsewhere).
    send_now: Callable[[str | bytes], bool] | None = None
    #: Hands messages to a synchronous handler as they arrive (the direct path only; None elsewhere):
    #: see `DirectMessagesProtocol.handle_messages_now`.
    handle_messages_now: Callable[[HandleNow[object] | None], None] | None = None

    def __init__(self, websocket: WebSocket, max_message_bytes: int | None = None) -> None:
        self.websocket = websocket
        self.max_message_bytes = max_message_bytes
        self._send_lock = asyncio.Lock()
        direct = websocket.scope.get("extensions", {}).get(DIRECT_MESSAGES)
        if direct is not None:  # it checks the limit itself, from a frame's header
            direct.use_direct(max_message_bytes)
            self.receive = direct.receive_message  # type: ignore[method-assign]
            self.send = direct.send_message  # type: ignore[method-assign]  # one write per message: no lock
            self.send_now = direct.send_message_now
            self.handle_messages_now = direct.handle_messages_now

    async def receive(self) -> str | bytes:
        payload = await self._receive_message()
        limit = self.max_message_bytes
        if limit is not None and _over(payload, limit):
            await self.close(MESSAGE_TOO_BIG, "message too big")
            raise MessageTooLarge(f"the far end sent a message over this stream's {limit}-byte limit")
        return payload

    async def _receive_message(self) -> str | bytes:
        try:
            message = await self.websocket.receive()
        except RuntimeError as exc:  # receiving after a disconnect
            raise TransportClosed(str(exc)) from None
        if message["type"] == "websocket.disconnect":
            raise TransportClosed(f"closed with code {message.get('code')}")
        text = message.get("text")
        return text if text is not None else message.get("bytes") or b""

    async def send(self, message: str | bytes) -> None:
        async with self._send_lock:
            try:
                if isinstance(message, str):
                    await self.websocket.send_text(message)
                else:
                    await self.websocket.send_bytes(message)
            except (WebSocketDisconnect, RuntimeError, OSError) as exc:
                raise TransportClosed(str(exc)) from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.websocket.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(RuntimeError, OSError):
                await self.websocket.close(code, reason)


def _over(payload: str | bytes, limit: int) -> bool:
    """Whether `payload` is over `limit` bytes (text is only encoded when its length leaves it open)."""
    if isinstance(payload, bytes) or len(payload) > limit:
        return len(payload) > limit
    return len(payload) * 4 > limit and len(payload.encode()) > limit
